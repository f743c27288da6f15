defmodule DSPEx.Clustering.LauncherTest do
  use ExUnit.Case, async: false
  @moduletag :distributed
  @moduletag timeout: 120_000

  alias DSPEx.Test.PeerNode

  @launcher Path.expand("../../bin/dspex-node", __DIR__)

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
        connected = :erpc.call(first, Node, :list, [])
        Enum.all?(others, &(&1 in connected))
      end,
      30_000
    )

    PeerNode.eventually(fn ->
      up = for m <- :erpc.call(first, DSPEx.Clustering, :members, []), m.status == :up, do: m.node
      Enum.all?(nodes, &(&1 in up))
    end)

    for pid <- os_pids, do: :ok = PeerNode.signal(pid, "TERM")

    for port <- ports do
      assert_receive {^port, {:exit_status, 0}}, 20_000
    end
  end
end
