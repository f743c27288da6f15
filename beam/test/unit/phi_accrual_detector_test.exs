defmodule DSPEx.Clustering.PhiAccrualDetectorTest do
  use ExUnit.Case, async: true
  alias DSPEx.Clustering.PhiAccrualDetector, as: Phi

  # -log10(P(Z > z)) for a standard normal Z, computed independently with scipy's log_ndtr.
  @known [
    {0, 0.30102999566398114},
    {1, 0.7995455414919703},
    {2, 1.6430160801409368},
    {3, 2.869699035929369},
    {10, 23.118053405486076},
    {20, 88.5600953430756},
    {40, 349.43700645934587}
  ]

  test "phi matches the normal tail at known points, including the asymptotic range" do
    for {z, expected} <- @known do
      # mean 100 ms, std 20 ms: elapsed = mean + z * std
      assert_in_delta Phi.phi(100 + z * 20, 100, 20), expected, 1.0e-6 * max(expected, 1)
    end
  end

  test "phi grows monotonically with silence" do
    values = for t <- 0..2000//50, do: Phi.phi(t, 100, 30)
    assert values == Enum.sort(values)
  end

  test "window statistics, bootstrap and the min std floor" do
    d = Phi.new(window: 4, min_std_ms: 10, pause_ms: 0, expected_ms: 100)
    assert Phi.phi(d, 0) == 0.0
    d = Phi.heartbeat(d, 0)
    # bootstrap samples 75 and 125
    assert Phi.stats(d) == {100.0, 25.0}
    d = Enum.reduce(1..4, d, &Phi.heartbeat(&2, &1 * 100))
    # window of 4 keeps only the four 100 ms intervals: std 0, floored at 10
    assert Phi.stats(d) == {100.0, 0.0}
    assert_in_delta Phi.phi(d, 400 + 100 + 10), 0.7995455414919703, 1.0e-9
    # a heartbeat recorded without a sample leaves the statistics unchanged
    d2 = Phi.heartbeat(d, 5_000, sample?: false)
    assert Phi.stats(d2) == Phi.stats(d) and d2.last_ms == 5_000
  end

  test "acceptable pause shifts the mean" do
    d = Phi.new(window: 10, min_std_ms: 50, pause_ms: 200, expected_ms: 100) |> Phi.heartbeat(0)
    assert_in_delta Phi.phi(d, 300), 0.30102999566398114, 1.0e-9
  end

  test "defaults: a silence of ~0.7 s crosses phi 8 for 100 ms heartbeats" do
    d = Phi.new(window: 100, min_std_ms: 100, pause_ms: 0, expected_ms: 100)
    d = Enum.reduce(0..50, d, &Phi.heartbeat(&2, &1 * 100))
    last = 5_000
    assert Phi.phi(d, last + 600) < 8.0
    assert Phi.phi(d, last + 700) > 8.0
  end
end
