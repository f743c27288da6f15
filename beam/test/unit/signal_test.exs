defmodule DSPEx.Clustering.SignalTest do
  use ExUnit.Case, async: true
  alias DSPEx.Clustering.Signal

  test "new/3 fills CloudEvents attributes and the extensions" do
    {:ok, s} = Signal.new("cluster.load.report", %{cpu: 0.5}, source: "loadreporter")
    assert s.specversion == "1.0"
    assert s.source == "dspex://#{node()}/loadreporter"
    assert s.priority == :normal and s.scope == :cluster
    assert s.id =~ ~r/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
    assert {:ok, _, _} = DateTime.from_iso8601(s.time)
    refute Map.has_key?(s, :__struct__)
  end

  test "validation names the bad field" do
    s = Signal.new!("cluster.node.up", %{})
    assert {:error, {:invalid_signal, :type, _}} = Signal.validate(%{s | type: "Cluster Node"})
    assert {:error, {:invalid_signal, :type, _}} = Signal.validate(%{s | type: "cluster"})

    assert {:error, {:invalid_signal, :specversion, _}} =
             Signal.validate(%{s | specversion: "0.3"})

    assert {:error, {:invalid_signal, :id, _}} = Signal.validate(%{s | id: ""})
    assert {:error, {:invalid_signal, :priority, msg}} = Signal.validate(%{s | priority: :urgent})
    assert msg =~ ":urgent"
    assert {:error, {:invalid_signal, :scope, _}} = Signal.validate(%{s | scope: :global})
    assert {:error, {:invalid_signal, :time, _}} = Signal.validate(%{s | time: "yesterday"})
    assert {:error, {:invalid_signal, :extensions, _}} = Signal.validate(Map.put(s, "x", 1))
    assert {:error, {:invalid_signal, :signal, _}} = Signal.validate(:nope)
    assert :ok = Signal.validate(Map.put(s, :traceparent, "00-ab"))
    assert_raise ArgumentError, ~r/type/, fn -> Signal.new!("BAD", %{}) end
  end

  test "constructors build valid signals of the seed's types" do
    signals = [
      Signal.node_announce(:a@h, %{kind: :beam}),
      Signal.node_up(:a@h, :beam),
      Signal.node_suspect(:a@h, 9),
      Signal.node_down(:a@h, :connection_closed),
      Signal.load_report(%{cpu: 0.1, memory: 0.2, agents: 3}),
      Signal.health_data(%{process_count: 10}),
      Signal.health_alert(:a@h, :warning, "run queue"),
      Signal.rebalance_request([:a@h], :overload),
      Signal.placement_request({M, []}, min_memory_mb: 10),
      Signal.placement_decision({M, []}, :a@h, %{}),
      Signal.consensus_proposal(1, :leader, :a@h),
      Signal.consensus_vote(1, :yes),
      Signal.variable_sync(:temperature, 0.7, 3),
      Signal.variable_conflict(:temperature, [1, 2]),
      Signal.partition_detected([:a@h], [:b@h]),
      Signal.partition_healed([:a@h, :b@h]),
      Signal.health_anomaly(:a@h, 0.97, %{run_queue: 40}),
      Signal.failure_predicted(:a@h, 0.8, 60),
      Signal.migration(:rolled_back, {M, 1}, :a@h, :b@h)
    ]

    assert Enum.all?(signals, &(Signal.validate(&1) == :ok))
    assert List.last(signals).type == "cluster.migration.rolled_back"
    suspect = Enum.at(signals, 2)
    assert suspect.type == "cluster.node.suspect" and suspect.subject == "a@h"
    assert suspect.data.phi == 9.0 and suspect.priority == :high
  end
end
