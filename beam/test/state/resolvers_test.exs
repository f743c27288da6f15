defmodule DSPEx.Clustering.State.ResolversTest do
  use ExUnit.Case, async: true
  alias DSPEx.Clustering.State.Resolvers

  test "prefix matching on binaries, tuples, lists and other terms" do
    assert Resolvers.prefix?("user:", "user:42")
    assert Resolvers.prefix?("", "anything")
    refute Resolvers.prefix?("user:", "use")
    refute Resolvers.prefix?("user:", {"user:", 1})
    assert Resolvers.prefix?({:session}, {:session, 7, :cart})
    assert Resolvers.prefix?({:session, 7}, {:session, 7, :cart})
    refute Resolvers.prefix?({:session, 8}, {:session, 7, :cart})
    refute Resolvers.prefix?({:session, 7, :cart, :x}, {:session, 7, :cart})
    assert Resolvers.prefix?([:a], [:a, :b])
    refute Resolvers.prefix?([:b], [:a, :b])
    assert Resolvers.prefix?(:counter, :counter)
    refute Resolvers.prefix?(:counter, :counters)
    refute Resolvers.prefix?(1, 1.0)
  end

  test "the longest matching prefix decides; unmatched keys are last-writer-wins" do
    table = %{
      "s:" => {{1, 0, :a@h}, :siblings},
      "s:set:" => {{1, 1, :a@h}, {Enum, :concat}},
      {:cart} => {{1, 2, :a@h}, :siblings}
    }

    assert Resolvers.for_key(table, "s:x") == :siblings
    assert Resolvers.for_key(table, "s:set:x") == {Enum, :concat}
    assert Resolvers.for_key(table, {:cart, 1}) == :siblings
    assert Resolvers.for_key(table, "other") == :lww
    assert Resolvers.for_key(table, :atom) == :lww
  end

  test "the later registration of a prefix wins when tables merge" do
    a = %{"p" => {{1, 0, :a@h}, :siblings}}
    b = %{"p" => {{2, 0, :b@h}, :lww}, "q" => {{1, 0, :b@h}, :siblings}}
    assert Resolvers.merge(a, b) == Resolvers.merge(b, a)
    assert Resolvers.for_key(Resolvers.merge(a, b), "p1") == :lww
  end

  test "resolve: one value as is, lww takes the newest, siblings keeps all, functions merge" do
    assert Resolvers.resolve(:siblings, :k, [1]) == {:ok, 1}
    assert Resolvers.resolve(:lww, :k, [1, 2]) == {:ok, 2}
    assert Resolvers.resolve(:siblings, :k, [1, 2]) == {:siblings, [1, 2]}
    assert Resolvers.resolve(fn _k, vs -> Enum.sum(vs) end, :k, [1, 2]) == {:ok, 3}

    assert Resolvers.resolve({DSPEx.Test.Resolvers, :union}, :k, [[3, 1], [2, 1]]) ==
             {:ok, [1, 2, 3]}
  end

  test "bad resolvers are refused" do
    assert Resolvers.validate(:lww) == :ok
    assert Resolvers.validate({DSPEx.Test.Resolvers, :union}) == :ok
    assert {:error, {:invalid_resolver, _}} = Resolvers.validate(fn _ -> 1 end)

    assert {:error, {:invalid_resolver, "x"}} = Resolvers.validate("x")
  end
end
