defmodule DSPEx.Clustering.LoadBalancer do
  @moduledoc """
  The placement front. The agent (registered `:dspex_placement`) subscribes to
  `cluster.load.report` and keeps each node's latest report in a protected ETS table;
  `place/2` runs in the caller:

    1. candidates = `Membership.members/0` joined with the load reports (reports older than
       five report intervals count as unknown);
    2. the constraints filter them (`PlacementScore.filter/2`);
    3. each advisor in `:placement_advisors` (`PlacementAdvisor` behaviour) is asked in turn
       within what is left of `:placement_budget_ms`; the first eligible answer wins;
    4. otherwise the heuristic score decides (`PlacementScore.choose/3`).

  The decision is published as a local `cluster.placement.decision` signal.
  """
  use DSPEx.Clustering.Agent, name: :dspex_placement

  require Logger
  alias DSPEx.Clustering.{Config, Drain, Membership, PlacementScore, SignalBus, Telemetry}

  @table :dspex_load_reports

  @doc """
  Chooses a node for `agent_spec`. `constraints` may also come from a map `agent_spec` under
  `:constraints`. Options in `constraints` besides the filters: `:prefer_capabilities`,
  `:weights` (overrides), `:advisors`, `:budget_ms`.
  """
  @spec place(term(), keyword() | map()) :: {:ok, node()} | {:error, :no_suitable_nodes}
  def place(agent_spec, constraints \\ []) do
    c = Map.merge(spec_constraints(agent_spec), Map.new(constraints))
    # drained nodes (predicted to fail) get nothing new
    c = Map.update(c, :exclude_nodes, Drain.drained(), &(List.wrap(&1) ++ Drain.drained()))
    candidates = PlacementScore.filter(candidates(), c)
    weights = Map.merge(Config.get(:placement_weights), Map.get(c, :weights, %{}))
    advisors = Map.get_lazy(c, :advisors, fn -> Config.get(:placement_advisors) end)
    budget = Map.get_lazy(c, :budget_ms, fn -> Config.get(:placement_budget_ms) end)

    started = System.monotonic_time()

    {outcome, result} =
      case candidates do
        [] ->
          {:none, {:error, :no_suitable_nodes}}

        _ ->
          case ask_advisors(advisors, agent_spec, c, candidates, budget) do
            nil -> {:heuristic, PlacementScore.choose(candidates, c, weights)}
            advised -> {:advised, advised}
          end
      end

    Telemetry.execute(
      [:dspex, :placement, :decision],
      %{duration: System.monotonic_time() - started},
      %{outcome: outcome, node: with({:ok, node} <- result, do: node, else: (_ -> nil))}
    )

    with {:ok, node} <- result do
      SignalBus.publish(
        Signal.placement_decision(agent_spec, node, %{candidates: length(candidates)},
          scope: :local,
          priority: :low
        )
      )
    end

    result
  end

  @doc "Every member as a placement candidate (membership joined with the latest load reports)."
  @spec candidates() :: [map()]
  def candidates do
    reports = if :ets.whereis(@table) != :undefined, do: Map.new(:ets.tab2list(@table)), else: %{}
    now = System.monotonic_time(:millisecond)

    for m <- Membership.members() do
      case reports[m.node] do
        {at, load} -> if fresh?(now - at, load), do: Map.merge(load, m), else: m
        nil -> m
      end
    end
  end

  defp fresh?(age_ms, load), do: age_ms <= 5 * Map.get(load, :interval_ms, 1000)

  defp spec_constraints(%{constraints: c}), do: Map.new(c)
  defp spec_constraints(_), do: %{}

  defp ask_advisors(advisors, spec, c, candidates, budget) do
    deadline = System.monotonic_time(:millisecond) + budget
    eligible = MapSet.new(candidates, & &1.node)

    Enum.find_value(advisors, fn advisor ->
      left = deadline - System.monotonic_time(:millisecond)

      if left > 0 do
        task = Task.async(fn -> advisor.advise(spec, c, candidates, left) end)

        case Task.yield(task, left) || Task.shutdown(task, :brutal_kill) do
          {:ok, {:ok, node}} -> if MapSet.member?(eligible, node), do: {:ok, node}
          {:ok, other} -> log_fallback(advisor, other)
          nil -> log_fallback(advisor, :timeout)
          {:exit, reason} -> log_fallback(advisor, reason)
        end
      end
    end)
  end

  defp log_fallback(advisor, why) do
    Logger.debug("placement advisor #{inspect(advisor)} gave no advice: #{inspect(why)}")
    nil
  end

  # -- agent: keeps the load table -----------------------------------------------------------

  @impl true
  def init_agent(_opts) do
    table = :ets.new(@table, [:named_table, :protected, read_concurrency: true])
    {:ok, %{table: table}}
  end

  @impl true
  def routes, do: [{"cluster.load.report", :on_load_report}, {"cluster.node.down", :on_node_down}]

  @doc false
  def on_load_report(%{data: %{node: node} = load}, state) do
    :ets.insert(state.table, {node, {System.monotonic_time(:millisecond), load}})
    {:ok, [], state}
  end

  @doc false
  def on_node_down(%{data: %{node: node}}, state) do
    :ets.delete(state.table, node)
    {:ok, [], state}
  end
end
