defmodule DSPEx.Clustering.SignalBusTest do
  use ExUnit.Case, async: false
  alias DSPEx.Clustering.{Signal, SignalBus}

  test "a subscriber with overlapping patterns gets a signal once" do
    :ok = SignalBus.subscribe("test.bus.*")
    :ok = SignalBus.subscribe("test.**")
    :ok = SignalBus.subscribe("test.**")
    signal = Signal.new!("test.bus.once", %{n: 1})
    assert {:ok, n} = SignalBus.publish(signal)
    assert n >= 1
    assert_receive {:signal, ^signal}
    refute_receive {:signal, _}, 100
  after
    SignalBus.unsubscribe("test.bus.*")
    SignalBus.unsubscribe("test.**")
  end

  test "non-matching types are not delivered; unsubscribe stops delivery" do
    :ok = SignalBus.subscribe("test.only.this")
    {:ok, _} = SignalBus.publish(Signal.new!("test.only.that", %{}))
    refute_receive {:signal, _}, 50
    :ok = SignalBus.unsubscribe("test.only.this")
    {:ok, 0} = SignalBus.publish(Signal.new!("test.only.this", %{}))
    refute_receive {:signal, _}, 50
  end

  test "invalid signals and patterns are refused" do
    assert {:error, {:invalid_signal, :type, _}} =
             SignalBus.publish(
               %{type: "x"}
               |> Map.merge(Signal.new!("a.b", 1))
               |> Map.put(:type, "X")
             )

    assert {:error, {:invalid_pattern, "bad..pattern"}} = SignalBus.subscribe("bad..pattern")
  end

  test "local scope reaches local subscribers" do
    :ok = SignalBus.subscribe("test.local.*")
    {:ok, 1} = SignalBus.publish(Signal.new!("test.local.x", %{}, scope: :local))
    assert_receive {:signal, %{type: "test.local.x", scope: :local}}
  after
    SignalBus.unsubscribe("test.local.*")
  end
end
