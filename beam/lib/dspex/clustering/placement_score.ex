defmodule DSPEx.Clustering.PlacementScore do
  @moduledoc """
  The heuristic placement decision, pure: candidates in, ranked nodes out.

  A candidate is a map: `node`, `kind`, `status`, and from its latest load report `cpu`
  (busy share 0..1), `memory` (used share 0..1), `free_memory_mb`, `agents`,
  `capabilities` (atoms), plus `rtt_ms` from membership (nil where unknown).

  **Constraints filter first** (keyword list or map): only `:up` members; `:exclude_nodes`,
  `:nodes` (allow-list), `:kinds` (e.g. `[:beam]`), `:min_memory_mb` (free memory; unknown
  fails), `:capabilities` (all required), `:max_cpu`, `:max_agents`.

  **Then a weighted score** in 0..1, each part in 0..1:
  `cpu` = 1 − cpu, `memory` = 1 − memory, `agents` = 1 − agents / max agents among the
  candidates (each 0.0 when the node sent no load report: a node we know nothing about ranks
  below one we know is busy), `network` = 1 / (1 + rtt_ms / 10) (0.5 when unknown),
  `capability` = share of the
  `:prefer_capabilities` the node has (1.0 when none are asked for). The score is
  Σ wᵢ·partᵢ / Σ wᵢ with `weights` (`Config` key `:placement_weights`); ties go to the
  lower node name, so the decision is deterministic.
  """

  @type candidate :: map()
  @type weights :: %{optional(atom()) => number()}

  @doc "The candidates that satisfy every constraint."
  @spec filter([candidate()], keyword() | map()) :: [candidate()]
  def filter(candidates, constraints) do
    c = Map.new(constraints)
    Enum.filter(candidates, &eligible?(&1, c))
  end

  defp eligible?(n, c) do
    n.status == :up and
      n.node not in List.wrap(c[:exclude_nodes]) and
      (c[:nodes] == nil or n.node in c[:nodes]) and
      (c[:kinds] == nil or n.kind in c[:kinds]) and
      at_least?(n[:free_memory_mb], c[:min_memory_mb]) and
      at_most?(n[:cpu], c[:max_cpu]) and
      at_most?(n[:agents], c[:max_agents]) and
      Enum.all?(List.wrap(c[:capabilities]), &(&1 in (n[:capabilities] || [])))
  end

  defp at_least?(_value, nil), do: true
  defp at_least?(nil, _min), do: false
  defp at_least?(value, min), do: value >= min
  defp at_most?(_value, nil), do: true
  defp at_most?(nil, _max), do: false
  defp at_most?(value, max), do: value <= max

  @doc "Eligible candidates with their score and its parts, best first."
  @spec rank([candidate()], keyword() | map(), weights()) :: [{node(), float(), map()}]
  def rank(candidates, constraints, weights) do
    c = Map.new(constraints)
    eligible = filter(candidates, c)
    max_agents = eligible |> Enum.map(&(&1[:agents] || 0)) |> Enum.max(fn -> 0 end)
    prefer = List.wrap(c[:prefer_capabilities])

    eligible
    |> Enum.map(fn n ->
      parts = %{
        cpu: inverse(n[:cpu]),
        memory: inverse(n[:memory]),
        agents: agents_part(n[:agents], max_agents),
        network: network_part(n[:rtt_ms]),
        capability: capability_part(n[:capabilities] || [], prefer)
      }

      {n.node, weighted(parts, weights), parts}
    end)
    |> Enum.sort_by(fn {node, score, _} -> {-score, node} end)
  end

  @doc "The best node, or `{:error, :no_suitable_nodes}`."
  @spec choose([candidate()], keyword() | map(), weights()) ::
          {:ok, node()} | {:error, :no_suitable_nodes}
  def choose(candidates, constraints, weights) do
    case rank(candidates, constraints, weights) do
      [{node, _, _} | _] -> {:ok, node}
      [] -> {:error, :no_suitable_nodes}
    end
  end

  defp inverse(nil), do: 0.0
  defp inverse(share), do: clamp(1 - share)

  defp agents_part(nil, _), do: 0.0
  defp agents_part(_agents, 0), do: 1.0
  defp agents_part(agents, max), do: clamp(1 - agents / max)

  defp network_part(nil), do: 0.5
  defp network_part(rtt_ms), do: 1 / (1 + rtt_ms / 10)

  defp capability_part(_has, []), do: 1.0
  defp capability_part(has, prefer), do: Enum.count(prefer, &(&1 in has)) / length(prefer)

  defp weighted(parts, weights) do
    total = weights |> Map.take(Map.keys(parts)) |> Map.values() |> Enum.sum()

    if total == 0,
      do: 0.0,
      else:
        Enum.reduce(parts, 0.0, fn {k, v}, acc -> acc + Map.get(weights, k, 0) * v end) / total
  end

  defp clamp(x), do: x |> max(0.0) |> min(1.0)
end
