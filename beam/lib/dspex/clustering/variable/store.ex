defmodule DSPEx.Clustering.Variable.Store do
  @moduledoc """
  Where a `:strong` Cognitive Variable's committed record lives: the strong `DSPEx.Clustering.State`
  (Ra), key `{:dspex_variable, name}`, record `%{value:, version:, stamp:, spec:}`. Every write is
  a `cas` on the State version the variable last read or wrote, so a stale duplicate instance
  (after a partition) can never commit, and a side without quorum gets `{:error, :no_quorum}`.

  `:eventual` variables are not stored here: their replicas are the `Variable.Keeper`s' copies
  on every BEAM node, kept by the `cluster.variable.sync` signals.
  """

  # Called through apply/3: State is a sibling feature and this module must compile without it.
  @state DSPEx.Clustering.State

  @doc "Whether the strong State is available on this node."
  @spec available?() :: boolean()
  def available?, do: Code.ensure_loaded?(@state) and function_exported?(@state, :cas, 4)

  @doc "The committed record and its State version."
  @spec load(term(), timeout()) :: {:ok, map(), term()} | {:error, term()}
  def load(name, timeout \\ 2_000) do
    if available?(),
      do: apply(@state, :get, [key(name), [consistency: :strong, timeout: timeout]]),
      else: {:error, :strong_state_unavailable}
  end

  @doc "Commits `record` if the stored State version is still `expected` (`:none`: absent)."
  @spec cas(term(), term(), map(), timeout()) :: {:ok, term()} | {:error, term()}
  def cas(name, expected, record, timeout \\ 2_000) do
    if available?(),
      do:
        apply(@state, :cas, [
          key(name),
          expected,
          record,
          [consistency: :strong, timeout: timeout]
        ]),
      else: {:error, :strong_state_unavailable}
  end

  defp key(name), do: {:dspex_variable, name}
end
