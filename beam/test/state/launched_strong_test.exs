defmodule DSPEx.Clustering.LaunchedStrongTest do
  use ExUnit.Case, async: false
  @moduletag :distributed

  alias DSPEx.Test.PeerNode

  @launcher Path.expand("../../bin/dspex-node", __DIR__)

  test "three bin/dspex-node --profile production nodes form a three-replica strong store by themselves" do
    suffix = System.unique_integer([:positive])
    names = for i <- 1..3, do: "prod#{i}_#{suffix}"
    cookie_file = Path.join(System.tmp_dir!(), "dspex_cookie_#{suffix}")
    File.write!(cookie_file, Atom.to_string(:erlang.get_cookie()))
    File.chmod!(cookie_file, 0o600)

    ports =
      for name <- names do
        Port.open({:spawn_executable, @launcher}, [
          :binary,
          :exit_status,
          :stderr_to_stdout,
          env: [{~c"MIX_ENV", ~c"dev"}],
          args:
            ["--name", name, "--cookie-file", cookie_file, "--profile", "production"] ++
              ["--discovery", "epmd", "--hosts", "127.0.0.1"]
        ])
      end

    os_pids = Enum.map(ports, &elem(Port.info(&1, :os_pid), 1))

    on_exit(fn ->
      Enum.each(os_pids, &PeerNode.signal(&1, "KILL"))
      File.rm(cookie_file)
    end)

    nodes = Enum.map(names, &:"#{&1}@127.0.0.1")
    [first, second, third] = nodes
    PeerNode.eventually(fn -> Node.connect(first) end, 60_000)

    # no step of ours: discovery finds the nodes, the ConsistencyManager forms the group
    status =
      PeerNode.eventually(
        fn ->
          s = booting_call(first, DSPEx.Clustering.State, :status, [])
          is_map(s) and s.leader != nil and Enum.sort(s.members) == Enum.sort(nodes) and s
        end,
        60_000
      )

    assert status.replication_factor == 3 and status.consistency == :strong
    # production's default consistency is :strong: no option needed
    assert {:ok, v} = :erpc.call(second, DSPEx.Clustering.State, :put, [:greeting, "hello"])
    assert {:ok, "hello", ^v} = :erpc.call(third, DSPEx.Clustering.State, :get, [:greeting])

    for pid <- os_pids, do: :ok = PeerNode.signal(pid, "TERM")
    for port <- ports, do: assert_receive({^port, {:exit_status, _}}, 20_000)
  end

  defp booting_call(node, mod, fun, args) do
    :erpc.call(node, mod, fun, args)
  catch
    kind, _reason when kind in [:error, :exit] -> nil
  end
end
