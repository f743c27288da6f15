defmodule DSPEx.Clustering.DiscoveryTest.Support do
  @moduledoc """
  Real OS processes for the discovery tests: a private epmd (when the run has none), OTP `:peer`
  nodes controlled over stdio (so they are NOT connected to the test node and must find each other
  themselves), and `dnsmasq`. Everything started here is stopped by its OS pid / peer pid.
  """
  import ExUnit.Callbacks, only: [on_exit: 1]

  # Loaded into every peer: starts what DSPEx.Clustering.Agent needs (agent registry, the signal
  # bus's :pg scope) without linking it to the short-lived :peer.call process.
  @peer_boot """
  defmodule DSPEx.Clustering.DiscoveryTest.PeerBoot do
    def boot do
      Logger.configure(level: :error)
      {:ok, r} = Registry.start_link(keys: :unique, name: DSPEx.Clustering.AgentRegistry)
      {:ok, pg} = :pg.start_link(DSPEx.Clustering.Names.signal_bus())
      Process.unlink(r)
      Process.unlink(pg)
      :ok
    end

    def collect_signals(pattern) do
      pid = spawn(fn -> loop([]) end)
      :ok = DSPEx.Clustering.SignalBus.subscribe(pattern, pid)
      pid
    end

    def signals(pid) do
      send(pid, {:get, self()})
      receive do
        {:signals, s} -> s
      after
        1000 -> :timeout
      end
    end

    defp loop(acc) do
      receive do
        {:signal, s} -> loop([s | acc])
        {:get, from} -> send(from, {:signals, Enum.reverse(acc)}); loop(acc)
      end
    end
  end
  """

  @doc "Makes sure this run has a private epmd: reuses ERL_EPMD_PORT, else starts one."
  def ensure_epmd do
    case System.get_env("ERL_EPMD_PORT") do
      nil ->
        port = free_tcp_port()
        os_pid = spawn_os("epmd", ["-port", Integer.to_string(port)])
        System.put_env("ERL_EPMD_PORT", Integer.to_string(port))
        # :erl_epmd reads ERL_EPMD_PORT at each call: a NAMES request answers once epmd is up
        wait_until(fn -> match?({:ok, _}, :erl_epmd.names(~c"127.0.0.1")) end, 3_000, 20)

        on_exit(fn ->
          kill(os_pid)
          System.delete_env("ERL_EPMD_PORT")
        end)

        port

      port ->
        String.to_integer(port)
    end
  end

  @doc """
  Starts a longnames peer `name@127.0.0.1` with `cookie`, controlled over stdio, with this
  project's code loaded. Returns `{peer_pid, node}`.
  """
  def start_peer(name, cookie, extra_args \\ []) do
    node_name = :"#{name}@127.0.0.1"

    {:ok, peer, ^node_name} =
      :peer.start(%{
        name: String.to_charlist(name),
        host: ~c"127.0.0.1",
        longnames: true,
        connection: :standard_io,
        args: [~c"-setcookie", to_charlist(cookie), ~c"-start_epmd", ~c"false" | extra_args]
      })

    on_exit(fn -> stop_peer(peer) end)

    paths = Enum.reject(:code.get_path(), &List.starts_with?(&1, :code.root_dir()))
    :ok = :peer.call(peer, :code, :add_pathsa, [paths])
    {:ok, _} = :peer.call(peer, :application, :ensure_all_started, [:elixir])
    {:ok, _} = :peer.call(peer, :application, :ensure_all_started, [:logger])
    {:ok, _} = :peer.call(peer, :application, :ensure_all_started, [:crypto])

    {mod, bin} = peer_boot_binary()
    {:module, ^mod} = :peer.call(peer, :code, :load_binary, [mod, ~c"peer_boot.ex", bin])
    :ok = :peer.call(peer, mod, :boot, [])
    {peer, node_name}
  end

  def stop_peer(peer) do
    if Process.alive?(peer), do: :peer.stop(peer)
  catch
    :exit, _ -> :ok
  end

  @doc "Calls `m.f(a)` on the peer."
  def pcall(peer, m, f, a \\ []), do: :peer.call(peer, m, f, a, 10_000)

  @doc "Starts NodeDiscovery on the peer (unlinked) with `opts`."
  def start_discovery(peer, opts) do
    {:ok, _} = pcall(peer, DSPEx.Clustering.NodeDiscovery, :start, [opts])
    :ok
  end

  @doc "Whether the peer's NodeDiscovery holds `other` as a validated member."
  def member?(peer, other),
    do:
      match?(
        %{status: :member},
        pcall(peer, DSPEx.Clustering.NodeDiscovery, :topology, []).members[other]
      )

  @doc "Polls `fun` until it returns truthy or `timeout` ms pass; returns the last value."
  def wait_until(fun, timeout \\ 10_000, step \\ 100) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_wait(fun, deadline, step)
  end

  defp do_wait(fun, deadline, step) do
    case fun.() do
      result when result not in [nil, false] ->
        result

      result ->
        if System.monotonic_time(:millisecond) >= deadline do
          result
        else
          Process.sleep(step)
          do_wait(fun, deadline, step)
        end
    end
  end

  @doc """
  Runs a real dnsmasq on 127.0.0.1:<free port> serving only `records` (dnsmasq flags such as
  `--host-record=...`, `--srv-host=...`), authoritative for `dspex.test`. Returns the port.
  """
  def start_dnsmasq(records) do
    port = free_tcp_port()

    args =
      ~w(--keep-in-foreground --no-resolv --no-hosts --bind-interfaces --listen-address=127.0.0.1
         --local=/dspex.test/ --pid-file= --log-facility=/dev/null) ++
        ["--port=#{port}" | records]

    os_pid = spawn_os("dnsmasq", args)
    on_exit(fn -> kill(os_pid) end)

    ready =
      wait_until(
        fn ->
          match?(
            {:ok, _},
            :inet_res.resolve(~c"ready.dspex.test", :in, :a,
              nameservers: [{{127, 0, 0, 1}, port}],
              timeout: 200
            )
          )
        end,
        5_000,
        50
      )

    ready || raise "dnsmasq did not answer on port #{port}"
    port
  end

  @doc "Spawns an OS process (stdout/stderr discarded by the port) and returns its OS pid."
  def spawn_os(cmd, args) do
    exe = System.find_executable(cmd) || raise "#{cmd} not found"
    port = Port.open({:spawn_executable, exe}, [:binary, :exit_status, args: args])
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    os_pid
  end

  def kill(os_pid),
    do: System.cmd("kill", ["-TERM", Integer.to_string(os_pid)], stderr_to_stdout: true)

  def free_tcp_port do
    {:ok, s} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(s)
    :gen_tcp.close(s)
    port
  end

  def free_udp_port do
    {:ok, s} = :gen_udp.open(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(s)
    :gen_udp.close(s)
    port
  end

  @doc "A unique name fragment for nodes of this test run."
  def uniq,
    do:
      Integer.to_string(:erlang.unique_integer([:positive])) <>
        "x" <> Integer.to_string(System.os_time(:millisecond) |> rem(100_000))

  defp peer_boot_binary do
    case :persistent_term.get({__MODULE__, :peer_boot}, nil) do
      nil ->
        [{mod, bin}] = Code.compile_string(@peer_boot, "peer_boot.ex")
        :persistent_term.put({__MODULE__, :peer_boot}, {mod, bin})
        {mod, bin}

      cached ->
        cached
    end
  end
end
