defmodule DSPEx.Clustering.Discovery.ConfigOptionsTest do
  # How the application's bare `DSPEx.Clustering.NodeDiscovery` child gets its options.
  use ExUnit.Case, async: false

  alias DSPEx.Clustering.Discovery.{Dns, Epmd, Gossip, Static}
  alias DSPEx.Clustering.NodeDiscovery

  @keys [
    :discovery,
    :hosts,
    :discovery_interval_ms,
    :cluster_name,
    :static_nodes,
    :dns_query,
    :dns_basename
  ]

  setup do
    saved = for k <- @keys, do: {k, Application.fetch_env(:dspex_cluster, k)}

    on_exit(fn ->
      for {k, v} <- saved do
        case v do
          {:ok, value} -> Application.put_env(:dspex_cluster, k, value)
          :error -> Application.delete_env(:dspex_cluster, k)
        end
      end
    end)
  end

  test "shorthand strategy names are expanded from the application environment" do
    Application.put_env(:dspex_cluster, :discovery, [:epmd, :static, :dns, :gossip])
    Application.put_env(:dspex_cluster, :hosts, ["127.0.0.1", "10.0.0.2"])
    Application.put_env(:dspex_cluster, :discovery_interval_ms, 750)
    Application.put_env(:dspex_cluster, :cluster_name, "prod-a")
    Application.put_env(:dspex_cluster, :static_nodes, [:x@h])
    Application.put_env(:dspex_cluster, :dns_query, "app.ns.svc")
    Application.put_env(:dspex_cluster, :dns_basename, "app")

    opts = NodeDiscovery.options_from_config()
    assert opts[:interval] == 750
    assert opts[:cluster_name] == "prod-a"

    assert [
             {Epmd, [hosts: ["127.0.0.1", "10.0.0.2"]]},
             {Static, [nodes: [:x@h]]},
             {Dns, dns},
             {Gossip, []}
           ] = opts[:strategies]

    assert dns[:query] == "app.ns.svc" and dns[:basename] == "app"
  end

  test "{module, opts} entries are kept as they are" do
    Application.put_env(:dspex_cluster, :discovery, [{Static, nodes: [:z@h]}, :gossip])
    Application.put_env(:dspex_cluster, :cluster_name, "mixed")
    opts = NodeDiscovery.options_from_config()
    assert opts[:strategies] == [{Static, nodes: [:z@h]}, {Gossip, []}]
    assert opts[:cluster_name] == "mixed"
  end

  test "a keyword list under :discovery is taken as the options themselves" do
    given = [strategies: [{Static, nodes: [:y@h]}], interval: 100, cluster_name: "kw"]
    Application.put_env(:dspex_cluster, :discovery, given)
    assert NodeDiscovery.options_from_config() == given
  end
end
