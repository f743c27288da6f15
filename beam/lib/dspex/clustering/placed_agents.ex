defmodule DSPEx.Clustering.PlacedAgents do
  @moduledoc """
  The DynamicSupervisor (registered `:dspex_placed_agents`) on every BEAM node under which
  `AgentPlacement` starts the agents it places there. Children are `:temporary`: when one
  dies, its placer decides where it runs again.
  """
  use DynamicSupervisor

  @doc false
  def start_link(opts \\ []),
    do: DynamicSupervisor.start_link(__MODULE__, opts, name: :dspex_placed_agents)

  @impl true
  def init(_opts), do: DynamicSupervisor.init(strategy: :one_for_one)

  @doc "Starts `{m, f, a}` (which must return `{:ok, pid}`) here, as a temporary child."
  @spec start_child({module(), atom(), list()}) :: DynamicSupervisor.on_start_child()
  def start_child({m, f, a}) do
    spec = %{id: make_ref(), start: {m, f, a}, restart: :temporary, shutdown: 1_000}
    DynamicSupervisor.start_child(:dspex_placed_agents, spec)
  end

  @doc "How many placed agents run here."
  @spec count() :: non_neg_integer()
  def count, do: DynamicSupervisor.count_children(:dspex_placed_agents).active
end
