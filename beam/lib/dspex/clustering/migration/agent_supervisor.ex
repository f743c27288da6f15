defmodule DSPEx.Clustering.Migration.AgentSupervisor do
  @moduledoc """
  The DynamicSupervisor (registered `:dspex_cluster_agents`) on every BEAM node under which
  agents with a cluster-wide id run — started there by `Migration.start_agent/3` (from any
  node, not linked to the caller), by a migration's target side, or by a `Variable.Keeper`
  restarting a variable. Children are `:temporary`: a variable that dies is restarted by the
  keepers from its last persisted value, wherever that is best, not blindly here.
  """
  use DynamicSupervisor

  @name :dspex_cluster_agents

  @doc false
  def start_link(opts \\ []), do: DynamicSupervisor.start_link(__MODULE__, opts, name: @name)

  @impl true
  def init(_opts), do: DynamicSupervisor.init(strategy: :one_for_one)

  @doc "Starts agent `module` (its `start_link(opts)`) here."
  @spec start_child(module(), keyword()) :: DynamicSupervisor.on_start_child()
  def start_child(module, opts) do
    spec = %{
      id: make_ref(),
      start: {module, :start_link, [opts]},
      restart: :temporary,
      shutdown: 1_000
    }

    DynamicSupervisor.start_child(@name, spec)
  end
end
