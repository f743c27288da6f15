defmodule DSPEx.Clustering.Migration.DrainMover do
  @moduledoc """
  Moves this node's agents with cluster-wide ids away, with their state, when this node is
  drained (`DSPEx.Clustering.Drain` publishes a local `cluster.rebalance.request` with
  `reason: :drained` naming it). Each goes where `DSPEx.Clustering.place/2` says among the other
  BEAM nodes (drained ones excluded), one migration at a time, in a process of its own. Only the
  drained node moves its own agents, so no two nodes race to move one. Agents started by
  `AgentPlacement` without an id are still restarted elsewhere by it, without state.
  """
  use GenServer
  require Logger

  alias DSPEx.Clustering.{Migration, SignalBus}
  alias DSPEx.Clustering.Migration.Registry

  @doc false
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @impl true
  def init(_opts) do
    :ok = SignalBus.subscribe("cluster.rebalance.request")
    {:ok, %{mover: nil}}
  end

  @impl true
  def handle_info({:signal, %{data: %{reason: :drained, nodes: nodes}}}, %{mover: nil} = s) do
    if node() in List.wrap(nodes) do
      {pid, _ref} = spawn_monitor(fn -> move_all() end)
      {:noreply, %{s | mover: pid}}
    else
      {:noreply, s}
    end
  end

  def handle_info({:DOWN, _ref, :process, pid, _}, %{mover: pid} = s),
    do: {:noreply, %{s | mover: nil}}

  def handle_info(_other, s), do: {:noreply, s}

  @doc "Migrates every agent with an id that runs here; `[{id, result}]`."
  @spec move_all() :: [{Registry.id(), term()}]
  def move_all do
    for id <- Registry.ids(), pid = Registry.whereis(id), pid != nil, node(pid) == node() do
      result =
        case DSPEx.Clustering.place(%{id: id}, kinds: [:beam], exclude_nodes: [node()]) do
          {:ok, target} when target != node() -> Migration.migrate(id, target)
          other -> {:error, {:no_target, other}}
        end

      Logger.info("drained: #{inspect(id, limit: 5)} -> #{inspect(result, limit: 8)}")
      {id, result}
    end
  end
end
