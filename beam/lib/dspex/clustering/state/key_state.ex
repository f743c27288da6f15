defmodule DSPEx.Clustering.State.KeyState do
  @moduledoc """
  The replicated state of one key in the eventual store: a dotted version vector set
  (Preguiça, Baquero et al., "Dotted Version Vectors"), the lattice that both the delta and
  the anti-entropy transfer of a key carry.

      {context, entries}
      context :: %{node => {physical_ms, logical}}   # every write of the key this state has seen
      entries :: [{dot, value}]                      # the values not superseded, oldest first

  A *dot* is the HLC timestamp of the write that made the value (`{pt, l, node}`, unique
  cluster-wide). The context covers dot `{pt, l, n}` when `context[n] >= {pt, l}`: a state
  whose context covers a dot but holds no entry for it has seen that value superseded.

  `merge/2` is a join (commutative, associative, idempotent — property-tested), so deltas may
  arrive late, twice or out of order: an entry survives a merge when both sides hold it or
  the other side has not seen it. A write supersedes exactly the dots its context covers
  (by default everything the local replica holds), so concurrent writes stay side by side
  until a resolver decides (`prune_lww/1` for last-writer-wins) or a later write that has seen
  them replaces them. A delete is a write of no value: the context grows, the entries it has
  seen go, and the empty state is the key's tombstone.
  """

  alias DSPEx.Clustering.State.HLC

  @type context :: %{node() => {non_neg_integer(), non_neg_integer()}}
  @type entry :: {HLC.stamp(), term()}
  @type t :: {context(), [entry()]}

  @doc "The state of a key nobody wrote."
  @spec new() :: t()
  def new, do: {%{}, []}

  @doc "True when `context` has seen the write `dot`."
  @spec covered?(context(), HLC.stamp()) :: boolean()
  def covered?(context, {pt, l, n}) do
    case context do
      %{^n => seen} -> {pt, l} <= seen
      _ -> false
    end
  end

  @doc "True when `a` has seen every write `b` has seen (`a` dominates `b`)."
  @spec dominates?(context(), context()) :: boolean()
  def dominates?(a, b), do: Enum.all?(b, fn {n, pl} -> Map.get(a, n, {-1, -1}) >= pl end)

  @doc "The pointwise maximum of two contexts (also of two session tokens)."
  @spec join_contexts(context(), context()) :: context()
  def join_contexts(a, b), do: Map.merge(a, b, fn _n, x, y -> max(x, y) end)

  @doc "The context extended by one write."
  @spec add_dot(context(), HLC.stamp()) :: context()
  def add_dot(context, {pt, l, n}), do: join_contexts(context, %{n => {pt, l}})

  @doc "The join of two states of the same key."
  @spec merge(t(), t()) :: t()
  def merge({ca, ea}, {cb, eb}) do
    keep_a =
      Enum.filter(ea, fn {dot, _} -> List.keymember?(eb, dot, 0) or not covered?(cb, dot) end)

    keep_b =
      Enum.filter(eb, fn {dot, _} -> not List.keymember?(ea, dot, 0) and not covered?(ca, dot) end)

    {join_contexts(ca, cb), List.keysort(keep_a ++ keep_b, 0)}
  end

  @doc """
  A write of `value` with timestamp `dot`, superseding the entries `supersede` covers (pass
  the state's own context for "replace everything seen here").
  """
  @spec write(t(), HLC.stamp(), term(), context()) :: t()
  def write({context, entries}, dot, value, supersede) do
    kept = Enum.reject(entries, fn {d, _} -> covered?(supersede, d) end)
    {context |> join_contexts(supersede) |> add_dot(dot), List.keysort([{dot, value} | kept], 0)}
  end

  @doc "A delete stamped `dot`: the entries `supersede` covers go, nothing new is added."
  @spec delete(t(), HLC.stamp(), context()) :: t()
  def delete({context, entries}, dot, supersede) do
    kept = Enum.reject(entries, fn {d, _} -> covered?(supersede, d) end)
    {context |> join_contexts(supersede) |> add_dot(dot), kept}
  end

  @doc "Last-writer-wins: only the entry with the greatest timestamp stays."
  @spec prune_lww(t()) :: t()
  def prune_lww({_context, []} = state), do: state
  def prune_lww({context, entries}), do: {context, [List.last(entries)]}

  @doc "Drops the entries every replica has seen (`stable` covers them); used for absent keys."
  @spec drop_covered(t(), context()) :: t()
  def drop_covered({context, entries}, stable),
    do: {context, Enum.reject(entries, fn {d, _} -> covered?(stable, d) end)}

  @doc "The greatest stamp in the state's context, or nil for a new state."
  @spec max_stamp(t()) :: HLC.stamp() | nil
  def max_stamp({context, _}) do
    context |> Enum.map(fn {n, {pt, l}} -> {pt, l, n} end) |> Enum.max(fn -> nil end)
  end

  @doc "A digest of the state (its context and dots), equal on replicas that hold the same."
  @spec digest(t()) :: non_neg_integer()
  def digest({context, entries}),
    do: :erlang.phash2({Enum.sort(context), Enum.map(entries, &elem(&1, 0))}, 4_294_967_296)
end
