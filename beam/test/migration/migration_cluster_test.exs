defmodule DSPEx.Clustering.MigrationClusterTest do
  use ExUnit.Case, async: false
  @moduletag :distributed

  alias DSPEx.Clustering.{Agent, Migration, SignalBus}
  alias DSPEx.Test.{PeerNode, RecordingAgent}

  setup_all do
    peers = [PeerNode.start("mig_a"), PeerNode.start("mig_b")]
    on_exit(fn -> Enum.each(peers, &PeerNode.stop/1) end)
    [a, b] = Enum.map(peers, & &1.node)
    true = :erpc.call(a, Node, :connect, [b])
    %{a: a, b: b}
  end

  # Subscribes the test process to the migration signals and waits until `node` sees it (pg
  # spreads memberships asynchronously: a signal published before would be missed).
  defp subscribe_migration_signals(node) do
    :ok = SignalBus.subscribe("cluster.migration.*")
    me = self()

    PeerNode.eventually(fn ->
      me in :erpc.call(node, SignalBus, :subscribers_for, ["cluster.migration.checkpointed"])
    end)
  end

  defp uniq, do: {:agent, "rec-#{System.unique_integer([:positive])}"}

  defp start_sender(node, id, tag, n, me),
    do: Node.spawn(node, DSPEx.Test.Sender, :run, [id, tag, n, me])

  defp check_history(id, tags, n) do
    seen = Agent.call(id, :seen, 10_000)

    for tag <- tags do
      got = Enum.reverse(Map.get(seen, tag, []))
      missing = Enum.to_list(1..n) -- got
      twice = got -- Enum.uniq(got)

      assert got == Enum.to_list(1..n),
             "sender #{inspect(tag)}: missing #{inspect(missing)}, twice #{inspect(twice)}, " <>
               "out of order: #{got != Enum.sort(got)}"
    end
  end

  test "an agent migrated repeatedly under load from three nodes: every message once, in order",
       %{a: a, b: b} do
    id = uniq()
    {:ok, _} = Migration.start_agent(RecordingAgent, [id: id, pad_bytes: 2048], a)
    assert Migration.where(id) == a
    hash0 = Agent.call(id, :hash)
    {:ok, info} = Migration.migrate(id, b)
    assert info.state_bytes > 2048 and info.pause_ms > 0
    assert Agent.call(id, :hash) == hash0
    assert Agent.call(id, :node) == b

    me = self()
    n = 600
    tags = for {node, i} <- Enum.with_index([node(), a, b]), do: {node, i}
    for {node, _} = tag <- tags, do: start_sender(node, id, tag, n, me)

    targets = Stream.cycle([a, node(), b]) |> Enum.take(30)

    moves =
      for target <- targets, Migration.where(id) != target do
        {:ok, %{pause_ms: p}} = Migration.migrate(id, target, grace_ms: 100)
        p
      end

    for tag <- tags, do: assert_receive({:sender_done, ^tag}, 30_000)
    assert length(moves) >= 20
    check_history(id, tags, n)
  end

  test "kill -9 of the target while it restores: rolled back, nothing lost", %{a: a} do
    target = PeerNode.start("mig_victim")
    id = uniq()
    {:ok, _} = Migration.start_agent(RecordingAgent, [id: id, restore_sleep_ms: 400], a)
    subscribe_migration_signals(a)
    me = self()
    tags = [{node(), :x}, {a, :y}]
    for {node, _} = tag <- tags, do: start_sender(node, id, tag, 300, me)

    killer =
      Task.async(fn ->
        receive do
          {:signal, %{type: "cluster.migration.checkpointed"}} -> :ok
        end
      end)

    Process.sleep(50)
    mig = Task.async(fn -> Migration.migrate(id, target.node) end)
    # the signal reaches this process; kill while the target sleeps in restore/2
    assert_receive {:signal, %{type: "cluster.migration.checkpointed"}}, 5_000
    Process.sleep(150)
    PeerNode.signal(target.os_pid, "KILL")
    assert {:error, {:transfer_failed, _}} = Task.await(mig, 15_000)
    assert_receive {:signal, %{type: "cluster.migration.rolled_back"}}, 5_000
    Task.shutdown(killer, :brutal_kill)
    assert Migration.where(id) == a

    for tag <- tags, do: assert_receive({:sender_done, ^tag}, 30_000)
    check_history(id, tags, 300)
    PeerNode.stop(target)
  after
    SignalBus.unsubscribe("cluster.migration.*")
  end

  test "a large compressible state travels compressed and arrives whole", %{a: a, b: b} do
    id = uniq()
    {:ok, _} = Migration.start_agent(RecordingAgent, [id: id, pad_bytes: 500_000, pad: :zeros], a)
    hash = Agent.call(id, :hash)
    assert {:ok, %{state_bytes: bytes, steps_ms: %{checkpoint: _}}} = Migration.migrate(id, b)
    assert bytes < 50_000
    assert Agent.call(id, :hash) == hash
    # random bytes do not compress: sent as they are
    rid = uniq()
    {:ok, _} = Migration.start_agent(RecordingAgent, [id: rid, pad_bytes: 500_000], a)
    assert {:ok, %{state_bytes: rbytes}} = Migration.migrate(rid, b)
    assert rbytes > 500_000
  end

  test "kill -9 of the target after the switch, in the grace period: the source takes the " <>
         "agent back and replays what it had forwarded",
       %{a: a} do
    victim = PeerNode.start("mig_late")
    id = uniq()
    {:ok, _} = Migration.start_agent(RecordingAgent, [id: id, restore_sleep_ms: 500], a)
    for i <- 1..100, do: :ok = Agent.send(id, {:msg, :l, i})
    subscribe_migration_signals(a)
    mig = Task.async(fn -> Migration.migrate(id, victim.node, grace_ms: 5_000) end)
    assert_receive {:signal, %{type: "cluster.migration.checkpointed"}}, 5_000
    # the agent is paused (its target restoring for 500 ms): these wait in its mailbox
    for i <- 101..200, do: :ok = Agent.send(id, {:msg, :l, i})
    assert_receive {:signal, %{type: "cluster.migration.completed", data: data}}, 10_000
    assert {:ok, %{forwarded: forwarded}} = Task.await(mig)
    assert forwarded > 0 and data.target == victim.node
    PeerNode.signal(victim.os_pid, "KILL")

    assert_receive {:signal,
                    %{type: "cluster.migration.rolled_back", data: %{after_switch: true}}},
                   10_000

    PeerNode.eventually(fn -> Migration.where(id) == a end)
    check_history(id, [:l], 200)
    PeerNode.stop(victim)
  after
    SignalBus.unsubscribe("cluster.migration.*")
  end

  test "sensors keep their rate across migrations (the old instance's timers stay behind)",
       %{a: a, b: b} do
    id = uniq()
    {:ok, _} = Migration.start_agent(RecordingAgent, [id: id, tick_ms: 20], a)

    for target <- [b, a, b, a, b, a] do
      Process.sleep(30)
      {:ok, _} = Migration.migrate(id, target, grace_ms: 50)
    end

    t0 = Agent.call(id, :ticks)
    Process.sleep(1_000)
    ticks = Agent.call(id, :ticks) - t0
    # one timer: about 50 a second (fewer under load); doubled per move it would be ~3,000
    assert ticks in 10..60, "#{ticks} ticks in 1 s"
  end

  test "a target that refuses or is unreachable leaves the agent where it was", %{a: a, b: b} do
    id = uniq()
    {:ok, _} = Migration.start_agent(RecordingAgent, [id: id], a)
    :ok = Agent.send(id, {:msg, :t, 1})

    assert {:error, {:unreachable, :"nobody@127.0.0.1"}} =
             Migration.migrate(id, :"nobody@127.0.0.1")

    assert {:error, :already_there} = Migration.migrate(id, a)
    assert {:error, :not_found} = Migration.migrate({:agent, :none}, b)
    # a node without the application: restore fails, the agent stays
    plain = PeerNode.start("mig_plain", [], app: false)
    assert {:error, {:transfer_failed, _}} = Migration.migrate(id, plain.node)
    PeerNode.stop(plain)
    assert Migration.where(id) == a
    assert Agent.call(id, :seen) == %{t: [1]}
  end

  test "kill of the source after the switch: the target carries on", %{b: b} do
    source = PeerNode.start("mig_src")
    id = uniq()
    {:ok, _} = Migration.start_agent(RecordingAgent, [id: id], source.node)
    for i <- 1..50, do: :ok = Agent.send(id, {:msg, :s, i})
    {:ok, _} = Migration.migrate(id, b, grace_ms: 2_000)
    PeerNode.signal(source.os_pid, "KILL")
    for i <- 51..100, do: :ok = Agent.send(id, {:msg, :s, i})
    assert Agent.call(id, :node) == b
    check_history(id, [:s], 100)
    PeerNode.stop(source)
  end
end
