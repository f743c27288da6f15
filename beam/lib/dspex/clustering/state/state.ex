defmodule DSPEx.Clustering.State do
  @moduledoc """
  Cluster state that survives failures: one API, three consistencies.

      State.put(key, value, consistency: :strong)            # {:ok, version} | {:error, :no_quorum | :timeout | ...}
      State.get(key, consistency: :strong)                   # {:ok, value, version} | {:error, :not_found | ...}
      State.cas(key, expected_version, value, consistency: :strong)
                                                             # {:ok, version} | {:error, {:version_mismatch, current}}
      State.delete(key, consistency: :strong)                # :ok | {:error, ...}
      State.put(key, value, consistency: :causal, session: token)   # {:ok, version, new_token}
      State.status()                                         # %{leader:, members:, term:, commit_index:, lag:, ...}

  * `:strong` — linearizable, on a Ra (Raft) group of `replication_factor` BEAM nodes
    (`DSPEx.Clustering.State.Strong`, formed by `DSPEx.Clustering.State.ConsistencyManager`).
    Versions are positive integers (the Raft index of the write), increasing per key and never
    reused, also across a delete. `cas` with `expected_version` `:none` succeeds only if the key
    is absent; a mismatch answers `{:error, {:version_mismatch, current}}` with `current` the
    key's version or `:none` — so a key deleted while a `cas` is in flight makes that `cas` fail
    with `{:version_mismatch, :none}` (the cas is ordered after the delete), or the cas wins
    and the delete, ordered after it, removes its value. A call that cannot reach a majority
    answers `{:error, :no_quorum}` within its timeout (`timeout:`, default `state_timeout_ms`,
    5 s); `{:error, :timeout}` means a majority was reachable but nothing committed in time. After
    either error a write may or may not have been applied, but never more than once.
  * `:eventual` — every BEAM node holds a replica (`DSPEx.Clustering.State.Eventual`).
  * `:causal` — session guarantees over eventual (`DSPEx.Clustering.State.Causal`).

  Options: `consistency:` (default: the node's `consistency` setting — `:eventual` in the
  development profile, `:strong` in production), `timeout:` (ms), `request_id:` (strong: a
  cluster-wide unique term; a call repeated with the same id — e.g. through another node after
  a lost connection — is applied at most once and answers the first reply), and what the chosen
  consistency takes (e.g. `session:` for `:causal`). Keys and values are any Erlang terms; a
  value larger than `max_value_bytes` (default 1 MiB, in external term format) is refused with
  `{:error, {:value_too_large, size, max}}` and nothing is written. An unknown consistency
  answers `{:error, {:unsupported_consistency, c}}`.
  """

  alias DSPEx.Clustering.Config
  alias DSPEx.Clustering.State.{ConsistencyManager, Strong}

  @type consistency :: :strong | :eventual | :causal
  @type version :: term()

  @backends %{
    eventual: DSPEx.Clustering.State.Eventual,
    causal: DSPEx.Clustering.State.Causal
  }

  @doc "Writes `value` under `key`."
  @spec put(term(), term(), keyword()) ::
          {:ok, version()} | {:ok, version(), term()} | {:error, term()}
  def put(key, value, opts \\ []) do
    with :ok <- check_size(value) do
      dispatch(opts, :put, [key, value, opts], fn -> Strong.put(key, value, opts) end)
    end
  end

  @doc "Reads `key`: `{:ok, value, version}` or `{:error, :not_found}`."
  @spec get(term(), keyword()) :: {:ok, term(), version()} | tuple()
  def get(key, opts \\ []), do: dispatch(opts, :get, [key, opts], fn -> Strong.get(key, opts) end)

  @doc "Writes `value` only if `key`'s version is `expected_version` (`:none`: the key is absent)."
  @spec cas(term(), version() | :none, term(), keyword()) :: {:ok, version()} | {:error, term()}
  def cas(key, expected_version, value, opts \\ []) do
    with :ok <- check_size(value) do
      dispatch(opts, :cas, [key, expected_version, value, opts], fn ->
        Strong.cas(key, expected_version, value, opts)
      end)
    end
  end

  @doc "Removes `key` (`:ok` also when it was absent)."
  @spec delete(term(), keyword()) :: :ok | tuple()
  def delete(key, opts \\ []),
    do: dispatch(opts, :delete, [key, opts], fn -> Strong.delete(key, opts) end)

  @doc """
  The strong group as this node sees it: `leader`, `members` (nodes), `term`, `commit_index`,
  `last_applied`, `snapshot_index`, `lag` (entries behind the leader's commit index, per member),
  `replication_factor`, `consistency` (this node's default), `local_member`.
  """
  @spec status() :: map()
  def status, do: ConsistencyManager.status()

  @doc """
  Registers how concurrent `:eventual`/`:causal` writes of keys matching `prefix` resolve:
  `:lww` (default), `:siblings`, or `fun(key, values) -> value` / `{module, function}` — on
  every replica of the table (`table:` option). Prefix rules: `DSPEx.Clustering.State.Resolvers`.
  """
  @spec register_resolver(term(), term(), keyword()) :: :ok | {:error, term()}
  def register_resolver(prefix, resolver, opts \\ []),
    do: DSPEx.Clustering.State.Eventual.register_resolver(prefix, resolver, opts)

  @doc "The consistency used when a call gives none (this node's `consistency` setting)."
  @spec default_consistency() :: consistency()
  def default_consistency, do: Config.get(:consistency)

  defp dispatch(opts, fun, args, strong) do
    case Keyword.get_lazy(opts, :consistency, &default_consistency/0) do
      :strong ->
        strong.()

      other ->
        module = Map.get(@backends, other)

        if module && Code.ensure_loaded?(module) && function_exported?(module, fun, length(args)),
          do: apply(module, fun, args),
          else: {:error, {:unsupported_consistency, other}}
    end
  end

  defp check_size(value) do
    max = Config.get(:max_value_bytes)
    size = :erlang.external_size(value)
    if size > max, do: {:error, {:value_too_large, size, max}}, else: :ok
  end
end
