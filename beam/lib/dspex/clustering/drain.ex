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

  On each new drain it tells `:dspex_agent_placement` (`{:dspex_drained, node, why}`) and
  publishes a local `cluster.rebalance.request` (`reason: :drained`).
  """
  use GenServer

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
          put_drained(node, %{reason: :predicted_failure, probability: p})

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

  defp put_drained(node, info) do
    new? = :ets.lookup(@table, node) == []
    :ets.insert(@table, {node, Map.put(info, :since, System.system_time(:millisecond))})

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
