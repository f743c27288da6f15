Code.require_file("support.exs", __DIR__)

defmodule DSPEx.Clustering.Discovery.ConsulDiscoveryTest do
  # NOT a real Consul: a small HTTP server written here (on :gen_tcp, loopback) that serves the
  # documented response shape of GET /v1/catalog/service/<name> and records each request.
  use ExUnit.Case, async: false

  alias DSPEx.Clustering.Discovery.{Consul, JSON}
  alias DSPEx.Clustering.DiscoveryTest.Support

  @moduletag timeout: 60_000

  # Fields as in the catalog API documentation's sample response.
  defp entry(fields) do
    base = %{
      "ID" => "40e4a748-2192-161a-0510-9bf59fe950b5",
      "Node" => "consul-node",
      "Address" => "192.168.10.10",
      "Datacenter" => "dc1",
      "TaggedAddresses" => %{"lan" => "192.168.10.10", "wan" => "10.0.10.10"},
      "NodeMeta" => %{"somekey" => "somevalue"},
      "CreateIndex" => 51,
      "ModifyIndex" => 51,
      "ServiceAddress" => "",
      "ServiceEnableTagOverride" => false,
      "ServiceID" => "dspex-1",
      "ServiceName" => "dspex-app",
      "ServicePort" => 4369,
      "ServiceMeta" => %{},
      "ServiceTags" => ["beam"],
      "Namespace" => "default"
    }

    Map.merge(base, fields)
  end

  # A tiny JSON encoder for the stub's bodies (test side only).
  defp to_json(m) when is_map(m),
    do: "{" <> Enum.map_join(m, ",", fn {k, v} -> to_json(k) <> ":" <> to_json(v) end) <> "}"

  defp to_json(l) when is_list(l), do: "[" <> Enum.map_join(l, ",", &to_json/1) <> "]"
  defp to_json(s) when is_binary(s), do: ~s("#{String.replace(s, ~s("), ~s(\\"))}")
  defp to_json(b) when is_boolean(b), do: to_string(b)
  defp to_json(n) when is_number(n), do: to_string(n)

  # Serves `routes` (path => {status, body}); sends {:consul_request, path_and_query, headers}.
  defp start_stub(routes) do
    test = self()

    {:ok, listen} =
      :gen_tcp.listen(0, [:binary, ip: {127, 0, 0, 1}, active: false, reuseaddr: true])

    {:ok, port} = :inet.port(listen)
    server = spawn(fn -> accept_loop(listen, routes, test) end)
    :ok = :gen_tcp.controlling_process(listen, server)

    on_exit(fn ->
      Process.exit(server, :kill)
      :gen_tcp.close(listen)
    end)

    "http://127.0.0.1:#{port}"
  end

  defp accept_loop(listen, routes, test) do
    {:ok, conn} = :gen_tcp.accept(listen)
    {:ok, request} = read_head(conn, "")
    [line | header_lines] = String.split(request, "\r\n", trim: true)
    ["GET", target, "HTTP/1.1"] = String.split(line, " ")

    headers =
      Map.new(header_lines, fn h ->
        [k, v] = String.split(h, ":", parts: 2)
        {String.downcase(k), String.trim(v)}
      end)

    send(test, {:consul_request, target, headers})
    path = target |> String.split("?") |> hd()
    {status, body} = Map.get(routes, path, {404, "no such service"})

    :gen_tcp.send(conn, [
      "HTTP/1.1 #{status} X\r\ncontent-type: application/json\r\n",
      "content-length: #{byte_size(body)}\r\nconnection: close\r\n\r\n",
      body
    ])

    :gen_tcp.close(conn)
    accept_loop(listen, routes, test)
  end

  defp read_head(conn, acc) do
    if String.contains?(acc, "\r\n\r\n") do
      {:ok, acc}
    else
      with {:ok, data} <- :gen_tcp.recv(conn, 0, 5_000), do: read_head(conn, acc <> data)
    end
  end

  defp discover(opts) do
    {:ok, state} = Consul.init(opts)
    Consul.discover(state)
  end

  test "catalog entries become nodes: ServiceAddress, else Address, else ServiceMeta's full name" do
    body =
      to_json([
        entry(%{"ServiceAddress" => "10.1.0.5"}),
        entry(%{"ServiceAddress" => "", "Address" => "10.1.0.6"}),
        entry(%{"ServiceMeta" => %{"erlang_node" => "custom@10.1.0.7"}, "Node" => "caf\u00e9"})
      ])

    url = start_stub(%{"/v1/catalog/service/dspex-app" => {200, body}})

    assert {:ok, nodes, _} =
             discover(
               url: url,
               service: "dspex-app",
               basename: "app",
               dc: "dc1",
               tag: "beam",
               token: "s3cret"
             )

    assert Enum.sort(nodes) == [:"app@10.1.0.5", :"app@10.1.0.6", :"custom@10.1.0.7"]
    assert_receive {:consul_request, target, headers}
    assert target == "/v1/catalog/service/dspex-app?dc=dc1&tag=beam"
    assert headers["x-consul-token"] == "s3cret"
  end

  test "HTTP errors, bad bodies and a closed port are errors, not nodes" do
    url =
      start_stub(%{
        "/v1/catalog/service/broken" => {500, "rpc error"},
        "/v1/catalog/service/garbled" => {200, "[{\"Address\": "},
        "/v1/catalog/service/object" => {200, "{}"}
      })

    assert {:error, {:consul, {:http_status, 500}}, _} =
             discover(url: url, service: "broken", basename: "a")

    assert {:error, {:consul, {:invalid_json, _}}, _} =
             discover(url: url, service: "garbled", basename: "a")

    assert {:error, {:consul_unexpected_body, %{}}, _} =
             discover(url: url, service: "object", basename: "a")

    assert {:error, {:consul, {:http_status, 404}}, _} =
             discover(url: url, service: "nothere", basename: "a")

    closed = "http://127.0.0.1:#{Support.free_tcp_port()}"

    assert {:error, {:consul, _}, _} =
             discover(url: closed, service: "x", basename: "a", timeout: 500)

    assert {:error, {:missing_option, :service}} = Consul.init(url: closed)
  end

  test "a node listed in the catalog is connected and validated" do
    Support.ensure_epmd()
    u = Support.uniq()
    body = to_json([entry(%{"ServiceAddress" => "127.0.0.1", "ServiceName" => "dspex-live"})])
    url = start_stub(%{"/v1/catalog/service/dspex-live" => {200, body}})

    cookie = "consul#{u}"
    {ps, seeker} = Support.start_peer("cseek#{u}", cookie)
    {pt, target} = Support.start_peer("ctgt#{u}", cookie)
    Support.start_discovery(pt, cluster_name: "consul-#{u}")

    Support.start_discovery(ps,
      strategies: [{Consul, url: url, service: "dspex-live", basename: "ctgt#{u}"}],
      interval: 200,
      cluster_name: "consul-#{u}"
    )

    for {peer, other} <- [{ps, target}, {pt, seeker}] do
      assert Support.wait_until(fn -> Support.member?(peer, other) end)
    end
  end

  describe "JSON decoder" do
    test "values, escapes and nesting" do
      text =
        ~s( {"a": [1, -2.5, 3e2, true, false, null], "s": "q\\"\\\\\\/\\n\\u00e9\\ud83d\\ude00", "o": {}} )

      expected = %{"a" => [1, -2.5, 300.0, true, false, nil], "s" => "q\"\\/\né😀", "o" => %{}}
      assert JSON.decode_own(text) == {:ok, expected}
      assert JSON.decode(text) == {:ok, expected}
    end

    test "malformed documents are refused" do
      for bad <- [
            "",
            "[1,]",
            "{\"a\" 1}",
            "{\"a\":1,}",
            "[01]",
            "\"\\x\"",
            "\"\\ud800\"",
            "[1] 2",
            "nul",
            "\"a\nb\""
          ] do
        assert {:error, _} = JSON.decode_own(bad), "accepted #{inspect(bad)}"
      end
    end
  end
end
