defmodule DSPEx.Clustering.State.Replica do
  @moduledoc """
  This node's replica of one eventual table: the only writer of its ETS tables, the process
  that spreads deltas and runs anti-entropy. One per node per table, started by
  `DSPEx.Clustering.State.EventualSupervisor`; the replicas of a table find each other in the
  `:pg` group `Names.state_replica_group(table)` of the signal-bus scope.

  ## Data
  ETS `name(table)` holds `{key, context, entries, digest}` rows (`DSPEx.Clustering.State.KeyState`,
  read without a process hop); ETS `meta_name(table)` holds `{:seen, seen}` and
  `{:resolvers, table}`.

  `seen :: %{node => {pt, l}}` is the replica's watermark: for every node `n` it has merged
  every write `n` made up to `seen[n]`. It grows by

    * this node's own writes;
    * a delta from `n` that carries the stamp of `n`'s previous write equal to `seen[n]` (no
      gap: deltas from one process arrive in order while the connection lives);
    * anti-entropy: after merging every key in which a peer differed, the peer's `seen` (as it
      was when it computed the difference) is joined in.

  Causal sessions wait on `seen` (`await/3`).

  ## Spreading
  A write is merged locally and its key's new state — a delta of the store — is sent at once
  to every replica in the group (`:noconnect, :nosuspend`: a write never waits on a frozen or
  slow peer; a lost delta is repaired later). Every
  `eventual_anti_entropy_ms` the replica pings up to `eventual_fanout` random peers with a root
  digest (the sum of per-key digests, kept incrementally); a peer whose root differs answers
  with its per-key digests, both send each other the keys that differ, and both join the
  other's `seen` (an exchange costs O(keys): fine for tables of thousands of keys). A replica
  that newly appears in the group (a node joining late, or a partition healing) is pinged at
  once by the side with the smaller name, and a replica that an exchange changed pings its
  peers again 20 ms later (not a round later), so what one side of a healed partition learnt
  reaches the rest of it without waiting for the next round. Conflict signals are built only
  when someone subscribes to `cluster.consistency.conflict`.

  ## Tombstones and their GC
  A delete leaves the key's context with no entries (the tombstone). Every replica reports its
  `seen` in anti-entropy; the pointwise minimum over every replica ever heard from and this one
  is `stable` (empty while a replica now in the group has not reported). A tombstone whose context `stable` dominates — every replica has seen every
  write the delete covered — is dropped. From then on an incoming value for a key this
  replica does not hold is dropped when its dot is within this replica's own `seen` (it was
  seen here before and only a GC removes keys), so a delayed or replayed old write cannot
  resurrect the key; the sender gets the key's tombstone back, so a replica that kept such a
  value (one that was away while the others collected) drops it too. A replica that disappears for good holds GC back (it stays in the
  minimum) until `forget_replica/2` removes it.
  """
  use GenServer

  require Logger
  alias DSPEx.Clustering.{Config, Names, Signal, SignalBus}
  alias DSPEx.Clustering.State.{HLC, KeyState, Resolvers}

  @type table :: atom()
  @type op :: {:put, term()} | :delete
  @type supersede :: :local | {:context, KeyState.context()} | {:session, KeyState.context()}
  @type version :: %{stamp: HLC.stamp(), context: KeyState.context()}

  @drift_log_every_ms 10_000
  @conflict_signal "cluster.consistency.conflict"
  # after an anti-entropy exchange changed this replica, ping the others this soon (coalesced)
  @follow_up_ms 20

  # -- API -------------------------------------------------------------------------------------

  @doc "The registered name (and data ETS name) of `table`'s replica."
  @spec name(table()) :: atom()
  def name(table), do: :"dspex_state_eventual_#{table}"

  @doc "The name of `table`'s metadata ETS table."
  @spec meta_name(table()) :: atom()
  def meta_name(table), do: :"dspex_state_eventual_#{table}_meta"

  @spec start_link(table()) :: GenServer.on_start()
  def start_link(table), do: GenServer.start_link(__MODULE__, table, name: name(table))

  @spec child_spec(table()) :: Supervisor.child_spec()
  def child_spec(table), do: %{id: {__MODULE__, table}, start: {__MODULE__, :start_link, [table]}}

  @doc "Writes `op` on `key` locally and spreads it; answers the new version."
  @spec write(table(), term(), op(), supersede(), timeout()) ::
          {:ok, version()} | {:error, {:unknown_table, table()}}
  def write(table, key, op, supersede, timeout \\ 5_000) do
    GenServer.call(name(table), {:write, key, op, supersede}, timeout)
  catch
    :exit, {:noproc, _} -> {:error, {:unknown_table, table}}
  end

  @doc "The key's state on this replica, nil when absent."
  @spec lookup(table(), term()) :: KeyState.t() | nil | {:error, {:unknown_table, table()}}
  def lookup(table, key) do
    case :ets.lookup(name(table), key) do
      [{^key, context, entries, _digest}] -> {context, entries}
      [] -> nil
    end
  rescue
    ArgumentError -> {:error, {:unknown_table, table}}
  end

  @doc "The registered resolvers of `table` on this replica."
  @spec resolvers(table()) :: Resolvers.table()
  def resolvers(table), do: meta(table, :resolvers, %{})

  @doc "This replica's `seen` watermark (see the module doc)."
  @spec seen(table()) :: KeyState.context()
  def seen(table), do: meta(table, :seen, %{})

  @doc "Registers `resolver` for keys matching `prefix` on every replica of `table`."
  @spec register_resolver(table(), term(), Resolvers.resolver()) ::
          :ok | {:error, {:invalid_resolver, term()} | {:unknown_table, table()}}
  def register_resolver(table, prefix, resolver) do
    with :ok <- Resolvers.validate(resolver) do
      GenServer.call(name(table), {:register_resolver, prefix, resolver})
    end
  catch
    :exit, {:noproc, _} -> {:error, {:unknown_table, table}}
  end

  @doc """
  Returns `:ok` once this replica has seen every write `token` covers, `{:error, :timeout}`
  when `timeout_ms` passes first.
  """
  @spec await(table(), KeyState.context(), non_neg_integer()) ::
          :ok | {:error, :timeout | {:unknown_table, table()}}
  def await(table, token, timeout_ms) do
    cond do
      map_size(token) == 0 ->
        :ok

      KeyState.dominates?(seen(table), token) ->
        :ok

      true ->
        GenServer.call(name(table), {:await, token, timeout_ms}, timeout_ms + 5_000)
    end
  catch
    :exit, {:noproc, _} -> {:error, {:unknown_table, table}}
  end

  @doc "Every row, sorted by key: `{key, context, entries}` (for checks and debugging)."
  @spec dump(table()) :: [{term(), KeyState.context(), [KeyState.entry()]}]
  def dump(table) do
    name(table)
    |> :ets.tab2list()
    |> Enum.map(fn {k, c, e, _} -> {k, c, e} end)
    |> Enum.sort()
  end

  @doc "Stops waiting for `node`'s anti-entropy reports before collecting tombstones."
  @spec forget_replica(table(), node()) :: :ok
  def forget_replica(table, node), do: GenServer.call(name(table), {:forget, node})

  @doc "Counters: keys, tombstones, conflicts seen, deltas with a gap, drifted stamps, peers."
  @spec stats(table()) :: map()
  def stats(table), do: GenServer.call(name(table), :stats)

  defp meta(table, key, default) do
    case :ets.lookup(meta_name(table), key) do
      [{^key, value}] -> value
      [] -> default
    end
  rescue
    # no such table: callers answer {:error, {:unknown_table, t}} on their next step
    ArgumentError -> default
  end

  # -- server ----------------------------------------------------------------------------------

  @impl true
  def init(table) do
    data = :ets.new(name(table), [:set, :protected, :named_table, read_concurrency: true])
    meta = :ets.new(meta_name(table), [:set, :protected, :named_table, read_concurrency: true])
    group = Names.state_replica_group(table)
    scope = Names.signal_bus()
    :ok = :pg.join(scope, group, self())
    {_ref, members} = :pg.monitor(scope, group)
    peers = MapSet.new(members, & &1) |> MapSet.delete(self())
    interval = Config.get(:eventual_anti_entropy_ms)

    state = %{
      table: table,
      data: data,
      meta: meta,
      clock: HLC.new(node(), Config.get(:max_clock_drift_ms)),
      seen: %{},
      last_sent: nil,
      root: 0,
      resolvers: %{},
      reports: %{},
      tombstones: MapSet.new(),
      waiters: %{},
      pending: %{},
      peers: peers,
      interval: interval,
      fanout: Config.get(:eventual_fanout),
      counts: %{conflicts: 0, gaps: 0, drift: 0, gc: 0},
      drift_logged_at: nil,
      follow_up: false,
      gone: []
    }

    publish_meta(state)
    Enum.each(peers, &ping(&1, state))
    Process.send_after(self(), :anti_entropy, interval)
    {:ok, state}
  end

  @impl true
  def handle_call({:write, key, op, supersede}, _from, state) do
    {session, given} =
      case supersede do
        {:session, token} -> {token, nil}
        {:context, context} -> {%{}, context}
        :local -> {%{}, nil}
      end

    state = observe_token(state, session)
    {stamp, clock} = HLC.now(state.clock)
    current = local(state, key) || KeyState.new()
    {current_context, _} = current
    sup = KeyState.join_contexts(given || current_context, session)

    next =
      case op do
        {:put, value} -> KeyState.write(current, stamp, value, sup)
        :delete -> KeyState.delete(current, stamp, sup)
      end

    next = if resolver(state, key) == :lww, do: KeyState.prune_lww(next), else: next
    {pt, l, _} = stamp
    state = %{state | clock: clock} |> store(key, next) |> put_seen(node(), {pt, l})
    msg = {:dspex_state_delta, node(), {pt, l}, state.last_sent, key, next}
    Enum.each(state.peers, &post(&1, msg))
    state = %{state | last_sent: {pt, l}} |> publish_meta()
    {:reply, {:ok, %{stamp: stamp, context: elem(next, 0)}}, state}
  end

  def handle_call({:register_resolver, prefix, resolver}, _from, state) do
    {stamp, clock} = HLC.now(state.clock)
    update = %{prefix => {stamp, resolver}}
    state = %{state | clock: clock, resolvers: Resolvers.merge(state.resolvers, update)}
    Enum.each(state.peers, &post(&1, {:dspex_state_resolvers, update}))
    {:reply, :ok, publish_meta(state)}
  end

  def handle_call({:await, token, timeout_ms}, from, state) do
    if KeyState.dominates?(state.seen, token) do
      {:reply, :ok, state}
    else
      ref = make_ref()
      Process.send_after(self(), {:await_timeout, ref}, timeout_ms)
      {:noreply, %{state | waiters: Map.put(state.waiters, ref, {from, token})}}
    end
  end

  def handle_call({:forget, node}, _from, state),
    do: {:reply, :ok, %{state | reports: Map.delete(state.reports, node)}}

  def handle_call(:stats, _from, state) do
    stats =
      Map.merge(state.counts, %{
        keys: :ets.info(state.data, :size),
        tombstones: MapSet.size(state.tombstones),
        peers: MapSet.size(state.peers),
        waiters: map_size(state.waiters),
        root: state.root
      })

    {:reply, stats, state}
  end

  @impl true
  def handle_info({:dspex_state_delta, origin, pl, prev, key, key_state}, state) do
    state = state |> merge_key(key, key_state) |> tell_gone({name(state.table), origin})

    state =
      cond do
        Map.get(state.seen, origin) == prev -> put_seen(state, origin, pl)
        Map.get(state.seen, origin, {-1, -1}) >= pl -> state
        true -> bump(state, :gaps)
      end

    {:noreply, state |> publish_meta() |> wake_waiters()}
  end

  # tombstones for keys the sender collected while this replica still held old values
  def handle_info({:dspex_state_gone, tombstones}, state) do
    state = Enum.reduce(tombstones, state, fn {k, ks}, acc -> merge_key(acc, k, ks) end)
    {:noreply, %{state | gone: []} |> publish_meta()}
  end

  def handle_info({:dspex_state_resolvers, update}, state),
    do: {:noreply, publish_meta(%{state | resolvers: Resolvers.merge(state.resolvers, update)})}

  # anti-entropy, initiator side: ping -> (equal | digest -> states -> reply)
  def handle_info(:anti_entropy, state) do
    state.peers |> Enum.shuffle() |> Enum.take(state.fanout) |> Enum.each(&ping(&1, state))
    Process.send_after(self(), :anti_entropy, state.interval)
    {:noreply, collect_tombstones(%{state | pending: %{}})}
  end

  def handle_info({:ae_ping, peer, peer_node, root, peer_seen, resolvers}, state) do
    # a restarted replica learns how far its previous life's stamps went (dots stay unique)
    state = observe_token(state, peer_seen)
    state = %{state | resolvers: Resolvers.merge(state.resolvers, resolvers)}
    state = %{state | reports: Map.put(state.reports, peer_node, peer_seen)}

    state =
      if root == state.root do
        post(peer, {:ae_equal, self(), node(), root, state.seen})
        join_seen(state, peer_seen)
      else
        post(peer, {:ae_digest, self(), node(), digests(state), state.seen})
        state
      end

    {:noreply, state |> publish_meta() |> wake_waiters()}
  end

  def handle_info({:ae_equal, _peer, peer_node, root, peer_seen}, state) do
    state = observe_token(state, peer_seen)
    state = %{state | reports: Map.put(state.reports, peer_node, peer_seen)}
    state = if root == state.root, do: join_seen(state, peer_seen), else: state
    {:noreply, state |> publish_meta() |> wake_waiters()}
  end

  def handle_info({:ae_digest, peer, peer_node, peer_digests, peer_seen}, state) do
    state = observe_token(state, peer_seen)
    state = %{state | reports: Map.put(state.reports, peer_node, peer_seen)}
    mine = digests(state)
    give = for {k, h} <- mine, Map.get(peer_digests, k) != h, do: k
    want = for {k, h} <- peer_digests, Map.get(mine, k) != h, do: k
    post(peer, {:ae_states, self(), states(state, give), want, state.seen})

    state =
      if want == [],
        do: join_seen(state, peer_seen),
        else: %{state | pending: Map.put(state.pending, peer, peer_seen)}

    {:noreply, state |> publish_meta() |> wake_waiters()}
  end

  def handle_info({:ae_states, peer, key_states, want, peer_seen}, state) do
    state = merge_states(state, key_states, peer)
    if want != [], do: post(peer, {:ae_reply, self(), states(state, want)})
    {:noreply, state |> join_seen(peer_seen) |> publish_meta() |> wake_waiters()}
  end

  def handle_info({:ae_reply, peer, key_states}, state) do
    state = merge_states(state, key_states, peer)

    state =
      case Map.pop(state.pending, peer) do
        {nil, _} -> state
        {peer_seen, pending} -> join_seen(%{state | pending: pending}, peer_seen)
      end

    {:noreply, state |> publish_meta() |> wake_waiters()}
  end

  def handle_info({ref, :join, _group, pids}, state) when is_reference(ref) do
    new = Enum.reject(pids, &(&1 == self()))
    # both sides see the join: one exchange per pair is enough (the other side starts it)
    new |> Enum.filter(&({node(), self()} < {node(&1), &1})) |> Enum.each(&ping(&1, state))
    {:noreply, %{state | peers: Enum.into(new, state.peers)}}
  end

  def handle_info({ref, :leave, _group, pids}, state) when is_reference(ref),
    do: {:noreply, %{state | peers: Enum.reduce(pids, state.peers, &MapSet.delete(&2, &1))}}

  # what one exchange brought in goes on to the other peers at once, not a round later
  def handle_info(:ae_follow_up, state) do
    state.peers |> Enum.shuffle() |> Enum.take(state.fanout) |> Enum.each(&ping(&1, state))
    {:noreply, %{state | follow_up: false}}
  end

  def handle_info({:await_timeout, ref}, state) do
    case Map.pop(state.waiters, ref) do
      {nil, _} ->
        {:noreply, state}

      {{from, _token}, waiters} ->
        GenServer.reply(from, {:error, :timeout})
        {:noreply, %{state | waiters: waiters}}
    end
  end

  def handle_info(_other, state), do: {:noreply, state}

  # -- merging ---------------------------------------------------------------------------------

  defp merge_states(state, key_states, from) do
    root = state.root

    state =
      key_states
      |> Enum.reduce(state, fn {k, ks}, acc -> merge_key(acc, k, ks) end)
      |> tell_gone(from)

    if state.root != root and not state.follow_up do
      Process.send_after(self(), :ae_follow_up, @follow_up_ms)
      %{state | follow_up: true}
    else
      state
    end
  end

  defp merge_key(state, key, incoming) do
    state = observe_stamp(state, KeyState.max_stamp(incoming))

    case local(state, key) do
      nil ->
        # seen here before but absent now means collected after a delete: never resurrect
        {context, entries} = KeyState.drop_covered(incoming, state.seen)

        cond do
          entries != [] or not KeyState.dominates?(state.seen, context) ->
            resolve_and_store(state, key, nil, {context, entries})

          # the sender still holds values this replica saw deleted and collected: tell it
          elem(incoming, 1) != [] ->
            %{state | gone: [{key, {elem(incoming, 0), []}} | state.gone]}

          true ->
            state
        end

      current ->
        merged = KeyState.merge(current, incoming)
        if merged == current, do: state, else: resolve_and_store(state, key, current, merged)
    end
  end

  defp resolve_and_store(state, key, current, {_context, entries} = merged) do
    resolver = resolver(state, key)
    before = if current, do: Enum.map(elem(current, 1), &elem(&1, 0)), else: []
    dots = Enum.map(entries, &elem(&1, 0))

    state =
      if length(entries) > 1 and dots != before,
        do: conflict(state, key, resolver, merged),
        else: state

    merged = if resolver == :lww, do: KeyState.prune_lww(merged), else: merged
    store(state, key, merged)
  end

  defp conflict(state, key, resolver, {_context, entries}) do
    dots = Enum.map(entries, &elem(&1, 0))
    winner = if resolver == :siblings, do: nil, else: List.last(dots)

    data = %{
      table: state.table,
      key: key,
      resolution: Resolvers.kind(resolver),
      dots: dots,
      winner: winner,
      node: node()
    }

    # building a signal costs more than the merge: only when someone listens
    if SignalBus.subscribers_for(@conflict_signal) != [] do
      with {:ok, signal} <-
             Signal.new(@conflict_signal, data, source: "state", priority: :medium),
           do: SignalBus.publish(signal)
    end

    bump(state, :conflicts)
  end

  defp store(state, key, {context, entries} = key_state) do
    digest = KeyState.digest(key_state)

    old =
      case :ets.lookup(state.data, key) do
        [{^key, _, _, d}] -> root_part(key, d)
        [] -> 0
      end

    :ets.insert(state.data, {key, context, entries, digest})
    root = rem(state.root - old + root_part(key, digest) + 4_294_967_296, 4_294_967_296)

    tombstones =
      if entries == [],
        do: MapSet.put(state.tombstones, key),
        else: MapSet.delete(state.tombstones, key)

    %{state | root: root, tombstones: tombstones}
  end

  defp root_part(key, digest), do: :erlang.phash2({key, digest}, 4_294_967_296)

  defp collect_tombstones(state) do
    stable = stable(state)

    gone =
      Enum.filter(state.tombstones, fn key ->
        case local(state, key) do
          {context, []} -> KeyState.dominates?(stable, context)
          _ -> false
        end
      end)

    Enum.reduce(gone, state, fn key, acc ->
      [{^key, _, _, d}] = :ets.lookup(acc.data, key)
      :ets.delete(acc.data, key)
      root = rem(acc.root - root_part(key, d) + 4_294_967_296, 4_294_967_296)
      %{acc | root: root, tombstones: MapSet.delete(acc.tombstones, key)} |> bump(:gc)
    end)
  end

  defp tell_gone(%{gone: []} = state, _to), do: state

  defp tell_gone(state, to) do
    post(to, {:dspex_state_gone, state.gone})
    %{state | gone: []}
  end

  # the pointwise minimum of this replica's seen and every replica's last report; nothing is
  # stable while a replica in the group has not reported yet (with more peers than the fanout
  # one may not have pinged us: it could hold what a collection would let it resurrect)
  defp stable(state) do
    unreported = Enum.reject(state.peers, &Map.has_key?(state.reports, node(&1)))

    if unreported == [] do
      Enum.reduce(Map.values(state.reports), state.seen, fn report, acc ->
        for {n, pl} <- acc, Map.has_key?(report, n), into: %{}, do: {n, min(pl, report[n])}
      end)
    else
      %{}
    end
  end

  # -- helpers ---------------------------------------------------------------------------------

  defp local(state, key) do
    case :ets.lookup(state.data, key) do
      [{^key, context, entries, _}] -> {context, entries}
      [] -> nil
    end
  end

  defp digests(state),
    do: :ets.foldl(fn {k, _, _, d}, acc -> Map.put(acc, k, d) end, %{}, state.data)

  defp states(state, keys) do
    for k <- keys, ks = local(state, k), ks != nil, do: {k, ks}
  end

  defp resolver(state, key), do: Resolvers.for_key(state.resolvers, key)

  defp ping(peer, state),
    do: post(peer, {:ae_ping, self(), node(), state.root, state.seen, state.resolvers})

  # never dial, never wait on a busy connection (a frozen peer's full distribution buffer):
  # a message dropped here is repaired by the next anti-entropy round
  defp post(pid, msg), do: :erlang.send(pid, msg, [:noconnect, :nosuspend])

  defp put_seen(state, n, pl), do: %{state | seen: Map.put(state.seen, n, pl)}

  defp join_seen(state, other),
    do: %{state | seen: KeyState.join_contexts(state.seen, other)}

  defp observe_token(state, token) do
    token
    |> Enum.map(fn {n, {pt, l}} -> {pt, l, n} end)
    |> Enum.max(fn -> nil end)
    |> then(&observe_stamp(state, &1))
  end

  defp observe_stamp(state, nil), do: state

  defp observe_stamp(state, stamp) do
    case HLC.observe(state.clock, stamp) do
      {:ok, clock} ->
        %{state | clock: clock}

      {{:drift, ahead_ms}, _clock} ->
        state |> bump(:drift) |> log_drift(stamp, ahead_ms)
    end
  end

  defp log_drift(state, {_pt, _l, n}, ahead_ms) do
    now = System.monotonic_time(:millisecond)

    if state.drift_logged_at == nil or now - state.drift_logged_at > @drift_log_every_ms do
      Logger.warning(
        "state: a write from #{inspect(n) |> String.slice(0, 200)} is stamped #{ahead_ms} ms " <>
          "ahead of this clock (max_clock_drift_ms #{state.clock.max_drift_ms}); kept, not adopted"
      )

      %{state | drift_logged_at: now}
    else
      state
    end
  end

  defp wake_waiters(%{waiters: waiters} = state) when map_size(waiters) == 0, do: state

  defp wake_waiters(state) do
    {ready, waiting} =
      Enum.split_with(state.waiters, fn {_ref, {_from, token}} ->
        KeyState.dominates?(state.seen, token)
      end)

    Enum.each(ready, fn {_ref, {from, _}} -> GenServer.reply(from, :ok) end)
    %{state | waiters: Map.new(waiting)}
  end

  defp publish_meta(state) do
    :ets.insert(state.meta, [{:seen, state.seen}, {:resolvers, state.resolvers}])
    state
  end

  defp bump(state, counter), do: %{state | counts: Map.update!(state.counts, counter, &(&1 + 1))}
end
