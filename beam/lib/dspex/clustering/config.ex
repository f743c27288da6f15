defmodule DSPEx.Clustering.Config do
  @moduledoc """
  Settings: a profile (`:development` or `:production`, app env `:profile`) gives defaults;
  any key set in the `:dspex_cluster` application environment overrides the profile value on
  that node (`config/*.exs`, `config/runtime.exs` reading `DSPEX_*` variables, `-dspex_cluster
  key value` on the `erl` command line, or `Application.put_env/3` before the app starts).

  | key | development | production | meaning |
  |---|---|---|---|
  | `:discovery` | `[:epmd]` | `[:dns]` | discovery strategies, in order |
  | `:hosts` | `["127.0.0.1"]` | `[]` | hosts for the EPMD strategy |
  | `:discovery_interval_ms` | 2_000 | 5_000 | how often strategies poll |
  | `:heartbeat_interval_ms` | 100 | 100 | membership heartbeats to each BEAM member |
  | `:check_interval_ms` | 50 | 50 | how often phi is evaluated |
  | `:phi_threshold` | 8.0 | 8.0 | suspect at or above this phi |
  | `:min_std_dev_ms` | 100 | 100 | floor on the inter-arrival std dev |
  | `:acceptable_pause_ms` | 0 | 100 | added to the mean interval |
  | `:detector_window` | 100 | 200 | inter-arrival samples kept per node |
  | `:health_interval_ms` | 2_000 | 10_000 | `cluster.health.data` period |
  | `:load_interval_ms` | 1_000 | 5_000 | `cluster.load.report` period |
  | `:capabilities` | `[]` | `[]` | this node's capabilities (atoms), used by placement |
  | `:placement_weights` | see below | same | score weights |
  | `:placement_advisors` | `[PythonAdvisor]` | same | modules asked first (see `DSPEx.Clustering.LoadBalancer`) |
  | `:drain_probability` | 0.5 | 0.5 | a `cluster.failure.predicted` at or above drains the node (`Drain`) |
  | `:undrain_probability` | 0.3 | 0.3 | below this the node is undrained |
  | `:max_drained_share` | 0.34 | 0.34 | at most this share of BEAM members (at least 1) drained |
  | `:placement_budget_ms` | 50 | 100 | time budget for the advisors |
  | `:cluster_name` | `"dspex"` | `"dspex"` | nodes of other clusters are refused by discovery |
  | `:cookie_file` | nil | nil | read the cookie from this file at start (not logged) |
  | `:consistency` | `:eventual` | `:strong` | `DSPEx.Clustering.State`'s default consistency |
  | `:replication_factor` | 1 | 3 | members of the strong state's Ra group |
  | `:state_timeout_ms` | 5_000 | 5_000 | default timeout of a strong call |
  | `:max_value_bytes` | 1_048_576 | 1_048_576 | largest value (external term format) |
  | `:state_dir` | nil | nil | Ra's data go to `<state_dir>/<node>` (nil: `<tmp>/dspex-state`) |
  | `:state_voter` | true | true | this node may be a member of the strong group (else a client) |
  | `:state_snapshot_every` | 10_000 | 10_000 | strong commands applied between snapshots |
  | `:state_lag_threshold` | 1_000 | 1_000 | entries behind before `cluster.consistency.lag` |
  | `:state_check_interval_ms` | 500 | 500 | how often the ConsistencyManager checks the group |
  | `:state_member_down_after_ms` | 10_000 | 30_000 | a member down this long is replaced |
  | `:state_form_after_ms` | 2_000 | 3_000 | a node waits this long before forming a group |
  | `:mode` | `:node` | `:node` | `:library`: the application is a dependency of another one and its discovery strategies start only when `:discovery` is set explicitly (no strategies otherwise) |
  | `:metrics_port` | nil | nil | serve Prometheus `/metrics` on this port (`Metrics.HTTP`) |
  | `:metrics_bind` | `"127.0.0.1"` | `"0.0.0.0"` | address the metrics endpoint listens on |
  | `:eventual_tables` | `[:default]` | `[:default]` | eventual-state tables this node replicates |
  | `:eventual_anti_entropy_ms` | 1_000 | 2_000 | anti-entropy round period of each replica |
  | `:eventual_fanout` | 3 | 3 | peers pinged per anti-entropy round |
  | `:causal_timeout_ms` | 5_000 | 5_000 | how long a causal call waits for its session's past |
  | `:max_clock_drift_ms` | 60_000 | 60_000 | a stamp further ahead is not adopted by the HLC |
  | `:log_level` | `:info` | `:notice` | the node's Logger level, set when the application starts |
  """

  @weights %{cpu: 0.30, memory: 0.25, agents: 0.20, network: 0.15, capability: 0.10}

  @profiles %{
    development: %{
      discovery: [:epmd],
      hosts: ["127.0.0.1"],
      discovery_interval_ms: 2_000,
      heartbeat_interval_ms: 100,
      check_interval_ms: 50,
      phi_threshold: 8.0,
      min_std_dev_ms: 100,
      acceptable_pause_ms: 0,
      detector_window: 100,
      health_interval_ms: 2_000,
      load_interval_ms: 1_000,
      capabilities: [],
      placement_weights: @weights,
      placement_advisors: [DSPEx.Clustering.PythonAdvisor],
      drain_probability: 0.5,
      undrain_probability: 0.3,
      max_drained_share: 0.34,
      placement_budget_ms: 50,
      cluster_name: "dspex",
      cookie_file: nil,
      consistency: :eventual,
      replication_factor: 1,
      state_timeout_ms: 5_000,
      max_value_bytes: 1_048_576,
      state_dir: nil,
      state_voter: true,
      state_snapshot_every: 10_000,
      state_lag_threshold: 1_000,
      state_check_interval_ms: 500,
      state_member_down_after_ms: 10_000,
      state_form_after_ms: 2_000,
      metrics_port: nil,
      metrics_bind: "127.0.0.1",
      eventual_tables: [:default],
      eventual_anti_entropy_ms: 1_000,
      eventual_fanout: 3,
      causal_timeout_ms: 5_000,
      max_clock_drift_ms: 60_000,
      log_level: :info
    },
    production: %{
      discovery: [:dns],
      hosts: [],
      discovery_interval_ms: 5_000,
      heartbeat_interval_ms: 100,
      check_interval_ms: 50,
      phi_threshold: 8.0,
      min_std_dev_ms: 100,
      acceptable_pause_ms: 100,
      detector_window: 200,
      health_interval_ms: 10_000,
      load_interval_ms: 5_000,
      capabilities: [],
      placement_weights: @weights,
      placement_advisors: [DSPEx.Clustering.PythonAdvisor],
      drain_probability: 0.5,
      undrain_probability: 0.3,
      max_drained_share: 0.34,
      placement_budget_ms: 100,
      cluster_name: "dspex",
      cookie_file: nil,
      consistency: :strong,
      replication_factor: 3,
      state_timeout_ms: 5_000,
      max_value_bytes: 1_048_576,
      state_dir: nil,
      state_voter: true,
      state_snapshot_every: 10_000,
      state_lag_threshold: 1_000,
      state_check_interval_ms: 500,
      state_member_down_after_ms: 30_000,
      state_form_after_ms: 3_000,
      metrics_port: nil,
      metrics_bind: "0.0.0.0",
      eventual_tables: [:default],
      eventual_anti_entropy_ms: 2_000,
      eventual_fanout: 3,
      causal_timeout_ms: 5_000,
      max_clock_drift_ms: 60_000,
      log_level: :notice
    }
  }

  @doc "The active profile name."
  @spec profile() :: :development | :production
  def profile do
    case Application.get_env(:dspex_cluster, :profile, :development) do
      p when p in [:development, "development"] -> :development
      p when p in [:production, "production"] -> :production
    end
  end

  @doc "The settings of `profile` before per-node overrides."
  @spec profile_defaults(:development | :production) :: map()
  def profile_defaults(profile), do: Map.fetch!(@profiles, profile)

  @doc """
  The value of `key`: the node's app env if set, else the active profile's (in `:library`
  mode, `:discovery` defaults to `[]`: a host application connects nodes itself unless it
  configures discovery).
  """
  @spec get(atom()) :: term()
  def get(key) do
    case Application.fetch_env(:dspex_cluster, key) do
      {:ok, value} -> value
      :error when key == :discovery -> if library?(), do: [], else: profile_default(key)
      :error -> profile_default(key)
    end
  end

  defp profile_default(key), do: Map.fetch!(profile_defaults(profile()), key)

  defp library?, do: Application.get_env(:dspex_cluster, :mode, :node) in [:library, "library"]

  @doc "All effective settings."
  @spec all() :: map()
  def all, do: Map.new(Map.keys(profile_defaults(profile())), &{&1, get(&1)})
end
