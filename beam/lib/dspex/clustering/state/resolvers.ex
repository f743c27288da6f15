defmodule DSPEx.Clustering.State.Resolvers do
  @moduledoc """
  Which resolver decides a key's concurrent writes in the eventual store, by key prefix.

  A resolver is one of

    * `:lww` — last writer wins on the HLC timestamp (the default for every key);
    * `:siblings` — all concurrent values are kept; `get` returns `{:siblings, values}`;
    * a function `fun(key, values) -> value`, or `{module, function}` naming one, given the
      concurrent live values oldest first (by HLC). It must be deterministic and should not
      depend on the order of `values` (set union, max, sum of increments, …): every replica
      applies it to the same values at read time and must answer the same.

  ## Prefixes
  A prefix matches a key when

    * both are binaries and the key starts with the prefix (`"user:"` matches `"user:42"`);
    * both are tuples and the prefix's elements equal the key's first elements
      (`{:session}` and `{:session, 7}` match `{:session, 7, :cart}`);
    * both are lists and the prefix is the key's head (`[:a]` matches `[:a, :b]`);
    * otherwise when prefix and key are equal (an atom or number names one key).

  The longest matching prefix wins (bytes for binaries, elements for tuples and lists); a key
  no prefix matches uses `:lww`. Registrations are spread to every replica of the table and
  reach late joiners through anti-entropy; the latest registration of a prefix (by HLC) wins.
  Register before writing the keys: a replica that still resolved a key by LWW when a
  concurrent write arrived has already dropped the loser.
  """

  alias DSPEx.Clustering.State.HLC

  @type resolver :: :lww | :siblings | (term(), [term()] -> term()) | {module(), atom()}
  @type table :: %{term() => {HLC.stamp(), resolver()}}

  @doc "Checks a resolver given by a user."
  @spec validate(term()) :: :ok | {:error, {:invalid_resolver, term()}}
  def validate(r) when r in [:lww, :siblings], do: :ok
  def validate(f) when is_function(f, 2), do: :ok
  def validate({m, f}) when is_atom(m) and is_atom(f), do: :ok
  def validate(other), do: {:error, {:invalid_resolver, other}}

  @doc "The resolver of `key` in `table`."
  @spec for_key(table(), term()) :: resolver()
  def for_key(table, key) do
    table
    |> Enum.filter(fn {prefix, _} -> prefix?(prefix, key) end)
    |> Enum.max_by(fn {prefix, _} -> prefix_size(prefix) end, fn -> nil end)
    |> case do
      nil -> :lww
      {_prefix, {_stamp, resolver}} -> resolver
    end
  end

  @doc "True when `prefix` matches `key` (see the module doc)."
  @spec prefix?(term(), term()) :: boolean()
  def prefix?(prefix, key) when is_binary(prefix) and is_binary(key),
    do: :binary.longest_common_prefix([prefix, key]) == byte_size(prefix)

  def prefix?(prefix, key) when is_tuple(prefix) and is_tuple(key) do
    n = tuple_size(prefix)
    n <= tuple_size(key) and Enum.all?(1..n//1, &(elem(prefix, &1 - 1) == elem(key, &1 - 1)))
  end

  def prefix?(prefix, key) when is_list(prefix) and is_list(key),
    do: List.starts_with?(key, prefix)

  def prefix?(prefix, key), do: prefix === key

  defp prefix_size(p) when is_binary(p), do: byte_size(p)
  defp prefix_size(p) when is_tuple(p), do: tuple_size(p)
  defp prefix_size(p) when is_list(p), do: length(p)
  defp prefix_size(_), do: 0

  @doc "Joins two registration tables: per prefix, the later registration wins."
  @spec merge(table(), table()) :: table()
  def merge(a, b), do: Map.merge(a, b, fn _p, x, y -> max(x, y) end)

  @doc """
  The value a read answers for `values` (live, oldest first): `{:ok, value}` for one value or
  a resolver that picks one, `{:siblings, values}` for `:siblings` with several.
  """
  @spec resolve(resolver(), term(), [term()]) :: {:ok, term()} | {:siblings, [term()]}
  def resolve(_resolver, _key, [value]), do: {:ok, value}
  def resolve(:lww, _key, values), do: {:ok, List.last(values)}
  def resolve(:siblings, _key, values), do: {:siblings, values}
  def resolve({m, f}, key, values), do: {:ok, apply(m, f, [key, values])}
  def resolve(fun, key, values) when is_function(fun, 2), do: {:ok, fun.(key, values)}

  @doc "The name a conflict signal gives the resolution: `:lww`, `:siblings` or `:custom`."
  @spec kind(resolver()) :: :lww | :siblings | :custom
  def kind(r) when r in [:lww, :siblings], do: r
  def kind(_), do: :custom
end
