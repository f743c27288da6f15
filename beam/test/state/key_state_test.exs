defmodule DSPEx.Clustering.State.KeyStateTest do
  use ExUnit.Case, async: true
  alias DSPEx.Clustering.State.KeyState

  @nodes [:a@h, :b@h, :c@h]

  # Random histories on three simulated replicas of one key: writes that supersede what the
  # replica holds, blind writes (context %{}), deletes and full-state merges in any order.
  defp history(seed, steps) do
    :rand.seed(:exsss, {seed, 7, 11})
    replicas = Map.new(@nodes, &{&1, KeyState.new()})

    {replicas, ops, _t} =
      Enum.reduce(1..steps, {replicas, [], 1}, fn _, {rs, ops, t} ->
        n = Enum.random(@nodes)
        {ctx, _} = current = rs[n]
        dot = {t, 0, n}

        case :rand.uniform(4) do
          1 ->
            {Map.put(rs, n, KeyState.write(current, dot, {n, t}, ctx)), [{:w, dot, ctx} | ops],
             t + 1}

          2 ->
            {Map.put(rs, n, KeyState.write(current, dot, {n, t}, %{})), [{:w, dot, %{}} | ops],
             t + 1}

          3 when t > 3 ->
            {Map.put(rs, n, KeyState.delete(current, dot, ctx)), [{:d, dot, ctx} | ops], t + 1}

          _ ->
            from = Enum.random(@nodes)
            {Map.put(rs, n, KeyState.merge(current, rs[from])), ops, t}
        end
      end)

    {replicas, Enum.reverse(ops)}
  end

  test "merge is commutative, associative and idempotent on reachable states" do
    for seed <- 1..200 do
      {rs, _} = history(seed, 30)
      [a, b, c] = Enum.map(@nodes, &rs[&1])
      assert KeyState.merge(a, b) == KeyState.merge(b, a)
      assert KeyState.merge(a, a) == a
      assert KeyState.merge(KeyState.merge(a, b), c) == KeyState.merge(a, KeyState.merge(b, c))
    end
  end

  test "after exchanging states every replica holds exactly the writes nothing superseded" do
    for seed <- 1..200 do
      {rs, ops} = history(seed, 40)
      joined = rs |> Map.values() |> Enum.reduce(&KeyState.merge/2)
      finals = Enum.map(rs, fn {_n, s} -> KeyState.merge(s, joined) end)
      assert Enum.uniq(finals) == [joined]

      # a write survives iff no other write or delete superseded its dot (nothing acked is lost)
      superseded? = fn dot ->
        Enum.any?(ops, fn {_, other, ctx} -> other != dot and KeyState.covered?(ctx, dot) end)
      end

      expected = for {:w, dot, _} <- ops, not superseded?.(dot), do: dot
      {_ctx, entries} = joined
      assert Enum.map(entries, &elem(&1, 0)) == Enum.sort(expected)
    end
  end

  test "last-writer-wins keeps the greatest stamp; deletes leave an empty tombstone" do
    s = KeyState.new()
    a = KeyState.write(s, {1, 0, :a@h}, :x, %{})
    b = KeyState.write(s, {1, 0, :b@h}, :y, %{})
    merged = KeyState.merge(a, b)
    assert {_, [{{1, 0, :a@h}, :x}, {{1, 0, :b@h}, :y}]} = merged
    assert {_, [{{1, 0, :b@h}, :y}]} = KeyState.prune_lww(merged)
    # the pruned state stays the join: merging the loser again changes nothing
    pruned = KeyState.prune_lww(merged)
    assert KeyState.merge(pruned, a) == pruned

    {ctx, _} = merged
    tomb = KeyState.delete(merged, {2, 0, :c@h}, ctx)
    assert {%{c@h: {2, 0}}, []} = {Map.take(elem(tomb, 0), [:c@h]), elem(tomb, 1)}
    assert KeyState.merge(tomb, a) == tomb
    assert KeyState.merge(b, tomb) == tomb
  end

  test "contexts: coverage, dominance and joins" do
    ctx = %{a@h: {5, 2}}
    assert KeyState.covered?(ctx, {5, 2, :a@h})
    assert KeyState.covered?(ctx, {4, 9, :a@h})
    refute KeyState.covered?(ctx, {5, 3, :a@h})
    refute KeyState.covered?(ctx, {1, 0, :b@h})
    assert KeyState.dominates?(%{a@h: {5, 2}, b@h: {1, 0}}, ctx)
    refute KeyState.dominates?(ctx, %{b@h: {1, 0}})
    assert KeyState.join_contexts(ctx, %{a@h: {4, 0}, b@h: {1, 0}}) == %{a@h: {5, 2}, b@h: {1, 0}}
  end
end
