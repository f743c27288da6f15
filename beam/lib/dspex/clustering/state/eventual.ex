defmodule DSPEx.Clustering.State.Eventual do
  @moduledoc """
  The `consistency: :eventual` half of `DSPEx.Clustering.State`: every BEAM node holds a
  replica (`DSPEx.Clustering.State.Replica`); a write is local, answered at once and spread as
  a delta; anti-entropy repairs what a delta missed (a partition, a node that joined late).

  Options common to every call: `table:` (default `:default`; one of `eventual_tables`).

      {:ok, version} = Eventual.put("user:1", %{name: "ada"}, [])
      {:ok, %{name: "ada"}, version} = Eventual.get("user:1", [])
      {:ok, _} = Eventual.delete("user:1", [])
      {:error, :not_found} = Eventual.get("user:1", [])

  A version is `%{stamp: hlc_stamp, context: version_vector}`: the HLC timestamp of the write
  (for a read, of the newest value returned) and the key's context. By default a write
  supersedes every value this replica holds for the key; `context: version` (or a bare
  context map) supersedes only what that read saw — pass `context: %{}` to add a value beside
  all others, which is what a `:siblings` key keeps. Concurrent values are then decided per
  key by its resolver (`register_resolver/3`, `DSPEx.Clustering.State.Resolvers`):

    * `:lww` (default) — the greatest HLC stamp wins, the others are dropped on merge;
    * `:siblings` — `get` answers `{:ok, {:siblings, values}, version}` (oldest first, also
      for one value) until a write whose context covers them replaces them;
    * a function — `get` answers `fun.(key, values)` over the live values.

  A delete removes the values it has seen; a concurrent write elsewhere survives it
  (add-wins, as in OR-maps and Riak). A replica that merges concurrent values publishes
  `cluster.consistency.conflict` (`data`: `table`, `key`, `resolution`, `dots`, `winner`,
  `node`): once per replica that sees the conflict, `dots` identifying it.
  """

  alias DSPEx.Clustering.State.{KeyState, Replica, Resolvers}

  @type version :: Replica.version()

  @doc "Writes `value` under `key` on this node's replica; `{:ok, version}`."
  @spec put(term(), term(), keyword()) :: {:ok, version()} | {:error, term()}
  def put(key, value, opts \\ []) do
    with {:ok, supersede} <- supersede(opts),
         do: Replica.write(table(opts), key, {:put, value}, supersede)
  end

  @doc "Reads `key` from this node's replica (see the module doc for what a read answers)."
  @spec get(term(), keyword()) ::
          {:ok, term() | {:siblings, [term()]}, version()} | {:error, :not_found | term()}
  def get(key, opts \\ []) do
    table = table(opts)

    case Replica.lookup(table, key) do
      {:error, _} = error -> error
      nil -> {:error, :not_found}
      {_context, []} -> {:error, :not_found}
      key_state -> {:ok, read(table, key, key_state), version(key_state)}
    end
  end

  @doc "Deletes `key` (the values this replica holds, or those `context:` covers)."
  @spec delete(term(), keyword()) :: {:ok, version()} | {:error, term()}
  def delete(key, opts \\ []) do
    with {:ok, supersede} <- supersede(opts),
         do: Replica.write(table(opts), key, :delete, supersede)
  end

  @doc "Registers `resolver` for keys matching `prefix` (see `DSPEx.Clustering.State.Resolvers`)."
  @spec register_resolver(term(), Resolvers.resolver(), keyword()) :: :ok | {:error, term()}
  def register_resolver(prefix, resolver, opts \\ []),
    do: Replica.register_resolver(table(opts), prefix, resolver)

  @doc false
  @spec read(atom(), term(), KeyState.t()) :: term() | {:siblings, [term()]}
  def read(table, key, {_context, entries}) do
    values = Enum.map(entries, &elem(&1, 1))

    case Resolvers.for_key(Replica.resolvers(table), key) do
      :siblings -> {:siblings, values}
      resolver -> elem(Resolvers.resolve(resolver, key, values), 1)
    end
  end

  @doc false
  @spec version(KeyState.t()) :: version()
  def version({context, entries}) do
    stamp =
      if entries == [], do: KeyState.max_stamp({context, []}), else: elem(List.last(entries), 0)

    %{stamp: stamp, context: context}
  end

  defp table(opts), do: Keyword.get(opts, :table, :default)

  defp supersede(opts) do
    case Keyword.fetch(opts, :context) do
      :error -> {:ok, :local}
      {:ok, %{context: context}} -> supersede(context: context)
      {:ok, context} when is_map(context) -> check_context(context)
      {:ok, other} -> {:error, {:invalid_context, other}}
    end
  end

  @doc false
  @spec check_context(term()) :: {:ok, {:context, KeyState.context()}} | {:error, term()}
  def check_context(context) do
    if valid_context?(context),
      do: {:ok, {:context, context}},
      else: {:error, {:invalid_context, context}}
  end

  @doc "True when `term` is a context / session token: `%{node => {pt, l}}`."
  @spec valid_context?(term()) :: boolean()
  def valid_context?(term) when is_map(term) do
    Enum.all?(term, fn
      {n, {pt, l}} when is_atom(n) and is_integer(pt) and is_integer(l) -> true
      _ -> false
    end)
  end

  def valid_context?(_), do: false
end
