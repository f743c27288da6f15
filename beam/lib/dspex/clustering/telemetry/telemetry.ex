defmodule DSPEx.Clustering.Telemetry do
  @moduledoc """
  The events this application emits, `:telemetry`-style (`event`, `measurements`, `metadata`).

  Every event goes to `DSPEx.Clustering.Metrics` (the Prometheus counters and histograms of
  this node) and, when the host release carries the `:telemetry` library, to
  `:telemetry.execute/3` as well, so an application that embeds this one can attach its own
  handlers. The library itself is not a dependency: it is not packaged by Debian, the only
  source of Erlang libraries this project installs from.

  | event | measurements | metadata |
  |---|---|---|
  | `[:dspex, :membership, :transition]` | `count: 1` | `node`, `kind`, `status` (`:up \\| :suspect \\| :down`) |
  | `[:dspex, :placement, :decision]` | `duration` (native time units) | `outcome` (`:advised \\| :heuristic \\| :none`), `node` |
  | `[:dspex, :signal, :published]` | `recipients` | `type`, `scope` |

  State, partition and migration signals are counted through `[:dspex, :signal, :published]`
  by type (`cluster.partition.*`, `cluster.migration.*`, `cluster.consensus.*`).
  """

  alias DSPEx.Clustering.Metrics

  @type event :: [atom(), ...]

  @doc "Emits `event`: to this node's metrics, and to `:telemetry` when it is loaded."
  @spec execute(event(), map(), map()) :: :ok
  def execute(event, measurements, metadata) do
    Metrics.observe(event, measurements, metadata)

    if telemetry_loaded?() do
      # a dynamic call: :telemetry is optional and absent at compile time
      apply(:telemetry, :execute, [event, measurements, metadata])
    end

    :ok
  end

  defp telemetry_loaded? do
    case :persistent_term.get({__MODULE__, :telemetry?}, nil) do
      nil ->
        loaded = Code.ensure_loaded?(:telemetry)
        :persistent_term.put({__MODULE__, :telemetry?}, loaded)
        loaded

      loaded ->
        loaded
    end
  end
end
