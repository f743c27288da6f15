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
  reserved for `cmd/4` and `state/1`; other requests go to the optional
  `handle_request(request, from, state)` (`from` is `:cast` for a cast), which answers
  `{:reply, reply, state}` or `{:noreply, state}` (then `GenServer.reply/2` later).

  ## Cluster-wide ids and migration
  Started with `id: {:agent, x}` (or `{:variable, name}`), best through
  `DSPEx.Clustering.Migration.start_agent/3` (supervised on the chosen node, not linked to the
  caller), an agent is registered cluster-wide (`Migration.Registry`) and reachable by id from
  every node with `call/3`, `cast/2` and `send/2`, before, during and after a move
  (`DSPEx.Clustering.Migration.migrate/3`). Those three number each message per sender, so the
  agent delivers every message once and in each sender's order even while messages reach it
  through two paths (forwarded by the old instance and sent straight to the new one).
  `checkpoint/1` (default: the whole state) and `restore/2` (default: the checkpoint is the
  state) say what travels; the start options travel too (given to `restore/2`), as
  `migrated_opts/1` trims them (default: all).
  """

  alias DSPEx.Clustering.{Action, Signal, SignalBus}
  alias DSPEx.Clustering.Migration.Registry, as: IdRegistry
  alias DSPEx.Clustering.Migration.Sequencer
  import Kernel, except: [send: 2]

  @type sensor :: {atom(), {:every, pos_integer()} | :event}
  @type emitted :: {:ok, [Signal.t()], term()}

  @callback init_agent(opts :: keyword()) :: {:ok, term()} | {:stop, term()}
  @callback actions() :: [module()]
  @callback sensors(state :: term()) :: [sensor()]
  @callback sense(name :: atom(), state :: term()) :: emitted()
  @callback handle_event(message :: term(), state :: term()) :: emitted()
  @callback routes() :: [{String.t(), module() | atom()}]
  @callback handle_request(request :: term(), from :: GenServer.from() | :cast, state :: term()) ::
              {:reply, term(), term()} | {:noreply, term()}
  @callback checkpoint(state :: term()) :: term()
  @callback restore(checkpoint :: term(), opts :: keyword()) :: {:ok, term()} | {:error, term()}
  @callback migrated_opts(opts :: keyword()) :: keyword()
  @optional_callbacks sense: 2, handle_event: 2, handle_request: 3

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
      @impl DSPEx.Clustering.Agent
      def checkpoint(state), do: state
      @impl DSPEx.Clustering.Agent
      def restore(checkpoint, _opts), do: {:ok, checkpoint}
      @impl DSPEx.Clustering.Agent
      def migrated_opts(opts), do: opts

      defoverridable actions: 0,
                     sensors: 1,
                     routes: 0,
                     child_spec: 1,
                     checkpoint: 1,
                     restore: 2,
                     migrated_opts: 1
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

  # -- by cluster-wide id --------------------------------------------------------------------------

  @doc """
  Calls the agent `id` (`{:agent, x}` / `{:variable, name}`) wherever it runs: the request goes
  to its `handle_request/3`. Waits for the agent if it is being restarted, follows it when it
  moves, and resends (same number, so never applied twice) when the node it was sent to died.
  """
  @spec call(IdRegistry.id(), term(), timeout()) :: term()
  def call(id, request, timeout \\ 5_000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    seq = next_seq(id)
    tag = make_ref()
    send_call(id, seq, tag, request, deadline)
  end

  @doc """
  Like `call/3` but not numbered: for requests that need no order with the caller's other
  messages (a request resent after its node died may then run twice).
  """
  @spec request(IdRegistry.id(), term(), timeout()) :: term()
  def request(id, request, timeout \\ 5_000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    send_call(id, 0, make_ref(), request, deadline)
  end

  @doc "Casts `request` to the agent `id` (its `handle_request(request, :cast, state)`)."
  @spec cast(IdRegistry.id(), term()) :: :ok | {:error, :not_found}
  def cast(id, request), do: deliver(id, :cast, request)

  @doc "Sends `message` to the agent `id` (its `handle_event/2`), numbered per sender."
  @spec send(IdRegistry.id(), term()) :: :ok | {:error, :not_found}
  def send(id, message), do: deliver(id, :send, message)

  defp deliver(id, kind, payload) do
    case IdRegistry.whereis(id) do
      nil ->
        {:error, :not_found}

      pid ->
        Kernel.send(pid, {:"$dspex_seq", self(), next_seq(id), kind, payload})
        :ok
    end
  end

  defp next_seq(id) do
    key = {:dspex_agent_seq, id}
    seq = (Process.get(key) || 0) + 1
    Process.put(key, seq)
    seq
  end

  defp send_call(id, seq, tag, request, deadline) do
    case IdRegistry.whereis(id) do
      nil ->
        if System.monotonic_time(:millisecond) >= deadline do
          {:error, :not_found}
        else
          Process.sleep(20)
          send_call(id, seq, tag, request, deadline)
        end

      pid ->
        mref = Process.monitor(pid)
        Kernel.send(pid, {:"$dspex_seq", self(), seq, {:call, tag}, request})
        await_reply(id, seq, tag, request, mref, pid, deadline)
    end
  end

  # A :normal exit of the pid we sent to is an old instance that forwarded our request and
  # stopped: the reply still comes, from the new one (watched instead). Any other exit lost the
  # request with its node: resend it, with the same number.
  defp await_reply(id, seq, tag, request, mref, pid, deadline) do
    left = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {^tag, reply} ->
        Process.demonitor(mref, [:flush])
        reply

      {:DOWN, ^mref, :process, ^pid, :normal} ->
        case wait_moved(id, pid, deadline) do
          nil ->
            send_call(id, seq, tag, request, deadline)

          new ->
            await_reply(id, seq, tag, request, Process.monitor(new), new, deadline)
        end

      {:DOWN, ^mref, :process, ^pid, _reason} ->
        send_call(id, seq, tag, request, deadline)
    after
      left ->
        Process.demonitor(mref, [:flush])
        exit({:timeout, {__MODULE__, :call, [id, request]}})
    end
  end

  defp wait_moved(id, old, deadline) do
    case IdRegistry.whereis(id) do
      pid when is_pid(pid) and pid != old ->
        pid

      _ ->
        if System.monotonic_time(:millisecond) >= deadline do
          nil
        else
          Process.sleep(5)
          wait_moved(id, old, deadline)
        end
    end
  end

  # -- GenServer side --------------------------------------------------------------------------

  use GenServer
  require Logger

  # The GenServer state is {module, agent_state, meta}; meta holds the cluster-wide id, the
  # start options and the per-sender sequencer.
  @impl GenServer
  def init({module, opts}) do
    with {:ok, state} <- init_state(module, opts),
         :ok <- register_id(opts) do
      {:ok, _} = Registry.register(@registry, self(), module)

      for {name, {:every, ms}} <- module.sensors(state),
          do: Process.send_after(self(), {:"$agent_sense", name, ms}, ms)

      for {pattern, _} <- module.routes(), do: :ok = SignalBus.subscribe(pattern)
      meta = %{id: opts[:id], opts: opts, seq: opts[:restore_seq] || Sequencer.new(), expiry: nil}
      {:ok, {module, state, meta}}
    end
  end

  defp init_state(module, opts) do
    case Keyword.fetch(opts, :restore_checkpoint) do
      {:ok, checkpoint} ->
        case module.restore(checkpoint, opts) do
          {:ok, state} -> {:ok, state}
          {:error, reason} -> {:stop, {:restore_failed, reason}}
        end

      :error ->
        module.init_agent(opts)
    end
  end

  # A migrated instance starts unregistered: the migration switches the id to it.
  defp register_id(opts) do
    id = opts[:id]

    cond do
      id == nil or Keyword.has_key?(opts, :restore_checkpoint) ->
        :ok

      IdRegistry.register(id, self()) == :yes ->
        :ok

      true ->
        {:stop, {:already_started, IdRegistry.whereis(id)}}
    end
  end

  @impl GenServer
  def handle_call({:cmd, name, params}, _from, {module, state, meta}) do
    case Enum.find(module.actions(), &(&1 == name or &1.name() == name)) do
      nil ->
        {:reply, {:error, {:unknown_action, name}}, {module, state, meta}}

      action ->
        case Action.execute(action, params, %{state: state, agent: self()}) do
          {:ok, result, new_state} -> {:reply, {:ok, result}, {module, new_state, meta}}
          other -> {:reply, other, {module, state, meta}}
        end
    end
  end

  def handle_call(:state, _from, {_, state, _} = s), do: {:reply, state, s}

  def handle_call(:"$dspex_health", _from, s), do: {:reply, :ok, s}

  def handle_call({:"$dspex_migrate", target, opts}, from, s) do
    case DSPEx.Clustering.Migration.Source.run(s, target, opts, from) do
      :moved -> {:stop, :normal, s}
      {:resume, replay} -> {:noreply, Enum.reduce(replay, s, &dispatch/2)}
    end
  end

  def handle_call(request, from, {module, state, meta}) do
    if function_exported?(module, :handle_request, 3) do
      request_result(module.handle_request(request, from, state), from, module, meta)
    else
      {caller, _tag} = from

      Logger.warning(
        "#{inspect(module)}: unknown request #{inspect(request, limit: 10)} from #{inspect(caller)}"
      )

      {:reply, {:error, {:unknown_request, request}}, {module, state, meta}}
    end
  end

  @impl GenServer
  def handle_cast(request, {module, state, meta}) do
    if function_exported?(module, :handle_request, 3) do
      {:noreply, {module, run_request(module, request, :cast, state), meta}}
    else
      {:noreply, {module, state, meta}}
    end
  end

  @impl GenServer
  def handle_info({:"$dspex_seq", sender, 0, kind, payload}, {module, state, meta}),
    do: {:noreply, {module, run_sequenced(module, {kind, sender, payload}, state), meta}}

  def handle_info({:"$dspex_seq", sender, seq, kind, payload}, {module, state, meta}) do
    now = System.monotonic_time(:millisecond)
    {ready, seq_table} = Sequencer.offer(meta.seq, sender, seq, {kind, sender, payload}, now)
    meta = schedule_expiry(%{meta | seq: seq_table})
    {:noreply, {module, Enum.reduce(ready, state, &run_sequenced(module, &1, &2)), meta}}
  end

  def handle_info(:"$dspex_seq_expire", {module, state, meta}) do
    now = System.monotonic_time(:millisecond)
    {ready, seq_table} = Sequencer.expire(meta.seq, now, hold_ms(meta))

    if ready != [],
      do: Logger.warning("#{inspect(module)}: gave up waiting for #{length(ready)} gap(s)")

    meta = schedule_expiry(%{meta | seq: seq_table, expiry: nil})
    {:noreply, {module, Enum.reduce(ready, state, &run_sequenced(module, &1, &2)), meta}}
  end

  def handle_info({:"$agent_sense", name, ms}, {module, state, meta}) do
    Process.send_after(self(), {:"$agent_sense", name, ms}, ms)
    {:noreply, {module, emit(module.sense(name, state)), meta}}
  end

  def handle_info({:signal, %{type: type} = signal} = message, {module, state, meta}) do
    case Enum.filter(module.routes(), fn {pattern, _} ->
           SignalBus.Pattern.match?(pattern, type)
         end) do
      [] ->
        {:noreply, {module, event(module, message, state), meta}}

      routes ->
        {:noreply, {module, Enum.reduce(routes, state, &route(module, &1, signal, &2)), meta}}
    end
  end

  def handle_info(message, {module, state, meta}),
    do: {:noreply, {module, event(module, message, state), meta}}

  @doc false
  # Runs one raw message as the GenServer loop would (replay after a late rollback).
  @spec dispatch(term(), tuple()) :: tuple()
  def dispatch({:"$gen_call", from, request}, s) do
    case handle_call(request, from, s) do
      {:reply, reply, s} ->
        GenServer.reply(from, reply)
        s

      {:noreply, s} ->
        s

      {:stop, _reason, s} ->
        s
    end
  end

  def dispatch({:"$gen_cast", request}, s), do: elem(handle_cast(request, s), 1)
  def dispatch(message, s), do: elem(handle_info(message, s), 1)

  defp run_sequenced(module, {{:call, tag}, sender, request}, state) do
    from = {sender, tag}

    if function_exported?(module, :handle_request, 3) do
      case module.handle_request(request, from, state) do
        {:reply, reply, state} ->
          GenServer.reply(from, reply)
          state

        {:noreply, state} ->
          state
      end
    else
      GenServer.reply(from, {:error, {:unknown_request, request}})
      state
    end
  end

  defp run_sequenced(module, {:cast, _sender, request}, state) do
    if function_exported?(module, :handle_request, 3),
      do: run_request(module, request, :cast, state),
      else: state
  end

  defp run_sequenced(module, {:send, _sender, message}, state), do: event(module, message, state)

  defp run_request(module, request, from, state) do
    case module.handle_request(request, from, state) do
      {:reply, _ignored, state} -> state
      {:noreply, state} -> state
    end
  end

  defp request_result({:reply, reply, state}, _from, module, meta),
    do: {:reply, reply, {module, state, meta}}

  defp request_result({:noreply, state}, _from, module, meta),
    do: {:noreply, {module, state, meta}}

  defp schedule_expiry(%{expiry: nil} = meta) do
    if Sequencer.holding?(meta.seq) do
      %{meta | expiry: Process.send_after(self(), :"$dspex_seq_expire", hold_ms(meta))}
    else
      meta
    end
  end

  defp schedule_expiry(meta), do: meta

  defp hold_ms(meta), do: Keyword.get(meta.opts, :hold_ms, Sequencer.default_hold_ms())

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
