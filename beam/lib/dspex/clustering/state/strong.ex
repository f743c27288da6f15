defmodule DSPEx.Clustering.State.Strong do
  @moduledoc """
  `consistency: :strong`: the client side of the Ra group that
  `DSPEx.Clustering.State.ConsistencyManager` forms (machine:
  `DSPEx.Clustering.State.StrongMachine`). Any BEAM node can call it, member of the group or not.

  Every call is one Ra command through the log — reads included (linearizable by Raft alone).
  It goes to the last known leader first, then to the other members in turn until the
  deadline (`timeout:`, default `state_timeout_ms`, 5 s). A call carries a unique request id, so
  sending it again after a timeout or a lost leader applies it at most once (see the machine);
  `request_id:` gives that id (any term, unique across the cluster) for a caller that may repeat
  the call through another node.

  Errors: `{:error, :no_quorum}` when, at the deadline, this node cannot reach a majority of
  the group's members (or no group is formed yet); `{:error, :timeout}` when it can but no
  command committed in time (an election under way, a frozen leader). After either, a
  write may or may not have been applied — as with any consensus store — but never twice.
  """

  alias DSPEx.Clustering.Config
  alias DSPEx.Clustering.State.StrongMachine

  @system :dspex_state
  @cluster :dspex_state
  @table :dspex_state_strong
  @attempt_ms 1_000

  @doc "The Ra system (own data directory, WAL) the strong state runs in."
  @spec system() :: atom()
  def system, do: @system

  @doc "The Ra cluster name; also the registered name of each member's Ra server."
  @spec cluster_name() :: atom()
  def cluster_name, do: @cluster

  @doc "The Ra server id of the member on `node`."
  @spec server_id(node()) :: {atom(), node()}
  def server_id(node), do: {@cluster, node}

  @doc "The ETS table (owned by the ConsistencyManager) that caches members and leader."
  @spec table() :: atom()
  def table, do: @table

  @spec put(term(), term(), keyword()) :: {:ok, pos_integer()} | {:error, term()}
  def put(key, value, opts), do: command({:put, key, value}, opts)

  @spec get(term(), keyword()) :: {:ok, term(), pos_integer()} | {:error, term()}
  def get(key, opts), do: command({:get, key}, opts)

  @spec cas(term(), pos_integer() | :none, term(), keyword()) ::
          {:ok, pos_integer()} | {:error, term()}
  def cas(key, expected, value, opts), do: command({:cas, key, expected, value}, opts)

  @spec delete(term(), keyword()) :: :ok | {:error, term()}
  def delete(key, opts), do: command({:delete, key}, opts)

  @doc "The members (server ids) and leader this node knows of: `{members, leader | nil}`."
  @spec known() :: {[{atom(), node()}], {atom(), node()} | nil}
  def known do
    members =
      case :ets.whereis(@table) do
        :undefined -> []
        _ -> lookup(:members, [])
      end

    {members, if(members == [], do: nil, else: lookup(:leader, nil))}
  end

  defp lookup(key, default) do
    case :ets.lookup(@table, key) do
      [{^key, value}] -> value
      [] -> default
    end
  end

  defp command(op, opts) do
    timeout = Keyword.get_lazy(opts, :timeout, fn -> Config.get(:state_timeout_ms) end)
    deadline = now() + timeout
    # a caller that may send the same call again through another node (the Python client after
    # a noconnection) gives its own cluster-wide unique id, so the retry is applied at most once
    attempt({:req, Keyword.get_lazy(opts, :request_id, &make_ref/0), op}, deadline, 0)
  end

  defp attempt(cmd, deadline, n) do
    remaining = deadline - now()

    case {known(), remaining} do
      {_, remaining} when remaining <= 0 ->
        {:error, give_up_reason()}

      {{[], _}, _} ->
        Process.sleep(min(50, remaining))
        attempt(cmd, deadline, n)

      {{members, leader}, _} ->
        server = pick(members, leader, n)

        case :ra.process_command(server, cmd, min(remaining, @attempt_ms)) do
          {:ok, reply, _leader} ->
            reply

          {:timeout, _} ->
            attempt(cmd, deadline, n + 1)

          {:error, _reason} ->
            # noproc, nodedown, shutdown: not delivered; do not spin on a dead member
            Process.sleep(min(20, max(remaining, 0)))
            attempt(cmd, deadline, n + 1)
        end
    end
  end

  # the leader first, then round-robin over the members
  defp pick(_members, leader, 0) when leader != nil, do: leader
  defp pick(members, _leader, n), do: Enum.at(members, rem(n, length(members)))

  defp give_up_reason do
    case known() do
      {[], _} ->
        :no_quorum

      {members, _} ->
        reachable = Enum.count(members, fn {_, node} -> reachable?(node) end)
        if reachable * 2 > length(members), do: :timeout, else: :no_quorum
    end
  end

  defp reachable?(node) when node == node(), do: true

  # connected, and not suspected by the phi detector (which notices a cut link or a frozen node
  # in about a second, long before the connection's tick timeout); asked with a short timeout
  defp reachable?(node) do
    node in Node.list() and
      try do
        %{members: members} = GenServer.call(:dspex_membership, :state, 500)
        match?(%{^node => %{status: :up}}, members)
      catch
        :exit, _ -> true
      end
  end

  @doc "The value of `key` as this node's member last applied it (no consistency guarantee)."
  @spec local_get(term()) :: {:ok, term(), pos_integer()} | {:error, term()}
  def local_get(key) do
    case :ra.local_query(server_id(node()), &StrongMachine.lookup(&1, key), 1_000) do
      {:ok, {_index_term, reply}, _leader} -> reply
      {:timeout, _} -> {:error, :timeout}
      {:error, reason} -> {:error, reason}
    end
  end

  defp now, do: System.monotonic_time(:millisecond)
end
