defmodule DSPEx.Clustering.ConsistencyManagerTest do
  use ExUnit.Case, async: false
  @moduletag :distributed

  alias DSPEx.Clustering
  alias DSPEx.Clustering.State
  alias DSPEx.Test.PeerNode

  @env [
    state_voter: true,
    replication_factor: 3,
    state_form_after_ms: 0,
    state_check_interval_ms: 200,
    state_member_down_after_ms: 1_500,
    state_snapshot_every: 200,
    state_lag_threshold: 50
  ]

  setup do
    :ok = Clustering.subscribe("cluster.consistency.*")
    # three voters form the group; a fourth joins later as a spare
    peers = for p <- ~w(cm_a cm_b cm_c), do: PeerNode.start(p, @env)
    on_exit(fn -> Enum.each(peers, &PeerNode.stop/1) end)
    connect(peers)
    status = PeerNode.eventually(fn -> formed(hd(peers), Enum.map(peers, & &1.node)) end, 20_000)
    %{peers: peers, status: status}
  end

  defp connect([a | rest]),
    do: for(p <- rest, do: true = :erpc.call(a.node, Node, :connect, [p.node]))

  defp formed(peer, nodes) do
    s = :erpc.call(peer.node, State, :status, [])
    s.leader != nil and Enum.sort(s.members) == Enum.sort(nodes) and s
  end

  defp flush_signals do
    receive do
      {:signal, _} -> flush_signals()
    after
      0 -> :ok
    end
  end

  defp put(peer, key, value),
    do: :erpc.call(peer.node, State, :put, [key, value, [consistency: :strong]], 10_000)

  test "leader_changed after the leader is killed; a member down for good is replaced by a spare",
       %{peers: peers, status: status} do
    assert_receive {:signal, %{type: "cluster.consistency.leader_changed", data: first}}, 5_000
    assert first.leader == status.leader and first.term >= 1

    {:ok, _} = put(hd(peers), :before, 1)
    leader = Enum.find(peers, &(&1.node == status.leader))
    [survivor | _] = others = peers -- [leader]
    spare = PeerNode.start("cm_spare", @env)
    on_exit(fn -> PeerNode.stop(spare) end)
    true = :erpc.call(survivor.node, Node, :connect, [spare.node])
    # earlier changes (an election during formation) are not what this test looks at
    flush_signals()
    PeerNode.signal(leader.os_pid, "KILL")
    dead = leader.node

    assert_receive {:signal,
                    %{type: "cluster.consistency.leader_changed", data: %{previous: ^dead} = next}},
                   10_000

    assert next.leader in Enum.map(others, & &1.node)
    assert next.term > first.term

    # after state_member_down_after_ms the dead member is removed and the spare added
    expected = Enum.sort([spare.node | Enum.map(others, & &1.node)])
    PeerNode.eventually(fn -> formed(survivor, expected) end, 20_000)
    # the new member has the data (a snapshot or the log sent to it), and serves with quorum
    {:ok, _} = put(survivor, :after, 2)

    PeerNode.eventually(fn ->
      match?({:ok, 2, _}, :erpc.call(spare.node, State.Strong, :local_get, [:after]))
    end)

    assert {:ok, 1, _} = :erpc.call(spare.node, State.Strong, :local_get, [:before])
  end

  test "snapshot every state_snapshot_every commands; lag when a follower falls behind",
       %{peers: peers, status: status} do
    leader = Enum.find(peers, &(&1.node == status.leader))
    follower = hd(peers -- [leader])
    PeerNode.signal(follower.os_pid, "STOP")

    try do
      for i <- 1..220, do: {:ok, _} = put(leader, {:k, rem(i, 7)}, i)

      assert_receive {:signal, %{type: "cluster.consistency.snapshot", data: snap}}, 5_000
      assert snap.index >= 200 and snap.keys >= 1 and snap.node == leader.node

      follower_node = follower.node

      assert_receive {:signal,
                      %{type: "cluster.consistency.lag", data: %{member: ^follower_node} = lag}},
                     5_000

      assert lag.lag > 50 and lag.threshold == 50
    after
      PeerNode.signal(follower.os_pid, "CONT")
    end

    # caught up again: lag 0 for everyone in status
    PeerNode.eventually(
      fn ->
        s = :erpc.call(leader.node, State, :status, [])
        Enum.all?(Map.values(s.lag), &(&1 == 0))
      end,
      10_000
    )
  end
end
