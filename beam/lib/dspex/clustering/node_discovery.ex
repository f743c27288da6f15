defmodule DSPEx.Clustering.NodeDiscovery do
  @moduledoc """
  The discovery agent: runs the configured strategies, connects to the nodes they propose,
  validates every newcomer, keeps the topology and its history, and measures latency and
  distribution traffic to each member. Registered as `:dspex_node_discovery` on every BEAM node.

  ## Starting it

  `DSPEx.Clustering.NodeDiscovery` is a child spec: it starts `DSPEx.Clustering.Discovery.Supervisor`
  (`rest_for_one`: this agent first, then one `DSPEx.Clustering.Discovery.Runner` per strategy).

      children = [..., {DSPEx.Clustering.NodeDiscovery, opts}]

  With `opts == []` (a bare `DSPEx.Clustering.NodeDiscovery` child) the options are read from the
  application environment through `DSPEx.Clustering.Config`, see `options_from_config/0`.
  `start/1` starts the same tree unlinked (for a remote shell or `:erpc`).

  ## Options
    * `:strategies` — list of `{module, keyword}` (modules implementing
      `DSPEx.Clustering.Discovery.Strategy`) or shorthand atoms `:epmd`, `:gossip` (their defaults).
      Each strategy's keyword list may carry its own `:interval`. Default `[]`.
    * `:interval` — ms between polls of each strategy (default 5_000).
    * `:cluster_name` — nodes answering with another name are refused (default `"dspex"`); also
      passed to every strategy as `:cluster_name` (the gossip key uses it).
    * `:version` — this node's version string (default: the `:dspex_cluster` application version).
    * `:version_requirement` — a `Version` requirement newcomers must meet, e.g. `"~> 0.1"`.
      Default: the same major version (for `0.x`, the same minor), as `~>` means.
    * `:unmanaged` — what to do with a connected node that has no discovery agent (a remote shell,
      a Python node, a plain BEAM node): `:accept` (default; kept as `status: :unmanaged`, never
      pinged) or `:reject` (disconnected).
    * `:hello_timeout` (2_000), `:ping_interval` (2_000), `:ping_timeout` (1_000),
      `:traffic_interval` (5_000) — ms.
    * `:announce_interval` — ms between periodic announcements (default 30_000).
    * `:ewma_alpha` — weight of a new round trip in the latency average (default 0.3).
    * `:history_limit` — events kept (default 500).
    * `:reject_backoff` — ms before a refused node is tried again (default 30_000); failed connects
      back off exponentially from 1 s to `:connect_backoff_max` (default 30_000).
    * `:join` — nodes the operator named (`bin/dspex-node --join`): a failed connect to one of
      them is logged as a warning (once per back-off step), to any other node at debug level.
    * `:name` — registered name (default `:dspex_node_discovery`); peers are asked under the same name.

  Example (`config/runtime.exs` or the supervisor):

      {DSPEx.Clustering.NodeDiscovery,
        strategies: [
          {DSPEx.Clustering.Discovery.Epmd, hosts: ["127.0.0.1"]},
          {DSPEx.Clustering.Discovery.Dns, query: "app.ns.svc.cluster.local", basename: "app"},
          {DSPEx.Clustering.Discovery.Gossip, multicast_if: {127, 0, 0, 1}}
        ],
        interval: 2_000, cluster_name: "dspex"}

  ## Validation
  On every `nodeup` of a visible node, and when a hidden node announces itself (its discovery
  agent's `:hello`, or a Python node's `{:dspex_hello, node, info}`), the agent asks the
  newcomer's discovery agent
  `Agent.cmd({name, newcomer}, :hello, my_info)` from a separate process (the agent never blocks
  on the network). A hidden node that never announces itself (`erl_call`, a C node, a remote
  shell) is left alone: see `DSPEx.Clustering.Membership.Announcement`. A node of another cluster or an incompatible version is disconnected, logged
  with the reason, recorded in the history as `:rejected` and kept out for `:reject_backoff` ms: for
  that time the node gets a random per-node cookie (`:erlang.set_cookie/2`), so neither side can
  re-dial it by accident (a `:pg` or `global` message would otherwise reconnect it at once). Both
  sides validate each other independently.

  ## Signals
  Publishes `cluster.node.announce` (data: `node`, `kind`, `cluster_name`, `version`, `strategies`,
  `members`) when it starts, each time it accepts a new member, and every `:announce_interval` ms
  (default 30_000) so late subscribers learn of it too.
  """
  use DSPEx.Clustering.Agent, name: :dspex_node_discovery

  require Logger

  alias DSPEx.Clustering.Agent
  alias DSPEx.Clustering.Discovery.{Actions, Epmd, Gossip}
  alias DSPEx.Clustering.Membership.Announcement

  @default_name :dspex_node_discovery
  @protocol 1

  @type member :: %{
          status: :member | :unmanaged,
          kind: :visible | :hidden,
          cluster_name: String.t() | nil,
          version: String.t() | nil,
          joined_at: DateTime.t(),
          discovered_by: [term()]
        }
  @type event :: %{
          event: :join | :leave | :rejected,
          node: node(),
          at: DateTime.t(),
          detail: term()
        }

  @doc "The default registered name."
  @spec name() :: atom()
  def name, do: @default_name

  @doc "Child spec: the discovery supervisor (this agent plus one runner per strategy)."
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{
      id: __MODULE__,
      start: {DSPEx.Clustering.Discovery.Supervisor, :start_link, [opts]},
      type: :supervisor
    }
  end

  @doc "Starts the discovery tree outside any supervision tree (unlinked from the caller)."
  @spec start(keyword()) :: {:ok, pid()} | {:error, term()}
  def start(opts) do
    with {:ok, pid} <- DSPEx.Clustering.Discovery.Supervisor.start_link(opts) do
      Process.unlink(pid)
      {:ok, pid}
    end
  end

  @doc """
  Options built from the application environment (`DSPEx.Clustering.Config`):

    * `:discovery` — a list of strategies (`{module, opts}` or the shorthands `:epmd`, `:dns`,
      `:gossip`, `:static`, `:consul`), or a keyword list of the options above with a
      `:strategies` key (then used as is);
    * `:hosts` — hosts for `:epmd`; `:discovery_interval_ms` — `:interval`; `:cluster_name`;
    * for the shorthands: `:dns_query`, `:dns_basename`, `:dns_type`, `:dns_nameservers`;
      `:static_nodes`; `:consul_url`, `:consul_service`, `:consul_basename`; `:gossip` (keyword).
  """
  @spec options_from_config() :: keyword()
  def options_from_config do
    get = fn key, default ->
      try do
        DSPEx.Clustering.Config.get(key)
      rescue
        _ -> Application.get_env(:dspex_cluster, key, default)
      end
    end

    discovery = get.(:discovery, [])

    # `[strategies: ...]` is the options themselves; `[{Epmd, hosts: ...}]` is a keyword list
    # too (module names are atoms), so tell them apart by the :strategies key
    if Keyword.keyword?(discovery) and Keyword.has_key?(discovery, :strategies) do
      discovery
    else
      env = fn key, default -> Application.get_env(:dspex_cluster, key, default) end

      shorthand = fn
        :epmd -> {Epmd, hosts: get.(:hosts, ["127.0.0.1"])}
        :gossip -> {Gossip, env.(:gossip, [])}
        :static -> {DSPEx.Clustering.Discovery.Static, nodes: env.(:static_nodes, [])}
        :dns -> {DSPEx.Clustering.Discovery.Dns, dns_options(env)}
        :consul -> {DSPEx.Clustering.Discovery.Consul, consul_options(env)}
        {mod, opts} -> {mod, opts}
      end

      # --join (app env :join): a static list beside the strategies, failures logged as warnings
      join = env.(:join, [])
      joined = if join == [], do: [], else: [{DSPEx.Clustering.Discovery.Static, nodes: join}]

      [
        strategies: Enum.map(discovery, shorthand) ++ joined,
        interval: get.(:discovery_interval_ms, 5_000),
        cluster_name: get.(:cluster_name, "dspex"),
        join: Enum.map(join, &:"#{&1}")
      ]
    end
  end

  defp dns_options(env) do
    [
      query: env.(:dns_query, nil),
      basename: env.(:dns_basename, nil),
      type: env.(:dns_type, :a)
    ] ++ if(ns = env.(:dns_nameservers, nil), do: [nameservers: ns], else: [])
  end

  defp consul_options(env) do
    [
      url: env.(:consul_url, "http://127.0.0.1:8500"),
      service: env.(:consul_service, nil),
      basename: env.(:consul_basename, nil)
    ]
  end

  # -- public queries --------------------------------------------------------------------------

  @doc """
  The current topology: this node, its cluster name and version, the accepted members (validated
  `:member`s and `:unmanaged` nodes) with their facts and latency, nodes being validated, nodes in
  back-off, and each strategy's last result.
  """
  @spec topology(GenServer.server()) :: %{
          node: node(),
          cluster_name: String.t(),
          version: String.t(),
          members: %{node() => member()},
          pending: [node()],
          backoff: %{node() => term()},
          strategies: %{term() => map()}
        }
  def topology(server \\ @default_name) do
    s = Agent.state(server)

    %{
      node: node(),
      cluster_name: s.cluster_name,
      version: s.version,
      members: s.members,
      pending: Map.keys(s.validating),
      backoff: Map.new(s.backoff, fn {n, b} -> {n, b.reason} end),
      strategies: s.strategy_status
    }
  end

  @doc "Join, leave and rejection events, oldest first (at most `:history_limit`)."
  @spec history(GenServer.server()) :: [event()]
  def history(server \\ @default_name), do: Enum.reverse(Agent.state(server).history)

  @doc "Round-trip latency to each validated member in ms (exponentially weighted moving average)."
  @spec latency(GenServer.server()) :: %{node() => float()}
  def latency(server \\ @default_name), do: Agent.state(server).latency

  @doc """
  Distribution traffic per connected node from the dist socket statistics: cumulative
  `recv_oct`/`send_oct`/`recv_cnt`/`send_cnt` and `recv_rate`/`send_rate` in bytes per second over
  the last sampling interval.
  """
  @spec traffic(GenServer.server()) :: %{node() => map()}
  def traffic(server \\ @default_name), do: Agent.state(server).traffic

  @doc "Polls every strategy now instead of waiting for the next interval."
  @spec rescan(GenServer.server()) :: :ok
  def rescan(server \\ @default_name) do
    send(server, :dspex_rescan)
    :ok
  end

  @doc false
  @spec self_info(map()) :: map()
  def self_info(state),
    do: %{
      node: node(),
      cluster_name: state.cluster_name,
      version: state.version,
      protocol: @protocol
    }

  @doc """
  True when `their` version satisfies `requirement` (a `Version` requirement string), or, with no
  requirement, when it has the same major version as `mine` (the same minor too for `0.x`).
  """
  @spec compatible?(String.t(), String.t(), String.t() | nil) :: boolean()
  def compatible?(mine, their, requirement \\ nil) do
    with {:ok, theirs} <- Version.parse(their) do
      case requirement do
        nil ->
          case Version.parse(mine) do
            {:ok, %{major: 0, minor: m}} -> theirs.major == 0 and theirs.minor == m
            {:ok, %{major: major}} -> theirs.major == major
            :error -> false
          end

        req ->
          Version.match?(theirs, req)
      end
    else
      _ -> false
    end
  end

  # -- agent callbacks ---------------------------------------------------------------------------

  @impl DSPEx.Clustering.Agent
  def actions, do: [Actions.Hello, Actions.Ping]

  @impl DSPEx.Clustering.Agent
  def init_agent(opts) do
    opts = normalise(opts)
    :ok = :net_kernel.monitor_nodes(true, [:nodedown_reason, node_type: :all])

    state = %{
      name: Keyword.get(opts, :name, @default_name),
      cluster_name: to_string(Keyword.get(opts, :cluster_name, "dspex")),
      version: Keyword.get_lazy(opts, :version, &app_version/0),
      requirement: Keyword.get(opts, :version_requirement),
      unmanaged: Keyword.get(opts, :unmanaged, :accept),
      hello_timeout: Keyword.get(opts, :hello_timeout, 2_000),
      ping_interval: Keyword.get(opts, :ping_interval, 2_000),
      ping_timeout: Keyword.get(opts, :ping_timeout, 1_000),
      traffic_interval: Keyword.get(opts, :traffic_interval, 5_000),
      announce_interval: Keyword.get(opts, :announce_interval, 30_000),
      alpha: Keyword.get(opts, :ewma_alpha, 0.3),
      history_limit: Keyword.get(opts, :history_limit, 500),
      reject_backoff: Keyword.get(opts, :reject_backoff, 30_000),
      connect_backoff_max: Keyword.get(opts, :connect_backoff_max, 30_000),
      join: Keyword.get(opts, :join, []),
      strategies: Enum.map(Keyword.get(opts, :strategies, []), fn {m, _} -> m end),
      # runner id => MapSet of the nodes it proposed last
      discovered: %{},
      strategy_status: %{},
      members: %{},
      # node => monotonic ms the hello was sent
      validating: %{},
      connecting: MapSet.new(),
      # node => %{until: monotonic ms, failures: n, reason: term}
      backoff: %{},
      history: [],
      latency: %{},
      traffic: %{},
      traffic_at: nil
    }

    # Nodes connected before we started are newcomers too.
    for n <- Node.list(:visible), do: send(self(), {:nodeup, n, [node_type: :visible]})
    # hidden nodes are asked only if we are hidden too; the others announce themselves again
    if Announcement.contact_on_nodeup?(:hidden),
      do: for(n <- Node.list(:hidden), do: send(self(), {:nodeup, n, [node_type: :hidden]}))

    send(self(), :dspex_announce)
    {:ok, state}
  end

  @impl DSPEx.Clustering.Agent
  def sensors(state),
    do: [
      latency: {:every, state.ping_interval},
      traffic: {:every, state.traffic_interval},
      announce: {:every, state.announce_interval}
    ]

  @impl DSPEx.Clustering.Agent
  def sense(:latency, state) do
    for {n, %{status: :member}} <- state.members, do: ping(n, state)
    {:ok, [], state}
  end

  def sense(:traffic, state), do: {:ok, [], sample_traffic(state)}
  def sense(:announce, state), do: {:ok, [announce(state)], state}

  @impl DSPEx.Clustering.Agent
  def handle_event({:dspex_discovery, id, result}, state),
    do: {:ok, [], discovered(id, result, state)}

  def handle_event({:nodeup, n, info}, state) do
    if Announcement.contact_on_nodeup?(Keyword.get(info, :node_type, :visible)) or
         candidate?(n, state),
       do: {:ok, [], nodeup(n, info, state)},
       # a client (erl_call, a C node, a remote shell): nothing until it announces itself
       else: {:ok, [], state}
  end

  # A hidden node announced itself: a Python node's hello, or (from Actions.Hello) the hello
  # of a hidden BEAM node's discovery agent.
  def handle_event({:dspex_hello, n, info}, state) when is_atom(n) and is_map(info),
    do: {:ok, [], announced(n, state)}

  def handle_event({:dspex_nd, :announced, n}, state), do: {:ok, [], announced(n, state)}
  def handle_event({:nodedown, n, info}, state), do: {:ok, [], nodedown(n, info, state)}

  def handle_event({:dspex_nd, :connected, n, result}, state),
    do: {:ok, [], connect_result(n, result, state)}

  def handle_event({:dspex_nd, :hello, n, kind, result}, state),
    do: hello_result(n, kind, result, state)

  def handle_event({:dspex_nd, :pong, n, result}, state), do: {:ok, [], pong(n, result, state)}
  def handle_event({:dspex_nd, :unblock, n}, state), do: {:ok, [], unblock(n, state)}
  def handle_event(:dspex_announce, state), do: {:ok, [announce(state)], state}

  def handle_event({:dspex_nd, :revalidate, n}, state) do
    case state.members do
      %{^n => %{status: :unmanaged, kind: kind}} ->
        if Map.has_key?(state.validating, n),
          do: {:ok, [], state},
          else: {:ok, [], validate(n, kind, %{state | members: Map.delete(state.members, n)})}

      _ ->
        {:ok, [], state}
    end
  end

  def handle_event(:dspex_rescan, state) do
    sup = Process.whereis(supervisor_name(state.name))

    if sup do
      for {{DSPEx.Clustering.Discovery.Runner, _}, pid, _, _} <- Supervisor.which_children(sup),
          is_pid(pid),
          do: DSPEx.Clustering.Discovery.Runner.poll(pid)
    end

    {:ok, [], state}
  end

  def handle_event(_other, state), do: {:ok, [], state}

  @doc false
  @spec supervisor_name(atom()) :: atom()
  def supervisor_name(name), do: :"#{name}_sup"

  # -- discovery results and connecting ------------------------------------------------------------

  defp discovered(id, {:ok, nodes}, state) do
    state = %{
      state
      | discovered: Map.put(state.discovered, id, MapSet.new(nodes)),
        strategy_status:
          Map.put(state.strategy_status, id, %{last: {:ok, length(nodes)}, at: now()})
    }

    nodes |> Enum.reject(&(&1 == node())) |> Enum.reduce(state, &maybe_connect/2)
  end

  defp discovered(id, {:error, reason}, state),
    do: %{
      state
      | strategy_status: Map.put(state.strategy_status, id, %{last: {:error, reason}, at: now()})
    }

  defp maybe_connect(n, state) do
    cond do
      Map.has_key?(state.members, n) or Map.has_key?(state.validating, n) ->
        state

      MapSet.member?(state.connecting, n) ->
        state

      backing_off?(n, state) ->
        state

      n in Node.list(:connected) ->
        validate(n, Announcement.connection_type(n) || :visible, state)

      not Node.alive?() ->
        state

      true ->
        connect(n, state)
    end
  end

  defp connect(n, state) do
    agent = self()
    # Node.connect blocks for seconds on an unreachable host: never in the agent itself.
    spawn(fn -> send(agent, {:dspex_nd, :connected, n, Node.connect(n)}) end)
    %{state | connecting: MapSet.put(state.connecting, n)}
  end

  defp connect_result(n, true, state) do
    state = %{state | connecting: MapSet.delete(state.connecting, n)}

    # nodeup normally starts validation; this covers a connection that already existed. The
    # nodeup may also have come, been validated and refused before this message arrived.
    cond do
      Map.has_key?(state.members, n) or Map.has_key?(state.validating, n) -> state
      refused?(n, state) or n not in Node.list(:connected) -> state
      true -> validate(n, Announcement.connection_type(n) || :visible, state)
    end
  end

  defp connect_result(n, other, state) do
    state = %{state | connecting: MapSet.delete(state.connecting, n)}
    failures = get_in(state.backoff, [n, :failures]) || 0
    delay = min(1_000 * Integer.pow(2, failures), state.connect_backoff_max)
    reason = if other == false, do: :connect_failed, else: {:connect_failed, other}
    # a node the operator named (--join) is worth a warning; one per back-off step
    level = if n in state.join, do: :warning, else: :debug
    Logger.log(level, "discovery: cannot connect to #{n}, retry in #{delay} ms")
    put_backoff(state, n, delay, failures + 1, reason)
  end

  # -- validation --------------------------------------------------------------------------------

  defp nodeup(n, info, state) do
    kind = Keyword.get(info, :node_type, :visible)

    cond do
      Map.has_key?(state.members, n) or Map.has_key?(state.validating, n) ->
        state

      # a node refused a moment ago is cut off again at once, without a new handshake
      refused?(n, state) ->
        Logger.debug("discovery: #{n} reconnected while refused; disconnecting")
        Node.disconnect(n)
        state

      true ->
        validate(n, kind, state)
    end
  end

  # A node a strategy proposed (or that we are dialling) belongs to the cluster's hosts, DNS
  # names or gossip: it is asked who it is even when it is hidden.
  defp candidate?(n, state) do
    MapSet.member?(state.connecting, n) or
      Enum.any?(state.discovered, fn {_id, nodes} -> MapSet.member?(nodes, n) end)
  end

  defp announced(n, state) do
    case Announcement.connection_type(n) do
      nil -> state
      type -> nodeup(n, [node_type: type], state)
    end
  end

  defp refused?(n, state) do
    match?(%{reason: {:rejected, _}}, state.backoff[n]) and backing_off?(n, state)
  end

  defp validate(n, kind, state) do
    agent = self()
    hello = self_info(state) |> Map.take([:node, :cluster_name, :version])
    target = {state.name, n}
    timeout = state.hello_timeout

    spawn(fn ->
      # a call to a node that has just gone would dial it again: only ask connected nodes
      result =
        try do
          if n in Node.list(:connected),
            do: Agent.cmd(target, :hello, hello, timeout),
            else: {:exit, :noconnection}
        catch
          :exit, reason -> {:exit, reason}
        end

      send(agent, {:dspex_nd, :hello, n, kind, result})
    end)

    %{state | validating: Map.put(state.validating, n, mono())}
  end

  defp hello_result(n, kind, result, state) do
    state = %{state | validating: Map.delete(state.validating, n)}
    connected? = n in Node.list(:connected)

    case verdict(result, state) do
      # a refusal stands even if the node left meanwhile: it must not be retried at once
      {:reject, reason} ->
        {:ok, [], reject(n, reason, state)}

      _ when not connected? ->
        {:ok, [], state}

      {:accept, info} ->
        state = join(n, kind, :member, info, state)
        {:ok, [announce(state)], state}

      :unmanaged when state.unmanaged == :accept ->
        {:ok, [], join(n, kind, :unmanaged, %{}, state)}

      :unmanaged ->
        {:ok, [], reject(n, {:no_discovery_agent, short_reason(result)}, state)}
    end
  end

  defp verdict({:ok, %{cluster_name: c, version: v} = info}, state) do
    cond do
      c != state.cluster_name ->
        {:reject, {:cluster_mismatch, c}}

      not compatible?(state.version, v, state.requirement) ->
        {:reject, {:incompatible_version, v}}

      true ->
        {:accept, info}
    end
  end

  defp verdict({:ok, other}, _state), do: {:reject, {:bad_hello, other}}
  defp verdict({:error, reason}, _state), do: {:reject, {:hello_refused, reason}}
  defp verdict({:exit, _reason}, _state), do: :unmanaged

  defp short_reason({:exit, {reason, _call}}), do: reason
  defp short_reason(other), do: other

  defp join(n, kind, status, info, state) do
    member = %{
      status: status,
      kind: kind,
      cluster_name: Map.get(info, :cluster_name),
      version: Map.get(info, :version),
      joined_at: now(),
      discovered_by: for({id, set} <- state.discovered, MapSet.member?(set, n), do: id)
    }

    # unmanaged nodes (shells, tools, Python peers) come and go often: keep them out of info logs
    level = if status == :member, do: :info, else: :debug
    Logger.log(level, "discovery: #{n} joined (#{status}, #{kind})")

    # A hidden node without a discovery agent that a strategy found (a Python node registered in
    # a cluster host's epmd): membership would wait for its hello; discovery vouches for it.
    membership = Process.whereis(:dspex_membership)

    if status == :unmanaged and kind == :hidden and membership != nil and candidate?(n, state),
      do: send(membership, {:dspex_hello, n, %{kind: :python}})

    %{state | members: Map.put(state.members, n, member), backoff: Map.delete(state.backoff, n)}
    |> record(:join, n, %{status: status, kind: kind, version: member.version})
  end

  defp reject(n, reason, state) do
    Logger.warning("discovery: refused #{n}: #{inspect(reason)}")
    block(n, state.reject_backoff)
    Node.disconnect(n)

    state
    |> Map.update!(:members, &Map.delete(&1, n))
    |> put_backoff(n, state.reject_backoff, 0, {:rejected, reason})
    |> record(:rejected, n, reason)
  end

  # Disconnecting is not enough: any send to the node (pg, global, a stray call on either side)
  # dials it again. A per-node cookie nobody knows makes both directions fail at the handshake
  # until the back-off ends; the real cookie is never touched or logged.
  defp block(n, ms) do
    :erlang.set_cookie(n, :"refused-#{Base.encode16(:crypto.strong_rand_bytes(16))}")
    Process.send_after(self(), {:dspex_nd, :unblock, n}, ms)
  end

  defp unblock(n, state) do
    case state.backoff[n] do
      # refused again meanwhile: wait for the newer deadline
      %{reason: {:rejected, _}, until: until} when until > 0 ->
        left = until - mono()

        if left > 0,
          do: Process.send_after(self(), {:dspex_nd, :unblock, n}, left),
          else: restore_cookie(n)

      _ ->
        restore_cookie(n)
    end

    state
  end

  defp restore_cookie(n), do: if(Node.alive?(), do: :erlang.set_cookie(n, :erlang.get_cookie()))

  defp nodedown(n, info, state) do
    state = %{state | validating: Map.delete(state.validating, n)}

    case Map.pop(state.members, n) do
      {nil, _} ->
        state

      {member, members} ->
        level = if member.status == :member, do: :info, else: :debug
        Logger.log(level, "discovery: #{n} left")

        %{state | members: members, latency: Map.delete(state.latency, n)}
        |> record(:leave, n, Keyword.get(info, :nodedown_reason))
    end
  end

  # -- latency and traffic -------------------------------------------------------------------------

  defp ping(n, state) do
    agent = self()
    target = {state.name, n}
    timeout = state.ping_timeout

    spawn(fn ->
      t0 = System.monotonic_time(:microsecond)

      result =
        try do
          # never re-dial a node that left between the sensor tick and this call
          true = n in Node.list(:connected)
          {:ok, :pong} = Agent.cmd(target, :ping, %{}, timeout)
          {:ok, (System.monotonic_time(:microsecond) - t0) / 1000}
        catch
          kind, reason -> {:error, {kind, reason}}
        end

      send(agent, {:dspex_nd, :pong, n, result})
    end)
  end

  defp pong(n, {:ok, rtt_ms}, state) do
    if Map.has_key?(state.members, n) do
      ewma =
        case Map.fetch(state.latency, n) do
          {:ok, old} -> state.alpha * rtt_ms + (1 - state.alpha) * old
          :error -> rtt_ms
        end

      %{state | latency: Map.put(state.latency, n, ewma)}
    else
      state
    end
  end

  defp pong(_n, {:error, _}, state), do: state

  defp sample_traffic(state) do
    t = mono()
    dt_s = if state.traffic_at, do: max(t - state.traffic_at, 1) / 1000, else: nil

    traffic =
      for {n, ctrl} <- :erlang.system_info(:dist_ctrl), is_port(ctrl), into: %{} do
        stats =
          case :inet.getstat(ctrl, [:recv_oct, :send_oct, :recv_cnt, :send_cnt]) do
            {:ok, kv} -> Map.new(kv)
            {:error, _} -> %{recv_oct: 0, send_oct: 0, recv_cnt: 0, send_cnt: 0}
          end

        prev = Map.get(state.traffic, n)

        rates =
          if prev && dt_s,
            do: %{
              recv_rate: max(stats.recv_oct - prev.recv_oct, 0) / dt_s,
              send_rate: max(stats.send_oct - prev.send_oct, 0) / dt_s
            },
            else: %{recv_rate: nil, send_rate: nil}

        {n, Map.merge(stats, rates)}
      end

    %{state | traffic: traffic, traffic_at: t}
  end

  # -- helpers -------------------------------------------------------------------------------------

  defp announce(state) do
    data = %{
      kind: :beam,
      cluster_name: state.cluster_name,
      version: state.version,
      strategies: state.strategies,
      members: for({n, %{status: :member}} <- state.members, do: n)
    }

    DSPEx.Clustering.Signal.node_announce(node(), data, source: "node_discovery")
  end

  defp record(state, event, n, detail) do
    history = [%{event: event, node: n, at: now(), detail: detail} | state.history]
    %{state | history: Enum.take(history, state.history_limit)}
  end

  defp put_backoff(state, n, delay_ms, failures, reason) do
    entry = %{until: mono() + delay_ms, failures: failures, reason: reason}
    %{state | backoff: Map.put(state.backoff, n, entry)}
  end

  defp backing_off?(n, state) do
    case Map.fetch(state.backoff, n) do
      {:ok, %{until: until}} -> mono() < until
      :error -> false
    end
  end

  @doc false
  @spec normalise(keyword()) :: keyword()
  def normalise([]), do: options_from_config()
  def normalise(opts), do: opts

  defp app_version do
    case Application.spec(:dspex_cluster, :vsn) do
      nil -> "0.1.0"
      vsn -> List.to_string(vsn)
    end
  end

  defp now, do: DateTime.utc_now()
  defp mono, do: System.monotonic_time(:millisecond)
end
