defmodule DSPEx.Clustering.State.EventualSupervisor do
  @moduledoc "Starts one `DSPEx.Clustering.State.Replica` per table in `eventual_tables`."
  use Supervisor

  alias DSPEx.Clustering.Config
  alias DSPEx.Clustering.State.Replica

  @spec start_link(term()) :: Supervisor.on_start()
  def start_link(_arg), do: Supervisor.start_link(__MODULE__, :ok, name: __MODULE__)

  @impl true
  def init(:ok) do
    Config.get(:eventual_tables)
    |> Enum.map(&Replica.child_spec/1)
    |> Supervisor.init(strategy: :one_for_one)
  end
end
