defmodule DSPEx.Clustering.SignalBus.Pattern do
  @moduledoc """
  Dotted type patterns. A pattern is a type whose segments may be `*` (exactly one segment)
  or `**` (any number of segments, zero included):

      "cluster.node.down"  matches only itself
      "cluster.node.*"     matches "cluster.node.up", not "cluster.node" nor "cluster.node.a.b"
      "cluster.**"         matches "cluster.node.up" and "cluster.load.report"
      "**"                 matches every type
  """

  @segment ~r/^([a-z0-9_]+|\*|\*\*)$/

  @doc "True when `pattern` is a well-formed pattern."
  @spec valid?(term()) :: boolean()
  def valid?(pattern) when is_binary(pattern) and byte_size(pattern) > 0,
    do: pattern |> String.split(".") |> Enum.all?(&Regex.match?(@segment, &1))

  def valid?(_), do: false

  @doc "True when `type` matches `pattern`."
  @spec match?(String.t(), String.t()) :: boolean()
  def match?(pattern, pattern), do: true

  def match?(pattern, type) when is_binary(pattern) and is_binary(type),
    do: segments_match?(String.split(pattern, "."), String.split(type, "."))

  defp segments_match?([], []), do: true
  defp segments_match?(["**"], _), do: true

  defp segments_match?(["**" | rest] = pattern, [_ | more] = type),
    do: segments_match?(rest, type) or segments_match?(pattern, more)

  defp segments_match?(["**" | rest], []), do: segments_match?(rest, [])
  defp segments_match?(["*" | rest], [_ | more]), do: segments_match?(rest, more)
  defp segments_match?([same | rest], [same | more]), do: segments_match?(rest, more)
  defp segments_match?(_, _), do: false
end
