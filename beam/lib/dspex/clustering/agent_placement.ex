defmodule DSPEx.Clustering.AgentPlacement do
  @moduledoc """
  Starts agents on the node `LoadBalancer.place/2` chooses and remembers them, so they can be
  re-placed (registered `:dspex_agent_placement`; each BEAM node keeps the agents it placed).

      spec = %{id: "job-1", start: {MyAgent, :start_link, [args]}, work: 0.2, notify: self()}
      {:ok, node, pid} = AgentPlacement.start_agent(spec, kinds: [:beam])

  `spec` needs a unique `:id` and `:start` (an MFA returning `{:ok, pid}`; it runs under
  `PlacedAgents` on the chosen node). Optional: `:work` (estimated seconds, sent to the
  placement model), `:notify` (a pid that gets `{:placed_agent, id, event, at_ms}`, `at_ms`
  monotonic), `:constraints`.
  Constraints default to `kinds: [:beam]` (the agent is BEAM code). Once it is monitored the
  agent gets `{:dspex_placed, id}`: a short task should wait for it before it may finish (an
  exit before the monitor would look like a crash).

  What happens to a placed agent:
    * it exits `:normal` — done: `{:done, node, run_ms}` is notified and, when a Python
      advisor placed it, `{:placement_outcome, node, %{work: w}, run_ms}` is cast to that
      `dspex_load_balancer` so the model learns the node's speed;
    * it dies otherwise (its node was killed: `noconnection`) — it is placed again, never on
      that node, and restarted: `{:moved, from, to, reason}`;
    * its node is drained (`Drain`) — it is started elsewhere first, then the old one is
      stopped: `{:moved, from, to, :drained}` (live migration of state is a later issue);
    * no node is eligible — it waits and is tried again every `@retry_ms` (`{:waiting, why}`
      once): a placed agent is never dropped.
  """
  use GenServer

  require Logger
  alias DSPEx.Clustering.{LoadBalancer, PlacedAgents, PythonAdvisor}

  @name :dspex_agent_placement
  @retry_ms 250
  @start_timeout 5_000

  @doc false
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: @name)

  @doc "Places and starts an agent: `{:ok, node, pid}`, or an error when it is invalid."
  @spec start_agent(map(), keyword() | map(), GenServer.server()) ::
          {:ok, node(), pid()} | {:waiting, term()} | {:error, term()}
  def start_agent(spec, constraints \\ [], server \\ @name),
    do: GenServer.call(server, {:start, spec, constraints}, 30_000)

  @doc "Stops a placed agent and forgets it."
  @spec stop_agent(term(), GenServer.server()) :: :ok | {:error, :unknown}
  def stop_agent(id, server \\ @name), do: GenServer.call(server, {:stop, id})

  @doc "The placed agents: id => %{node, pid, moves, started_at}."
  @spec agents(GenServer.server()) :: %{term() => map()}
  def agents(server \\ @name), do: GenServer.call(server, :agents)

  @doc "Placed agents per node."
  @spec per_node(GenServer.server()) :: %{node() => non_neg_integer()}
  def per_node(server \\ @name), do: GenServer.call(server, :per_node)

  # -- server ---------------------------------------------------------------------------------

  @impl true
  def init(_opts), do: {:ok, %{agents: %{}, refs: %{}, waiting: []}}

  @impl true
  def handle_call({:start, %{id: id, start: {_, _, _}} = spec, constraints}, _from, state) do
    if Map.has_key?(state.agents, id) do
      {:reply, {:error, :already_started}, state}
    else
      c =
        Map.merge(
          %{kinds: [:beam]},
          Map.merge(Map.new(spec[:constraints] || []), Map.new(constraints))
        )

      agent = %{
        id: id,
        spec: spec,
        constraints: c,
        node: nil,
        pid: nil,
        ref: nil,
        moves: 0,
        started_at: nil
      }

      case place_and_start(agent, []) do
        {:ok, agent} ->
          notify(agent, {:started, agent.node, agent.pid})
          {:reply, {:ok, agent.node, agent.pid}, track(state, agent)}

        {:error, why} ->
          notify(agent, {:waiting, why})
          {:reply, {:waiting, why}, wait(state, agent, [])}
      end
    end
  end

  def handle_call({:start, _spec, _c}, _from, state),
    do: {:reply, {:error, :bad_spec}, state}

  def handle_call({:stop, id}, _from, state) do
    case state.agents do
      %{^id => agent} ->
        if agent.ref, do: Process.demonitor(agent.ref, [:flush])
        if agent.pid, do: Process.exit(agent.pid, :shutdown)
        {:reply, :ok, forget(state, agent)}

      _ ->
        {:reply, {:error, :unknown}, state}
    end
  end

  def handle_call(:agents, _from, state) do
    view =
      Map.new(state.agents, fn {id, a} ->
        {id, Map.take(a, [:node, :pid, :moves, :started_at])}
      end)

    {:reply, view, state}
  end

  def handle_call(:per_node, _from, state) do
    counts =
      state.agents |> Map.values() |> Enum.filter(& &1.node) |> Enum.frequencies_by(& &1.node)

    {:reply, counts, state}
  end

  @impl true
  def handle_info({:DOWN, ref, :process, _pid, reason}, state) do
    case Map.pop(state.refs, ref) do
      {nil, _} ->
        {:noreply, state}

      {id, refs} ->
        state = %{state | refs: refs}
        agent = state.agents[id]
        {:noreply, agent_down(state, agent, reason)}
    end
  end

  def handle_info({:dspex_drained, node, why}, state) do
    moving = for {_, %{node: ^node} = a} <- state.agents, do: a
    {:noreply, Enum.reduce(moving, state, &move(&2, &1, why))}
  end

  def handle_info(:retry_waiting, state) do
    {waiting, state} = {state.waiting, %{state | waiting: []}}

    state =
      Enum.reduce(waiting, state, fn {agent, exclude, reason}, acc ->
        # a waiting agent stopped meanwhile is not started
        case Map.has_key?(acc.agents, agent.id) && place_and_start(agent, exclude) do
          false ->
            acc

          {:ok, placed} ->
            event =
              if agent.moves > 0,
                do: {:moved, agent.node, placed.node, reason},
                else: {:started, placed.node, placed.pid}

            notify(placed, event)
            track(acc, placed)

          {:error, _} ->
            wait(acc, agent, exclude, reason)
        end
      end)

    {:noreply, state}
  end

  def handle_info(_other, state), do: {:noreply, state}

  # -- helpers --------------------------------------------------------------------------------

  defp agent_down(state, agent, :normal) do
    run_ms = System.monotonic_time(:microsecond) / 1000 - agent.started_at
    report_outcome(agent, run_ms)
    notify(agent, {:done, agent.node, run_ms})
    forget(state, agent)
  end

  defp agent_down(state, agent, reason) do
    # its node is gone (noconnection) or it crashed: run it again, elsewhere if the node died
    exclude = if reason in [:noconnection, :noproc], do: [agent.node], else: []
    agent = %{agent | moves: agent.moves + 1, pid: nil, ref: nil}
    replace(state, agent, exclude, down_reason(reason))
  end

  defp down_reason(:noconnection), do: :node_down
  defp down_reason(_), do: :crashed

  defp move(state, agent, why) do
    from = agent.node
    moved = %{agent | moves: agent.moves + 1}

    case place_and_start(moved, [from]) do
      {:ok, placed} ->
        # the new one runs: stop the old one, unwatched
        Process.demonitor(agent.ref, [:flush])
        Process.exit(agent.pid, :shutdown)
        notify(placed, {:moved, from, placed.node, why})
        state |> untrack_ref(agent) |> track(placed)

      {:error, why} ->
        # nowhere else to go: it keeps running where it is
        Logger.warning(
          "placed agent #{inspect(agent.id)} stays on drained #{from}: #{inspect(why)}"
        )

        state
    end
  end

  defp replace(state, agent, exclude, why) do
    case place_and_start(agent, exclude) do
      {:ok, placed} ->
        notify(placed, {:moved, agent.node, placed.node, why})
        track(state, placed)

      {:error, _} ->
        wait(state, agent, exclude, why)
    end
  end

  defp place_and_start(agent, exclude, tries \\ 3)
  defp place_and_start(_agent, _exclude, 0), do: {:error, :start_failed}

  defp place_and_start(agent, exclude, tries) do
    c = Map.update(agent.constraints, :exclude_nodes, exclude, &(List.wrap(&1) ++ exclude))

    with {:ok, node} <- LoadBalancer.place(agent.spec, c) do
      case start_on(node, agent.spec.start) do
        {:ok, pid} ->
          ref = Process.monitor(pid)
          # watched from now on: an agent may wait for this before it can finish
          send(pid, {:dspex_placed, agent.id})
          started = System.monotonic_time(:microsecond) / 1000
          {:ok, %{agent | node: node, pid: pid, ref: ref, started_at: started}}

        {:error, why} ->
          Logger.warning(
            "placed agent #{inspect(agent.id)} did not start on #{node}: #{inspect(why)}"
          )

          place_and_start(agent, [node | exclude], tries - 1)
      end
    end
  end

  defp start_on(node, mfa) do
    case :erpc.call(node, PlacedAgents, :start_child, [mfa], @start_timeout) do
      {:ok, pid} -> {:ok, pid}
      {:ok, pid, _info} -> {:ok, pid}
      other -> {:error, other}
    end
  catch
    kind, reason -> {:error, {kind, reason}}
  end

  defp report_outcome(agent, run_ms) do
    case PythonAdvisor.take_advisor(agent.id) do
      nil ->
        :ok

      py ->
        work = agent.spec[:work] || 1.0

        GenServer.cast(
          {:dspex_load_balancer, py},
          {:placement_outcome, agent.node, %{work: work}, run_ms}
        )
    end
  end

  defp wait(state, agent, exclude, reason \\ :no_suitable_nodes) do
    if state.waiting == [], do: Process.send_after(self(), :retry_waiting, @retry_ms)
    agent = %{agent | pid: nil, ref: nil}

    %{
      state
      | waiting: [{agent, exclude, reason} | state.waiting],
        agents: Map.put(state.agents, agent.id, agent)
    }
  end

  defp track(state, agent),
    do: %{
      state
      | agents: Map.put(state.agents, agent.id, agent),
        refs: Map.put(state.refs, agent.ref, agent.id)
    }

  defp untrack_ref(state, agent), do: %{state | refs: Map.delete(state.refs, agent.ref)}

  defp forget(state, agent),
    do: %{
      state
      | agents: Map.delete(state.agents, agent.id),
        refs: Map.delete(state.refs, agent.ref)
    }

  # the time (monotonic, ms) goes along: the receiver may read its mailbox late
  defp notify(%{spec: %{notify: pid}, id: id}, event) when is_pid(pid),
    do: send(pid, {:placed_agent, id, event, System.monotonic_time(:microsecond) / 1000})

  defp notify(_agent, _event), do: :ok
end
