defmodule DSPEx.Clustering.Discovery.Gossip do
  @moduledoc """
  UDP gossip: every node sends a small authenticated heartbeat each poll interval and proposes the
  nodes it has recently heard from. Multicast by default; unicast (and broadcast) for networks
  without multicast routing.

      # multicast on the LAN
      {DSPEx.Clustering.Discovery.Gossip, multicast_addr: {239, 255, 42, 42}, port: 45892}

      # multicast on loopback (single-host clusters and tests)
      {DSPEx.Clustering.Discovery.Gossip, multicast_if: {127, 0, 0, 1}}

      # broadcast on loopback
      {DSPEx.Clustering.Discovery.Gossip, mode: :broadcast, broadcast_addr: {127, 255, 255, 255}}

      # unicast fallback: each node binds the first free port of the range and sends to every
      # port of the range on every peer address
      {DSPEx.Clustering.Discovery.Gossip, mode: :unicast, port: 45900..45909,
        peers: [{127, 0, 0, 1}]}

  Options:
    * `:mode` — `:multicast` (default), `:unicast` or `:broadcast`.
    * `:port` — UDP port (default 45892); for `:unicast` also a `Range` (see above).
    * `:multicast_addr` — group (default `{239, 255, 42, 42}`); `:multicast_if` — local interface
      address to join and send on (default `{0, 0, 0, 0}`, the kernel's choice); `:ttl` (default 1).
    * `:broadcast_addr` — for `:broadcast` (default `{255, 255, 255, 255}`; on loopback use
      `{127, 255, 255, 255}`).
    * `:bind_ip` — local address of the socket: by default the multicast group for `:multicast`
      (only group traffic is received) and `{0, 0, 0, 0}` otherwise (a socket bound to one unicast
      address does not receive broadcasts).
    * `:peers` — addresses also sent to by unicast, in any mode.
    * `:cluster_name` — part of the key (NodeDiscovery passes its own); default `"dspex"`.
    * `:secret` — key material instead of the Erlang cookie (binary).
    * `:max_skew` — ms a packet's timestamp may differ from the local clock (default 30_000).
    * `:forget_after` — ms after which a silent node is no longer proposed (default 30_000).

  ## Authentication
  The key is `HMAC-SHA256(cookie, "dspex-gossip-v1|" <> cluster_name)`: only nodes sharing the cookie
  *and* the cluster name can produce valid packets. A packet is

      "DXG1" | timestamp_us:64 | nonce:8 bytes | name_len:16 | node name | HMAC-SHA256(key, all before)

  Packets with a bad MAC (strangers, other clusters, forgeries), malformed packets, timestamps
  outside `:max_skew`, and replays (a timestamp not newer than the last accepted one from the same
  sender) are dropped and counted in the state's `:dropped` map; no atom is created before the MAC
  is verified, nor for a name that is not a valid node name (at most 255 characters of UTF-8,
  `name@host`). Drops are logged as a summary, at most one line per 10 s (a warning when there were
  forged or malformed packets, else at debug level), never one line per packet. The cookie and the
  key are never logged.
  """
  @behaviour DSPEx.Clustering.Discovery.Strategy

  require Logger

  @magic "DXG1"
  @mac_size 32
  @active_batch 50

  @impl true
  def init(opts) do
    mode = Keyword.get(opts, :mode, :multicast)
    cluster = to_string(Keyword.get(opts, :cluster_name, "dspex"))

    with {:ok, secret} <- secret(opts),
         {:ok, socket, port} <- open(mode, opts) do
      {:ok,
       %{
         socket: socket,
         mode: mode,
         port: port,
         ports: port_list(Keyword.get(opts, :port, 45892)),
         group: Keyword.get(opts, :multicast_addr, {239, 255, 42, 42}),
         broadcast_addr: Keyword.get(opts, :broadcast_addr, {255, 255, 255, 255}),
         peers: Keyword.get(opts, :peers, []),
         key: derive_key(secret, cluster),
         max_skew_us: Keyword.get(opts, :max_skew, 30_000) * 1000,
         forget_after_ms: Keyword.get(opts, :forget_after, 30_000),
         last_sent_us: 0,
         # sender node => last accepted timestamp (replay guard)
         last_seen_ts: %{},
         # sender node => monotonic ms when heard
         heard: %{},
         dropped: %{bad_mac: 0, malformed: 0, skew: 0, replay: 0},
         # drops since the last summary line, and when that line was written
         drops_unlogged: %{},
         drops_logged_ms: nil,
         accepted: 0
       }}
    end
  end

  @impl true
  def discover(state) do
    state = state |> send_heartbeat() |> log_drops()
    {:ok, live_nodes(state), state}
  end

  @impl true
  def handle_info({:udp, socket, _ip, _port, packet}, %{socket: socket} = state) do
    case verify(packet, state) do
      {:ok, sender, ts} when sender == node() ->
        {:noreply, %{state | last_seen_ts: Map.put(state.last_seen_ts, sender, ts)}}

      {:ok, sender, ts} ->
        new? = not Map.has_key?(state.heard, sender)

        state = %{
          state
          | last_seen_ts: Map.put(state.last_seen_ts, sender, ts),
            heard: Map.put(state.heard, sender, now_ms()),
            accepted: state.accepted + 1
        }

        if new?, do: {:ok, live_nodes(state), state}, else: {:noreply, state}

      {:error, why} ->
        {:noreply, note_drop(state, why)}
    end
  end

  def handle_info({:udp_passive, socket}, %{socket: socket} = state) do
    :ok = :inet.setopts(socket, active: @active_batch)
    {:noreply, state}
  end

  def handle_info(_msg, state), do: {:noreply, state}

  @impl true
  def terminate(state), do: :gen_udp.close(state.socket)

  @doc "Derives the packet key from the shared secret (the cookie) and the cluster name."
  @spec derive_key(binary(), String.t()) :: binary()
  def derive_key(secret, cluster_name),
    do: :crypto.mac(:hmac, :sha256, secret, "dspex-gossip-v1|" <> cluster_name)

  @doc "Builds a signed heartbeat packet for `node_name` stamped `ts_us`."
  @spec encode(node(), non_neg_integer(), binary()) :: binary()
  def encode(node_name, ts_us, key) do
    name = Atom.to_string(node_name)

    body =
      <<@magic, ts_us::64, :crypto.strong_rand_bytes(8)::binary, byte_size(name)::16,
        name::binary>>

    body <> :crypto.mac(:hmac, :sha256, key, body)
  end

  @doc """
  Checks a packet against the key, the clock and the replay guard in `state`; returns the sender
  and timestamp, or why it was dropped.
  """
  @spec verify(binary(), map()) ::
          {:ok, node(), non_neg_integer()} | {:error, :bad_mac | :malformed | :skew | :replay}
  def verify(packet, state) when byte_size(packet) > @mac_size do
    body_size = byte_size(packet) - @mac_size
    <<body::binary-size(body_size), mac::binary-size(@mac_size)>> = packet

    with true <-
           :crypto.hash_equals(:crypto.mac(:hmac, :sha256, state.key, body), mac) || :bad_mac,
         <<@magic, ts::64, _nonce::binary-8, len::16, name::binary-size(len)>> <- body,
         true <- valid_node_name?(name) do
      sender = String.to_atom(name)

      cond do
        abs(System.os_time(:microsecond) - ts) > state.max_skew_us -> {:error, :skew}
        ts <= Map.get(state.last_seen_ts, sender, 0) -> {:error, :replay}
        true -> {:ok, sender, ts}
      end
    else
      :bad_mac -> {:error, :bad_mac}
      _ -> {:error, :malformed}
    end
  end

  def verify(_packet, _state), do: {:error, :malformed}

  # What may become an atom: a node name as OTP accepts one (255 characters at most, UTF-8,
  # exactly one @ between non-empty parts, no white space or control characters).
  @node_name ~r/\A[^@\s\p{C}]+@[^@\s\p{C}]+\z/u
  defp valid_node_name?(name) do
    byte_size(name) <= 1020 and String.valid?(name) and String.length(name) <= 255 and
      Regex.match?(@node_name, name)
  end

  @drop_summary_every_ms 10_000
  defp note_drop(state, why) do
    %{
      state
      | dropped: Map.update!(state.dropped, why, &(&1 + 1)),
        drops_unlogged: Map.update(state.drops_unlogged, why, 1, &(&1 + 1))
    }
    |> log_drops()
  end

  # One line for many drops: a flood of forged packets costs a counter each, not a log line.
  defp log_drops(%{drops_unlogged: pending} = state) when map_size(pending) == 0, do: state

  defp log_drops(state) do
    last = state.drops_logged_ms

    if last == nil or now_ms() - last >= @drop_summary_every_ms do
      pending = state.drops_unlogged
      total = pending |> Map.values() |> Enum.sum()
      line = "gossip: dropped #{total} packet(s) since the last report: #{inspect(pending)}"

      if Map.has_key?(pending, :bad_mac) or Map.has_key?(pending, :malformed),
        do: Logger.warning(line),
        else: Logger.debug(line)

      %{state | drops_unlogged: %{}, drops_logged_ms: now_ms()}
    else
      state
    end
  end

  defp send_heartbeat(state) do
    ts = max(System.os_time(:microsecond), state.last_sent_us + 1)
    packet = encode(node(), ts, state.key)

    failures =
      for {ip, port} <- targets(state),
          {:error, why} <- [:gen_udp.send(state.socket, ip, port, packet)],
          do: {ip, port, why}

    %{warn_send_failures(state, failures) | last_sent_us: ts}
  end

  # A heartbeat nobody can receive (no route to the group, say) would make discovery find
  # nothing in silence: say so, at most once a minute.
  @send_warning_every_ms 60_000
  defp warn_send_failures(state, []), do: state

  defp warn_send_failures(state, failures) do
    last = Map.get(state, :send_warned_ms)

    if last == nil or now_ms() - last >= @send_warning_every_ms do
      Logger.warning("gossip: heartbeat not sent to #{inspect(failures)}")
      Map.put(state, :send_warned_ms, now_ms())
    else
      state
    end
  end

  defp targets(%{mode: :multicast} = s), do: [{s.group, s.port} | unicast_targets(s)]
  defp targets(%{mode: :broadcast} = s), do: [{s.broadcast_addr, s.port} | unicast_targets(s)]
  defp targets(%{mode: :unicast} = s), do: unicast_targets(s)

  defp unicast_targets(s) do
    for ip <- s.peers, port <- s.ports, do: {parse_ip(ip), port}
  end

  defp live_nodes(state) do
    cutoff = now_ms() - state.forget_after_ms
    for {node, at} <- state.heard, at >= cutoff, do: node
  end

  defp open(:multicast, opts) do
    port = Keyword.get(opts, :port, 45892)
    group = Keyword.get(opts, :multicast_addr, {239, 255, 42, 42})
    iface = Keyword.get(opts, :multicast_if, {0, 0, 0, 0})

    sock_opts = [
      :binary,
      active: @active_batch,
      # room for bursts; the kernel caps it at net.core.rmem_max
      recbuf: 1_048_576,
      reuseaddr: true,
      ip: Keyword.get(opts, :bind_ip, group),
      multicast_if: iface,
      multicast_ttl: Keyword.get(opts, :ttl, 1),
      multicast_loop: true,
      add_membership: {group, iface}
    ]

    with {:ok, socket} <- :gen_udp.open(port, sock_opts), do: {:ok, socket, port}
  end

  defp open(mode, opts) when mode in [:unicast, :broadcast] do
    base = [
      :binary,
      active: @active_batch,
      recbuf: 1_048_576,
      ip: Keyword.get(opts, :bind_ip, {0, 0, 0, 0})
    ]

    base = if mode == :broadcast, do: [{:broadcast, true}, {:reuseaddr, true} | base], else: base

    opts
    |> Keyword.get(:port, 45892)
    |> port_list()
    |> Enum.reduce_while({:error, :no_free_port}, fn port, acc ->
      case :gen_udp.open(port, base) do
        {:ok, socket} -> {:halt, {:ok, socket, port}}
        {:error, :eaddrinuse} -> {:cont, acc}
        {:error, reason} -> {:halt, {:error, reason}}
      end
    end)
  end

  defp open(mode, _opts), do: {:error, {:invalid_option, {:mode, mode}}}

  defp secret(opts) do
    case Keyword.get(opts, :secret) do
      s when is_binary(s) and s != "" ->
        {:ok, s}

      nil ->
        case :erlang.get_cookie() do
          :nocookie -> {:error, :no_cookie}
          cookie -> {:ok, Atom.to_string(cookie)}
        end

      _ ->
        {:error, {:invalid_option, :secret}}
    end
  end

  defp port_list(%Range{} = r), do: Enum.to_list(r)
  defp port_list(port) when is_integer(port), do: [port]

  defp parse_ip(ip) when is_tuple(ip), do: ip

  defp parse_ip(ip) do
    {:ok, addr} = :inet.parse_address(to_charlist(ip))
    addr
  end

  defp now_ms, do: System.monotonic_time(:millisecond)
end
