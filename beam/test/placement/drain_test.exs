defmodule DSPEx.Clustering.DrainTest do
  use ExUnit.Case, async: false
  @moduletag :distributed

  alias DSPEx.Clustering
  alias DSPEx.Clustering.{AgentPlacement, Drain, LoadBalancer, Signal}
  alias DSPEx.Test.PeerNode

  defp prediction(node, p),
    do:
      Signal.new!("cluster.failure.predicted", %{node: node, probability: p},
        source: "failure_predictor"
      )

  setup do
    PeerNode.eventually(fn -> Enum.any?(LoadBalancer.candidates(), &Map.has_key?(&1, :cpu)) end)
    on_exit(fn -> Enum.each(Drain.drained(), &Drain.undrain/1) end)
    :ok
  end

  test "a high failure prediction drains the node: nothing is placed there until it clears" do
    me = node()
    {:ok, _} = Clustering.publish(prediction(me, 0.4))
    Process.sleep(100)
    assert Drain.drained() == []

    {:ok, _} = Clustering.publish(prediction(me, 0.9))
    PeerNode.eventually(fn -> Drain.drained() == [me] end)
    assert %{^me => %{reason: :predicted_failure, probability: 0.9}} = Drain.info()
    assert Clustering.place(%{id: :d1}, kinds: [:beam]) == {:error, :no_suitable_nodes}

    # between the thresholds: still drained (hysteresis); below: back in service
    {:ok, _} = Clustering.publish(prediction(me, 0.4))
    Process.sleep(100)
    assert Drain.drained() == [me]
    {:ok, _} = Clustering.publish(prediction(me, 0.1))
    PeerNode.eventually(fn -> Drain.drained() == [] end)
    assert Clustering.place(%{id: :d2}, kinds: [:beam]) == {:ok, me}
  end

  describe "placed agents" do
    setup do
      peer = PeerNode.start("placed", discovery: [])
      on_exit(fn -> PeerNode.stop(peer) end)
      # the peer's load reports reach our placement table
      PeerNode.eventually(fn ->
        Enum.any?(LoadBalancer.candidates(), &(&1.node == peer.node and Map.has_key?(&1, :cpu)))
      end)

      %{peer: peer}
    end

    defp long_agent(id),
      do: %{id: id, start: {Task, :start_link, [Process, :sleep, [:infinity]]}, notify: self()}

    test "an agent on a drained node is started elsewhere and stopped there", %{peer: peer} do
      p = peer.node
      me = node()

      # placed on the peer while this node is drained
      :ok = Drain.drain(me, :test)
      assert {:ok, ^p, old} = AgentPlacement.start_agent(long_agent(:a1))
      :ok = Drain.undrain(me)

      assert node(old) == p
      assert_receive {:placed_agent, :a1, {:started, ^p, ^old}, _}
      ref = Process.monitor(old)

      :ok = Drain.drain(p, :test)
      assert_receive {:placed_agent, :a1, {:moved, ^p, ^me, :test}, _}, 2_000
      assert_receive {:DOWN, ^ref, :process, ^old, :shutdown}, 2_000
      assert %{a1: %{node: ^me, moves: 1}} = AgentPlacement.agents()
      :ok = Drain.undrain(p)
      :ok = AgentPlacement.stop_agent(:a1)
    end

    test "an agent whose node is killed is restarted on a live node", %{peer: peer} do
      p = peer.node
      me = node()
      :ok = Drain.drain(me, :test)
      assert {:ok, ^p, _} = AgentPlacement.start_agent(long_agent(:k1))
      :ok = Drain.undrain(me)
      :ok = PeerNode.signal(peer.os_pid, "KILL")
      assert_receive {:placed_agent, :k1, {:moved, ^p, ^me, :node_down}, _}, 2_000
      assert %{k1: %{node: ^me}} = AgentPlacement.agents()
      :ok = AgentPlacement.stop_agent(:k1)
    end

    test "at most a third of the BEAM nodes (at least one) are drained at a time", %{peer: peer} do
      p = peer.node
      me = node()
      {:ok, _} = Clustering.publish(prediction(p, 0.9))
      PeerNode.eventually(fn -> Drain.drained() == [p] end)
      # at the limit: a less likely failure is held back
      {:ok, _} = Clustering.publish(prediction(me, 0.7))
      Process.sleep(150)
      assert Drain.drained() == [p]
      # a likelier one takes the place of the least likely
      {:ok, _} = Clustering.publish(prediction(me, 0.95))
      PeerNode.eventually(fn -> Drain.drained() == [me] end)
    end

    test "an agent that finishes is reported done and forgotten" do
      me = node()
      spec = %{id: :t1, start: {Clustering.Workload, :start_task, [1000]}, notify: self()}
      assert {:ok, ^me, _} = AgentPlacement.start_agent(spec, nodes: [me])
      assert_receive {:placed_agent, :t1, {:done, ^me, ms}, _}, 2_000
      assert ms >= 0
      refute Map.has_key?(AgentPlacement.agents(), :t1)
    end
  end
end
