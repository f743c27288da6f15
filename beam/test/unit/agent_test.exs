defmodule DSPEx.Clustering.AgentTest do
  use ExUnit.Case, async: false
  alias DSPEx.Clustering.{Action, Agent, Signal, SignalBus}

  defmodule Add do
    use DSPEx.Clustering.Action,
      name: :add,
      schema: [
        by: [type: :integer, required: true],
        label: [type: :atom, default: :none, in: [:none, :x]]
      ]

    @impl true
    def run(%{by: by, label: label}, %{state: state}),
      do: {:ok, {state.count + by, label}, %{state | count: state.count + by}}
  end

  defmodule Counter do
    use DSPEx.Clustering.Agent

    @impl true
    def init_agent(opts), do: {:ok, %{count: 0, test: opts[:test], ticks: 0}}
    @impl true
    def actions, do: [Add]
    @impl true
    def sensors(_state), do: [tick: {:every, 20}, events: :event]
    @impl true
    def routes, do: [{"test.agent.add", Add}, {"test.agent.reset", :on_reset}]

    @impl true
    def sense(:tick, state) do
      signals = if state.ticks == 0, do: [Signal.new!("test.agent.ticked", %{})], else: []
      {:ok, signals, %{state | ticks: state.ticks + 1}}
    end

    @impl true
    def handle_event({:poke, from}, state) do
      send(from, {:poked, state.count})
      {:ok, [], state}
    end

    def on_reset(_signal, state), do: {:ok, [], %{state | count: 0}}
  end

  test "actions validate params" do
    assert {:ok, %{by: 2, label: :none}} = Action.validate(Add.schema(), %{"by" => 2, extra: 1})
    assert {:error, {:invalid_params, :by, "is required"}} = Action.validate(Add.schema(), %{})
    assert {:error, {:invalid_params, :by, _}} = Action.validate(Add.schema(), by: "2")

    assert {:error, {:invalid_params, :label, _}} =
             Action.validate(Add.schema(), by: 1, label: :y)
  end

  test "an agent runs actions, sensors and routes" do
    :ok = SignalBus.subscribe("test.agent.ticked")
    {:ok, pid} = Counter.start_link(test: self())
    assert_receive {:signal, %{type: "test.agent.ticked"}}, 1000
    assert {:ok, {3, :none}} = Agent.cmd(pid, :add, %{by: 3})
    assert {:ok, {5, :x}} = Agent.cmd(pid, Add, by: 2, label: :x)
    assert {:error, {:invalid_params, :by, _}} = Agent.cmd(pid, :add, %{})
    assert {:error, {:unknown_action, :nope}} = Agent.cmd(pid, :nope, %{})
    assert Agent.count() >= 1

    {:ok, _} = SignalBus.publish(Signal.new!("test.agent.add", %{by: 10}))
    send(pid, {:poke, self()})
    assert_receive {:poked, 15}, 1000
    {:ok, _} = SignalBus.publish(Signal.new!("test.agent.reset", %{}))
    send(pid, {:poke, self()})
    assert_receive {:poked, 0}, 1000
    assert Agent.state(pid).ticks > 0
    GenServer.stop(pid)
  after
    SignalBus.unsubscribe("test.agent.ticked")
  end

  test "an unknown request is answered with an error and the agent keeps its state" do
    {:ok, pid} = Counter.start_link(test: self())
    assert {:ok, {4, :none}} = Agent.cmd(pid, :add, %{by: 4})

    ExUnit.CaptureLog.capture_log(fn ->
      assert {:error, {:unknown_request, :members}} = GenServer.call(pid, :members)
    end)

    assert Process.alive?(pid)
    assert Agent.state(pid).count == 4
    GenServer.stop(pid)
  end
end
