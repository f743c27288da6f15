defmodule DSPEx.Clustering.Metrics.HTTP do
  @moduledoc """
  Serves `GET /metrics` (this node's `DSPEx.Clustering.Metrics`) on `:metrics_port` with OTP's
  own `:inets` httpd, bound to `:metrics_bind` (default `127.0.0.1`; `0.0.0.0` in
  containers). Any other path is a 404. Started by the application only when `:metrics_port`
  is set (`bin/dspex-node --metrics-port P`, or `DSPEX_METRICS_PORT`).
  """
  require Record

  Record.defrecordp(:mod, Record.extract(:mod, from_lib: "inets/include/httpd.hrl"))

  @doc false
  def child_spec(opts),
    do: %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}, type: :worker}

  @doc "Starts httpd linked to the caller; `opts`: `:port`, `:bind` (an address string)."
  @spec start_link(keyword()) :: {:ok, pid()} | {:error, term()}
  def start_link(opts) do
    root = Path.join(System.tmp_dir!(), "dspex_metrics_httpd")
    File.mkdir_p!(root)
    {:ok, ip} = :inet.parse_address(to_charlist(Keyword.get(opts, :bind, "127.0.0.1")))

    :inets.start(
      :httpd,
      [
        port: Keyword.fetch!(opts, :port),
        bind_address: ip,
        server_name: ~c"dspex_metrics",
        server_root: to_charlist(root),
        document_root: to_charlist(root),
        modules: [__MODULE__],
        keep_alive: false
      ],
      :stand_alone
    )
  end

  @doc "The port httpd listens on (useful when started with port 0)."
  @spec port(pid()) :: :inet.port_number()
  def port(pid), do: :httpd.info(pid)[:port]

  # httpd's module callback (EWSAPI): `do/1` gets the request record.
  @doc false
  def unquote(:do)(request) do
    case {mod(request, :method), path(mod(request, :request_uri))} do
      {~c"GET", ~c"/metrics"} ->
        body = IO.iodata_to_binary(DSPEx.Clustering.Metrics.render())
        respond(200, ~c"text/plain; version=0.0.4; charset=utf-8", body)

      _ ->
        respond(404, ~c"text/plain", "not found: only GET /metrics\n")
    end
  end

  defp path(uri), do: uri |> :string.split(~c"?") |> hd()

  defp respond(code, type, body) do
    head = [code: code, content_type: type, content_length: ~c"#{byte_size(body)}"]
    {:proceed, [{:response, {:response, head, body}}]}
  end
end
