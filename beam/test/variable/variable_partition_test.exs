defmodule DSPEx.Clustering.VariablePartitionTest do
  # A partition between peers on one host (DSPEx.Test.Partition). The test node cuts itself
  # off first, so it does not bridge the two sides, and drives the peers over their stdio.
  use ExUnit.Case, async: false
  @moduletag :distributed

  alias DSPEx.Clustering.{SignalBus, Variable}
  alias DSPEx.Test.{Collector, Partition, PeerNode}

  @strong_env [
    state_voter: true,
    replication_factor: 3,
    state_form_after_ms: 0,
    state_check_interval_ms: 200
  ]

  defp on(peer, m, f, a), do: :peer.call(peer.peer, m, f, a, 20_000)

  defp eventually_on(peer, m, f, a, pred, timeout \\ 15_000) do
    PeerNode.eventually(fn -> pred.(on(peer, m, f, a)) end, timeout)
  end

  defp cluster(env) do
    # global must not cut a-b while x is being cut off from both (with its default overlapping
    # partition prevention it may, as a loses x a moment before b does): a clean two-way split
    no_cut = [args: [~c"-kernel", ~c"prevent_overlapping_partitions", ~c"false"]]
    peers = for p <- ~w(vp_x vp_a vp_b), do: PeerNode.start(p, env, no_cut)
    [x | rest] = peers
    for p <- rest, do: true = :erpc.call(x.node, Node, :connect, [p.node])

    nodes = Enum.map(peers, & &1.node)

    PeerNode.eventually(fn ->
      nodes -- :erpc.call(x.node, Variable.Keeper, :keeper_nodes, []) == []
    end)

    peers
  end

  defp cut_test_node(peers) do
    nodes = Enum.map(peers, & &1.node)
    for p <- peers, do: on(p, Partition, :block, [[node()]])
    Partition.block(nodes)
  end

  defp isolate(x, others) do
    on(x, Partition, :block, [Enum.map(others, & &1.node)])
    for p <- others, do: on(p, Partition, :block, [[x.node]])
  end

  defp heal(x, others) do
    for p <- others, do: on(p, Partition, :heal, [[x.node]])
    on(x, Partition, :heal, [Enum.map(others, & &1.node)])
  end

  defp conflict_signals(collectors) do
    signals =
      for {p, c} <- collectors,
          {:signal, %{type: "cluster.variable.conflict"} = s} <- on(p, Collector, :dump, [c]),
          do: {s.id, s.data}

    signals |> Enum.uniq() |> Enum.map(&elem(&1, 1))
  end

  defp versions(collector_peer, c, name) do
    for {tag, ^name, value, version} <- on(collector_peer, Collector, :dump, [c]),
        tag in [:variable, :variable_resync],
        do: {tag, version, value}
  end

  test "strong: the isolated host refuses writes and serves its last committed value; " <>
         "the majority restarts it from the committed record; one value after heal" do
    peers = [x, a, b] = cluster(@strong_env)
    on_exit(fn -> Enum.each(peers, &PeerNode.stop/1) end)

    PeerNode.eventually(
      fn ->
        s = :erpc.call(a.node, DSPEx.Clustering.State, :status, [])
        s.leader != nil and length(s.members) == 3
      end,
      20_000
    )

    name = "strong.#{System.unique_integer([:positive])}"

    {:ok, _} =
      :erpc.call(a.node, Variable, :start, [
        name,
        [type: :integer, value: 1, consistency: :strong, node: x.node]
      ])

    {:ok, 2} = :erpc.call(b.node, Variable, :set, [name, 2])
    sub = :erpc.call(a.node, Collector, :start, [])
    :ok = :erpc.call(a.node, Variable, :subscribe, [name, sub, [from_version: 0]])

    cut_test_node(peers)
    isolate(x, [a, b])

    assert {:error, reason} = on(x, Variable, :set, [name, 99])
    assert reason in [:no_quorum, :timeout]
    assert {:ok, 2, 2} = on(x, Variable, :get, [name])
    assert on(x, Variable, :where, [name]) == x.node

    # the majority side restarts it from the committed record and writes
    eventually_on(a, Variable, :where, [name], &(&1 in [a.node, b.node]))
    assert {:ok, 2, 2} = on(b, Variable, :get, [name])
    assert {:ok, 3} = on(b, Variable, :set, [name, 3])

    heal(x, [a, b])
    for p <- peers, do: eventually_on(p, Variable, :get, [name], &(&1 == {:ok, 3, 3}))
    where = on(a, Variable, :where, [name])
    for p <- peers, do: assert(on(p, Variable, :where, [name]) == where)
    assert {:ok, 4} = on(x, Variable, :set, [name, 4])
    eventually_on(a, Collector, :dump, [sub], &(length(&1) == 4))

    assert [{:variable, 1, 1}, {:variable, 2, 2}, {:variable, 3, 3}, {:variable, 4, 4}] =
             versions(a, sub, name)
  end

  test "eventual: both sides write during a partition; on heal the later write wins, " <>
         "cluster.variable.conflict is published, subscribers see versions only go up" do
    peers = [x, a, b] = cluster([])
    on_exit(fn -> Enum.each(peers, &PeerNode.stop/1) end)
    name = "eventual.#{System.unique_integer([:positive])}"

    {:ok, _} =
      :erpc.call(a.node, Variable, :start, [name, [type: :integer, value: 1, node: x.node]])

    {:ok, 2} = :erpc.call(a.node, Variable, :set, [name, 2])
    sub_a = :erpc.call(a.node, Collector, :start, [])
    sub_x = :erpc.call(x.node, Collector, :start, [])

    conflicts =
      for p <- peers do
        c = :erpc.call(p.node, Collector, :start, [])
        :ok = :erpc.call(p.node, SignalBus, :subscribe, ["cluster.variable.conflict", c])
        {p, c}
      end

    for {p, s} <- [{a, sub_a}, {x, sub_x}],
        do: :ok = :erpc.call(p.node, Variable, :subscribe, [name, s, [from_version: 0]])

    Process.sleep(200)
    cut_test_node(peers)
    isolate(x, [a, b])

    eventually_on(a, Variable, :where, [name], &(&1 in [a.node, b.node]))
    assert {:ok, 2, 2} = on(a, Variable, :get, [name])
    {:ok, 3} = on(a, Variable, :set, [name, 10])
    {:ok, 4} = on(a, Variable, :set, [name, 11])
    Process.sleep(20)
    # the later write, on the minority side
    {:ok, 3} = on(x, Variable, :set, [name, 20])

    heal(x, [a, b])
    for p <- peers, do: eventually_on(p, Variable, :get, [name], &match?({:ok, 20, 5}, &1))

    # one conflict signal (a collector on each node: the heal's own reconnects may cost a
    # remote one its copy, never the local one on the merging node)
    PeerNode.eventually(fn -> conflict_signals(conflicts) != [] end)
    Process.sleep(300)
    assert [%{name: ^name, kept: 20, lost: 11}] = conflict_signals(conflicts)

    for {p, s} <- [{a, sub_a}, {x, sub_x}] do
      eventually_on(p, Collector, :dump, [s], &(elem(List.last(&1), 3) == 5))
      vs = versions(p, s, name)
      assert Enum.map(vs, &elem(&1, 1)) == Enum.sort(Enum.uniq(Enum.map(vs, &elem(&1, 1))))
      assert List.last(vs) == {:variable, 5, 20}
    end

    assert versions(a, sub_a, name) |> Enum.map(&elem(&1, 1)) == [1, 2, 3, 4, 5]
    assert versions(x, sub_x, name) |> Enum.map(&elem(&1, 1)) == [1, 2, 3, 4, 5]
  end
end
