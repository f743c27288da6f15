defmodule DSPEx.Clustering.PlacementServices do
  @moduledoc """
  The processes placement needs beyond the `LoadBalancer` front: the Python advisor's table
  (`PythonAdvisor`), the drained nodes (`Drain`), the supervisor of agents placed on this node
  (`PlacedAgents`) and the registry of agents this node placed (`AgentPlacement`).
  """
  use Supervisor

  @doc false
  def start_link(opts \\ []), do: Supervisor.start_link(__MODULE__, opts, name: __MODULE__)

  @impl true
  def init(_opts) do
    Supervisor.init(
      [
        DSPEx.Clustering.PythonAdvisor,
        DSPEx.Clustering.Drain,
        DSPEx.Clustering.PlacedAgents,
        DSPEx.Clustering.AgentPlacement
      ],
      strategy: :one_for_one
    )
  end
end
