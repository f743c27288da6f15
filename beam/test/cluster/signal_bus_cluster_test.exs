defmodule DSPEx.Clustering.SignalBusClusterTest do
  use ExUnit.Case, async: false
  @moduletag :distributed

  alias DSPEx.Clustering.{Signal, SignalBus}
  alias DSPEx.Test.{Forwarder, PeerNode}

  setup_all do
    peers = [PeerNode.start("bus_a", capabilities: [:gpu]), PeerNode.start("bus_b")]
    on_exit(fn -> Enum.each(peers, &PeerNode.stop/1) end)
    [a, b] = Enum.map(peers, & &1.node)
    true = :erpc.call(a, Node, :connect, [b])
    %{a: a, b: b}
  end

  test "a cluster-scoped signal reaches each matching subscriber on every node exactly once",
       %{a: a, b: b} do
    me = self()
    nodes = [node(), a, b]
    # Overlapping patterns on every node: still one delivery per subscriber.
    forwarders =
      for n <- nodes, do: :erpc.call(n, Forwarder, :start, [["cluster.test.*", "cluster.**"], me])

    # A pid subscribed through b's relay (as a Python pid would be).
    relay_sub = spawn_link(fn -> relay_loop(me) end)
    :ok = :erpc.call(b, SignalBus, :subscribe, ["cluster.test.once", relay_sub])

    for n <- nodes do
      PeerNode.eventually(fn ->
        subs = :erpc.call(n, SignalBus, :subscribers_for, ["cluster.test.once"])
        Enum.all?(forwarders, &(&1 in subs))
      end)
    end

    signal = Signal.new!("cluster.test.once", %{n: 1})
    assert {:ok, 4} = :erpc.call(a, SignalBus, :publish, [signal])

    id = signal.id
    for n <- nodes, do: assert_receive({:forwarded, ^n, %{id: ^id}}, 2_000)
    assert_receive {:relayed, %{id: ^id}}, 2_000
    refute_receive {:forwarded, _, %{id: ^id}}, 300
    refute_receive {:relayed, %{id: ^id}}, 10

    # Local scope: only the publishing node's subscribers.
    local = Signal.new!("cluster.test.local", %{}, scope: :local)
    assert {:ok, 1} = :erpc.call(b, SignalBus, :publish, [local])
    local_id = local.id
    assert_receive {:forwarded, ^b, %{id: ^local_id}}, 2_000
    refute_receive {:forwarded, _, %{id: ^local_id}}, 300
    refute_receive {:relayed, _}, 10
  end

  test "place/2 scores remote nodes from their load reports", %{a: a, b: b} do
    PeerNode.eventually(fn ->
      with_load =
        for c <- DSPEx.Clustering.LoadBalancer.candidates(), Map.has_key?(c, :cpu), do: c.node

      a in with_load and b in with_load
    end)

    assert {:ok, ^a} = DSPEx.Clustering.place({SomeAgent, []}, capabilities: [:gpu])
    assert {:ok, ^b} = DSPEx.Clustering.place({SomeAgent, []}, nodes: [a, b], exclude_nodes: [a])
    assert {:ok, n} = DSPEx.Clustering.place({SomeAgent, []}, [])
    assert n in [node(), a, b]
    # the same decision is reachable from another node
    assert {:ok, ^a} =
             :erpc.call(b, DSPEx.Clustering, :place, [{SomeAgent, []}, [capabilities: [:gpu]]])
  end

  defp relay_loop(target) do
    receive do
      {:signal, s} -> send(target, {:relayed, s})
    end

    relay_loop(target)
  end
end
