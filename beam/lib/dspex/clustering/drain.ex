defmodule DSPEx.Clustering.Drain do
  @moduledoc """
  Which nodes are drained: nothing new is placed on them (`LoadBalancer.place/2` adds them
  to `exclude_nodes`) and the agents placed there are re-placed (`AgentPlacement`).

  Registered `:dspex_drain` on every BEAM node; each node keeps its own view from the
  cluster's signals:

    * `cluster.failure.predicted` with `probability >= :drain_probability` drains the node;
      below `:undrain_probability` it is undrained (hysteresis);
    * `cluster.node.up` after a `cluster.node.down` undrains it (a restarted node starts
      afresh, as the Python load balancer does);
    * `drain/2` and `undrain/1` do it by hand.

  **A guard**: at most `:max_drained_share` of the BEAM members (at least one node) are drained
  at a time — an overloaded cluster looks sick everywhere, and draining every node would leave
  nowhere to run. At the limit, a prediction above the lowest drained one's probability takes
  its place (that one is undrained); otherwise it is ignored (logged).

  On each new drain it tells `:dspex_agent_placement` (`{:dspex_drained, node, why}`) and
  publishes a local `cluster.rebalance.request` (`reason: :drained`).
  """
  use GenServer

  require Logger
  alias DSPEx.Clustering.{Config, Signal, SignalBus}

  @table :dspex_drained

  @doc false
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc "The drained nodes (empty when the application does not run)."
  @spec drained() :: [node()]
  def drained do
    if :ets.whereis(@table) != :undefined,
      do: :ets.select(@table, [{{:"$1", :_}, [], [:"$1"]}]),
      else: []
  end

  @doc "Drained nodes with why and when (system time, ms)."
  @spec info() :: %{node() => map()}
  def info do
    if :ets.whereis(@table) != :undefined, do: Map.new(:ets.tab2list(@table)), else: %{}
  end

  @doc "Drains `node` by hand."
  @spec drain(node(), term()) :: :ok
  def drain(node, why \\ :manual), do: GenServer.call(__MODULE__, {:drain, node, why})

  @doc "Undrains `node`."
  @spec undrain(node()) :: :ok
  def undrain(node), do: GenServer.call(__MODULE__, {:undrain, node})

  @impl true
  def init(_opts) do
    :ets.new(@table, [:named_table, :protected, read_concurrency: true])
    :ok = SignalBus.subscribe("cluster.failure.predicted")
    :ok = SignalBus.subscribe("cluster.node.*")
    {:ok, %{down: MapSet.new()}}
  end

  @impl true
  def handle_call({:drain, node, why}, _from, state) do
    put_drained(node, %{reason: why})
    {:reply, :ok, state}
  end

  def handle_call({:undrain, node}, _from, state) do
    :ets.delete(@table, node)
    {:reply, :ok, state}
  end

  @impl true
  def handle_info({:signal, %{type: "cluster.failure.predicted", data: data}}, state) do
    with %{node: node, probability: p} when is_atom(node) and is_number(p) <- data do
      cond do
        p >= Config.get(:drain_probability) ->
          guarded_drain(node, p)

        p < Config.get(:undrain_probability) ->
          :ets.delete(@table, node)

        true ->
          :ok
      end
    end

    {:noreply, state}
  end

  def handle_info({:signal, %{type: "cluster.node.down", data: %{node: node}}}, state),
    do: {:noreply, %{state | down: MapSet.put(state.down, node)}}

  def handle_info({:signal, %{type: "cluster.node.up", data: %{node: node}}}, state) do
    if MapSet.member?(state.down, node), do: :ets.delete(@table, node)
    {:noreply, %{state | down: MapSet.delete(state.down, node)}}
  end

  def handle_info(_other, state), do: {:noreply, state}

  defp guarded_drain(node, p) do
    drained = :ets.tab2list(@table)
    limit = max(1, floor(length(beam_members()) * Config.get(:max_drained_share)))

    cond do
      List.keymember?(drained, node, 0) or length(drained) < limit ->
        put_drained(node, %{reason: :predicted_failure, probability: p})

      true ->
        # at the limit: the least likely to fail among the drained makes room, if below p
        {weakest, info} = Enum.min_by(drained, fn {_, i} -> Map.get(i, :probability, 2.0) end)

        if Map.get(info, :probability, 2.0) < p do
          :ets.delete(@table, weakest)
          put_drained(node, %{reason: :predicted_failure, probability: p})
        else
          Logger.info("drain of #{node} (p=#{p}) held: #{limit} node(s) drained already")
        end
    end
  end

  defp beam_members do
    for %{kind: :beam, status: status} = m <- DSPEx.Clustering.Membership.members(),
        status != :down,
        do: m.node
  end

  defp put_drained(node, info) do
    {new?, since} =
      case :ets.lookup(@table, node) do
        [] -> {true, System.system_time(:millisecond)}
        [{_, old}] -> {false, old.since}
      end

    :ets.insert(@table, {node, Map.put(info, :since, since)})

    if new? do
      send_placement({:dspex_drained, node, info.reason})

      SignalBus.publish(
        Signal.rebalance_request([node], :drained,
          source: "drain",
          scope: :local,
          extensions: %{}
        )
      )
    end
  end

  defp send_placement(message) do
    if pid = Process.whereis(:dspex_agent_placement), do: send(pid, message)
  end
end
