defmodule DSPEx.Clustering.PlacementScoreTest do
  use ExUnit.Case, async: true
  alias DSPEx.Clustering.PlacementScore, as: Score

  @weights %{cpu: 0.30, memory: 0.25, agents: 0.20, network: 0.15, capability: 0.10}

  defp node(name, fields),
    do:
      Map.merge(
        %{
          node: name,
          kind: :beam,
          status: :up,
          cpu: 0.5,
          memory: 0.5,
          free_memory_mb: 1000,
          agents: 5,
          rtt_ms: 1.0,
          capabilities: []
        },
        Map.new(fields)
      )

  setup do
    %{
      nodes: [
        node(:a@h, cpu: 0.9, memory: 0.8, agents: 10, capabilities: [:gpu]),
        node(:b@h, cpu: 0.1, memory: 0.2, agents: 2, free_memory_mb: 4000),
        node(:c@h, kind: :python, cpu: 0.2, capabilities: [:numpy, :gpu]),
        node(:d@h, status: :suspect, cpu: 0.0, memory: 0.0, agents: 0)
      ]
    }
  end

  test "the least loaded up node wins", %{nodes: nodes} do
    assert {:ok, :b@h} = Score.choose(nodes, [], @weights)
    [{:b@h, best, parts} | _] = Score.rank(nodes, [], @weights)
    # hand computation: cpu 0.9, memory 0.8, agents 1 - 2/10, network 1/(1 + 0.1), capability 1
    expected = (0.30 * 0.9 + 0.25 * 0.8 + 0.20 * 0.8 + 0.15 / 1.1 + 0.10 * 1.0) / 1.0
    assert_in_delta best, expected, 1.0e-9
    assert_in_delta parts.agents, 0.8, 1.0e-9
    refute Enum.any?(Score.rank(nodes, [], @weights), fn {n, _, _} -> n == :d@h end)
  end

  test "constraints filter before scoring", %{nodes: nodes} do
    assert {:ok, :c@h} = Score.choose(nodes, [capabilities: [:gpu, :numpy]], @weights)
    assert {:ok, :c@h} = Score.choose(nodes, [kinds: [:python]], @weights)
    assert {:ok, :c@h} = Score.choose(nodes, [exclude_nodes: [:b@h]], @weights)
    assert {:ok, :b@h} = Score.choose(nodes, [min_memory_mb: 2000], @weights)
    assert {:ok, :a@h} = Score.choose(nodes, %{nodes: [:a@h, :d@h]}, @weights)
    assert {:error, :no_suitable_nodes} = Score.choose(nodes, [min_memory_mb: 10_000], @weights)
    assert {:error, :no_suitable_nodes} = Score.choose(nodes, [capabilities: [:tpu]], @weights)
    assert [{:b@h, _, _}] = Score.rank(nodes, [max_cpu: 0.15], @weights)
    assert {:error, :no_suitable_nodes} = Score.choose([], [], @weights)
  end

  test "unknown load ranks low and fails memory constraints" do
    unknown = %{node: :p@h, kind: :python, status: :up}
    assert [{:p@h, score, parts}] = Score.rank([unknown], [], @weights)
    assert parts.cpu == 0.0 and parts.agents == 0.0 and parts.network == 0.5
    assert_in_delta score, 0.15 * 0.5 + 0.10, 1.0e-9
    assert {:error, :no_suitable_nodes} = Score.choose([unknown], [min_memory_mb: 1], @weights)
  end

  test "preferred capabilities and weights change the choice", %{nodes: nodes} do
    cpu_only = %{cpu: 1.0}
    assert {:ok, :b@h} = Score.choose(nodes, [], cpu_only)
    caps_only = %{capability: 1.0}
    assert {:ok, :c@h} = Score.choose(nodes, [prefer_capabilities: [:gpu, :numpy]], caps_only)
    # equal scores: the lower node name wins
    twins = [node(:y@h, []), node(:x@h, [])]
    assert {:ok, :x@h} = Score.choose(twins, [], @weights)
  end
end
