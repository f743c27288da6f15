defmodule DSPEx.Clustering.State.EventualClusterTest do
  @moduledoc """
  Eventual and causal state on three real BEAM peers. The table under test (`:x`) lives on the
  peers only, so the test node — connected to all of them — never relays between the sides
  of a partition. A partition is real: both sides get a cookie for the other that nobody
  knows (a different one on each side) (so no send, pg, global or discovery dial can reconnect them) and are disconnected;
  the peers run with `prevent_overlapping_partitions false`, so global on the test node does
  not cut it off from one side.
  """
  use ExUnit.Case, async: false
  @moduletag :distributed

  alias DSPEx.Clustering.{SignalBus, State}
  alias DSPEx.Clustering.State.{Causal, Eventual, KeyState, Replica}
  alias DSPEx.Test.{PeerNode, StateWriters}

  # short enough to keep the tests quick, long enough that 2x it is not lost in a load spike
  @interval 500
  @table :x
  @env [eventual_tables: [:default, @table], eventual_anti_entropy_ms: @interval]
  @args [~c"-kernel", ~c"prevent_overlapping_partitions", ~c"false"]

  setup_all do
    peers = for p <- ~w(ev_a ev_b ev_c), do: PeerNode.start(p, @env, args: @args)
    on_exit(fn -> Enum.each(peers, &PeerNode.stop/1) end)
    nodes = Enum.map(peers, & &1.node)
    for a <- nodes, b <- nodes, a < b, do: true = :erpc.call(a, Node, :connect, [b])
    for n <- nodes, do: PeerNode.eventually(fn -> stats(n).peers == 2 end)
    %{nodes: nodes, peers: peers}
  end

  test "a burst of concurrent writers converges within 2x the anti-entropy interval; LWW loses no update it should keep",
       %{nodes: nodes} do
    keys = for i <- 1..20, do: {"burst", i}

    # every writer walks the keys in the same order, on its own node: writes race on a key
    start_at = System.system_time(:millisecond) + 300

    acked =
      nodes
      |> Enum.map(
        &Task.async(fn ->
          call(&1, StateWriters, :lww_rounds, [@table, keys, 10, start_at, start_at + 1_000])
        end)
      )
      |> Enum.flat_map(&Task.await(&1, 30_000))

    last_ack = mono()
    converged_ms = wait_converged(nodes, 10_000) - last_ack
    conflicts = nodes |> Enum.map(&stats(&1).conflicts) |> Enum.sum()

    IO.puts(
      "\n  burst of 660 writes: replicas equal #{converged_ms} ms after the last ack (#{conflicts} conflicts)"
    )

    assert converged_ms <= 2 * @interval

    # Each write superseded the node's local values (default context); across nodes the
    # greatest HLC stamp must win among the writes nothing causally replaced.
    [dump | _] = Enum.map(nodes, &dump/1)

    for key <- keys do
      ops = for {^key, v} <- acked, do: v
      candidates = for v <- ops, not superseded?(v.stamp, ops), do: v.stamp
      {^key, _ctx, entries} = List.keyfind(dump, key, 0)
      assert Enum.map(entries, &elem(&1, 0)) == [Enum.max(candidates)]
    end
  end

  test "siblings under concurrent writers and a partition: no acknowledged write is lost",
       %{nodes: [a, b, c] = nodes} do
    :ok = call(a, Eventual, :register_resolver, ["js:", :siblings, [table: @table]])
    for n <- nodes, do: PeerNode.eventually(fn -> resolver(n, "js:1") == :siblings end)
    keys = for i <- 1..4, do: "js:#{i}"

    writer = fn n, count ->
      Task.async(fn -> call(n, StateWriters, :sibling_writes, [@table, keys, count]) end)
    end

    first = Enum.map(nodes, &writer.(&1, 40))
    acked = Enum.flat_map(first, &Task.await(&1, 30_000))
    partition([a], [b, c])
    during = Enum.map(nodes, &writer.(&1, 40))
    acked = acked ++ Enum.flat_map(during, &Task.await(&1, 30_000))
    # the two sides really differ while apart
    refute dump(a) == dump(b)
    heal([a], [b, c])
    healed = mono()
    converged_ms = wait_converged(nodes, 10_000) - healed
    IO.puts("\n  siblings after heal: replicas equal #{converged_ms} ms after the heal")
    assert converged_ms <= 2 * @interval

    dump = dump(a)

    for key <- keys do
      ops = for {^key, stamp, ctx, value} <- acked, do: {stamp, ctx, value}

      expected =
        for {stamp, _, value} <- ops,
            not Enum.any?(ops, fn {s, ctx, _} -> s != stamp and KeyState.covered?(ctx, stamp) end),
            do: {stamp, value}

      {^key, _ctx, entries} = List.keyfind(dump, key, 0)
      assert entries == Enum.sort(expected)
      # what get answers: every surviving value, distinguishably
      {:ok, {:siblings, values}, _} = call(b, Eventual, :get, [key, [table: @table]])
      assert values == Enum.map(Enum.sort(expected), &elem(&1, 1))
    end
  end

  test "a custom resolver and LWW decide concurrent writes after a heal; conflicts are signalled",
       %{nodes: [a, b, c] = nodes} do
    :ok = SignalBus.subscribe("cluster.consistency.conflict")
    union = {DSPEx.Test.Resolvers, :union}
    :ok = call(b, Eventual, :register_resolver, ["u:", union, [table: @table]])
    for n <- nodes, do: PeerNode.eventually(fn -> resolver(n, "u:1") == union end)

    partition([a], [b, c])
    {:ok, _} = call(a, Eventual, :put, ["u:1", [:a1, :shared], [table: @table]])
    {:ok, _} = call(b, Eventual, :put, ["u:1", [:b1, :shared], [table: @table]])
    {:ok, va} = call(a, Eventual, :put, ["lww:1", :from_a, [table: @table]])
    {:ok, vb} = call(c, Eventual, :put, ["lww:1", :from_c, [table: @table]])
    heal([a], [b, c])
    wait_converged(nodes, 10_000)

    winner = if va.stamp > vb.stamp, do: :from_a, else: :from_c

    for n <- nodes do
      assert {:ok, [:a1, :b1, :shared], _} = call(n, Eventual, :get, ["u:1", [table: @table]])
      assert {:ok, ^winner, _} = call(n, Eventual, :get, ["lww:1", [table: @table]])
    end

    assert_receive {:signal,
                    %{
                      type: "cluster.consistency.conflict",
                      data: %{key: "u:1", resolution: :custom}
                    }},
                   2_000

    assert_receive {:signal,
                    %{
                      type: "cluster.consistency.conflict",
                      data: %{key: "lww:1", resolution: :lww, winner: w}
                    }},
                   2_000

    assert w == max(va.stamp, vb.stamp)
    SignalBus.unsubscribe("cluster.consistency.conflict")
  end

  test "causal sessions: read-your-writes, monotonic reads and writes-follow-reads across a cut; waits are bounded",
       %{nodes: [a, b, c]} do
    partition([a], [b, c])

    {:ok, _v, token} =
      call(a, State, :put, [
        "cart:7",
        [:apple],
        [consistency: :causal, session: %{}, table: @table]
      ])

    # b has not got it: an eventual read misses it, a causal read refuses to answer older
    assert {:error, :not_found} =
             call(b, State, :get, ["cart:7", [consistency: :eventual, table: @table]])

    assert {:error, :timeout} =
             call(b, State, :get, [
               "cart:7",
               [consistency: :causal, session: token, table: @table, timeout: 200]
             ])

    reader =
      Task.async(fn ->
        call(b, State, :get, [
          "cart:7",
          [consistency: :causal, session: token, table: @table, timeout: 8_000]
        ])
      end)

    Process.sleep(200)
    heal([a], [b, c])
    assert {:ok, [:apple], _v, token2} = Task.await(reader, 10_000)
    assert KeyState.dominates?(token2, token)

    # writes follow reads: c writes after the session read; the write replaces what was read
    # on every node, also on one where the read value arrives later
    partition([c], [a, b])

    {:ok, _, token3} =
      call(c, Causal, :put, ["cart:7", [:pear], [session: token2, table: @table]])

    # monotonic reads: another session reads [:pear] on c; on b, which still holds [:apple],
    # its next read waits rather than go back in time
    {:ok, [:pear], _, reader_token} =
      call(c, Causal, :get, ["cart:7", [session: %{}, table: @table]])

    assert {:ok, [:apple], _} =
             call(b, State, :get, ["cart:7", [consistency: :eventual, table: @table]])

    assert {:error, :timeout} =
             call(b, Causal, :get, [
               "cart:7",
               [session: reader_token, table: @table, timeout: 200]
             ])

    heal([c], [a, b])

    assert {:ok, [:pear], _, _} =
             call(b, Causal, :get, ["cart:7", [session: reader_token, table: @table]])

    assert {:ok, [:pear], _, _} =
             call(a, Causal, :get, ["cart:7", [session: token3, table: @table]])

    wait_converged([a, b, c], 10_000)

    assert {:ok, [:pear], _} =
             call(b, State, :get, ["cart:7", [consistency: :eventual, table: @table]])
  end

  test "a deleted key is collected everywhere and a replayed old write does not resurrect it",
       %{nodes: [a, b, c] = nodes} do
    {:ok, _} = call(a, Eventual, :put, ["gone:1", :old, [table: @table]])
    wait_converged(nodes, 10_000)
    old_state = call(c, Replica, :lookup, [@table, "gone:1"])
    {:ok, _} = call(b, Eventual, :delete, ["gone:1", [table: @table]])

    for n <- nodes do
      assert {:error, :not_found} =
               PeerNode.eventually(fn ->
                 r = call(n, Eventual, :get, ["gone:1", [table: @table]])
                 r == {:error, :not_found} and r
               end)

      # collected: no row left at all once every replica reported having seen the delete
      PeerNode.eventually(fn -> call(n, Replica, :lookup, [@table, "gone:1"]) == nil end, 5_000)
    end

    # a delayed delta carrying the old value reaches c after the collection
    send({Replica.name(@table), c}, {:dspex_state_delta, a, {0, 0}, nil, "gone:1", old_state})
    Process.sleep(3 * @interval)

    for n <- nodes do
      assert call(n, Replica, :lookup, [@table, "gone:1"]) == nil
    end
  end

  test "what an exchange brought in is passed on at once, not a round later (A-B-C chain, A-C cut)",
       %{nodes: [a, b, c] = nodes} do
    # a 30 s round: only the follow-up ping can bring A's write to C within seconds
    set_interval(nodes, 30_000)

    try do
      partition([a], [b, c])
      partition_pair(a, c)
      for i <- 1..20, do: {:ok, _} = call(a, Eventual, :put, [{"chain", i}, i, [table: @table]])
      assert {:error, :not_found} = call(c, Eventual, :get, [{"chain", 1}, [table: @table]])
      heal([a], [b])
      healed = mono()

      reached =
        PeerNode.eventually(
          fn ->
            match?({:ok, 20, _}, call(c, Eventual, :get, [{"chain", 20}, [table: @table]])) and
              mono()
          end,
          10_000
        )

      IO.puts("\n  chain A-B-C: C has A's writes #{reached - healed} ms after A-B healed")
      # 10x below the round: only the follow-up can do it (not a bound on its speed)
      assert reached - healed < 3_000
    after
      heal([a], [c])
      set_interval(nodes, @interval)
    end
  end

  test "a restarted replica's new writes stay above its previous life's stamps (clock was ahead)",
       %{nodes: [a, b, _c] = nodes} do
    # a's clock is pushed 30 s ahead (within max_clock_drift_ms) by a stamp it receives...
    ahead = System.system_time(:millisecond) + 30_000
    fast = :"fast_clock@127.0.0.1"
    delta = {%{fast => {ahead, 0}}, [{{ahead, 0, fast}, :x}]}
    send({Replica.name(@table), a}, {:dspex_state_delta, fast, {ahead, 0}, nil, "ahead:0", delta})

    PeerNode.eventually(fn ->
      match?({:ok, :x, _}, call(a, Eventual, :get, ["ahead:0", [table: @table]]))
    end)

    {:ok, v1} = call(a, Eventual, :put, ["ahead:1", :before_restart, [table: @table]])
    assert elem(v1.stamp, 0) >= ahead
    wait_converged(nodes, 10_000)

    # ...then its replica restarts with a fresh clock at wall time: its next write must still
    # get a stamp its peers have not seen, or they would take it for an old one and drop it
    sup = DSPEx.Clustering.State.EventualSupervisor
    :ok = :erpc.call(a, Supervisor, :terminate_child, [sup, {Replica, @table}])
    {:ok, _} = :erpc.call(a, Supervisor, :restart_child, [sup, {Replica, @table}])
    wait_converged(nodes, 10_000)
    {:ok, v2} = call(a, Eventual, :put, ["ahead:2", :after_restart, [table: @table]])
    assert v2.stamp > v1.stamp

    PeerNode.eventually(fn ->
      match?({:ok, :after_restart, _}, call(b, Eventual, :get, ["ahead:2", [table: @table]]))
    end)

    wait_converged(nodes, 10_000)
  end

  test "writes never wait on a frozen peer (SIGSTOP); it catches up after SIGCONT",
       %{nodes: [a, b, c] = nodes, peers: [_, _, peer_c]} do
    :ok = PeerNode.signal(peer_c.os_pid, "STOP")

    try do
      # 200 x 64 KiB of deltas to c: far more than its connection can buffer
      value = :binary.copy("v", 65_536)
      started = mono()

      for i <- 1..200,
          do:
            {:ok, _} =
              :erpc.call(a, Eventual, :put, [{"frozen", i}, value, [table: @table]], 5_000)

      IO.puts("\n  200 writes of 64 KiB with a frozen peer: #{mono() - started} ms")

      PeerNode.eventually(fn ->
        match?({:ok, ^value, _}, call(b, Eventual, :get, [{"frozen", 200}, [table: @table]]))
      end)
    after
      PeerNode.signal(peer_c.os_pid, "CONT")
    end

    PeerNode.eventually(
      fn -> match?({:ok, _, _}, call(c, Eventual, :get, [{"frozen", 200}, [table: @table]])) end,
      20_000
    )

    wait_converged(nodes, 20_000)
    for i <- 1..200, do: {:ok, _} = call(a, Eventual, :delete, [{"frozen", i}, [table: @table]])
  end

  test "a replica that was away while the others collected a deleted key drops its old value",
       %{nodes: [a, b, c] = nodes} do
    {:ok, _} = call(a, Eventual, :put, ["stale:1", :old, [table: @table]])
    wait_converged(nodes, 10_000)
    partition([c], [a, b])
    {:ok, _} = call(a, Eventual, :delete, ["stale:1", [table: @table]])
    # a and b stop waiting for c's report (an operator's forget_replica) and collect the key
    for n <- [a, b], do: :ok = call(n, Replica, :forget_replica, [@table, c])

    for n <- [a, b],
        do: PeerNode.eventually(fn -> call(n, Replica, :lookup, [@table, "stale:1"]) == nil end)

    assert {:ok, :old, _} = call(c, Eventual, :get, ["stale:1", [table: @table]])
    heal([c], [a, b])
    # c offers :old; a and b drop it (seen and collected) and send c the tombstone back
    PeerNode.eventually(fn ->
      call(c, Eventual, :get, ["stale:1", [table: @table]]) == {:error, :not_found}
    end)

    wait_converged(nodes, 10_000)
    for n <- nodes, do: assert(call(n, Replica, :lookup, [@table, "stale:1"]) == nil)
  end

  test "a node that joins late converges within 2x the interval", %{nodes: nodes} do
    for i <- 1..50,
        do: {:ok, _} = call(Enum.random(nodes), Eventual, :put, [{"late", i}, i, [table: @table]])

    wait_converged(nodes, 10_000)
    late = PeerNode.start("ev_d", @env, args: @args)

    try do
      for n <- nodes, do: true = :erpc.call(late.node, Node, :connect, [n])
      joined = mono()
      converged_ms = wait_converged([late.node | nodes], 10_000) - joined
      IO.puts("\n  late joiner: equal #{converged_ms} ms after connecting")
      assert converged_ms <= 2 * @interval
      assert {:ok, 7, _} = call(late.node, Eventual, :get, [{"late", 7}, [table: @table]])
    after
      PeerNode.stop(late)
      # gone for good: without this its last report would hold tombstone GC back forever
      for n <- nodes, do: :ok = call(n, Replica, :forget_replica, [@table, late.node])
      for n <- nodes, do: PeerNode.eventually(fn -> stats(n).peers == 2 end)
    end
  end

  # -- helpers -----------------------------------------------------------------------------------

  defp call(node, m, f, args), do: :erpc.call(node, m, f, args, 15_000)
  defp dump(node), do: call(node, Replica, :dump, [@table])
  defp stats(node), do: call(node, Replica, :stats, [@table])
  defp mono, do: System.monotonic_time(:millisecond)

  defp resolver(node, key) do
    DSPEx.Clustering.State.Resolvers.for_key(call(node, Replica, :resolvers, [@table]), key)
  end

  defp superseded?(stamp, ops),
    do: Enum.any?(ops, fn v -> v.stamp != stamp and covered_by_write?(v, stamp) end)

  # a default-context write superseded everything its replica held: what its context covers
  # except values written concurrently elsewhere that were LWW-pruned there (those lost fairly)
  defp covered_by_write?(v, stamp), do: v.stamp > stamp and KeyState.covered?(v.context, stamp)

  # the time (monotonic ms) at which every node's dump of the table was first seen equal
  defp wait_converged(nodes, timeout_ms) do
    PeerNode.eventually(
      fn ->
        dumps = Enum.map(nodes, &dump/1)
        length(Enum.uniq(dumps)) == 1 and mono()
      end,
      timeout_ms
    )
  end

  defp partition(side1, side2) do
    # a different unknown cookie on each side: two equal wrong cookies would handshake fine
    for x <- side1, y <- side2 do
      :erpc.call(x, :erlang, :set_cookie, [y, :"dspex_test_cut_by_#{x}"])
      :erpc.call(y, :erlang, :set_cookie, [x, :"dspex_test_cut_by_#{y}"])
    end

    for x <- side1, y <- side2, do: :erpc.call(x, :erlang, :disconnect_node, [y])

    for n <- side1 ++ side2 do
      PeerNode.eventually(fn ->
        stats(n).peers == if(n in side1, do: length(side1), else: length(side2)) - 1
      end)
    end
  end

  defp partition_pair(x, y) do
    :erpc.call(x, :erlang, :set_cookie, [y, :"dspex_test_cut_by_#{x}"])
    :erpc.call(y, :erlang, :set_cookie, [x, :"dspex_test_cut_by_#{y}"])
    :erpc.call(x, :erlang, :disconnect_node, [y])
    PeerNode.eventually(fn -> y not in :erpc.call(x, Node, :list, []) end)
  end

  # a new anti-entropy interval takes effect when the replica restarts (it then resyncs)
  defp set_interval(nodes, ms) do
    for n <- nodes do
      :ok = :erpc.call(n, Application, :put_env, [:dspex_cluster, :eventual_anti_entropy_ms, ms])
      sup = DSPEx.Clustering.State.EventualSupervisor
      :ok = :erpc.call(n, Supervisor, :terminate_child, [sup, {Replica, @table}])
      {:ok, _} = :erpc.call(n, Supervisor, :restart_child, [sup, {Replica, @table}])
    end

    for n <- nodes, do: PeerNode.eventually(fn -> stats(n).peers == length(nodes) - 1 end)
    wait_converged(nodes, 10_000)
  end

  defp heal(side1, side2) do
    cookie = :erlang.get_cookie()

    for x <- side1, y <- side2 do
      :erpc.call(x, :erlang, :set_cookie, [y, cookie])
      :erpc.call(y, :erlang, :set_cookie, [x, cookie])
    end

    # a dial that discovery started while the cut was up may still be failing: dial again
    for x <- side1,
        y <- side2,
        do: PeerNode.eventually(fn -> :erpc.call(x, Node, :connect, [y]) end)
  end
end
