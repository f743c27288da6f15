defmodule DSPEx.Test.Resolvers do
  @moduledoc "Custom resolvers for the eventual-state tests (compiled, so every peer has them)."

  @doc "Set union of concurrent list values, sorted (deterministic in any order)."
  @spec union(term(), [list()]) :: list()
  def union(_key, values), do: values |> Enum.concat() |> Enum.uniq() |> Enum.sort()
end
