defmodule DSPEx.Clustering.VariableClusterTest do
  use ExUnit.Case, async: false
  @moduletag :distributed

  alias DSPEx.Clustering.{Migration, Variable}
  alias DSPEx.Test.{Collector, PeerNode}

  setup_all do
    peers = [PeerNode.start("var_a"), PeerNode.start("var_b")]
    on_exit(fn -> Enum.each(peers, &PeerNode.stop/1) end)
    [a, b] = Enum.map(peers, & &1.node)
    true = :erpc.call(a, Node, :connect, [b])
    PeerNode.eventually(fn -> length(Variable.Keeper.keeper_nodes()) == 3 end)
    %{a: a, b: b}
  end

  defp uniq(prefix), do: "#{prefix}.#{System.unique_integer([:positive])}"

  defp collectors(nodes, count) do
    for i <- 1..count do
      node = Enum.at(nodes, rem(i, length(nodes)))
      if node == node(), do: Collector.start(), else: :erpc.call(node, Collector, :start, [])
    end
  end

  # Every collector saw exactly versions from..to in order, with the same value per version.
  defp assert_streams(collectors, name, from, to) do
    streams =
      for c <- collectors do
        for {:variable, ^name, value, version} <- Collector.dump(c), do: {version, value}
      end

    [first | _] = streams
    versions = Enum.map(first, &elem(&1, 0))
    expected = Enum.to_list(from..to)

    assert versions == expected,
           "missing #{inspect(expected -- versions)}, twice #{inspect(versions -- Enum.uniq(versions))}"

    bad = Enum.count(streams, &(&1 != first))
    assert bad == 0, "#{bad} of #{length(streams)} subscribers saw another stream"
  end

  test "1,000 subscribers over three nodes see every version in order; start and set from any node",
       %{a: a, b: b} do
    name = uniq("lb.exploration")
    nodes = [node(), a, b]
    # started from another node through :erpc, it lives on b, not linked to that call
    assert {:ok, pid} =
             :erpc.call(a, Variable, :start, [
               name,
               [type: :float, range: {0.0, 1.0}, value: 0.1, node: b]
             ])

    assert node(pid) == b
    for n <- nodes, do: assert(:erpc.call(n, Variable, :where, [name]) == b)

    subs = collectors(nodes, 1_000)
    for s <- subs, do: :ok = Variable.subscribe(name, s, from_version: 0)

    for i <- 1..60 do
      n = Enum.at(nodes, rem(i, 3))
      {:ok, _} = :erpc.call(n, Variable, :set, [name, i / 100])
    end

    assert {:ok, 0.6, 61} = :erpc.call(a, Variable, :get, [name])
    PeerNode.eventually(fn -> length(Collector.dump(List.last(subs))) == 61 end)
    Process.sleep(200)
    assert_streams(subs, name, 1, 61)
  end

  test "the host killed: the variable is restarted elsewhere from its last value, streams go on" do
    host = PeerNode.start("var_host")
    PeerNode.eventually(fn -> host.node in Variable.Keeper.keeper_nodes() end)
    name = uniq("health.threshold")
    {:ok, _} = Variable.start(name, type: :float, value: 3.0, node: host.node)
    subs = collectors([node()], 5)
    for s <- subs, do: :ok = Variable.subscribe(name, s, from_version: 0)
    for i <- 1..10, do: {:ok, _} = Variable.set(name, 3.0 + i)
    PeerNode.eventually(fn -> {:ok, 13.0, 11} == Variable.get(name) end)
    # every keeper holds the last value before the kill
    Process.sleep(100)

    PeerNode.signal(host.os_pid, "KILL")
    PeerNode.eventually(fn -> Variable.where(name) not in [nil, host.node] end, 10_000)
    assert {:ok, 13.0, 11} = Variable.get(name)
    {:ok, 12} = Variable.set(name, 20.0)
    PeerNode.eventually(fn -> length(Collector.dump(hd(subs))) >= 12 end)
    assert_streams(subs, name, 1, 12)
    PeerNode.stop(host)
  end

  test "a variable migrated while nodes set it: gap-free streams, adaptation state kept",
       %{a: a, b: b} do
    name = uniq("mig.var")

    {:ok, _} = Variable.start(name, type: :float, range: {0.0, 1.0}, value: 0.5, seed: 1, node: a)

    subs = collectors([node(), a, b], 30)
    for s <- subs, do: :ok = Variable.subscribe(name, s, from_version: 0)
    {:ok, _, _} = Variable.feedback(name, 1.0)
    {:ok, info0} = Variable.info(name)

    setter =
      Task.async(fn ->
        for i <- 1..200, do: {:ok, _} = :erpc.call(b, Variable, :set, [name, rem(i, 100) / 100])
      end)

    for target <- [b, node(), a, b] do
      assert {:ok, %{pause_ms: _, state_bytes: _}} = Migration.migrate({:variable, name}, target)
      assert Variable.where(name) == target
    end

    Task.await(setter, 30_000)
    {:ok, _, last} = Variable.get(name)
    assert last == 202
    {:ok, info1} = Variable.info(name)
    assert info1.feedback_steps == info0.feedback_steps and info1.estimate == info0.estimate
    PeerNode.eventually(fn -> length(Collector.dump(List.last(subs))) == last end)
    assert_streams(subs, name, 1, last)
    # an unreachable target: error, still served where it was
    assert {:error, _} = Migration.migrate({:variable, name}, :"nobody@127.0.0.1")
    assert Variable.where(name) == b
  end
end
