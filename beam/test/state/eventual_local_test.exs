defmodule DSPEx.Clustering.State.EventualLocalTest do
  @moduledoc "The eventual replica of this node's `:default` table, alone: clocks and bad input."
  use ExUnit.Case, async: false

  alias DSPEx.Clustering.State
  alias DSPEx.Clustering.State.{Eventual, Replica}
  alias DSPEx.Test.PeerNode

  test "a value stamped an hour ahead is kept, but this node's clock is not dragged there" do
    key = {:drift, System.unique_integer()}
    runaway = :"runaway@127.0.0.1"
    far = System.system_time(:millisecond) + 3_600_000
    stamp = {far, 0, runaway}
    drifted = Replica.stats(:default).drift
    # the delta a node with a runaway clock would send
    delta = {%{runaway => {far, 0}}, [{stamp, :future}]}
    send(Replica.name(:default), {:dspex_state_delta, runaway, {far, 0}, nil, key, delta})

    assert {:ok, :future, %{stamp: ^stamp}} =
             PeerNode.eventually(fn ->
               r = Eventual.get(key)
               match?({:ok, _, _}, r) and r
             end)

    assert Replica.stats(:default).drift == drifted + 1
    # a later local write still replaces it (it has seen it), with a stamp of this clock
    {:ok, v} = Eventual.put(key, :mine)
    {pt, _, _} = v.stamp
    assert pt < far - 3_000_000
    assert {:ok, :mine, _} = Eventual.get(key)

    # a stamp within max_clock_drift_ms is adopted: the next local stamp is above it
    near = System.system_time(:millisecond) + 20_000
    key2 = {:near, System.unique_integer()}
    other = :"other@127.0.0.1"
    delta2 = {%{other => {near, 5}}, [{{near, 5, other}, :soon}]}
    send(Replica.name(:default), {:dspex_state_delta, other, {near, 5}, nil, key2, delta2})
    PeerNode.eventually(fn -> match?({:ok, :soon, _}, Eventual.get(key2)) end)
    {:ok, v2} = Eventual.put({:after, key2}, 1)
    assert v2.stamp > {near, 5, other}
  end

  test "bad input gets a clear error and writes nothing" do
    assert {:error, {:unknown_table, :nope}} =
             State.put(:k, 1, consistency: :eventual, table: :nope)

    assert {:error, {:unknown_table, :nope}} = State.get(:k, consistency: :eventual, table: :nope)

    assert {:error, {:invalid_context, :bad}} =
             State.put(:bad_ctx, 1, consistency: :eventual, context: :bad)

    assert {:error, {:invalid_context, %{"n" => 1}}} =
             State.put(:bad_ctx, 1, consistency: :eventual, context: %{"n" => 1})

    assert {:error, {:invalid_session, [1]}} =
             State.put(:bad_ctx, 1, consistency: :causal, session: [1])

    assert {:error, {:invalid_session, %{a: 1}}} =
             State.get(:bad_ctx, consistency: :causal, session: %{a: 1})

    assert {:error, :not_found} = State.get(:bad_ctx, consistency: :eventual)
    assert {:error, {:invalid_resolver, "x"}} = State.register_resolver("p", "x")

    assert {:error, {:value_too_large, _, _}} =
             State.put(:big, :binary.copy("x", 1_048_577), consistency: :eventual)

    assert {:error, :not_found} = State.get(:big, consistency: :eventual)
  end
end
