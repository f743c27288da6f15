defmodule DSPEx.Clustering.Membership do
  @moduledoc """
  Membership and failure detection, registered as `:dspex_membership` on every BEAM node.

  ## Sources
    * `:net_kernel.monitor_nodes(true, node_type: :all)` — `nodeup` makes a member `:up`,
      `nodedown` (a closed connection, e.g. after `kill -9`, or `net_ticktime` expiring)
      makes it `:down` at once.
    * Heartbeats scored by `DSPEx.Clustering.PhiAccrualDetector` — every
      `heartbeat_interval_ms` this process sends `{:dspex_heartbeat, node(), seq, ts, echo}`
      to `{:dspex_membership, peer}` of each BEAM member; every `check_interval_ms` it computes
      phi per member. phi >= `phi_threshold` makes an `:up` member `:suspect`
      (`cluster.node.suspect` with its phi); the next heartbeat makes it `:up` again
      (`cluster.node.up` with `recovered: true`). A frozen node (SIGSTOP) is thus suspected
      in well under a second with the defaults, long before `net_ticktime` (45–75 s).
    * Self-pause guard: when this node's own check runs late (it was frozen, or its
      schedulers starved) by more than max(4 × check interval, 200 ms), nobody is suspected
      for 3 heartbeat intervals and heartbeats in that window add no samples — the silence
      was ours, not theirs.
    * Sends use `[:noconnect, :nosuspend]`: a frozen peer's full distribution buffer drops a
      heartbeat instead of blocking this process.

  ## Who is a member (`DSPEx.Clustering.Membership.Announcement`)
  Every visible node, and every hidden node that announced itself: a BEAM node running
  `dspex_membership` by its heartbeat, a Python node by `{:dspex_hello, node, %{kind: :python}}`
  (sent when it joins, and again every tick period). Any other hidden node (`erl_call`, a C
  node, a remote shell, a plain `-hidden` node) is a client: it gets no message from us. A node
  that is itself hidden sends its first heartbeat to every node it connects to, and forgets
  within `classify_ms` (500 ms) a hidden peer that did not answer with its own.

  ## Kinds: `:beam` or `:python`
  A node that runs `dspex_membership` is `:beam` — we learn it from its first heartbeat
  (each side sends one on `nodeup` to a visible peer). A visible node is `:beam` as well until
  it says hello as `:python`. Nodes without `dspex_membership` (Python nodes, plain visible BEAM
  nodes) are probed every heartbeat interval with the `net_adm:ping/1` request
  (`{:is_auth, node()}` to their `net_kernel`); the replies are their heartbeats. A node that
  never answers has no phi (0.0) and is judged by `nodeup` and `nodedown` alone.

  ## Signals (scope `:cluster`, source `dspex://<observer>/membership`, subject the node)
  `cluster.node.up` `%{node, kind}`, `cluster.node.suspect` `%{node, phi, kind}`,
  `cluster.node.down` `%{node, reason, kind}`. Every BEAM node publishes its own view, so a
  subscriber hears one signal per observer.
  """
  use DSPEx.Clustering.Agent, name: :dspex_membership

  alias DSPEx.Clustering.{Config, PhiAccrualDetector, Telemetry}
  alias DSPEx.Clustering.Membership.Announcement

  @classify_ms 500

  @type member :: %{
          node: node(),
          kind: :beam | :python,
          status: :up | :suspect | :down,
          phi: float(),
          node_type: :visible | :hidden | :self,
          rtt_ms: float() | nil,
          since: integer(),
          local: boolean()
        }

  @doc "Every known member, this node included (`local: true`)."
  @spec members(GenServer.server()) :: [member()]
  def members(server \\ :dspex_membership) do
    state = DSPEx.Clustering.Agent.state(server)

    me = %{
      node: node(),
      kind: :beam,
      status: :up,
      phi: 0.0,
      node_type: :self,
      rtt_ms: 0.0,
      since: state.started,
      local: true
    }

    [me | state.members |> Map.values() |> Enum.sort_by(& &1.node) |> Enum.map(&public/1)]
  end

  defp public(m),
    do:
      m
      |> Map.take([:node, :kind, :status, :phi, :node_type, :rtt_ms, :since, :down_reason])
      |> Map.put(:local, false)

  # -- agent callbacks ---------------------------------------------------------------------

  @impl true
  def init_agent(opts) do
    :ok = :net_kernel.monitor_nodes(true, [{:node_type, :all}, :nodedown_reason])

    settings = %{
      heartbeat_ms: opt(opts, :heartbeat_interval_ms),
      check_ms: opt(opts, :check_interval_ms),
      threshold: opt(opts, :phi_threshold) * 1.0,
      detector: [
        window: opt(opts, :detector_window),
        min_std_ms: opt(opts, :min_std_dev_ms),
        pause_ms: opt(opts, :acceptable_pause_ms),
        expected_ms: opt(opts, :heartbeat_interval_ms)
      ]
    }

    state = %{
      settings: settings,
      members: %{},
      seq: 0,
      started: System.system_time(:millisecond),
      # monotonic time may be negative: start both marks at "now"
      last_check_ms: now_ms(),
      grace_until_ms: now_ms()
    }

    state = Enum.reduce(Node.list(:visible), state, &node_up(&2, &1, :visible))
    # Nodes connected before we started (a restart) are announced like new ones.
    for node <- Node.list(:visible), do: send(self(), {:classify, node})
    # Hidden nodes that announced themselves before a restart do so again (heartbeats, hellos).
    hidden = if Announcement.contact_on_nodeup?(:hidden), do: Node.list(:hidden), else: []
    state = Enum.reduce(hidden, state, &node_up(&2, &1, :hidden))
    {:ok, state}
  end

  defp opt(opts, key), do: Keyword.get_lazy(opts, key, fn -> Config.get(key) end)

  @impl true
  def sensors(state),
    do: [
      heartbeat: {:every, state.settings.heartbeat_ms},
      check: {:every, state.settings.check_ms},
      net_kernel: :event
    ]

  @impl true
  def sense(:heartbeat, state) do
    seq = state.seq + 1
    now = now_us()

    for {node, m} <- state.members, m.status != :down do
      if m.kind == :beam, do: send_heartbeat(node, seq, now, m)
      if m.mode == :ping, do: ping(node, seq)
    end

    {:ok, [], %{state | seq: seq}}
  end

  def sense(:check, state) do
    now = now_ms()
    state = self_pause_guard(state, now)
    judging = now >= state.grace_until_ms

    {signals, members} =
      Enum.map_reduce(state.members, state.members, fn {node, m}, acc ->
        if m.status == :down do
          {[], acc}
        else
          phi = PhiAccrualDetector.phi(m.detector, now)
          m = %{m | phi: phi}

          if judging and m.status == :up and m.announced and phi >= state.settings.threshold do
            m = %{m | status: :suspect, since: System.system_time(:millisecond)}
            transition(m)

            {[Signal.node_suspect(node, phi, source: "membership", data: [kind: m.kind])],
             Map.put(acc, node, m)}
          else
            {[], Map.put(acc, node, m)}
          end
        end
      end)

    {:ok, List.flatten(signals), %{state | members: members}}
  end

  # When this node itself was paused (SIGSTOP, a long GC, starved schedulers), every peer's
  # heartbeats look late: the check timer fired late as well. Judge nobody until fresh
  # heartbeats have had time to arrive, and keep the silence out of the statistics.
  defp self_pause_guard(state, now) do
    %{check_ms: check_ms, heartbeat_ms: heartbeat_ms} = state.settings

    if now - state.last_check_ms > max(4 * check_ms, 200),
      do: %{state | last_check_ms: now, grace_until_ms: now + 3 * heartbeat_ms},
      else: %{state | last_check_ms: now}
  end

  @impl true
  def handle_event({:nodeup, node, info}, state) do
    type = if Keyword.get(info, :node_type) == :hidden, do: :hidden, else: :visible

    if Announcement.contact_on_nodeup?(type),
      do: announce(node_up(state, node, type), node),
      # a client (erl_call, a C node, a remote shell): nothing until it announces itself
      else: {:ok, [], state}
  end

  def handle_event({:nodedown, node, info}, state) do
    case state.members do
      %{^node => %{status: status} = m} when status != :down ->
        reason = Keyword.get(info, :nodedown_reason, :unknown)

        m = %{
          m
          | status: :down,
            since: System.system_time(:millisecond),
            down_reason: reason,
            mode: :none
        }

        if m.announced, do: transition(m)

        signals =
          if m.announced,
            do: [Signal.node_down(node, reason, source: "membership", data: [kind: m.kind])],
            else: []

        {:ok, signals, put_in(state.members[node], m)}

      _ ->
        {:ok, [], state}
    end
  end

  def handle_event({:dspex_heartbeat, node, _seq, ts, echo}, state) do
    case state.members do
      %{^node => %{status: status}} when status != :down ->
        beat(state, node, ts, echo)

      _ ->
        # A heartbeat before our nodeup, or a hidden node announcing itself: accepted only
        # while the node is connected, so a stale one after nodedown cannot bring it back.
        case Announcement.connection_type(node) do
          nil -> {:ok, [], state}
          type -> beat(node_up(state, node, type), node, ts, echo)
        end
    end
  end

  # A Python node (or another non-BEAM peer) joining: it is a member from now on, of its kind.
  def handle_event({:dspex_hello, node, info}, state) when is_atom(node) and is_map(info) do
    kind = Announcement.kind(info)

    case {state.members, Announcement.connection_type(node)} do
      {_, nil} ->
        {:ok, [], state}

      {%{^node => %{status: status, mode: mode}}, _}
      when status != :down and mode != :membership ->
        announce(
          update_in(state.members[node], &%{&1 | kind: kind, mode: :ping, hello: true}),
          node
        )

      {%{^node => %{status: status}}, _} when status != :down ->
        {:ok, [], state}

      {_, type} ->
        state = node_up(state, node, type, kind: kind, hello: true)
        announce(state, node)
    end
  end

  def handle_event({{:dspex_ping, node, _seq}, _yes}, state) do
    case state.members do
      %{^node => %{status: status, mode: :ping}} when status != :down -> heartbeat(state, node)
      _ -> {:ok, [], state}
    end
  end

  def handle_event({:classify, node}, state), do: announce(state, node)
  def handle_event(_other, state), do: {:ok, [], state}

  defp beat(state, node, ts, echo) do
    m = state.members[node]
    rtt = rtt(echo, m.rtt_ms)

    m = %{
      m
      | kind: :beam,
        mode: :membership,
        rtt_ms: rtt,
        their_ts: ts,
        their_arrival_us: now_us()
    }

    heartbeat(put_in(state.members[node], m), node)
  end

  # -- helpers -------------------------------------------------------------------------------

  # `opts`: `kind:` and `hello: true` for a node that said hello (it runs no dspex_membership:
  # no heartbeat goes to it). A hidden node that did not announce itself is not pinged; it only
  # gets our first heartbeat (when we are hidden ourselves) and must answer with its own.
  defp node_up(state, node, type, opts \\ []) do
    case state.members do
      %{^node => %{status: status}} when status != :down ->
        state

      _ ->
        hello = Keyword.get(opts, :hello, false)

        m = %{
          node: node,
          kind: Keyword.get(opts, :kind, if(type == :visible, do: :beam, else: :python)),
          node_type: type,
          status: :up,
          phi: 0.0,
          mode: if(type == :visible or hello, do: :ping, else: :none),
          hello: hello,
          rtt_ms: nil,
          since: System.system_time(:millisecond),
          down_reason: nil,
          announced: false,
          their_ts: nil,
          their_arrival_us: nil,
          detector: PhiAccrualDetector.new(state.settings.detector)
        }

        # One heartbeat now tells a peer running dspex_membership that we are :beam.
        unless hello, do: send_heartbeat(node, state.seq, now_us(), m)

        if type == :hidden and not hello,
          do: Process.send_after(self(), {:classify, node}, @classify_ms)

        put_in(state.members[node], m)
    end
  end

  # Publishes cluster.node.up once the kind is known (at once for visible nodes).
  defp announce(state, node) do
    case state.members[node] do
      %{announced: false, status: :up} = m
      when m.node_type == :visible or m.mode == :membership or m.hello ->
        {:ok, [up_signal(m, false)], put_in(state.members[node].announced, true)}

      # a hidden peer we greeted (we are hidden) that did not answer: a client, not a member
      %{announced: false, status: :up} = m ->
        if System.system_time(:millisecond) - m.since >= @classify_ms - 10,
          do: {:ok, [], %{state | members: Map.delete(state.members, node)}},
          else: {:ok, [], state}

      _ ->
        {:ok, [], state}
    end
  end

  defp up_signal(m, recovered?) do
    transition(m)

    Signal.node_up(m.node, m.kind, source: "membership")
    |> put_in([:data, :recovered], recovered?)
  end

  defp transition(m),
    do:
      Telemetry.execute([:dspex, :membership, :transition], %{count: 1}, %{
        node: m.node,
        kind: m.kind,
        status: m.status
      })

  defp heartbeat(state, node) do
    m = state.members[node]
    now = now_ms()
    recovering = m.status == :suspect
    sample? = not recovering and now >= state.grace_until_ms
    detector = PhiAccrualDetector.heartbeat(m.detector, now, sample?: sample?)
    m = %{m | detector: detector, phi: PhiAccrualDetector.phi(detector, now)}

    if recovering do
      m = %{m | status: :up, since: System.system_time(:millisecond)}
      {:ok, [up_signal(m, true)], put_in(state.members[node], m)}
    else
      announce(put_in(state.members[node], m), node)
    end
  end

  defp send_heartbeat(node, seq, now, m) do
    echo = if m.their_ts, do: {m.their_ts, now - m.their_arrival_us}, else: nil

    :erlang.send({:dspex_membership, node}, {:dspex_heartbeat, node(), seq, now, echo}, [
      :noconnect,
      :nosuspend
    ])
  end

  # net_adm:ping/1's request; the reply {Tag, yes} comes back to this process.
  defp ping(node, seq) do
    msg = {:"$gen_call", {self(), {:dspex_ping, node, seq}}, {:is_auth, node()}}
    :erlang.send({:net_kernel, node}, msg, [:noconnect, :nosuspend])
  end

  # NTP-style round trip: our echoed timestamp, minus the time the peer held it.
  defp rtt(nil, previous), do: previous

  defp rtt({our_ts, held_us}, previous) do
    sample = max(now_us() - our_ts - held_us, 0) / 1000
    if previous, do: 0.8 * previous + 0.2 * sample, else: sample
  end

  defp now_ms, do: System.monotonic_time(:microsecond) / 1000
  defp now_us, do: System.monotonic_time(:microsecond)
end
