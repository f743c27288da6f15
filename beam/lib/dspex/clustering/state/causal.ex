defmodule DSPEx.Clustering.State.Causal do
  @moduledoc """
  The `consistency: :causal` half of `DSPEx.Clustering.State`: session guarantees —
  read-your-writes, monotonic reads, writes-follow-reads (and monotonic writes) — over the
  eventual replicas, with a session token the caller carries between calls and nodes.

  The token is a vector clock `%{node => {physical_ms, logical}}` (start with `%{}` or
  `new_session/0`): every write the session made or read is covered by it. Each call returns
  the next token; pass it to the next call, on any node.

      t0 = Causal.new_session()
      {:ok, _v, t1} = Causal.put(:cart, [:apple], session: t0)
      # on another node, even before the delta got there:
      {:ok, [:apple], _v, t2} = :erpc.call(other, Causal, :get, [:cart, [session: t1]])

  * `get` first waits until the local replica has seen everything the token covers
    (`Replica.await/3`, which completes on deltas and anti-entropy), at most `timeout:`
    (default `causal_timeout_ms`), else answers `{:error, :timeout}` — never an older value.
    It answers `{:ok, value, version, token}` or `{:error, :not_found, token}` (the token
    then covers the delete that was seen).
  * `put` and `delete` never wait: the write supersedes the key's values the token covers
    (and what this replica holds), so it is ordered after everything the session saw even
    where those writes have not arrived yet; its HLC stamp is above every stamp in the token.
    They answer `{:ok, version, token}`.

  A write acknowledged on a node that dies before its delta left is lost, as for any
  eventual write; a token that covers it then makes `get` time out rather than read past it.
  """

  alias DSPEx.Clustering.Config
  alias DSPEx.Clustering.State.{Eventual, KeyState, Replica}

  @type token :: KeyState.context()

  @doc "The token of a new session."
  @spec new_session() :: token()
  def new_session, do: %{}

  @doc "Writes `value` under `key` after the session's past; `{:ok, version, token}`."
  @spec put(term(), term(), keyword()) :: {:ok, Eventual.version(), token()} | {:error, term()}
  def put(key, value, opts \\ []), do: write(key, {:put, value}, opts)

  @doc "Deletes `key` after the session's past; `{:ok, version, token}`."
  @spec delete(term(), keyword()) :: {:ok, Eventual.version(), token()} | {:error, term()}
  def delete(key, opts \\ []), do: write(key, :delete, opts)

  @doc "Reads `key` once this replica has seen the session's past (see the module doc)."
  @spec get(term(), keyword()) ::
          {:ok, term(), Eventual.version(), token()}
          | {:error, :not_found, token()}
          | {:error, :timeout | term()}
  def get(key, opts \\ []) do
    table = Keyword.get(opts, :table, :default)
    timeout = Keyword.get_lazy(opts, :timeout, fn -> Config.get(:causal_timeout_ms) end)

    with {:ok, token} <- token(opts),
         :ok <- Replica.await(table, token, timeout) do
      case Replica.lookup(table, key) do
        {:error, _} = error ->
          error

        nil ->
          {:error, :not_found, token}

        {context, []} ->
          {:error, :not_found, KeyState.join_contexts(token, context)}

        {context, _} = key_state ->
          {:ok, Eventual.read(table, key, key_state), Eventual.version(key_state),
           KeyState.join_contexts(token, context)}
      end
    end
  end

  defp write(key, op, opts) do
    table = Keyword.get(opts, :table, :default)

    with {:ok, token} <- token(opts),
         {:ok, version} <- Replica.write(table, key, op, {:session, token}) do
      {:ok, version, KeyState.join_contexts(token, version.context)}
    end
  end

  defp token(opts) do
    token = Keyword.get(opts, :session) || %{}

    if Eventual.valid_context?(token),
      do: {:ok, token},
      else: {:error, {:invalid_session, token}}
  end
end
