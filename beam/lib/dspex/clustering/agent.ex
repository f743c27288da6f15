defmodule DSPEx.Clustering.Agent do
  @moduledoc """
  A clustering agent: a GenServer with state, actions, sensors and signal routes.

    * **state** — whatever `init_agent/1` returns.
    * **actions** — `DSPEx.Clustering.Action` modules listed by `actions/0`; run them with
      `cmd/4` (params are validated first).
    * **sensors** — signal sources. `sensors/1` lists `{name, {:every, ms}}` (periodic: the
      agent calls `sense(name, state)` every `ms`) and `{name, :event}` (event-driven: any
      message the agent does not know, e.g. `{:nodeup, n, info}`, goes to
      `handle_event(message, state)`). Both return `{:ok, signals, state}`; the signals are
      published on the `SignalBus`.
    * **routes** — `routes/0` lists `{pattern, target}`; the agent subscribes to each pattern
      and a matching `{:signal, s}` runs `target`: an Action module (params = `s.data`, the
      signal in the context under `:signal`) or the name of a function
      `target(signal, state) :: {:ok, signals, state}` in the agent module.

      defmodule MyApp.Pinger do
        use DSPEx.Clustering.Agent, name: :my_pinger

        @impl true
        def init_agent(opts), do: {:ok, %{count: 0, every: Keyword.get(opts, :every, 1000)}}
        @impl true
        def sensors(state), do: [tick: {:every, state.every}]
        @impl true
        def sense(:tick, state),
          do: {:ok, [Signal.new!("my_app.ping", %{n: state.count})], %{state | count: state.count + 1}}
        @impl true
        def routes, do: [{"cluster.node.down", :on_down}]
        def on_down(_signal, state), do: {:ok, [], %{state | count: 0}}
      end

      {:ok, _} = MyApp.Pinger.start_link(every: 500)
      DSPEx.Clustering.Agent.cmd(:my_pinger, :some_action, %{key: 1})

  Every agent registers itself in `DSPEx.Clustering.AgentRegistry` (see `count/0`), which
  the load report uses as the node's agent count. `handle_call/3` of the GenServer is
  reserved for `cmd/4` and `state/1`; use actions for queries too.
  """

  alias DSPEx.Clustering.{Action, Signal, SignalBus}

  @type sensor :: {atom(), {:every, pos_integer()} | :event}
  @type emitted :: {:ok, [Signal.t()], term()}

  @callback init_agent(opts :: keyword()) :: {:ok, term()} | {:stop, term()}
  @callback actions() :: [module()]
  @callback sensors(state :: term()) :: [sensor()]
  @callback sense(name :: atom(), state :: term()) :: emitted()
  @callback handle_event(message :: term(), state :: term()) :: emitted()
  @callback routes() :: [{String.t(), module() | atom()}]
  @optional_callbacks sense: 2, handle_event: 2

  @registry DSPEx.Clustering.AgentRegistry

  defmacro __using__(opts) do
    quote location: :keep do
      @behaviour DSPEx.Clustering.Agent
      alias DSPEx.Clustering.Signal

      @doc false
      def child_spec(opts),
        do: %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}, restart: :permanent}

      @doc "Starts the agent; `opts[:name]` overrides the default registered name."
      @spec start_link(keyword()) :: GenServer.on_start()
      def start_link(opts \\ []) do
        name = Keyword.get(opts, :name, unquote(Keyword.get(opts, :name)))
        gen_opts = if name, do: [name: name], else: []
        GenServer.start_link(DSPEx.Clustering.Agent, {__MODULE__, opts}, gen_opts)
      end

      @impl DSPEx.Clustering.Agent
      def actions, do: []
      @impl DSPEx.Clustering.Agent
      def sensors(_state), do: []
      @impl DSPEx.Clustering.Agent
      def routes, do: []
      defoverridable actions: 0, sensors: 1, routes: 0, child_spec: 1
    end
  end

  @doc "Runs the action called `name` (or the Action module) with `params` inside the agent."
  @spec cmd(GenServer.server(), atom() | module(), map() | keyword(), timeout()) :: term()
  def cmd(agent, name, params \\ %{}, timeout \\ 5000),
    do: GenServer.call(agent, {:cmd, name, params}, timeout)

  @doc "The agent's current state."
  @spec state(GenServer.server()) :: term()
  def state(agent), do: GenServer.call(agent, :state)

  @doc "How many agents run on this node."
  @spec count() :: non_neg_integer()
  def count, do: Registry.count(@registry)

  # -- GenServer side --------------------------------------------------------------------------

  use GenServer
  require Logger

  @impl GenServer
  def init({module, opts}) do
    case module.init_agent(opts) do
      {:ok, state} ->
        {:ok, _} = Registry.register(@registry, self(), module)

        for {name, {:every, ms}} <- module.sensors(state),
            do: Process.send_after(self(), {:"$agent_sense", name, ms}, ms)

        for {pattern, _} <- module.routes(), do: :ok = SignalBus.subscribe(pattern)
        {:ok, {module, state}}

      {:stop, reason} ->
        {:stop, reason}
    end
  end

  @impl GenServer
  def handle_call({:cmd, name, params}, _from, {module, state}) do
    case Enum.find(module.actions(), &(&1 == name or &1.name() == name)) do
      nil ->
        {:reply, {:error, {:unknown_action, name}}, {module, state}}

      action ->
        case Action.execute(action, params, %{state: state, agent: self()}) do
          {:ok, result, new_state} -> {:reply, {:ok, result}, {module, new_state}}
          other -> {:reply, other, {module, state}}
        end
    end
  end

  def handle_call(:state, _from, {module, state}), do: {:reply, state, {module, state}}

  # A request the agent does not know is answered, never a crash: a remote caller's typo must not
  # cost the agent its state.
  def handle_call(request, {caller, _tag}, {module, state}) do
    Logger.warning(
      "#{inspect(module)}: unknown request #{inspect(request, limit: 10)} from #{inspect(caller)}"
    )

    {:reply, {:error, {:unknown_request, request}}, {module, state}}
  end

  @impl GenServer
  def handle_info({:"$agent_sense", name, ms}, {module, state}) do
    Process.send_after(self(), {:"$agent_sense", name, ms}, ms)
    {:noreply, {module, emit(module.sense(name, state))}}
  end

  def handle_info({:signal, %{type: type} = signal} = message, {module, state}) do
    case Enum.filter(module.routes(), fn {pattern, _} ->
           SignalBus.Pattern.match?(pattern, type)
         end) do
      [] ->
        {:noreply, {module, event(module, message, state)}}

      routes ->
        {:noreply, {module, Enum.reduce(routes, state, &route(module, &1, signal, &2))}}
    end
  end

  def handle_info(message, {module, state}),
    do: {:noreply, {module, event(module, message, state)}}

  defp route(module, {_pattern, target}, signal, state) do
    if Code.ensure_loaded?(target) and function_exported?(target, :run, 2) do
      data = if is_map(signal.data), do: signal.data, else: %{}

      case Action.execute(target, data, %{state: state, agent: self(), signal: signal}) do
        {:ok, _result, new_state} -> new_state
        _ -> state
      end
    else
      emit(apply(module, target, [signal, state]))
    end
  end

  defp event(module, message, state) do
    if function_exported?(module, :handle_event, 2),
      do: emit(module.handle_event(message, state)),
      else: state
  end

  defp emit({:ok, signals, state}) do
    Enum.each(signals, &SignalBus.publish/1)
    state
  end
end
