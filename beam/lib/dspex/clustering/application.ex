defmodule DSPEx.Clustering.Application do
  @moduledoc """
  The OTP application: the agent registry and the signal bus first (its `:pg` scope and
  relay), then membership, health, load and placement, and discovery last.
  """
  use Application

  require Logger
  alias DSPEx.Clustering.{Config, Names}

  @impl true
  def start(_type, _args) do
    Logger.configure(level: Config.get(:log_level))
    remove_launcher_cookie(System.get_env("DSPEX_NODE_HOME"))
    apply_cookie(System.get_env("DSPEX_COOKIE"), Config.get(:cookie_file))

    children =
      [
        # first: every other process may emit telemetry events into its table
        DSPEx.Clustering.Metrics,
        {Registry, keys: :unique, name: DSPEx.Clustering.AgentRegistry},
        %{id: :pg, start: {:pg, :start_link, [Names.signal_bus()]}},
        DSPEx.Clustering.SignalBus.Relay,
        # eventual-state replicas (one per table) on the signal bus's :pg scope
        DSPEx.Clustering.State.EventualSupervisor,
        DSPEx.Clustering.Membership,
        DSPEx.Clustering.HealthSensor,
        DSPEx.Clustering.LoadReporter,
        DSPEx.Clustering.LoadBalancer,
        # the Python advisor, drained nodes, placed agents
        DSPEx.Clustering.PlacementServices,
        # the strong state's Ra group (needs membership)
        DSPEx.Clustering.State.ConsistencyManager,
        # agents with cluster-wide ids (migratable), Cognitive Variables (need the state)
        DSPEx.Clustering.Migration.AgentSupervisor,
        DSPEx.Clustering.Variable.Keeper,
        # a drained node moves its agents with ids away, with their state
        DSPEx.Clustering.Migration.DrainMover,
        # last: connecting to other nodes starts once everything that watches them runs
        DSPEx.Clustering.NodeDiscovery
      ] ++ metrics_endpoint(Config.get(:metrics_port))

    Supervisor.start_link(children, strategy: :one_for_one, name: DSPEx.Clustering.Supervisor)
  end

  defp metrics_endpoint(nil), do: []

  defp metrics_endpoint(port),
    do: [{DSPEx.Clustering.Metrics.HTTP, port: port, bind: Config.get(:metrics_bind)}]

  # bin/dspex-node gives the node a private HOME whose .erlang.cookie the runtime read when
  # distribution started (before any application): the credential need not stay on disk.
  defp remove_launcher_cookie(nil), do: :ok

  defp remove_launcher_cookie(home) do
    path = Path.join(home, ".erlang.cookie")

    case File.rm(path) do
      :ok -> :ok
      {:error, :enoent} -> :ok
      {:error, reason} -> Logger.error("dspex_cluster: cannot remove #{path}: #{inspect(reason)}")
    end
  end

  # Nodes started otherwise (mix run, tests): the cookie is the only credential; it comes from
  # the environment (DSPEX_COOKIE, removed once read) or a file, never from argv, and is never
  # logged. Such nodes run with another cookie until here; bin/dspex-node avoids that window.
  defp apply_cookie(nil, nil), do: :ok

  defp apply_cookie(nil, path) do
    case File.read(path) do
      {:ok, text} ->
        set_cookie(String.trim(text))

      {:error, reason} ->
        Logger.error("dspex_cluster: cannot read cookie file #{path}: #{inspect(reason)}")
    end
  end

  defp apply_cookie(cookie, _path) do
    System.delete_env("DSPEX_COOKIE")
    set_cookie(cookie)
  end

  defp set_cookie(""), do: Logger.error("dspex_cluster: empty cookie ignored")
  defp set_cookie(_cookie) when node() == :nonode@nohost, do: :ok
  defp set_cookie(cookie), do: :erlang.set_cookie(node(), String.to_atom(cookie))
end
