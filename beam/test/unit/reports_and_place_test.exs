defmodule DSPEx.Clustering.ReportsAndPlaceTest do
  use ExUnit.Case, async: false
  alias DSPEx.Clustering

  defmodule SlowAdvisor do
    @behaviour DSPEx.Clustering.PlacementAdvisor
    @impl true
    def advise(_spec, _c, _candidates, _budget), do: Process.sleep(5_000)
  end

  defmodule PickLast do
    @behaviour DSPEx.Clustering.PlacementAdvisor
    @impl true
    def advise(_spec, _c, candidates, _budget), do: {:ok, List.last(candidates).node}
  end

  defmodule Stranger do
    @behaviour DSPEx.Clustering.PlacementAdvisor
    @impl true
    def advise(_spec, _c, _candidates, _budget), do: {:ok, :nobody@nowhere}
  end

  test "health data carries the vitals" do
    :ok = Clustering.subscribe("cluster.health.data")
    me = Atom.to_string(node())
    assert_receive {:signal, %{subject: ^me, data: d}}, 3_000
    assert d.scheduler_utilization.total >= 0 and is_list(d.scheduler_utilization.per_scheduler)
    assert d.memory.total > 0 and d.memory.processes > 0
    assert d.process_count > 10
    assert d.longest_message_queue.length >= 0
    assert d.reductions.total > 0
    assert %{total: _, cpu: _} = d.run_queue
    assert d.os_memory == nil or d.os_memory.total > 0
  end

  test "load reports carry cpu, memory and agent count" do
    :ok = Clustering.subscribe("cluster.load.report")
    me = node()
    assert_receive {:signal, %{type: "cluster.load.report", data: %{node: ^me} = d}}, 3_000
    assert d.cpu >= 0 and d.cpu <= 1
    assert d.agents >= 4
    assert d.kind == :beam
  end

  test "place/2 on one node: the local node, constraints, advisors and their budget" do
    me = node()
    # wait for our own load report to be in the table
    DSPEx.Test.PeerNode.eventually(fn ->
      Enum.any?(Clustering.LoadBalancer.candidates(), &Map.has_key?(&1, :cpu))
    end)

    assert {:ok, ^me} = Clustering.place({SomeAgent, []}, [])
    assert {:error, :no_suitable_nodes} = Clustering.place({SomeAgent, []}, exclude_nodes: [me])
    assert {:error, :no_suitable_nodes} = Clustering.place(%{constraints: [kinds: [:python]]}, [])

    assert {:error, :no_suitable_nodes} =
             Clustering.place({SomeAgent, []}, capabilities: [:quantum])

    started = System.monotonic_time(:millisecond)
    assert {:ok, ^me} = Clustering.place({SomeAgent, []}, advisors: [SlowAdvisor], budget_ms: 100)
    assert System.monotonic_time(:millisecond) - started < 2_000
    assert {:ok, ^me} = Clustering.place({SomeAgent, []}, advisors: [Stranger, PickLast])
  end
end
