defmodule DSPEx.Clustering.State.StrongMachine do
  @moduledoc """
  The Ra state machine (`:ra_machine`) behind `consistency: :strong`: a keyspace of
  `key => {value, version}` replicated by Raft.

  * **Versions** are the Raft log index of the write that produced the value: unique and
    increasing per key, never reused — a key deleted and written again gets a higher version,
    so a `cas` holding a version read before the delete fails (no ABA).
  * **Commands** are `{:req, request_id, op}` with `op` one of `{:put, k, v}`,
    `{:cas, k, expected, v}` (`expected` a version or `:none` = absent), `{:delete, k}`,
    `{:get, k}`. Reads go through the log too: the reply comes from the state at the read's
    log index, which is linearizable by Raft alone, without relying on leases or clocks.
  * **Retries are applied once**: the client tags every call with a unique `request_id` and may
    send it again (another member, after a timeout); a request id already applied answers its
    first reply. The memory of ids is bounded: two generations of `dedup_window` ids each.
  * **Snapshots**: every `snapshot_every` applied commands the machine returns a
    `release_cursor` effect (Ra then writes a snapshot and truncates the log) and a `mod_call`
    effect that publishes `cluster.consistency.snapshot` on the leader's node.
  """
  @behaviour :ra_machine

  @type version :: pos_integer()
  @type op ::
          {:put, term(), term()}
          | {:cas, term(), version() | :none, term()}
          | {:delete, term()}
          | {:get, term()}

  @type t :: %{
          kv: %{optional(term()) => {term(), version()}},
          applied: non_neg_integer(),
          recent: map(),
          older: map(),
          snapshot_every: pos_integer(),
          dedup_window: pos_integer()
        }

  @impl :ra_machine
  def init(config) do
    %{
      kv: %{},
      applied: 0,
      recent: %{},
      older: %{},
      snapshot_every: Map.get(config, :snapshot_every, 10_000),
      dedup_window: Map.get(config, :dedup_window, 50_000)
    }
  end

  @impl :ra_machine
  # reads change nothing: no need to remember them
  def apply(%{index: index}, {:req, _id, {:get, _} = op}, state) do
    {state, reply} = run(op, index, state)
    finish(index, state, reply)
  end

  def apply(%{index: index}, {:req, id, op}, state) do
    case dedup(state, id) do
      {:ok, reply} ->
        finish(index, state, reply)

      :error ->
        {state, reply} = run(op, index, state)
        finish(index, remember(state, id, reply), reply)
    end
  end

  # A bare op (the benchmark's reference path, `:ra.process_command` without our client).
  def apply(%{index: index}, {op_name, _} = op, state) when op_name in [:get, :delete] do
    {state, reply} = run(op, index, state)
    finish(index, state, reply)
  end

  def apply(%{index: index}, op, state) when is_tuple(op) and elem(op, 0) in [:put, :cas] do
    {state, reply} = run(op, index, state)
    finish(index, state, reply)
  end

  def apply(_meta, _other, state), do: {state, {:error, :unknown_command}}

  @doc "The value and version of `key` in a machine state (for local and leader queries)."
  @spec lookup(t(), term()) :: {:ok, term(), version()} | {:error, :not_found}
  def lookup(%{kv: kv}, key) do
    case kv do
      %{^key => {value, version}} -> {:ok, value, version}
      _ -> {:error, :not_found}
    end
  end

  defp run({:put, key, value}, index, state),
    do: {put_in(state.kv[key], {value, index}), {:ok, index}}

  defp run({:cas, key, expected, value}, index, state) do
    current =
      case state.kv do
        %{^key => {_, version}} -> version
        _ -> :none
      end

    if current == expected,
      do: {put_in(state.kv[key], {value, index}), {:ok, index}},
      else: {state, {:error, {:version_mismatch, current}}}
  end

  defp run({:delete, key}, _index, state), do: {%{state | kv: Map.delete(state.kv, key)}, :ok}
  defp run({:get, key}, _index, state), do: {state, lookup(state, key)}
  defp run(_op, _index, state), do: {state, {:error, :unknown_command}}

  defp dedup(%{recent: recent, older: older}, id) do
    case recent do
      %{^id => reply} -> {:ok, reply}
      _ -> Map.fetch(older, id)
    end
  end

  defp remember(%{recent: recent, dedup_window: window} = state, id, reply) do
    if map_size(recent) >= window,
      do: %{state | older: recent, recent: %{id => reply}},
      else: %{state | recent: Map.put(recent, id, reply)}
  end

  defp finish(index, state, reply) do
    state = %{state | applied: state.applied + 1}

    if rem(state.applied, state.snapshot_every) == 0 do
      effects = [
        {:release_cursor, index, state},
        {:mod_call, DSPEx.Clustering.State.ConsistencyManager, :snapshot_taken,
         [index, map_size(state.kv)]}
      ]

      {state, reply, effects}
    else
      {state, reply}
    end
  end
end
