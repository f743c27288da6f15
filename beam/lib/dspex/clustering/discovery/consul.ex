defmodule DSPEx.Clustering.Discovery.Consul do
  @moduledoc """
  Reads a service's instances from Consul's catalog HTTP API,
  `GET /v1/catalog/service/<service>` (https://developer.hashicorp.com/consul/api-docs/catalog),
  and proposes one node per instance.

      {DSPEx.Clustering.Discovery.Consul,
        url: "http://127.0.0.1:8500", service: "dspex", basename: "app"}

  Options:
    * `:url` — Consul agent base URL (default `"http://127.0.0.1:8500"`).
    * `:service` (required) — the catalog service name.
    * `:basename` — name part of the proposed nodes: `basename@ServiceAddress`, falling back to
      `basename@Address` when `ServiceAddress` is empty (as Consul leaves it when the service uses the
      agent's address). Required unless every instance carries a full node name in its
      `ServiceMeta` under `:node_meta_key` (default `"erlang_node"`), which wins when present.
    * `:dc`, `:tag` — passed as the `dc` and `tag` query parameters when given.
    * `:token` — sent as the `X-Consul-Token` header when given (never logged).
    * `:timeout` — ms for the HTTP request (default 3_000).

  **Testing note:** this strategy is tested against a small HTTP server in the test suite that
  serves the documented response shape of `/v1/catalog/service/<name>` (a JSON array of objects with
  `Node`, `Address`, `ServiceAddress`, `ServicePort`, `ServiceMeta`, ...), not against a real Consul
  agent.
  """
  @behaviour DSPEx.Clustering.Discovery.Strategy

  alias DSPEx.Clustering.Discovery.{JSON, Strategy}

  @impl true
  def init(opts) do
    with {:ok, service} <- required_string(opts, :service),
         {:ok, _} <- Application.ensure_all_started(:inets) do
      {:ok,
       %{
         url: opts |> Keyword.get(:url, "http://127.0.0.1:8500") |> String.trim_trailing("/"),
         service: service,
         basename: opts[:basename] && to_string(opts[:basename]),
         meta_key: Keyword.get(opts, :node_meta_key, "erlang_node"),
         query: Enum.flat_map([:dc, :tag], &query_param(opts, &1)),
         token: opts[:token],
         timeout: Keyword.get(opts, :timeout, 3_000)
       }}
    end
  end

  @impl true
  def discover(state) do
    with {:ok, body} <- get(state),
         {:ok, entries} when is_list(entries) <- JSON.decode(body) do
      nodes = entries |> Enum.map(&entry_node(&1, state)) |> Enum.reject(&is_nil/1)
      {:ok, Enum.uniq(nodes), state}
    else
      {:ok, other} -> {:error, {:consul_unexpected_body, other}, state}
      {:error, reason} -> {:error, {:consul, reason}, state}
    end
  end

  @doc "The node an entry of the catalog response stands for, or nil when it cannot name one."
  @spec entry_node(map(), map()) :: node() | nil
  def entry_node(entry, state) when is_map(entry) do
    meta = if is_map(entry["ServiceMeta"]), do: entry["ServiceMeta"], else: %{}

    case Map.get(meta, state.meta_key) do
      full when is_binary(full) and full != "" ->
        if String.contains?(full, "@"), do: String.to_atom(full), else: nil

      _ ->
        address = non_empty(entry["ServiceAddress"]) || non_empty(entry["Address"])
        if state.basename && address, do: Strategy.node_name(state.basename, address), else: nil
    end
  end

  def entry_node(_entry, _state), do: nil

  defp get(state) do
    path = "/v1/catalog/service/" <> URI.encode(state.service, &URI.char_unreserved?/1)
    query = if state.query == [], do: "", else: "?" <> URI.encode_query(state.query)
    url = to_charlist(state.url <> path <> query)
    headers = if state.token, do: [{~c"x-consul-token", to_charlist(state.token)}], else: []

    request = {url, [{~c"accept", ~c"application/json"} | headers]}

    case :httpc.request(:get, request, [timeout: state.timeout, connect_timeout: state.timeout],
           body_format: :binary
         ) do
      {:ok, {{_, 200, _}, _headers, body}} -> {:ok, body}
      {:ok, {{_, status, _}, _headers, _body}} -> {:error, {:http_status, status}}
      {:error, reason} -> {:error, reason}
    end
  end

  defp required_string(opts, key) do
    case opts[key] do
      v when is_binary(v) and v != "" -> {:ok, v}
      v when is_atom(v) and v not in [nil, true, false] -> {:ok, Atom.to_string(v)}
      _ -> {:error, {:missing_option, key}}
    end
  end

  defp query_param(opts, key) do
    case opts[key] do
      nil -> []
      v -> [{Atom.to_string(key), to_string(v)}]
    end
  end

  defp non_empty(v) when is_binary(v) and v != "", do: v
  defp non_empty(_), do: nil
end
