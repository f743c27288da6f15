defmodule DSPEx.Clustering.Variable.Keeper do
  @moduledoc """
  One per BEAM node (registered `:dspex_variable_keeper`, member of the `:pg` group
  `:dspex_variable_keepers` in the signal bus scope). It owns three things:

    * **the replica**: for every variable, its spec, last value, version, stamp and the last
      changes (`history` of them), kept from `cluster.variable.sync` signals. A node that comes
      up gets the others' catalogues. Gaps (a sync lost, or one overtaken during a move) are
      filled by asking the variable for the changes since the last version held.
    * **this node's subscribers** (and those of nodes without a keeper, Python pids included):
      each gets `{:variable, name, value, version}` for every version after the one it asked
      for, in order and without gaps (a version that comes early waits for its predecessors,
      200 ms, then they are asked of the variable, and asked again while it cannot answer). When the changes it asks for are no longer in any
      history, it gets `{:variable_resync, name, value, version}` (the current value) and
      the gap-free stream continues from there. A deleted variable sends
      `{:variable_deleted, name}`.
    * **restarts**: a `:cluster` variable registered nowhere (its node died, or it crashed) is
      restarted by one keeper (chosen by a hash of its name among the live keepers) from the
      last persisted value: the committed record for `:strong`, this replica for `:eventual`.
  """
  use GenServer
  require Logger

  alias DSPEx.Clustering.{Agent, Names, SignalBus}
  alias DSPEx.Clustering.Migration.{AgentSupervisor, Registry}
  alias DSPEx.Clustering.Variable.Server

  @name :dspex_variable_keeper
  @group :dspex_variable_keepers
  @check_ms 500
  @max_backoff_ms 30_000
  @gap_wait_ms 200
  @gap_tries 10

  @doc false
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: @name)

  @doc "Subscribes `pid` to `name` from `from_version` (nil: from the current version on)."
  @spec subscribe(GenServer.server(), term(), pid(), non_neg_integer() | nil) ::
          :ok | {:error, term()}
  def subscribe(keeper, name, pid, from_version),
    do: GenServer.call(keeper, {:subscribe, name, pid, from_version}, 15_000)

  @doc "Removes `pid`'s subscription to `name`."
  @spec unsubscribe(GenServer.server(), term(), pid()) :: :ok
  def unsubscribe(keeper, name, pid), do: GenServer.call(keeper, {:unsubscribe, name, pid})

  @doc "This node's replica of `name` (nil if unknown or deleted)."
  @spec entry(term()) :: map() | nil
  def entry(name), do: GenServer.call(@name, {:entry, name})

  @doc "The keeper serving subscribers of `pid`: the one on its node, else this node's."
  @spec keeper_for(pid()) :: GenServer.server()
  def keeper_for(pid) do
    if node(pid) != node() and node(pid) in keeper_nodes(),
      do: {@name, node(pid)},
      else: @name
  end

  @doc "BEAM nodes running a keeper (sorted)."
  @spec keeper_nodes() :: [node()]
  def keeper_nodes do
    :pg.get_members(Names.signal_bus(), @group) |> Enum.map(&node/1) |> Enum.uniq() |> Enum.sort()
  end

  # -- server -----------------------------------------------------------------------------------

  @impl true
  def init(_opts) do
    :ok = :pg.join(Names.signal_bus(), @group, self())
    :ok = SignalBus.subscribe("cluster.variable.sync")
    :ok = :net_kernel.monitor_nodes(true)
    Process.send_after(self(), :check, @check_ms)
    {:ok, %{vars: %{}, subs: %{}, mons: %{}, restarter: nil, backoff: %{}, gaps: %{}}}
  end

  @impl true
  def handle_call({:subscribe, name, pid, from_version}, _from, s) do
    case ensure_entry(s, name) do
      {:ok, s} ->
        s = start_subscription(s, name, pid, from_version)
        {:reply, :ok, monitor(s, pid)}

      {:error, reason} ->
        {:reply, {:error, reason}, s}
    end
  end

  def handle_call({:unsubscribe, name, pid}, _from, s) do
    {:reply, :ok, %{s | subs: Map.update(s.subs, name, %{}, &Map.delete(&1, pid))}}
  end

  def handle_call({:entry, name}, _from, s) do
    case s.vars[name] do
      %{deleted: false} = e -> {:reply, e, s}
      _ -> {:reply, nil, s}
    end
  end

  @impl true
  def handle_info({:signal, %{type: "cluster.variable.sync", data: data}}, s),
    do: {:noreply, apply_sync(s, data)}

  def handle_info({:signal, _}, s), do: {:noreply, s}

  def handle_info({:catalogue, entries}, s),
    do: {:noreply, Enum.reduce(entries, s, &apply_sync(&2, &1))}

  def handle_info({:nodeup, node}, s) do
    if s.vars != %{} do
      catalogue = for {_, e} <- s.vars, do: Map.put(Map.delete(e, :history), :deleted, e.deleted)
      send({@name, node}, {:catalogue, catalogue})
    end

    {:noreply, s}
  end

  def handle_info({:nodedown, _node}, s) do
    Process.send_after(self(), :check_once, 100)
    {:noreply, s}
  end

  def handle_info(:check, s) do
    Process.send_after(self(), :check, @check_ms)
    {:noreply, restart_orphans(s)}
  end

  def handle_info(:check_once, s), do: {:noreply, restart_orphans(s)}

  def handle_info({:gap_check, name}, s), do: {:noreply, check_gap(s, name)}

  def handle_info({:restarted, results}, s) do
    now = System.monotonic_time(:millisecond)

    backoff =
      Enum.reduce(results, s.backoff, fn
        {name, :ok}, acc ->
          Map.delete(acc, name)

        {name, :error}, acc ->
          delay = min(2 * elem(Map.get(acc, name, {0, 500}), 1), @max_backoff_ms)
          Map.put(acc, name, {now + delay, delay})
      end)

    {:noreply, %{s | backoff: backoff}}
  end

  def handle_info({:DOWN, ref, :process, _pid, _}, %{restarter: ref} = s),
    do: {:noreply, %{s | restarter: nil}}

  def handle_info({:DOWN, _ref, :process, pid, _}, s) do
    subs = Map.new(s.subs, fn {name, m} -> {name, Map.delete(m, pid)} end)
    {:noreply, %{s | subs: subs, mons: Map.delete(s.mons, pid)}}
  end

  def handle_info(_other, s), do: {:noreply, s}

  # -- replica ----------------------------------------------------------------------------------

  defp apply_sync(s, %{name: name} = d) do
    e = s.vars[name]

    cond do
      Map.get(d, :deleted, false) ->
        if e == nil or not e.deleted, do: notify_deleted(s, name)
        tomb = Map.merge(new_entry(d), %{deleted: true, history: []})
        %{s | vars: Map.put(s.vars, name, tomb), subs: Map.delete(s.subs, name)}

      e == nil or e.deleted ->
        put_entry(s, name, new_entry(d))

      d.version <= e.version ->
        s

      d.version == e.version + 1 ->
        s |> advance(name, e, [{d.version, d.value, d.stamp}], d) |> drain_held(name)

      true ->
        hold(s, name, d)
    end
  end

  # A version ahead of the next one: usually its predecessors are still on their way (during a
  # move two instances publish, and their signals may cross), so it waits @gap_wait_ms for them
  # before the variable is asked for the changes since the last version held.
  defp hold(s, name, d) do
    gap = Map.get(s.gaps, name, %{held: %{}, tries: 0, timer: nil})
    timer = gap.timer || Process.send_after(self(), {:gap_check, name}, @gap_wait_ms)
    gap = %{gap | held: Map.put(gap.held, d.version, d), timer: timer}
    %{s | gaps: Map.put(s.gaps, name, gap)}
  end

  # Applies held versions that have become consecutive; forgets those now behind.
  defp drain_held(s, name) do
    case {s.gaps[name], s.vars[name]} do
      {nil, _} ->
        s

      {gap, e} ->
        held = Map.reject(gap.held, fn {v, _} -> v <= e.version end)

        case Map.pop(held, e.version + 1) do
          {nil, _} when held == %{} ->
            if gap.timer, do: Process.cancel_timer(gap.timer)
            %{s | gaps: Map.delete(s.gaps, name)}

          {nil, _} ->
            %{s | gaps: Map.put(s.gaps, name, %{gap | held: held})}

          {d, rest} ->
            s = %{s | gaps: Map.put(s.gaps, name, %{gap | held: rest})}
            s |> advance(name, e, [{d.version, d.value, d.stamp}], d) |> drain_held(name)
        end
    end
  end

  defp check_gap(s, name) do
    with %{} = gap <- s.gaps[name],
         %{deleted: false} = e <- s.vars[name],
         true <- gap.held != %{} do
      gap = %{gap | timer: nil}
      s = %{s | gaps: Map.put(s.gaps, name, gap)}
      latest = gap.held |> Map.values() |> Enum.max_by(& &1.version)

      case fetch(name, {:since, e.version}) do
        {:changes, changes} ->
          changes = for {v, value} <- changes, v > e.version, do: {v, value, nil}
          s = if changes == [], do: s, else: advance(s, name, e, changes, latest)
          drain_held(s, name)

        {:resync, value, version} ->
          s |> resync(name, e, value, version, latest) |> drain_held(name)

        _unreachable when gap.tries < @gap_tries ->
          timer = Process.send_after(self(), {:gap_check, name}, @gap_wait_ms)
          %{s | gaps: Map.put(s.gaps, name, %{gap | tries: gap.tries + 1, timer: timer})}

        _unreachable ->
          s |> resync(name, e, latest.value, latest.version, latest) |> drain_held(name)
      end
    else
      _ -> %{s | gaps: Map.delete(s.gaps, name)}
    end
  end

  defp new_entry(d) do
    %{
      name: d.name,
      spec: d.spec,
      value: d.value,
      version: d.version,
      stamp: d.stamp,
      node: Map.get(d, :node),
      deleted: false,
      history: [{d.version, d.value, d.stamp}]
    }
  end

  defp put_entry(s, name, e), do: %{s | vars: Map.put(s.vars, name, e)}

  # Appends consecutive changes (ascending) and delivers them.
  defp advance(s, name, e, changes, d) do
    limit = e.spec.history
    history = Enum.reduce(changes, e.history, &[&1 | &2]) |> Enum.take(limit)
    {v, value, stamp} = List.last(changes)

    e = %{
      e
      | value: value,
        version: v,
        stamp: stamp,
        history: history,
        node: Map.get(d, :node, e.node),
        spec: Map.get(d, :spec, e.spec)
    }

    s = put_entry(s, name, e)
    deliver(s, name, for({v, value, _} <- changes, do: {v, value}))
  end

  defp resync(s, name, e, value, version, d) do
    e = %{
      e
      | value: value,
        version: version,
        stamp: d.stamp,
        history: [{version, value, d.stamp}]
    }

    subs = Map.get(s.subs, name, %{})

    subs =
      Map.new(subs, fn {pid, last} ->
        if last < version do
          send(pid, {:variable_resync, name, value, version})
          {pid, version}
        else
          {pid, last}
        end
      end)

    %{put_entry(s, name, e) | subs: Map.put(s.subs, name, subs)}
  end

  defp deliver(s, name, changes) do
    case Map.get(s.subs, name) do
      nil ->
        s

      subs ->
        subs =
          Map.new(subs, fn {pid, last} ->
            {pid, Enum.reduce(changes, last, &send_change(pid, name, &1, &2))}
          end)

        %{s | subs: Map.put(s.subs, name, subs)}
    end
  end

  defp send_change(pid, name, {v, value}, last) when v > last do
    send(pid, {:variable, name, value, v})
    v
  end

  defp send_change(_pid, _name, _change, last), do: last

  defp notify_deleted(s, name) do
    for {pid, _} <- Map.get(s.subs, name, %{}), do: send(pid, {:variable_deleted, name})
  end

  # -- subscriptions ----------------------------------------------------------------------------

  defp ensure_entry(s, name) do
    case s.vars[name] do
      %{deleted: false} ->
        {:ok, s}

      _ ->
        case fetch(name, :snapshot) do
          {:ok, snap} ->
            {:ok, put_entry(s, name, Map.merge(new_entry(snap), %{history: snap.history}))}

          _ ->
            {:error, :not_found}
        end
    end
  end

  defp start_subscription(s, name, pid, from_version) do
    e = s.vars[name]
    from = from_version || e.version

    last =
      cond do
        from >= e.version ->
          from

        covered?(e.history, from) ->
          for {v, value, _} <- Enum.reverse(e.history),
              v > from,
              do: send(pid, {:variable, name, value, v})

          e.version

        true ->
          catch_up(name, pid, from, e)
      end

    %{s | subs: Map.update(s.subs, name, %{pid => last}, &Map.put(&1, pid, last))}
  end

  defp covered?([], _from), do: false
  defp covered?(history, from), do: elem(List.last(history), 0) <= from + 1

  # Older than our history: the variable's own, else a resync.
  defp catch_up(name, pid, from, e) do
    case fetch(name, {:since, from}) do
      {:changes, [_ | _] = changes} ->
        for {v, value} <- changes, do: send(pid, {:variable, name, value, v})
        changes |> List.last() |> elem(0)

      {:resync, value, version} ->
        send(pid, {:variable_resync, name, value, version})
        version

      _ ->
        send(pid, {:variable_resync, name, e.value, e.version})
        e.version
    end
  end

  defp monitor(s, pid) do
    if Map.has_key?(s.mons, pid),
      do: s,
      else: %{s | mons: Map.put(s.mons, pid, Process.monitor(pid))}
  end

  defp fetch(name, request) do
    if Registry.whereis({:variable, name}),
      do: Agent.request({:variable, name}, request, 2_000),
      else: {:error, :not_found}
  catch
    :exit, _ -> {:error, :unreachable}
  end

  # -- restarts ---------------------------------------------------------------------------------

  # Restarting may wait (a strong variable reads the State; registering takes a :global lock),
  # so it runs in a process of its own, one batch at a time, with a backoff per variable that
  # could not be restarted: the keeper itself never blocks on it.
  defp restart_orphans(%{restarter: ref} = s) when ref != nil, do: s

  defp restart_orphans(s) do
    keepers = keeper_nodes()
    now = System.monotonic_time(:millisecond)

    orphans =
      for {name, %{deleted: false, spec: %{coordination_scope: :cluster}} = e} <- s.vars,
          keepers != [],
          Enum.at(keepers, :erlang.phash2(name, length(keepers))) == node(),
          due?(s.backoff, name, now),
          Registry.whereis({:variable, name}) == nil,
          do: {name, e}

    if orphans == [] do
      s
    else
      keeper = self()

      {_pid, ref} =
        spawn_monitor(fn -> send(keeper, {:restarted, Enum.map(orphans, &restart/1)}) end)

      %{s | restarter: ref}
    end
  end

  # (monotonic time may be negative: no default "time 0")
  defp due?(backoff, name, now) do
    case backoff do
      %{^name => {next, _delay}} -> next <= now
      _ -> true
    end
  end

  defp restart({name, e}) do
    opts = [id: {:variable, name}, variable: name, spec: e.spec, value: e.value, resume: e]

    case AgentSupervisor.start_child(Server, opts) do
      {:ok, _pid} ->
        Logger.info("variable #{inspect(name, limit: 5)} restarted here at version #{e.version}")
        {name, :ok}

      {:error, {:already_started, _}} ->
        {name, :ok}

      {:error, reason} ->
        Logger.debug(
          "variable #{inspect(name, limit: 5)} not restarted: #{inspect(reason, limit: 5)}"
        )

        {name, :error}
    end
  end
end
