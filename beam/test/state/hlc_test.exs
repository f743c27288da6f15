defmodule DSPEx.Clustering.State.HLCTest do
  use ExUnit.Case, async: true
  alias DSPEx.Clustering.State.HLC

  test "now/2 is strictly monotonic, also when the wall clock stands still or steps back" do
    clock = HLC.new(:a@h)
    walls = [1_000, 1_000, 1_000, 999, 500, 1_001, 1_001, 2_000, 10]

    {stamps, _} = Enum.map_reduce(walls, clock, fn wall, c -> HLC.now(c, wall) end)

    assert stamps == Enum.sort(stamps)
    assert length(Enum.uniq(stamps)) == length(stamps)
    assert hd(stamps) == {1_000, 0, :a@h}
    # the wall clock going back to 500 does not take the physical part back
    assert Enum.at(stamps, 4) == {1_000, 4, :a@h}
    assert Enum.at(stamps, 5) == {1_001, 0, :a@h}
  end

  test "after observing a received stamp the clock is never behind it" do
    for seed <- 1..50 do
      :rand.seed(:exsss, {seed, 2, 3})
      clock = HLC.new(:a@h, 60_000)

      Enum.reduce(1..100, clock, fn _, c ->
        wall = 10_000 + :rand.uniform(1_000)
        remote = {10_000 + :rand.uniform(2_000), :rand.uniform(5), :b@h}
        {:ok, c} = HLC.observe(c, remote, wall)
        {stamp, c} = HLC.now(c, wall)
        assert stamp > remote
        assert stamp > {wall, -1, :a@h}
        c
      end)
    end
  end

  test "a stamp further ahead than max_drift_ms is not adopted, one within the bound is" do
    clock = HLC.new(:a@h, 1_000)
    assert {{:drift, 5_000}, ^clock} = HLC.observe(clock, {15_000, 0, :b@h}, 10_000)
    {stamp, _} = HLC.now(clock, 10_000)
    assert stamp == {10_000, 0, :a@h}

    assert {:ok, clock} = HLC.observe(clock, {10_900, 7, :b@h}, 10_000)
    assert {{10_900, 8, :a@h}, _} = HLC.now(clock, 10_000)
  end

  test "the node name breaks ties between equal physical and logical parts" do
    assert {5, 1, :a@h} < {5, 1, :b@h}
    assert {5, 1, :z@h} < {5, 2, :a@h}
    assert {5, 9, :z@h} < {6, 0, :a@h}
  end
end
