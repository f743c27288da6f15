defmodule DSPEx.Clustering.Workload do
  @moduledoc """
  A synthetic workload of agents with uneven costs, placed through `AgentPlacement` (so
  through `LoadBalancer.place/2` and its advisors) — what `make run` and the end-to-end tests
  drive.

  A plan is a list of `{offset_ms, id, cost_ms}`: task `id` arrives `offset_ms` after the
  start (open loop: arrivals do not wait for completions) and burns `cost_ms` of CPU as
  measured on a quiet node (`calibrate/0` gives the loop iterations per ms). A task is a
  placed agent: it runs on the node chosen for it and competes there for that node's
  schedulers, so its duration shows how busy (or degraded) the node is.

      {:ok, pid} = Workload.start(plan, advisors: [DSPEx.Clustering.PythonAdvisor])
      Workload.status(pid)   # live counters
      Workload.results(pid)  # one map per task

  Options: `:advisors` (placement advisors for this run, `[]` = the heuristic alone),
  `:iterations_per_ms` (default `calibrate/0`), `:name` (registered name),
  `:constraints` (extra placement constraints).
  """
  use GenServer

  alias DSPEx.Clustering.AgentPlacement

  @doc "Starts a run (not linked to the caller, so it may be started over `:erpc`)."
  @spec start([{non_neg_integer(), term(), number()}], keyword()) :: GenServer.on_start()
  def start(plan, opts \\ []) do
    gen_opts = if name = opts[:name], do: [name: name], else: []
    GenServer.start(__MODULE__, {plan, opts}, gen_opts)
  end

  @doc "Live counters of a run."
  @spec status(GenServer.server()) :: map()
  def status(run), do: GenServer.call(run, :status)

  @doc "One map per task: id, cost_ms, arrival/done offsets, latency_ms, node, nodes, moves."
  @spec results(GenServer.server()) :: [map()]
  def results(run), do: GenServer.call(run, :results, 30_000)

  @doc "Stops a run (its placed agents keep running to the end)."
  @spec stop(GenServer.server()) :: :ok
  def stop(run), do: GenServer.stop(run)

  @doc "Busy-loop iterations per ms of CPU on this node now (best of 3 short runs)."
  @spec calibrate() :: float()
  def calibrate do
    n = 2_000_000

    1..3
    |> Enum.map(fn _ ->
      {us, _} = :timer.tc(fn -> spin(n, 1) end)
      n / max(us / 1000, 0.001)
    end)
    |> Enum.max()
  end

  @doc "A task agent's start function: burns `iterations` then exits normally."
  @spec start_task(non_neg_integer()) :: {:ok, pid()}
  def start_task(iterations) do
    Task.start_link(fn ->
      # counted as an agent of this node in its load reports
      Registry.register(DSPEx.Clustering.AgentRegistry, self(), :placed_task)
      # finish only once the placer watches us (see AgentPlacement)
      receive do
        {:dspex_placed, _id} -> :ok
      after
        5_000 -> :ok
      end

      spin(iterations, 1)
    end)
  end

  @doc """
  A long-running service agent's start function: burns `iterations` every `period_ms` until
  stopped (what a drain has to move: it never finishes by itself).
  """
  @spec start_service(non_neg_integer(), pos_integer()) :: {:ok, pid()}
  def start_service(iterations, period_ms) do
    Task.start_link(fn ->
      Registry.register(DSPEx.Clustering.AgentRegistry, self(), :placed_service)
      serve(iterations, period_ms)
    end)
  end

  defp serve(iterations, period_ms) do
    spin(iterations, 1)
    Process.sleep(period_ms)
    serve(iterations, period_ms)
  end

  @doc false
  def spin(0, acc), do: acc
  def spin(n, acc), do: spin(n - 1, rem(acc * 31 + n, 1_000_003))

  # -- the run --------------------------------------------------------------------------------

  @impl true
  def init({plan, opts}) do
    per_ms = opts[:iterations_per_ms] || calibrate()
    t0 = now()
    plan = Enum.sort(plan)
    for {offset, id, cost} <- plan, do: Process.send_after(self(), {:arrive, id, cost}, offset)

    {:ok,
     %{
       t0: t0,
       per_ms: per_ms,
       advisors: opts[:advisors],
       constraints: Map.new(opts[:constraints] || []),
       tasks: %{},
       planned: length(plan),
       placements: %{},
       moves: %{}
     }}
  end

  @impl true
  def handle_info({:arrive, id, cost}, state) do
    spec = %{
      id: id,
      work: cost / 1000,
      start: {__MODULE__, :start_task, [round(cost * state.per_ms)]},
      notify: self()
    }

    c =
      if state.advisors,
        do: Map.put(state.constraints, :advisors, state.advisors),
        else: state.constraints

    # placing may take the advisor's budget: do not hold up the next arrivals
    spawn(fn -> AgentPlacement.start_agent(spec, c) end)

    task = %{
      id: id,
      cost_ms: cost,
      arrived_ms: now() - state.t0,
      nodes: [],
      done_ms: nil,
      run_ms: nil
    }

    {:noreply, put_in(state.tasks[id], task)}
  end

  def handle_info({:placed_agent, id, event, at}, state) do
    case state.tasks do
      %{^id => task} -> {:noreply, on_event(state, task, event, at - state.t0)}
      _ -> {:noreply, state}
    end
  end

  def handle_info(_other, state), do: {:noreply, state}

  defp on_event(state, task, {:started, node, _pid}, _at) do
    state = update_in(state.placements, &Map.update(&1, node, 1, fn n -> n + 1 end))
    put_in(state.tasks[task.id], %{task | nodes: [node | task.nodes]})
  end

  defp on_event(state, task, {:moved, _from, to, why}, _at) do
    state = update_in(state.moves, &Map.update(&1, why, 1, fn n -> n + 1 end))
    state = update_in(state.placements, &Map.update(&1, to, 1, fn n -> n + 1 end))
    put_in(state.tasks[task.id], %{task | nodes: [to | task.nodes]})
  end

  defp on_event(state, task, {:done, _node, run_ms}, at),
    do: put_in(state.tasks[task.id], %{task | done_ms: at, run_ms: run_ms})

  defp on_event(state, _task, _event, _at), do: state

  @impl true
  def handle_call(:status, _from, state) do
    tasks = Map.values(state.tasks)
    done = Enum.count(tasks, & &1.done_ms)

    running =
      tasks
      |> Enum.filter(&(&1.done_ms == nil and &1.nodes != []))
      |> Enum.frequencies_by(&hd(&1.nodes))

    status = %{
      planned: state.planned,
      arrived: length(tasks),
      completed: done,
      in_flight: length(tasks) - done,
      placements: state.placements,
      running: running,
      moves: state.moves,
      elapsed_ms: now() - state.t0
    }

    {:reply, status, state}
  end

  def handle_call(:results, _from, state) do
    results =
      for t <- Map.values(state.tasks) do
        %{
          id: t.id,
          cost_ms: t.cost_ms,
          arrived_ms: t.arrived_ms,
          done_ms: t.done_ms,
          latency_ms: t.done_ms && t.done_ms - t.arrived_ms,
          run_ms: t.run_ms,
          node: List.first(t.nodes),
          nodes: Enum.reverse(t.nodes),
          moves: max(length(t.nodes) - 1, 0)
        }
      end

    {:reply, Enum.sort_by(results, & &1.arrived_ms), state}
  end

  defp now, do: System.monotonic_time(:microsecond) / 1000
end
