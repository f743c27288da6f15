defmodule DSPEx.Clustering.FailureDetectionTest do
  use ExUnit.Case, async: false
  @moduletag :distributed

  alias DSPEx.Clustering
  alias DSPEx.Test.PeerNode

  setup do
    peers = [PeerNode.start("fd_a"), PeerNode.start("fd_b")]
    on_exit(fn -> Enum.each(peers, &PeerNode.stop/1) end)
    [a, b] = peers
    true = :erpc.call(a.node, Node, :connect, [b.node])
    :ok = Clustering.subscribe("cluster.node.*")
    # Let a few heartbeats arrive so both sides have a detector history.
    for p <- peers, do: PeerNode.eventually(fn -> status(node(), p.node) == :up end)
    PeerNode.eventually(fn -> status(a.node, b.node) == :up end)
    Process.sleep(500)
    %{a: a, b: b}
  end

  test "members/0 lists BEAM peers as up with their phi", %{a: a, b: b} do
    members = Clustering.members()
    me = node()

    assert %{node: ^me, kind: :beam, status: :up, local: true} =
             Enum.find(members, &(&1.node == me))

    for p <- [a, b] do
      m = Enum.find(members, &(&1.node == p.node))
      assert %{kind: :beam, status: :up} = m
      assert is_float(m.phi) and m.phi < 8.0
      assert is_float(m.rtt_ms)
    end
  end

  test "a SIGSTOPped node is suspected long before net_ticktime, and up again after SIGCONT",
       %{a: a, b: b} do
    bn = Atom.to_string(b.node)
    mine = "dspex://#{node()}/membership"
    :ok = PeerNode.signal(b.os_pid, "STOP")
    stopped_at = System.monotonic_time(:millisecond)

    assert_receive {:signal,
                    %{type: "cluster.node.suspect", subject: ^bn, source: ^mine, data: data}},
                   5_000

    assert data.phi >= 8.0 and data.kind == :beam
    # Far below net_ticktime (60 s default): the bound is loose, the bench measures.
    assert System.monotonic_time(:millisecond) - stopped_at < 5_000
    assert status(node(), b.node) == :suspect
    PeerNode.eventually(fn -> status(a.node, b.node) == :suspect end)
    # Heartbeats to the frozen node do not block: the other member stays up on both sides.
    Process.sleep(300)
    assert status(node(), a.node) == :up
    assert status(a.node, node()) == :up

    Process.sleep(1_000)
    :ok = PeerNode.signal(b.os_pid, "CONT")

    assert_receive {:signal,
                    %{
                      type: "cluster.node.up",
                      subject: ^bn,
                      source: ^mine,
                      data: %{recovered: true}
                    }},
                   5_000

    assert status(node(), b.node) == :up
    PeerNode.eventually(fn -> status(a.node, b.node) == :up end)
    # The resumed node notices that it was the one paused: it suspects nobody.
    theirs = "dspex://#{b.node}/membership"
    refute_receive {:signal, %{type: "cluster.node.suspect", source: ^theirs}}, 500
  end

  test "a kill -9'd node is seen as down", %{a: a, b: b} do
    bn = Atom.to_string(b.node)
    mine = "dspex://#{node()}/membership"
    :ok = PeerNode.signal(b.os_pid, "KILL")

    assert_receive {:signal,
                    %{type: "cluster.node.down", subject: ^bn, source: ^mine, data: data}},
                   5_000

    # connection_closed, or disconnect when global (prevent_overlapping_partitions) was faster
    assert data.reason in [:connection_closed, :disconnect]
    assert status(node(), b.node) == :down
    PeerNode.eventually(fn -> status(a.node, b.node) == :down end)
  end

  test "after a restart, membership judges the nodes that were already connected", %{a: a} do
    an = Atom.to_string(a.node)
    mine = "dspex://#{node()}/membership"
    old = Process.whereis(:dspex_membership)
    Process.exit(old, :kill)
    PeerNode.eventually(fn -> Process.whereis(:dspex_membership) not in [nil, old] end)
    assert_receive {:signal, %{type: "cluster.node.up", subject: ^an, source: ^mine}}, 2_000
    Process.sleep(500)
    :ok = PeerNode.signal(a.os_pid, "STOP")
    assert_receive {:signal, %{type: "cluster.node.suspect", subject: ^an, source: ^mine}}, 5_000
    :ok = PeerNode.signal(a.os_pid, "CONT")
  end

  defp status(observer, target) do
    :erpc.call(observer, Clustering, :members, [])
    |> Enum.find_value(fn m -> m.node == target && m.status end)
  end
end
