defmodule DSPEx.Clustering.LauncherTest do
  use ExUnit.Case, async: false
  @moduletag :distributed
  @moduletag timeout: 120_000

  alias DSPEx.Test.PeerNode

  @launcher Path.expand("../../bin/dspex-node", __DIR__)

  test "a launched node has its cookie from the moment it is in epmd; no argv carries it; ~/.erlang.cookie is untouched" do
    suffix = System.unique_integer([:positive])
    name = "early_#{suffix}"
    node = :"#{name}@127.0.0.1"
    # its own cookie, not the test node's (which is on this node's command line)
    cookie = "early-" <> Base.encode16(:crypto.strong_rand_bytes(12), case: :lower)

    # The user's home, with a cookie of its own that must stay as it is.
    home = Path.join(System.tmp_dir!(), "dspex_home_#{suffix}")
    user_cookie = Path.join(home, ".erlang.cookie")
    File.mkdir_p!(home)
    File.write!(user_cookie, "user-own-cookie-#{suffix}")
    File.chmod!(user_cookie, 0o400)
    # atime aside: reading it here (below) moves that
    before = Map.delete(File.stat!(user_cookie, time: :posix), :atime)
    cookie_file = Path.join(System.tmp_dir!(), "dspex_cookie_#{suffix}")
    File.write!(cookie_file, cookie <> "\n")
    File.chmod!(cookie_file, 0o600)
    real_mix_home = System.get_env("MIX_HOME") || Path.expand("~/.mix")
    real_hex_home = System.get_env("HEX_HOME") || Path.expand("~/.hex")

    port =
      Port.open({:spawn_executable, @launcher}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        env: [
          {~c"MIX_ENV", ~c"dev"},
          {~c"HOME", String.to_charlist(home)},
          {~c"MIX_HOME", String.to_charlist(real_mix_home)},
          {~c"HEX_HOME", String.to_charlist(real_hex_home)}
        ],
        args: ["--name", name, "--cookie-file", cookie_file, "--discovery", "static"]
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)

    on_exit(fn ->
      PeerNode.signal(os_pid, "KILL")
      File.chmod(user_cookie, 0o600)
      File.rm_rf(home)
      File.rm(cookie_file)
    end)

    :erlang.set_cookie(node, String.to_atom(cookie))

    # Dial as soon as epmd knows the name (a peer polling epmd does the same). Until then, and
    # while waiting, no process may show the cookie in its arguments.
    PeerNode.eventually(
      fn ->
        assert processes_showing(cookie) == []
        match?({:port, _, _}, :erl_epmd.port_please(~c"#{name}", {127, 0, 0, 1}))
      end,
      60_000
    )

    assert Node.connect(node), "the first connection after epmd registration was refused"
    assert :erpc.call(node, :erlang, :get_cookie, []) == String.to_atom(cookie)
    node_home = :erpc.call(node, System, :get_env, ["HOME"])
    refute node_home == home
    assert File.stat!(node_home).access == :read_write
    # the application removes the cookie file once it runs
    PeerNode.eventually(
      fn -> not File.exists?(Path.join(node_home, ".erlang.cookie")) end,
      30_000
    )

    assert processes_showing(cookie) == []

    :ok = PeerNode.signal(os_pid, "TERM")
    log = collect_output(port, "")
    assert log =~ "exit_status 0"
    refute log =~ "Invalid challenge reply"

    # the user's home: the same cookie file, unchanged, and nothing else
    assert Map.delete(File.stat!(user_cookie, time: :posix), :atime) == before
    assert File.read!(user_cookie) == "user-own-cookie-#{suffix}"
    assert File.ls!(home) == [".erlang.cookie"]
    # the private home goes once the node is gone
    PeerNode.eventually(fn -> not File.exists?(node_home) end, 10_000)
  end

  test "three bin/dspex-node nodes with --discovery epmd find each other and stop on SIGTERM" do
    suffix = System.unique_integer([:positive])
    names = for i <- 1..3, do: "launch#{i}_#{suffix}"
    cookie = Atom.to_string(:erlang.get_cookie())
    cookie_file = Path.join(System.tmp_dir!(), "dspex_cookie_#{suffix}")
    File.write!(cookie_file, cookie)
    File.chmod!(cookie_file, 0o600)

    ports =
      for {name, i} <- Enum.with_index(names) do
        # one node reads the cookie from a file, the others get it on the command line
        cookie_args = if i == 0, do: ["--cookie-file", cookie_file], else: ["--cookie", cookie]

        Port.open({:spawn_executable, @launcher}, [
          :binary,
          :exit_status,
          :stderr_to_stdout,
          env: [{~c"MIX_ENV", ~c"dev"}],
          args: ["--name", name] ++ cookie_args ++ ["--discovery", "epmd", "--hosts", "127.0.0.1"]
        ])
      end

    os_pids = Enum.map(ports, &elem(Port.info(&1, :os_pid), 1))

    on_exit(fn ->
      Enum.each(os_pids, &PeerNode.signal(&1, "KILL"))
      File.rm(cookie_file)
    end)

    nodes = Enum.map(names, &:"#{&1}@127.0.0.1")
    [first | others] = nodes

    # We only connect to the first; it must have found the others by itself.
    PeerNode.eventually(fn -> Node.connect(first) end, 60_000)

    PeerNode.eventually(
      fn ->
        connected = call_while_booting(first, Node, :list, [])
        Enum.all?(others, &(&1 in connected))
      end,
      30_000
    )

    PeerNode.eventually(fn ->
      members = call_while_booting(first, DSPEx.Clustering, :members, [])
      up = for m <- members, m.status == :up, do: m.node
      Enum.all?(nodes, &(&1 in up))
    end)

    # --cookie is moved off the command line at once: only this test node shows it
    me = System.pid()
    assert [{^me, _}] = processes_showing(cookie)
    # nor does it stay in the nodes' environment
    for pid <- os_pids, do: refute(File.read!("/proc/#{pid}/environ") =~ cookie)

    for pid <- os_pids, do: :ok = PeerNode.signal(pid, "TERM")

    for port <- ports do
      assert_receive {^port, {:exit_status, 0}}, 20_000
    end
  end

  test "every node option, by flag and by environment variable, reaches the launched node" do
    suffix = System.unique_integer([:positive])
    cookie_file = Path.join(System.tmp_dir!(), "dspex_cookie_opts_#{suffix}")
    File.write!(cookie_file, Atom.to_string(:erlang.get_cookie()))
    File.chmod!(cookie_file, 0o600)
    epmd_port = System.fetch_env!("ERL_EPMD_PORT")
    me = Atom.to_string(node())

    by_flag =
      launch([
        "--name",
        "flags_#{suffix}",
        "--cookie-file",
        cookie_file,
        "--join",
        me,
        "--epmd-port",
        epmd_port,
        "--net-ticktime",
        "17",
        "--profile",
        "production",
        "--discovery",
        "static",
        "--hosts",
        "127.0.0.1,localhost",
        "--capabilities",
        "gpu",
        "--capabilities",
        "ssd",
        "--hidden"
      ])

    by_env =
      launch([],
        DSPEX_NAME: "env_#{suffix}",
        DSPEX_COOKIE_FILE: cookie_file,
        DSPEX_JOIN: me,
        ERL_EPMD_PORT: epmd_port,
        DSPEX_NET_TICKTIME: "17",
        DSPEX_PROFILE: "production",
        DSPEX_DISCOVERY: "static",
        DSPEX_HOSTS: "127.0.0.1,localhost",
        DSPEX_CAPABILITIES: "gpu,ssd",
        DSPEX_HIDDEN: "true"
      )

    on_exit(fn ->
      for {_port, os_pid} <- [by_flag, by_env], do: PeerNode.signal(os_pid, "KILL")
      File.rm(cookie_file)
    end)

    for {kind, {port, _os_pid}} <- [flag: by_flag, env: by_env] do
      node = :"#{if kind == :flag, do: "flags", else: "env"}_#{suffix}@127.0.0.1"
      # --join: it dials this node (we never dial it); --hidden: a hidden connection;
      # --epmd-port: we found it through our private epmd
      PeerNode.eventually(fn -> node in Node.list(:hidden) end, 60_000)
      refute node in Node.list()

      PeerNode.eventually(fn ->
        call_while_booting(node, DSPEx.Clustering.Config, :profile, []) == :production
      end)

      assert :erpc.call(node, :net_kernel, :get_net_ticktime, []) == 17
      assert :erpc.call(node, DSPEx.Clustering.Config, :get, [:capabilities]) == [:gpu, :ssd]
      assert :erpc.call(node, DSPEx.Clustering.Config, :get, [:discovery]) == [:static]

      assert :erpc.call(node, DSPEx.Clustering.Config, :get, [:hosts]) == [
               "127.0.0.1",
               "localhost"
             ]

      assert :erpc.call(node, Application, :get_env, [:dspex_cluster, :join]) == [me]
      {:os_pid, os_pid} = Port.info(port, :os_pid)
      :ok = PeerNode.signal(os_pid, "TERM")
      assert_receive {^port, {:exit_status, 0}}, 20_000
    end
  end

  # The launcher as a port; `env` on top of this test node's environment.
  defp launch(args, env \\ []) do
    env =
      [{~c"MIX_ENV", ~c"dev"}, {~c"ERL_EPMD_PORT", false}] ++
        for {k, v} <- env, do: {Atom.to_charlist(k), String.to_charlist(v)}

    port =
      Port.open({:spawn_executable, @launcher}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        env: Enum.uniq_by(Enum.reverse(env), &elem(&1, 0)),
        args: args
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    {port, os_pid}
  end

  # A node is reachable before its application has started (its modules are undefined and its
  # servers missing until then), and `global` may briefly cut this test node off while the
  # launched nodes mesh with each other: all of it means "not yet" here; the caller polls again.
  defp call_while_booting(node, mod, fun, args) do
    :erpc.call(node, mod, fun, args)
  catch
    kind, _reason when kind in [:error, :exit] -> []
  end

  # OS processes (pid and arguments) whose command line contains `secret`.
  defp processes_showing(secret) do
    for dir <- Path.wildcard("/proc/[0-9]*"),
        {:ok, args} <- [File.read(Path.join(dir, "cmdline"))],
        String.contains?(args, secret),
        do: {Path.basename(dir), String.replace(args, <<0>>, " ")}
  end

  defp collect_output(port, acc) do
    receive do
      {^port, {:data, data}} -> collect_output(port, acc <> data)
      {^port, {:exit_status, status}} -> acc <> "\nexit_status #{status}"
    after
      20_000 -> acc <> "\nno exit within 20 s"
    end
  end
end
