defmodule DSPEx.Clustering.Discovery.Static do
  @moduledoc """
  A fixed list of node names.

      {DSPEx.Clustering.Discovery.Static, nodes: [:"a@10.0.0.1", "b@10.0.0.2"]}

  Options: `:nodes` (required; atoms or strings of the form `name@host`).
  """
  @behaviour DSPEx.Clustering.Discovery.Strategy

  @impl true
  def init(opts) do
    case Keyword.fetch(opts, :nodes) do
      {:ok, nodes} when is_list(nodes) ->
        if Enum.all?(nodes, &valid_name?/1),
          do: {:ok, Enum.map(nodes, &to_node/1)},
          else: {:error, {:invalid_node_names, Enum.reject(nodes, &valid_name?/1)}}

      _ ->
        {:error, {:missing_option, :nodes}}
    end
  end

  @impl true
  def discover(nodes), do: {:ok, nodes, nodes}

  defp to_node(n) when is_atom(n), do: n
  defp to_node(n), do: String.to_atom(n)

  defp valid_name?(n) when is_atom(n) or is_binary(n),
    do: match?([_, _], String.split(to_string(n), "@"))

  defp valid_name?(_), do: false
end
