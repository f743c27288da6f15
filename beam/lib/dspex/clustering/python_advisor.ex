defmodule DSPEx.Clustering.PythonAdvisor do
  @moduledoc """
  The `PlacementAdvisor` that asks the Python `dspex_load_balancer` agent (the learned
  placement model) — the default entry of `:placement_advisors`.

  `advise/4` runs inside `LoadBalancer.place/2`, within its time budget:

    1. the Python agent nodes are the `:python` members that are `:up` (`Membership`),
       minus those in their back-off (below); the node that answered last goes first;
    2. each is called with `{:advise, spec, constraints, candidates}` (see the Python
       module `dspex_cluster.cluster.load_balancer`) — the first attempt gets two thirds of
       the budget when another node could still be tried, so one slow node does not use it
       all;
    3. a node that times out or whose connection is gone is backed off (250 ms, doubling up
       to 30 s, reset by its next answer); one without the agent (`noproc`) for 30 s. So when
       a Python node dies or freezes, the next placements go to another one at once, and one
       late answer from the last live node (a busy host) costs a quarter second of heuristic
       placements, not the second within which fail-over must happen;
    4. when none answers in time the answer is `:no_advice` and `LoadBalancer` falls back
       to its own score: callers never see the error.

  Hidden nodes do not mesh: a Python node that joined another BEAM node is not connected to
  this one. So every `@mesh_ms` this process asks the other BEAM members for the Python nodes
  they see up and dials those it is not connected to — any live Python node in the cluster
  can advise this node's placements.

  This process (registered `:dspex_python_advisor`) owns the ETS table: back-offs,
  counters (`stats/0`) and which Python node advised each placed spec `id`
  (`take_advisor/1`), so completed tasks can be reported to the model that placed them.
  """
  @behaviour DSPEx.Clustering.PlacementAdvisor
  use GenServer

  alias DSPEx.Clustering.Membership

  @table :dspex_python_advisor
  @agent :dspex_load_balancer
  @backoff_ms 250
  @max_backoff_ms 30_000
  @noproc_backoff_ms 30_000
  @remember_ms 600_000
  @sweep_ms 60_000
  @mesh_ms 2_000
  # keys of a map spec worth sending (a start MFA with pids is not)
  @spec_keys [:id, :name, :work, :constraints, :kind]
  @local_keys [:advisors, :weights, :budget_ms]

  @doc false
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @impl GenServer
  def init(_opts) do
    :ets.new(@table, [:named_table, :public, write_concurrency: true, read_concurrency: true])
    Process.send_after(self(), :sweep, @sweep_ms)
    Process.send_after(self(), :mesh, @mesh_ms)
    {:ok, %{}}
  end

  @impl GenServer
  def handle_info(:mesh, state) do
    # off this process: a dial may take a while
    spawn(&dial_python_nodes/0)
    Process.send_after(self(), :mesh, @mesh_ms)
    {:noreply, state}
  end

  # advisors of placements nobody asked about (agents that never finish) are forgotten
  def handle_info(:sweep, state) do
    old = now() - @remember_ms
    :ets.select_delete(@table, [{{{:advised, :_}, :_, :"$1"}, [{:<, :"$1", old}], [true]}])
    Process.send_after(self(), :sweep, @sweep_ms)
    {:noreply, state}
  end

  @impl DSPEx.Clustering.PlacementAdvisor
  def advise(spec, constraints, candidates, budget_ms) do
    # finish a little before the caller's own deadline, so a timeout is ours to record
    deadline = now() + budget_ms - max(div(budget_ms, 10), 3)
    request = {:advise, wire_spec(spec), Map.drop(Map.new(constraints), @local_keys), candidates}

    case ask(agent_nodes(), request, deadline) do
      {:ok, node, py} ->
        count(:advised)
        remember(spec, py)
        {:ok, node}

      other ->
        count(:no_advice)
        other
    end
  end

  @doc "The Python nodes that would be asked now, in order."
  @spec agent_nodes() :: [node()]
  def agent_nodes do
    now = now()
    preferred = lookup(:preferred)

    Membership.members()
    |> Enum.filter(&(&1.kind == :python and &1.status == :up))
    |> Enum.map(& &1.node)
    |> Enum.reject(&backing_off?(&1, now))
    |> Enum.sort_by(&(&1 != preferred))
  end

  @doc "The Python node that advised the latest placement of spec `id` (and forgets it)."
  @spec take_advisor(term()) :: node() | nil
  def take_advisor(id) do
    case table?() && :ets.take(@table, {:advised, id}) do
      [{_, py, _at}] -> py
      _ -> nil
    end
  end

  @doc "Counters: `advised`, `no_advice`, `timeouts`, `failed_calls`; `backoff` per node."
  @spec stats() :: map()
  def stats do
    if table?() do
      rows = :ets.tab2list(@table)
      counts = for {{:count, k}, n} <- rows, into: %{}, do: {k, n}
      backoff = for {{:backoff, node}, until, _strikes} <- rows, into: %{}, do: {node, until}

      Map.merge(%{advised: 0, no_advice: 0, timeouts: 0, failed_calls: 0}, counts)
      |> Map.put(:backoff, backoff)
      |> Map.put(:preferred, lookup(:preferred))
    else
      %{}
    end
  end

  @doc "Dials the Python nodes other BEAM members see up and this node is not connected to."
  @spec dial_python_nodes() :: [node()]
  def dial_python_nodes do
    connected = MapSet.new(Node.list(:connected))

    Node.list(:visible)
    |> :erpc.multicall(DSPEx.Clustering, :members, [], 1_000)
    |> Enum.flat_map(fn
      {:ok, members} when is_list(members) ->
        for %{kind: :python, status: :up, node: n} <- members, do: n

      _ ->
        []
    end)
    |> Enum.uniq()
    |> Enum.reject(&(&1 == node()))
    |> Enum.split_with(&MapSet.member?(connected, &1))
    |> then(fn {known, unconnected} ->
      dialled = Enum.filter(unconnected, &Node.connect/1)
      vouch_for(known ++ dialled)
      dialled
    end)
  end

  # Another BEAM member lists these as Python members: membership takes them as having said
  # hello here too (a hidden node is otherwise left alone until it announces itself).
  defp vouch_for(nodes) do
    case Process.whereis(:dspex_membership) do
      nil -> :ok
      pid -> Enum.each(nodes, &send(pid, {:dspex_hello, &1, %{kind: :python}}))
    end
  end

  # -- asking ---------------------------------------------------------------------------------

  defp ask([], _request, _deadline), do: :no_advice

  defp ask([py | rest], request, deadline) do
    left = deadline - now()

    if left <= 0 do
      :no_advice
    else
      timeout = if rest == [], do: left, else: max(div(left * 2, 3), 1)

      case call(py, request, timeout) do
        {:ok, {:ok, node}} ->
          answered(py)
          {:ok, node, py}

        {:ok, :no_advice} ->
          answered(py)
          :no_advice

        {:ok, _other} ->
          answered(py)
          ask(rest, request, deadline)

        {:error, reason} ->
          back_off(py, reason)
          ask(rest, request, deadline)
      end
    end
  end

  defp call(py, request, timeout) do
    {:ok, GenServer.call({@agent, py}, request, timeout)}
  catch
    :exit, {reason, _} -> {:error, reason}
    :exit, reason -> {:error, reason}
  end

  defp answered(py) do
    if table?() do
      :ets.delete(@table, {:backoff, py})
      :ets.insert(@table, {:preferred, py})
    end
  end

  defp back_off(py, reason) do
    if table?() do
      count(if reason == :timeout, do: :timeouts, else: :failed_calls)

      strikes =
        case :ets.lookup(@table, {:backoff, py}) do
          [{_, _, s}] -> s + 1
          [] -> 0
        end

      wait =
        if reason == :noproc,
          do: @noproc_backoff_ms,
          else: min(@backoff_ms * Integer.pow(2, min(strikes, 7)), @max_backoff_ms)

      :ets.insert(@table, {{:backoff, py}, now() + wait, strikes})
      if lookup(:preferred) == py, do: :ets.delete(@table, :preferred)
    end
  end

  # (monotonic time may be negative: no sentinel numbers)
  defp backing_off?(py, now) do
    case table?() && :ets.lookup(@table, {:backoff, py}) do
      [{_, until, _}] -> until > now
      _ -> false
    end
  end

  defp remember(%{id: id}, py) do
    if table?(), do: :ets.insert(@table, {{:advised, id}, py, now()})
  end

  defp remember(_spec, _py), do: :ok

  defp wire_spec(spec) when is_map(spec), do: Map.take(spec, @spec_keys)
  defp wire_spec(spec), do: spec

  defp count(key) do
    if table?(), do: :ets.update_counter(@table, {:count, key}, 1, {{:count, key}, 0})
  end

  defp lookup(key) do
    case table?() && :ets.lookup(@table, key) do
      [{_, value}] -> value
      _ -> nil
    end
  end

  defp table?, do: :ets.whereis(@table) != :undefined
  defp now, do: System.monotonic_time(:millisecond)
end
