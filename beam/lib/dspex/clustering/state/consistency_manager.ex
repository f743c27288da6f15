defmodule DSPEx.Clustering.State.ConsistencyManager do
  @moduledoc """
  The agent that keeps the strong state's Ra group (`DSPEx.Clustering.State.Strong`) formed,
  registered as `:dspex_consistency_manager` on every BEAM node. Python nodes are clients only.

  Every `state_check_interval_ms` it:

    1. **Learns the group**: members and leader from its own Ra server, else from any BEAM
       member that has one; cached in the `Strong.table/0` ETS table that clients read.
    2. **Forms it** when no BEAM node is in a group yet and at least `replication_factor` BEAM
       nodes are up (and this node has run `state_form_after_ms`, so nodes starting together
       see each other first): the lowest-named up BEAM node starts a Ra cluster of the first
       `replication_factor` of them (sorted by name), under a `:global` lock over those nodes.
    3. **Re-forms it, one change per tick, on the leader's node only**: a member that has been
       `:down` (or gone from membership) for `state_member_down_after_ms` is removed
       (`:ra.remove_member`) when an up BEAM node can take its place; while the group has fewer
       than `replication_factor` members an up BEAM non-member is added (`:ra.add_member`,
       then its server is started on its node). A stale server of ours (a member removed while
       it was away) on an up non-member is deleted there before it can be added back.
    4. **Publishes** (scope `:cluster`) `cluster.consistency.leader_changed` `%{leader, previous,
       term}` (from the new leader's node), `cluster.consistency.lag` `%{member, lag, commit_index,
       threshold}` when a follower's match index is more than `state_lag_threshold` entries
       behind the leader's commit index (checked every second, once per episode), and `cluster.consistency.snapshot` `%{index, keys}` when
       the machine releases a snapshot (`snapshot_taken/2`, a Ra `mod_call` effect on the leader).

  A node restarted under the same name with its data directory (`<state_dir>/<node>`, default
  `<tmp>/dspex-state/<node>`) restarts its Ra server from disk and rejoins as the same member.
  """
  use DSPEx.Clustering.Agent, name: :dspex_consistency_manager

  require Logger
  alias DSPEx.Clustering.{Config, Membership, Signal, SignalBus}
  alias DSPEx.Clustering.State.{Strong, StrongMachine}

  @source "consistency_manager"
  # how often the leader compares its followers' match index with its commit index
  @lag_every_ms 1_000

  # -- called on any node (by the manager of another node, or a client) --------------------

  @doc "The strong group's status as seen from this node (see `DSPEx.Clustering.State.status/0`)."
  @spec status() :: map()
  def status do
    {members, leader} = Strong.known()
    view = leader && leader_view_of(leader)
    metrics = leader && remote_metrics(leader)

    %{
      consistency: Config.get(:consistency),
      replication_factor: Config.get(:replication_factor),
      members: Enum.map(members, &elem(&1, 1)),
      leader: leader && elem(leader, 1),
      term: view && view.term,
      commit_index: view && view.commit_index,
      last_applied: view && view.last_applied,
      snapshot_index: metrics && metrics.snapshot_index,
      lag: Map.new(members, fn {_, node} -> {node, view && Map.get(view.lag, node)} end),
      local_member: Enum.any?(members, &(elem(&1, 1) == node()))
    }
  end

  @doc """
  The local Ra server's view if it is the leader: `%{term, commit_index, last_applied, lag}`,
  `lag` per member = the leader's commit index minus the member's match index (what the leader
  knows the member has written), 0 for the leader itself; nil on a follower.
  """
  @spec leader_view() :: map() | nil
  def leader_view do
    # the full server state; its large part (the machine state) is only copied on this node
    case :ra_server_proc.local_state_query(Strong.server_id(node()), :all, 1_000) do
      {:ok, %{cluster: cluster, commit_index: commit} = s, leader} ->
        if leader == Strong.server_id(node()) do
          lag =
            Map.new(cluster, fn {{_, n} = id, peer} ->
              {n, if(id == leader, do: 0, else: max(commit - peer.match_index, 0))}
            end)

          %{term: s.current_term, commit_index: commit, last_applied: s.last_applied, lag: lag}
        end

      _ ->
        nil
    end
  catch
    _, _ -> nil
  end

  defp leader_view_of({_, node}) when node == node(), do: leader_view()

  defp leader_view_of({_, node}) do
    :erpc.call(node, __MODULE__, :leader_view, [], 2_000)
  catch
    _, _ -> nil
  end

  @doc "Ra's metrics of the local member: `%{term, snapshot_index, last_applied, commit_index}`."
  @spec local_metrics() :: map() | nil
  def local_metrics do
    case :ets.whereis(:ra_metrics) != :undefined and
           :ets.lookup(:ra_metrics, Strong.cluster_name()) do
      [{_, term, snapshot, applied, commit, _written, _latency}] ->
        %{term: term, snapshot_index: snapshot, last_applied: applied, commit_index: commit}

      _ ->
        nil
    end
  end

  defp remote_metrics({_, node}) when node == node(), do: local_metrics()

  defp remote_metrics({_, node}) do
    :erpc.call(node, __MODULE__, :local_metrics, [], 1_000)
  catch
    _, _ -> nil
  end

  @doc "The group as the local Ra server knows it: `{:member, members, leader}` or `:none`."
  @spec local_group() :: {:member, [{atom(), node()}], {atom(), node()} | nil} | :none
  def local_group do
    case Process.whereis(Strong.cluster_name()) do
      nil ->
        :none

      _pid ->
        case :ra.members(Strong.server_id(node()), 500) do
          {:ok, members, leader} -> {:member, members, leader}
          _ -> {:member, [Strong.server_id(node())], nil}
        end
    end
  catch
    _, _ -> :none
  end

  @doc "Whether this node may be a member of the strong group (`state_voter`)."
  @spec voter?() :: boolean()
  def voter?,
    do: Config.get(:state_voter) == true and :ets.whereis(Strong.table()) != :undefined

  @doc "Starts this node's Ra server as a new member of `members` (called by the leader's node)."
  @spec join([{atom(), node()}]) :: :ok | {:error, term()}
  def join(members) do
    id = Strong.server_id(node())

    case :ra.start_server(Strong.system(), Strong.cluster_name(), id, machine(), members) do
      :ok -> :ok
      {:ok, _} -> :ok
      {:error, {:already_started, _}} -> :ok
      {:error, reason} -> {:error, reason}
    end
  end

  @doc "Deletes this node's Ra server and its data (a stale member removed while it was away)."
  @spec leave_stale() :: :ok | {:error, term()}
  def leave_stale, do: :ra.force_delete_server(Strong.system(), Strong.server_id(node()))

  @doc false
  # A Ra mod_call effect of the machine, run on the leader's node after a release_cursor.
  @spec snapshot_taken(pos_integer(), non_neg_integer()) :: :ok
  def snapshot_taken(index, keys) do
    signal("cluster.consistency.snapshot", %{index: index, keys: keys, node: node()})
    |> SignalBus.publish()

    :ok
  end

  @doc "The Ra machine spec of the strong state."
  @spec machine() :: {:module, module(), map()}
  def machine,
    do: {:module, StrongMachine, %{snapshot_every: Config.get(:state_snapshot_every)}}

  # -- agent ------------------------------------------------------------------------------

  @impl true
  def init_agent(_opts) do
    :ok = start_system()
    restart_local_server()
    # last: its existence tells other nodes this one is ready to be a member (voter?/0)
    :ets.new(Strong.table(), [:named_table, :protected, read_concurrency: true])

    {:ok,
     %{
       started: now(),
       leader: nil,
       down_since: %{},
       lagging: MapSet.new(),
       lag_checked: now() - @lag_every_ms,
       every: Config.get(:state_check_interval_ms)
     }}
  end

  @impl true
  def sensors(state), do: [check: {:every, state.every}]

  @impl true
  def sense(:check, state) do
    beams = up_beam_nodes()
    state = track_down(state, beams)

    case learn_group(beams) do
      {:member, members, leader} ->
        :ets.insert(Strong.table(), [{:members, members}, {:leader, leader}])
        {signals, state} = leader_signals(state, leader)

        {more, state} =
          if leader == Strong.server_id(node()),
            do: on_leader(state, members, beams),
            else: {[], state}

        {:ok, signals ++ more, state}

      :none ->
        :ets.insert(Strong.table(), [{:members, []}, {:leader, nil}])
        {:ok, [], maybe_form(state, beams)}
    end
  end

  defp start_system do
    dir = data_dir()
    File.mkdir_p!(dir)

    config =
      Map.merge(:ra_system.default_config(), %{
        name: Strong.system(),
        data_dir: String.to_charlist(dir),
        wal_data_dir: String.to_charlist(dir),
        names: :ra_system.derive_names(Strong.system())
      })

    case :ra_system.start(config) do
      {:ok, _} -> :ok
      {:error, {:already_started, _}} -> :ok
    end
  end

  defp data_dir do
    base = Config.get(:state_dir) || Path.join(System.tmp_dir!(), "dspex-state")
    Path.join(base, Atom.to_string(node()))
  end

  defp restart_local_server do
    case :ra.restart_server(Strong.system(), Strong.server_id(node())) do
      :ok -> Logger.info("dspex_cluster: strong state member restarted from disk")
      {:ok, _} -> :ok
      {:error, _not_a_member_before} -> :ok
    end
  end

  defp up_beam_nodes do
    Membership.members()
    |> Enum.filter(&(&1.kind == :beam and &1.status == :up))
    |> Enum.map(& &1.node)
  catch
    :exit, _ -> [node()]
  end

  # those of `nodes` that may be members (asked on each: `state_voter` is a per-node setting)
  defp voters(nodes) do
    Enum.filter(nodes, fn
      n when n == node() ->
        voter?()

      n ->
        try do
          :erpc.call(n, __MODULE__, :voter?, [], 1_000)
        catch
          _, _ -> false
        end
    end)
  end

  defp track_down(state, beams) do
    up = MapSet.new(beams)
    {members, _} = Strong.known()

    down_since =
      Map.new(
        for {_, n} <- members,
            not MapSet.member?(up, n),
            do: {n, Map.get(state.down_since, n, now())}
      )

    %{state | down_since: down_since}
  end

  defp learn_group(beams) do
    case local_group() do
      {:member, _, _} = group ->
        group

      :none ->
        beams
        |> Enum.reject(&(&1 == node()))
        |> Enum.find_value(:none, fn node ->
          case :ra.members(Strong.server_id(node), 300) do
            {:ok, members, leader} -> {:member, members, leader}
            _ -> nil
          end
        end)
    end
  catch
    _, _ -> :none
  end

  defp leader_signals(%{leader: leader} = state, leader), do: {[], state}

  defp leader_signals(state, leader) do
    me = Strong.server_id(node())

    signals =
      if leader == me do
        term = (leader_view() || %{term: nil}).term
        previous = state.leader && elem(state.leader, 1)

        [
          signal("cluster.consistency.leader_changed", %{
            leader: node(),
            previous: previous,
            term: term
          })
        ]
      else
        []
      end

    {signals, %{state | leader: leader}}
  end

  # -- formation ---------------------------------------------------------------------------

  defp maybe_form(state, beams) do
    rf = Config.get(:replication_factor)

    if now() - state.started >= Config.get(:state_form_after_ms) do
      sorted = beams |> voters() |> Enum.sort()

      if length(sorted) >= rf and hd(sorted) == node(),
        do: form(Enum.take(sorted, rf), Enum.sort(beams))
    end

    state
  end

  defp form(chosen, all) do
    lock = {{:dspex_state, :form}, self()}

    :global.trans(
      lock,
      fn ->
        # nobody may have joined a group since our look (another node formed one)
        if Enum.all?(all, &(group_of(&1) == :none)) do
          ids = Enum.map(chosen, &Strong.server_id/1)

          case :ra.start_cluster(Strong.system(), Strong.cluster_name(), machine(), ids) do
            {:ok, started, []} ->
              Logger.info("dspex_cluster: strong state formed on #{inspect(started)}")

            {:ok, started, failed} ->
              Logger.warning(
                "dspex_cluster: strong state formed on #{inspect(started)}, " <>
                  "not on #{inspect(failed)}"
              )

            {:error, reason} ->
              Logger.warning("dspex_cluster: strong state not formed: #{inspect(reason)}")
          end
        end
      end,
      all,
      0
    )
  end

  defp voter_node?(node), do: voters([node]) == [node]

  defp group_of(node) when node == node(), do: local_group()

  defp group_of(node) do
    :erpc.call(node, __MODULE__, :local_group, [], 2_000)
  catch
    _, _ -> :unknown
  end

  # -- on the leader: re-forming and lag ---------------------------------------------------

  defp on_leader(state, members, beams) do
    state =
      try do
        reform(state, members, beams)
      catch
        kind, reason ->
          Logger.warning("dspex_cluster: re-forming the strong state: #{inspect({kind, reason})}")
          state
      end

    lag_signals(state, members)
  end

  defp reform(state, members, beams) do
    rf = Config.get(:replication_factor)
    member_nodes = Enum.map(members, &elem(&1, 1))
    spares = Enum.sort(beams -- member_nodes)
    gone_or_short = length(members) < rf or map_size(state.down_since) > 0
    spares = if gone_or_short, do: voters(spares), else: []
    after_ms = Config.get(:state_member_down_after_ms)

    gone =
      Enum.find(member_nodes, fn n ->
        since = Map.get(state.down_since, n)
        since != nil and now() - since >= after_ms
      end)

    # a member whose node is up but runs no server (it was not ready when the group formed,
    # or lost its data): start it there with the current members
    serverless =
      Enum.find(member_nodes, fn n ->
        n != node() and n in beams and group_of(n) == :none and voter_node?(n)
      end)

    cond do
      serverless != nil ->
        Logger.info("dspex_cluster: starting the strong state member on #{serverless}")
        :erpc.call(serverless, __MODULE__, :join, [members], 10_000)

      gone != nil and spares != [] ->
        change(:remove, gone, members)

      length(members) < rf and spares != [] ->
        add(hd(spares), members)

      true ->
        :ok
    end

    state
  end

  defp add(node, members) do
    case group_of(node) do
      :none ->
        change(:add, node, members)

      {:member, their, _} ->
        # a member of ours removed while it was away still runs with the old configuration
        if Strong.server_id(node()) in their do
          Logger.info("dspex_cluster: deleting the stale strong state member on #{node}")
          :erpc.call(node, __MODULE__, :leave_stale, [], 5_000)
        end

      _ ->
        :ok
    end
  catch
    kind, reason -> Logger.warning("dspex_cluster: adding #{node}: #{inspect({kind, reason})}")
  end

  defp change(:remove, node, _members) do
    Logger.info("dspex_cluster: removing #{node} from the strong state (down for good)")
    :ra.remove_member(Strong.server_id(node()), Strong.server_id(node), 5_000)
  end

  defp change(:add, node, members) do
    Logger.info("dspex_cluster: adding #{node} to the strong state")
    id = Strong.server_id(node)

    case :ra.add_member(Strong.server_id(node()), id, 5_000) do
      {:ok, _, _} -> :erpc.call(node, __MODULE__, :join, [members ++ [id]], 10_000)
      other -> Logger.warning("dspex_cluster: add_member #{node}: #{inspect(other)}")
    end
  end

  defp lag_signals(state, _members) do
    if now() - state.lag_checked >= @lag_every_ms do
      lag_signals(%{state | lag_checked: now()}, Config.get(:state_lag_threshold), leader_view())
    else
      {[], state}
    end
  end

  defp lag_signals(state, _threshold, nil), do: {[], state}

  defp lag_signals(state, threshold, view) do
    behind = for {n, lag} <- view.lag, lag > threshold, into: %{}, do: {n, lag}
    new = Map.keys(behind) |> Enum.reject(&MapSet.member?(state.lagging, &1))

    signals =
      for n <- new,
          do:
            signal("cluster.consistency.lag", %{
              member: n,
              lag: behind[n],
              commit_index: view.commit_index,
              threshold: threshold
            })

    {signals, %{state | lagging: MapSet.new(Map.keys(behind))}}
  end

  defp signal(type, data),
    do: Signal.new!(type, data, source: @source, subject: Atom.to_string(node()))

  defp now, do: System.monotonic_time(:millisecond)
end
