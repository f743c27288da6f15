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
end
