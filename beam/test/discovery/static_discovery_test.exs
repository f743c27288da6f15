Code.require_file("support.exs", __DIR__)

defmodule DSPEx.Clustering.Discovery.StaticDiscoveryTest do
  use ExUnit.Case, async: false

  alias DSPEx.Clustering.Discovery.{Dns, Static}
  alias DSPEx.Clustering.DiscoveryTest.Support
  alias DSPEx.Clustering.NodeDiscovery

  @moduletag timeout: 60_000

  test "options are checked" do
    assert {:ok, [:a@h, :b@h]} = Static.init(nodes: [:a@h, "b@h"])
    assert {:error, {:invalid_node_names, ["nohost"]}} = Static.init(nodes: [:a@h, "nohost"])
    assert {:error, {:missing_option, :nodes}} = Static.init([])
  end

  test "a static list connects the nodes, shows up in both histories, and a leave is recorded" do
    Support.ensure_epmd()
    u = Support.uniq()
    cookie = "static#{u}"
    {pa, a} = Support.start_peer("sta#{u}", cookie)
    {pb, b} = Support.start_peer("stb#{u}", cookie)
    Support.start_discovery(pb, cluster_name: "static-#{u}")

    Support.start_discovery(pa,
      # the second strategy cannot start (no query): it is reported, the first one still works
      strategies: [{Static, nodes: [b, "ghost#{u}@127.0.0.1"]}, {Dns, []}],
      interval: 200,
      cluster_name: "static-#{u}"
    )

    for {peer, other} <- [{pa, b}, {pb, a}] do
      assert Support.wait_until(fn -> Support.member?(peer, other) end)
    end

    topo = Support.pcall(pa, NodeDiscovery, :topology, [])
    assert %{last: {:ok, 2}} = topo.strategies[{0, Static}]
    assert %{last: {:error, {:init, {:missing_option, :query}}}} = topo.strategies[{1, Dns}]
    assert topo.members[b].discovered_by == [{0, Static}]
    # the name nobody answers to is backed off, not connected
    assert Support.wait_until(fn ->
             Support.pcall(pa, NodeDiscovery, :topology, []).backoff[:"ghost#{u}@127.0.0.1"] ==
               :connect_failed
           end)

    # a hidden node without a discovery agent (a remote shell, erl_call) is left alone: it is
    # asked nothing and listed nowhere until it says hello (as a Python node does on joining)
    {ph, h} = Support.start_peer("sth#{u}", cookie, [~c"-hidden"])
    assert Support.pcall(ph, Node, :connect, [a])
    Process.sleep(500)
    topology = Support.pcall(pa, NodeDiscovery, :topology, [])
    refute Map.has_key?(topology.members, h) or h in topology.pending
    hello = {:dspex_hello, h, %{kind: :python}}
    Support.pcall(ph, :erlang, :send, [{NodeDiscovery.name(), a}, hello])

    # then it is kept as unmanaged
    assert Support.wait_until(fn ->
             match?(
               %{status: :unmanaged, kind: :hidden},
               Support.pcall(pa, NodeDiscovery, :topology, []).members[h]
             )
           end)

    refute Map.has_key?(Support.pcall(pa, NodeDiscovery, :latency, []), h)

    Support.stop_peer(pb)

    left =
      Support.wait_until(fn ->
        Enum.find(
          Support.pcall(pa, NodeDiscovery, :history, []),
          &(&1.event == :leave and &1.node == b)
        )
      end)

    assert %{at: %DateTime{}, detail: :connection_closed} = left
    refute Map.has_key?(Support.pcall(pa, NodeDiscovery, :latency, []), b)

    assert [:join, :leave] ==
             for(%{node: ^b, event: e} <- Support.pcall(pa, NodeDiscovery, :history, []), do: e)
  end

  test "a node whose agent starts after it connected is revalidated and becomes a member" do
    Support.ensure_epmd()
    u = Support.uniq()
    cookie = "late#{u}"
    {pa, a} = Support.start_peer("lta#{u}", cookie)
    {pb, b} = Support.start_peer("ltb#{u}", cookie)
    Support.start_discovery(pa, cluster_name: "late-#{u}")
    # b connects before its discovery agent runs (as a node does while its application starts):
    # a's hello finds no agent there, so a holds b as unmanaged
    assert Support.pcall(pb, Node, :connect, [a])

    assert Support.wait_until(fn ->
             match?(
               %{status: :unmanaged},
               Support.pcall(pa, NodeDiscovery, :topology, []).members[b]
             )
           end)

    # b's agent starts and says hello: a validates b again
    Support.start_discovery(pb, cluster_name: "late-#{u}")

    for {peer, other} <- [{pa, b}, {pb, a}] do
      assert Support.wait_until(fn -> Support.member?(peer, other) end)
    end
  end
end
