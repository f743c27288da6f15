defmodule DSPEx.Clustering.Migration do
  @moduledoc """
  Live migration of BEAM agents (and Cognitive Variables) between BEAM nodes, with their state.

      {:ok, _pid} = Migration.start_agent(MyAgent, [id: {:agent, "counter-1"}], :"b@host")
      Agent.call({:agent, "counter-1"}, :get)            # from any node, wherever it runs
      {:ok, %{pause_ms: ms, state_bytes: b}} = Migration.migrate({:agent, "counter-1"}, :"c@host")
      {:ok, _} = Migration.migrate({:variable, "lb.exploration"}, :"c@host")

  `migrate/3` pauses the agent (messages arriving meanwhile wait, in order), checkpoints its
  state (`checkpoint/1` of its module; above 64 KiB compressed, when a 64 KiB sample of it
  shrinks by a fifth), transfers it and restores it on the target (`restore/2`), validates the new instance (a health check), switches the
  cluster-wide id to it, forwards the waiting messages and, for a grace period (`grace_ms`,
  default 500), any straggler that still reaches the old instance; then the old one stops.
  Each step publishes a signal: `cluster.migration.started | checkpointed | transferred |
  completed | rolled_back` (data: `agent`, `source`, `target`, and figures).

  If the target is unreachable, dies, refuses, or fails to restore or validate before the
  switch, the agent simply carries on where it was (`{:error, reason}`), with every message.
  If the target dies during the grace period, the id is switched back and the source replays,
  on its checkpoint, every message it had forwarded; messages that senders had sent straight to
  the dead target are lost with it, except `Agent.call/3`s, which are resent (numbered, so
  never applied twice). Options: `timeout` (per step, default 5 s), `grace_ms`.

  The new instance starts its own sensor timers and, for an agent with signal routes, its own
  subscriptions when it is restored: the old instance's timer messages are not forwarded, nor
  (for such an agent) its signals — a signal published while the agent moves reaches it at most
  once, as the bus itself promises.
  """

  alias DSPEx.Clustering.Migration.{AgentSupervisor, Registry}

  @typedoc "`steps_ms`: checkpoint, transfer_restore, validate, switch, forward."
  @type info :: %{
          pause_ms: float(),
          state_bytes: non_neg_integer(),
          node: node(),
          pid: pid(),
          steps_ms: map(),
          forwarded: non_neg_integer()
        }

  @doc "Moves agent `id` to `target_node` with its state."
  @spec migrate(Registry.id(), node(), keyword()) :: {:ok, info()} | {:error, term()}
  def migrate(id, target_node, opts \\ []) do
    timeout = Keyword.get(opts, :timeout, 5_000)

    with {:ok, pid} <- locate(id),
         :ok <- reachable(target_node, pid) do
      try do
        GenServer.call(pid, {:"$dspex_migrate", target_node, opts}, 4 * timeout)
      catch
        :exit, reason -> {:error, {:source_unavailable, reason}}
      end
    end
  end

  @doc """
  Starts agent `module` with a cluster-wide id (`opts[:id]`, required) on `node` (default:
  here), under that node's `AgentSupervisor` — never linked to the caller, so it may be called
  through `:erpc` from anywhere.
  """
  @spec start_agent(module(), keyword(), node()) :: {:ok, pid()} | {:error, term()}
  def start_agent(module, opts, node \\ node()) do
    cond do
      not Keyword.has_key?(opts, :id) ->
        {:error, :id_required}

      node == node() ->
        AgentSupervisor.start_child(module, opts)

      true ->
        try do
          :erpc.call(node, AgentSupervisor, :start_child, [module, opts], 10_000)
        catch
          :error, {:erpc, reason} -> {:error, {:unreachable, node, reason}}
        end
    end
  end

  @doc "The node agent `id` runs on now, or nil."
  @spec where(Registry.id()) :: node() | nil
  def where(id) do
    case Registry.whereis(id) do
      nil -> nil
      pid -> node(pid)
    end
  end

  @doc false
  # The target side (called by the source through :erpc): restores the checkpoint into a new,
  # not yet registered instance under this node's AgentSupervisor.
  @spec accept(binary()) :: {:ok, pid()} | {:error, term()}
  def accept(blob) when is_binary(blob) do
    %{module: module, checkpoint: checkpoint, seq: seq, opts: opts} = :erlang.binary_to_term(blob)

    opts = Keyword.merge(opts, restore_checkpoint: checkpoint, restore_seq: seq)

    case AgentSupervisor.start_child(module, opts) do
      {:ok, pid} -> {:ok, pid}
      {:error, reason} -> {:error, reason}
    end
  end

  defp locate(id) do
    case Registry.whereis(id) do
      nil -> {:error, :not_found}
      pid -> {:ok, pid}
    end
  end

  defp reachable(target, pid) do
    cond do
      node(pid) == target -> {:error, :already_there}
      target == node() or target in Node.list() -> :ok
      Node.connect(target) == true -> :ok
      true -> {:error, {:unreachable, target}}
    end
  end
end
