Code.require_file("support.exs", __DIR__)

defmodule DSPEx.Clustering.Discovery.GossipDiscoveryTest do
  # UDP multicast gossip on loopback (interface 127.0.0.1, a random group and port) between two
  # peer nodes, then forged, wrong-key, malformed and replayed packets from this test process.
  use ExUnit.Case, async: false

  alias DSPEx.Clustering.Discovery.{Gossip, Runner}
  alias DSPEx.Clustering.DiscoveryTest.Support
  alias DSPEx.Clustering.NodeDiscovery

  @moduletag timeout: 60_000

  setup_all do
    Support.ensure_epmd()
    :ok
  end

  describe "packet authentication (no network)" do
    setup do
      key = Gossip.derive_key("cookie-a", "alpha")
      state = %{key: key, max_skew_us: 30_000_000, last_seen_ts: %{}}
      %{key: key, state: state}
    end

    test "a packet signed with the key is accepted once", %{key: key, state: state} do
      ts = System.os_time(:microsecond)
      packet = Gossip.encode(:"n1@127.0.0.1", ts, key)
      assert {:ok, :"n1@127.0.0.1", ^ts} = Gossip.verify(packet, state)
      seen = %{state | last_seen_ts: %{:"n1@127.0.0.1" => ts}}
      assert {:error, :replay} = Gossip.verify(packet, seen)
    end

    test "other cookie, other cluster, tampering, skew and junk are refused", %{
      key: key,
      state: state
    } do
      ts = System.os_time(:microsecond)
      other_cookie = Gossip.encode(:n1@h, ts, Gossip.derive_key("cookie-b", "alpha"))
      other_cluster = Gossip.encode(:n1@h, ts, Gossip.derive_key("cookie-a", "beta"))
      assert {:error, :bad_mac} = Gossip.verify(other_cookie, state)
      assert {:error, :bad_mac} = Gossip.verify(other_cluster, state)

      good = Gossip.encode(:n1@h, ts, key)
      <<head::binary-size(20), byte, rest::binary>> = good

      assert {:error, :bad_mac} =
               Gossip.verify(<<head::binary, Bitwise.bxor(byte, 1), rest::binary>>, state)

      old = Gossip.encode(:n1@h, ts - 120_000_000, key)
      assert {:error, :skew} = Gossip.verify(old, state)
      assert {:error, :malformed} = Gossip.verify("short", state)
      assert {:error, :bad_mac} = Gossip.verify(:crypto.strong_rand_bytes(80), state)
    end
  end

  describe "hostile packets" do
    setup do
      key = Gossip.derive_key("cookie-h", "hostile")
      %{key: key, state: %{key: key, max_skew_us: 30_000_000, last_seen_ts: %{}}}
    end

    test "a signed packet whose name cannot be a node name is malformed, not a crash", %{
      key: key,
      state: state
    } do
      ts = System.os_time(:microsecond)

      for name <- [String.duplicate("a", 300) <> "@h", <<0xFF, 0xFE, ?@, ?h>>, "no-host", "a b@h"] do
        assert {:error, :malformed} = Gossip.verify(signed(name, ts, key), state)
      end
    end

    test "a flood of forged packets is counted, and logged as one summary line" do
      port = Support.free_udp_port()
      {:ok, state} = Gossip.init(mode: :unicast, port: port..port, peers: [], secret: "s")
      socket = state.socket
      forged = signed("x@h", System.os_time(:microsecond), Gossip.derive_key("other", "c"))
      previous = Logger.level()
      Logger.configure(level: :debug)

      log =
        try do
          ExUnit.CaptureLog.capture_log([level: :debug], fn ->
            final =
              Enum.reduce(1..1000, state, fn _, acc ->
                {:noreply, acc} =
                  Gossip.handle_info({:udp, socket, {127, 0, 0, 1}, 1, forged}, acc)

                acc
              end)

            send(self(), {:final, final})
          end)
        after
          Logger.configure(level: previous)
        end

      assert_received {:final, final}
      assert final.dropped.bad_mac == 1000
      assert log |> String.split("gossip: dropped") |> length() == 2
      Gossip.terminate(final)
    end

    test "the runner keeps its replay guard whatever a packet does" do
      port = Support.free_udp_port()
      secret = "runner-secret"
      key = Gossip.derive_key(secret, "dspex")

      {:ok, runner} =
        Runner.start_link(
          id: :hostile,
          strategy: Gossip,
          strategy_opts: [mode: :unicast, port: port..port, peers: [], secret: secret],
          interval: 60_000,
          report_to: self()
        )

      socket = :sys.get_state(runner).strategy.socket
      ts = System.os_time(:microsecond)
      good = Gossip.encode(:"peer@127.0.0.1", ts, key)
      send(runner, {:udp, socket, {127, 0, 0, 1}, 1, good})

      send(
        runner,
        {:udp, socket, {127, 0, 0, 1}, 1, signed(String.duplicate("z", 400) <> "@h", ts + 1, key)}
      )

      send(runner, {:udp, socket, {127, 0, 0, 1}, 1, good})
      strategy = :sys.get_state(runner).strategy
      assert Process.alive?(runner)
      assert strategy.last_seen_ts[:"peer@127.0.0.1"] == ts
      assert strategy.dropped.malformed == 1 and strategy.dropped.replay == 1
      GenServer.stop(runner)
    end
  end

  defp signed(name, ts, key) do
    body =
      <<"DXG1", ts::64, :crypto.strong_rand_bytes(8)::binary, byte_size(name)::16, name::binary>>

    body <> :crypto.mac(:hmac, :sha256, key, body)
  end

  test "the logger level comes from the profile; production is not debug" do
    assert DSPEx.Clustering.Config.profile_defaults(:production).log_level not in [:debug, :info]
    assert Logger.level() == DSPEx.Clustering.Config.get(:log_level)
  end

  test "two nodes find each other by multicast on loopback; strangers are ignored" do
    u = Support.uniq()
    cookie = "gossip#{u}"
    cluster = "gossip-#{u}"
    port = Support.free_udp_port()
    group = {239, 255, rem(System.unique_integer([:positive]), 250), 1 + :rand.uniform(250)}

    gossip = [multicast_if: {127, 0, 0, 1}, multicast_addr: group, port: port]
    opts = [strategies: [{Gossip, gossip}], interval: 200, cluster_name: cluster]

    {pa, a} = Support.start_peer("gsa#{u}", cookie)
    {pb, b} = Support.start_peer("gsb#{u}", cookie)

    # this process listens to the group too, to capture a genuine packet for the replay
    {:ok, sock} =
      :gen_udp.open(port, [
        :binary,
        active: false,
        reuseaddr: true,
        ip: group,
        multicast_if: {127, 0, 0, 1},
        multicast_loop: true,
        add_membership: {group, {127, 0, 0, 1}}
      ])

    on_exit(fn -> :gen_udp.close(sock) end)

    Support.start_discovery(pa, opts)
    Support.start_discovery(pb, opts)

    for {peer, other} <- [{pa, b}, {pb, a}] do
      assert Support.wait_until(fn -> Support.member?(peer, other) end),
             "gossip did not bring #{other} in"
    end

    {:ok, {_ip, _port, genuine}} = :gen_udp.recv(sock, 0, 2_000)

    ghost = "ghost#{u}@127.0.0.1"
    ts = System.os_time(:microsecond)

    wrong_key =
      Gossip.encode(String.to_atom(ghost), ts, Gossip.derive_key("not-the-cookie", cluster))

    other_cluster = Gossip.encode(String.to_atom(ghost), ts, Gossip.derive_key(cookie, "another"))
    # a forged packet: genuine MAC bytes glued to a body naming the ghost
    mac = binary_part(genuine, byte_size(genuine) - 32, 32)
    forged = binary_part(wrong_key, 0, byte_size(wrong_key) - 32) <> mac

    strangers = [wrong_key, other_cluster, forged, genuine, "junk"]

    for {peer, _} <- [{pa, a}, {pb, b}] do
      # UDP may lose a datagram: resend the batch until each kind was seen (and dropped)
      dropped =
        Support.wait_until(fn ->
          for packet <- strangers, do: :ok = :gen_udp.send(sock, group, port, packet)
          Process.sleep(50)
          d = gossip_state(peer).dropped
          d.bad_mac >= 3 and d.replay >= 1 and d.malformed >= 1 and d
        end)

      assert dropped,
             "strangers' packets were not all dropped: #{inspect(gossip_state(peer).dropped)}"

      heard = Map.keys(gossip_state(peer).heard)
      refute String.to_atom(ghost) in heard
      topo = Support.pcall(peer, NodeDiscovery, :topology, [])
      refute Map.has_key?(topo.backoff, String.to_atom(ghost))
      refute Map.has_key?(topo.members, String.to_atom(ghost))
    end
  end

  defp gossip_state(peer) do
    sup = NodeDiscovery.supervisor_name(NodeDiscovery.name())

    [pid] =
      for {{Runner, {_, Gossip}}, pid, _, _} <-
            Support.pcall(peer, Supervisor, :which_children, [sup]),
          do: pid

    Support.pcall(peer, :sys, :get_state, [pid]).strategy
  end

  test "broadcast on loopback (127.255.255.255) brings two nodes together" do
    u = Support.uniq()
    cookie = "bcast#{u}"
    port = Support.free_udp_port()
    gossip = [mode: :broadcast, broadcast_addr: {127, 255, 255, 255}, port: port]
    opts = [strategies: [{Gossip, gossip}], interval: 200, cluster_name: "bc-#{u}"]

    {pa, a} = Support.start_peer("gba#{u}", cookie)
    {pb, b} = Support.start_peer("gbb#{u}", cookie)
    Support.start_discovery(pa, opts)
    Support.start_discovery(pb, opts)

    for {peer, other} <- [{pa, b}, {pb, a}] do
      assert Support.wait_until(fn -> Support.member?(peer, other) end)
    end
  end

  test "unicast fallback: each node binds a free port of the range and sends to all of them" do
    u = Support.uniq()
    cookie = "unicast#{u}"
    base = Support.free_udp_port()
    gossip = [mode: :unicast, port: base..(base + 3), peers: [{127, 0, 0, 1}]]
    opts = [strategies: [{Gossip, gossip}], interval: 200, cluster_name: "uni-#{u}"]

    {pa, a} = Support.start_peer("gua#{u}", cookie)
    {pb, b} = Support.start_peer("gub#{u}", cookie)
    Support.start_discovery(pa, opts)
    Support.start_discovery(pb, opts)

    for {peer, other} <- [{pa, b}, {pb, a}] do
      assert Support.wait_until(fn -> Support.member?(peer, other) end)
    end

    assert gossip_state(pa).port != gossip_state(pb).port
  end

  test "a heartbeat that cannot be sent is logged, at most once a minute" do
    port = Support.free_udp_port()
    # A broadcast address without the broadcast option: every send fails with eacces.
    opts = [mode: :unicast, port: port..port, peers: [{255, 255, 255, 255}], secret: "s"]
    {:ok, state} = Gossip.init(opts)

    first =
      ExUnit.CaptureLog.capture_log(fn -> send(self(), {:state, Gossip.discover(state)}) end)

    assert first =~ "gossip: heartbeat not sent"
    assert_received {:state, {:ok, [], state}}

    again = ExUnit.CaptureLog.capture_log(fn -> Gossip.discover(state) end)
    refute again =~ "heartbeat not sent"
    Gossip.terminate(state)
  end
end
