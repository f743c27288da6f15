Code.require_file("support.exs", __DIR__)

defmodule DSPEx.Clustering.Discovery.EpmdDiscoveryTest do
  # Three real peer nodes (OTP :peer, controlled over stdio, not connected to this node) share one
  # private epmd; each runs NodeDiscovery with only `hosts: ["127.0.0.1"]`.
  use ExUnit.Case, async: false

  alias DSPEx.Clustering.Discovery.{Epmd, Static}
  alias DSPEx.Clustering.DiscoveryTest.{PeerBoot, Support}
  alias DSPEx.Clustering.NodeDiscovery

  @moduletag timeout: 60_000

  setup_all do
    Support.ensure_epmd()
    :ok
  end

  # the peers also try this test node's name (epmd lists it); its refusals of their foreign
  # cookie are logged here, so keep them out of the output
  @tag capture_log: true
  test "three nodes on hosts [127.0.0.1] find each other without being told the names" do
    u = Support.uniq()
    cookie = "epmdtest#{u}"
    peers = for i <- 1..3, do: Support.start_peer("ep#{i}n#{u}", cookie)
    names = Enum.map(peers, &elem(&1, 1))

    # nothing of ours listens on epmd's default port: finding the names below proves the strategy
    # asked the private epmd named by ERL_EPMD_PORT
    assert System.get_env("ERL_EPMD_PORT") not in [nil, "4369"]

    # the epmd strategy on its own lists all three (and maybe other nodes of this run)
    {p1, _} = hd(peers)
    {:ok, state} = Support.pcall(p1, Epmd, :init, [[hosts: ["127.0.0.1"]]])
    {:ok, listed, _} = Support.pcall(p1, Epmd, :discover, [state])
    assert Enum.all?(names, &(&1 in listed))
    {:ok, state} = Support.pcall(p1, Epmd, :init, [[hosts: [{127, 0, 0, 1}], only: ~r/^ep2n/]])
    assert {:ok, [only], _} = Support.pcall(p1, Epmd, :discover, [state])
    assert only == Enum.at(names, 1)

    opts = [
      strategies: [{Epmd, hosts: ["127.0.0.1"]}],
      interval: 300,
      ping_interval: 200,
      traffic_interval: 300,
      announce_interval: 300,
      cluster_name: "epmd-#{u}"
    ]

    collector = Support.pcall(p1, PeerBoot, :collect_signals, ["cluster.node.announce"])

    for {peer, _} <- peers, do: Support.start_discovery(peer, opts)

    for {peer, me} <- peers do
      others = names -- [me]

      members =
        Support.wait_until(fn ->
          m = Support.pcall(peer, NodeDiscovery, :topology, []).members
          Enum.all?(others, &match?(%{status: :member}, m[&1])) && m
        end)

      assert members, "#{me} did not accept #{inspect(others)}"
      assert Enum.sort(others) == Enum.sort(Support.pcall(peer, Node, :list, []))

      for o <- others do
        assert %{cluster_name: "epmd-" <> _, version: "0.1.0", kind: :visible} = members[o]
        assert %DateTime{} = members[o].joined_at
      end

      joins =
        for %{event: :join, node: n} <- Support.pcall(peer, NodeDiscovery, :history, []), do: n

      assert Enum.sort(Enum.uniq(joins)) == Enum.sort(others)

      latency =
        Support.wait_until(fn ->
          l = Support.pcall(peer, NodeDiscovery, :latency, [])
          Enum.all?(others, &Map.has_key?(l, &1)) && l
        end)

      assert latency, "no latency measured on #{me}"
      for o <- others, do: assert(latency[o] > 0 and latency[o] < 1_000)

      traffic =
        Support.wait_until(fn ->
          t = Support.pcall(peer, NodeDiscovery, :traffic, [])
          Enum.all?(others, &(t[&1] && t[&1].recv_oct > 0 && t[&1].recv_rate)) && t
        end)

      assert traffic, "no traffic figures on #{me}"
    end

    # the announcements of all three reach a subscriber on the first node over the signal bus
    announced =
      Support.wait_until(fn ->
        from = for s <- Support.pcall(p1, PeerBoot, :signals, [collector]), do: s.data.node
        Enum.all?(names, &(&1 in from)) && from
      end)

    assert announced
  end

  test "a node of another cluster is refused, disconnected and recorded" do
    u = Support.uniq()
    cookie = "rejtest#{u}"
    {pa, a} = Support.start_peer("rja#{u}", cookie)
    {pd, d} = Support.start_peer("rjd#{u}", cookie)

    collector =
      Support.pcall(pa, DSPEx.Clustering.DiscoveryTest.PeerBoot, :collect_signals, [
        "cluster.node.*"
      ])

    Support.start_discovery(pa,
      cluster_name: "alpha-#{u}",
      ping_interval: 200,
      reject_backoff: 60_000
    )

    # d knows a's name and connects; a validates d and must refuse it
    Support.start_discovery(pd,
      strategies: [{Static, nodes: [a]}],
      interval: 200,
      cluster_name: "beta-#{u}"
    )

    rejected =
      Support.wait_until(fn ->
        Enum.find(
          Support.pcall(pa, NodeDiscovery, :history, []),
          &(&1.event == :rejected and &1.node == d)
        )
      end)

    assert %{detail: {:cluster_mismatch, "beta-" <> _}, at: %DateTime{}} = rejected
    assert Support.wait_until(fn -> d not in Support.pcall(pa, Node, :list, []) end)
    # d stays out: its static strategy retries, but both sides back off after refusing
    Process.sleep(800)
    assert d not in Support.pcall(pa, Node, :list, [])
    refute Map.has_key?(Support.pcall(pa, NodeDiscovery, :topology, []).members, d)

    assert {:rejected, {:cluster_mismatch, "alpha-" <> _}} =
             Support.pcall(pd, NodeDiscovery, :topology, []).backoff[a]

    # a announced itself on start
    signals = Support.pcall(pa, PeerBoot, :signals, [collector])
    assert Enum.any?(signals, &(&1.type == "cluster.node.announce" and &1.data.node == a))
  end

  test "with unmanaged: :reject a node without a discovery agent is disconnected" do
    u = Support.uniq()
    cookie = "unmgd#{u}"
    {pa, _a} = Support.start_peer("uma#{u}", cookie)
    {_pb, b} = Support.start_peer("umb#{u}", cookie)

    Support.start_discovery(pa,
      strategies: [{Static, nodes: [b]}],
      interval: 200,
      unmanaged: :reject,
      reject_backoff: 1_000,
      cluster_name: "strict-#{u}"
    )

    rejected =
      Support.wait_until(fn ->
        Enum.find(Support.pcall(pa, NodeDiscovery, :history, []), &(&1.event == :rejected))
      end)

    assert %{node: ^b, detail: {:no_discovery_agent, :noproc}} = rejected
    assert Support.wait_until(fn -> b not in Support.pcall(pa, Node, :list, [[:connected]]) end)
    # while refused, b has a per-node cookie nobody knows, so nothing re-dials it by accident
    refute Support.pcall(pa, :erlang, :get_cookie, [b]) == :"unmgd#{u}"

    # after the back-off the real cookie is restored: the static list dials b again (and
    # refuses it again, about a second after the first time)
    second =
      Support.wait_until(fn ->
        rejections =
          for %{event: :rejected, at: at} <- Support.pcall(pa, NodeDiscovery, :history, []),
              do: at

        length(rejections) >= 2 && rejections
      end)

    assert [first, again | _] = second
    assert DateTime.diff(again, first, :millisecond) >= 900
  end

  test "version compatibility rule" do
    assert NodeDiscovery.compatible?("0.1.0", "0.1.7")
    refute NodeDiscovery.compatible?("0.1.0", "0.2.0")
    assert NodeDiscovery.compatible?("1.2.0", "1.9.1")
    refute NodeDiscovery.compatible?("1.2.0", "2.0.0")
    refute NodeDiscovery.compatible?("1.2.0", "not-a-version")
    assert NodeDiscovery.compatible?("1.0.0", "2.1.0", "~> 2.0")
    refute NodeDiscovery.compatible?("1.0.0", "1.1.0", ">= 2.0.0")
  end
end
