defmodule DSPEx.Clustering.Application do
  @moduledoc "The OTP application: starts the clustering agents under one supervisor."
  use Application

  @impl true
  def start(_type, _args) do
    children = []
    Supervisor.start_link(children, strategy: :one_for_one, name: DSPEx.Clustering.Supervisor)
  end
end
