defmodule DSPEx.Clustering.Application do
  @moduledoc """
  The OTP application: the signal bus first (its `:pg` scope and relay), then the agents.
  Discovery starts last, when `DSPEx.Clustering.NodeDiscovery` is part of the build.
  """
  use Application

  require Logger
  alias DSPEx.Clustering.{Config, Names}

  @impl true
  def start(_type, _args) do
    apply_cookie_file(Config.get(:cookie_file))

    children =
      [
        {Registry, keys: :unique, name: DSPEx.Clustering.AgentRegistry},
        %{id: :pg, start: {:pg, :start_link, [Names.signal_bus()]}},
        DSPEx.Clustering.SignalBus.Relay,
        DSPEx.Clustering.Membership,
        DSPEx.Clustering.HealthSensor,
        DSPEx.Clustering.LoadReporter,
        DSPEx.Clustering.LoadBalancer
      ] ++ optional_children()

    Supervisor.start_link(children, strategy: :one_for_one, name: DSPEx.Clustering.Supervisor)
  end

  defp optional_children do
    [DSPEx.Clustering.NodeDiscovery]
    |> Enum.filter(&Code.ensure_loaded?/1)
  end

  # The cookie is the only credential: read it from a file, never log it.
  defp apply_cookie_file(nil), do: :ok

  defp apply_cookie_file(path) do
    case File.read(path) do
      {:ok, text} when node() != :nonode@nohost ->
        :erlang.set_cookie(node(), text |> String.trim() |> String.to_atom())

      {:ok, _} ->
        :ok

      {:error, reason} ->
        Logger.error("dspex_cluster: cannot read cookie file #{path}: #{inspect(reason)}")
    end
  end
end
