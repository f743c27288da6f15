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

  test "the relay forwards to its subscribers once and forgets dead ones" do
    relay = Process.whereis(:dspex_signal_relay)
    me = self()
    sub = spawn(fn -> receive(do: ({:signal, s} -> send(me, {:got, s}))) end)
    :ok = GenServer.call(relay, {:subscribe, "test.relay.*", sub})
    :ok = GenServer.call(relay, {:subscribe, "test.**", sub})
    assert {:error, {:invalid_pattern, _}} = GenServer.call(relay, {:subscribe, "A..", sub})
    {:ok, _} = SignalBus.publish(Signal.new!("test.relay.x", %{}))
    assert_receive {:got, %{type: "test.relay.x"}}
    refute_receive {:got, _}, 100
    # the subscriber has exited after one signal: the relay drops it and leaves the groups
    Process.sleep(50)
    assert GenServer.call(relay, :subscriptions) == %{}
    refute relay in :pg.get_local_members(:dspex_signal_bus, "test.relay.*")
  end

  test "publishing through the relay (as a non-BEAM node would)" do
    :ok = SignalBus.subscribe("test.viarelay.*")
    signal = Signal.new!("test.viarelay.call", %{})
    assert {:ok, 1} = GenServer.call(:dspex_signal_relay, {:publish, signal})
    assert_receive {:signal, ^signal}
    GenServer.cast(:dspex_signal_relay, {:publish, %{signal | type: "test.viarelay.cast"}})
    assert_receive {:signal, %{type: "test.viarelay.cast"}}

    assert {:error, {:invalid_signal, :type, _}} =
             GenServer.call(:dspex_signal_relay, {:publish, %{signal | type: "Bad"}})
  after
    SignalBus.unsubscribe("test.viarelay.*")
  end
end
