Code.require_file("support.exs", __DIR__)

defmodule DSPEx.Clustering.Discovery.DnsDiscoveryTest do
  # A real dnsmasq (Debian's dnsmasq-base) on a loopback port serves A, AAAA and SRV records, the
  # shapes a Kubernetes headless service and a StatefulSet publish.
  use ExUnit.Case, async: false

  alias DSPEx.Clustering.Discovery.Dns
  alias DSPEx.Clustering.DiscoveryTest.Support
  alias DSPEx.Clustering.NodeDiscovery

  @moduletag timeout: 60_000

  setup_all do
    Support.ensure_epmd()
    u = Support.uniq()

    port =
      Support.start_dnsmasq([
        "--host-record=ready.dspex.test,127.0.0.9",
        # headless service: one A record per pod
        "--host-record=app.dspex.test,10.0.0.1",
        "--host-record=app.dspex.test,10.0.0.2",
        "--host-record=app6.dspex.test,fd00::7",
        # StatefulSet: SRV records naming each pod
        "--srv-host=_epmd._tcp.web.dspex.test,web-0.web.dspex.test,4369,0,10",
        "--srv-host=_epmd._tcp.web.dspex.test,web-1.web.dspex.test,4369,0,10",
        # the live test: a service whose only pod is a peer on loopback
        "--host-record=peers.dspex.test,127.0.0.1"
      ])

    %{ns: [{{127, 0, 0, 1}, port}], u: u}
  end

  defp discover(opts) do
    {:ok, state} = Dns.init(opts)
    Dns.discover(state)
  end

  test "A records become basename@ip", %{ns: ns} do
    assert {:ok, nodes, _} = discover(query: "app.dspex.test", basename: "app", nameservers: ns)
    assert Enum.sort(nodes) == [:"app@10.0.0.1", :"app@10.0.0.2"]

    assert {:ok, [:"app@fd00::7"], _} =
             discover(query: "app6.dspex.test", type: :aaaa, basename: "app", nameservers: ns)
  end

  test "SRV records become basename@target", %{ns: ns} do
    assert {:ok, nodes, _} =
             discover(
               query: "_epmd._tcp.web.dspex.test",
               type: :srv,
               basename: "app",
               nameservers: ns
             )

    assert Enum.sort(nodes) == [:"app@web-0.web.dspex.test", :"app@web-1.web.dspex.test"]
  end

  test "an unknown name is empty, a dead nameserver an error, bad options refused", %{ns: ns} do
    assert {:ok, [], _} = discover(query: "nobody.dspex.test", basename: "app", nameservers: ns)
    dead = [{{127, 0, 0, 1}, Support.free_udp_port()}]

    assert {:error, {:dns, _}, _} =
             discover(query: "app.dspex.test", basename: "app", nameservers: dead, timeout: 300)

    assert {:error, {:missing_option, :basename}} = Dns.init(query: "app.dspex.test")

    assert {:error, {:invalid_option, {:type, :mx}}} =
             Dns.init(query: "a", basename: "b", type: :mx)
  end

  test "a node found through the A record is connected and validated", %{ns: ns, u: u} do
    cookie = "dnstest#{u}"
    {ps, seeker} = Support.start_peer("dseek#{u}", cookie)
    {pt, target} = Support.start_peer("dnst#{u}", cookie)
    Support.start_discovery(pt, cluster_name: "dns-#{u}")

    Support.start_discovery(ps,
      strategies: [{Dns, query: "peers.dspex.test", basename: "dnst#{u}", nameservers: ns}],
      interval: 200,
      cluster_name: "dns-#{u}"
    )

    assert Support.wait_until(fn -> Support.member?(ps, target) end)

    assert Support.wait_until(fn -> Support.member?(pt, seeker) end)

    assert [{_, %{last: {:ok, 1}}}] =
             Map.to_list(Support.pcall(ps, NodeDiscovery, :topology, []).strategies)
  end
end
