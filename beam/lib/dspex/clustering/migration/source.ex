defmodule DSPEx.Clustering.Migration.Source do
  @moduledoc false
  # The source side of a migration, run inside the agent process itself (its handle_call of
  # the migrate request), so the agent is paused for the whole protocol and the messages that
  # arrive meanwhile wait in its mailbox, in order — that mailbox is the buffer.
  #
  #   checkpoint -> transfer + restore (target instance, not yet registered) -> validate
  #   (it answers a health check) -> switch the id -> forward the mailbox -> reply -> forward
  #   stragglers for a grace period -> stop.
  #
  # Any failure before the switch: the target instance is killed and the agent carries on
  # here from its untouched state with its mailbox (nothing was consumed). The target dying
  # during the grace period: the id is switched back and every message forwarded so far is
  # replayed here, in order, on the pre-migration state (the checkpoint).

  alias DSPEx.Clustering.{Signal, SignalBus}
  alias DSPEx.Clustering.Migration.Registry

  # Above this external size the checkpoint is compressed (zlib level 1: fast).
  @compress_above 64 * 1024

  @spec run(tuple(), node(), keyword(), GenServer.from()) :: :moved | {:resume, [term()]}
  def run({module, state, meta}, target, opts, from) do
    t0 = System.monotonic_time(:microsecond)
    Process.put(:"$dspex_routes?", module.routes() != [])
    id = meta.id
    timeout = Keyword.get(opts, :timeout, 5_000)
    info = %{agent: id, source: node(), target: target}
    signal("started", info)

    with :ok <- check(id, target),
         {:ok, blob} <- checkpoint(module, state, meta),
         t_checkpoint = System.monotonic_time(:microsecond),
         _ = signal("checkpointed", Map.put(info, :state_bytes, byte_size(blob))),
         {:ok, pid} <- transfer(target, blob, timeout),
         t_transfer = System.monotonic_time(:microsecond),
         _ = signal("transferred", Map.put(info, :pid, pid)),
         mref = Process.monitor(pid),
         :ok <- validate(pid, mref, timeout) do
      t_validate = System.monotonic_time(:microsecond)
      :yes = Registry.switch(id, pid)
      t_switch = System.monotonic_time(:microsecond)
      forwarded = forward_pending(pid, mref, [])
      t_end = System.monotonic_time(:microsecond)

      steps = %{
        checkpoint: (t_checkpoint - t0) / 1000,
        transfer_restore: (t_transfer - t_checkpoint) / 1000,
        validate: (t_validate - t_transfer) / 1000,
        switch: (t_switch - t_validate) / 1000,
        forward: (t_end - t_switch) / 1000
      }

      result = %{
        pause_ms: (t_end - t0) / 1000,
        state_bytes: byte_size(blob),
        node: target,
        pid: pid,
        steps_ms: steps,
        forwarded: length(forwarded)
      }

      GenServer.reply(from, {:ok, result})
      signal("completed", Map.merge(info, Map.delete(result, :pid)))
      grace(id, pid, mref, forwarded, opts, info)
    else
      {:error, reason, pid} ->
        Process.exit(pid, :kill)
        rolled_back(from, info, reason)

      {:error, reason} ->
        rolled_back(from, info, reason)
    end
  end

  defp check(nil, _target), do: {:error, :no_cluster_id}
  defp check(_id, target) when target == node(), do: {:error, :same_node}
  defp check(_id, _target), do: :ok

  defp checkpoint(module, state, meta) do
    opts = module.migrated_opts(Keyword.drop(meta.opts, [:restore_checkpoint, :restore_seq]))

    term = %{
      module: module,
      checkpoint: module.checkpoint(state),
      seq: meta.seq,
      opts: opts
    }

    plain = :erlang.term_to_binary(term)
    {:ok, if(compressible?(plain), do: :erlang.term_to_binary(term, compressed: 1), else: plain)}
  catch
    kind, reason -> {:error, {:checkpoint_failed, {kind, reason}}}
  end

  # Large and compressible: a 64 KiB sample must shrink by a fifth (random bytes do not, and
  # zlib would then cost ~40 ms a MiB for nothing).
  defp compressible?(plain) when byte_size(plain) <= @compress_above, do: false

  defp compressible?(plain) do
    sample = binary_part(plain, div(byte_size(plain), 2) - 32_768, 65_536)
    byte_size(:zlib.compress(sample)) < 0.8 * 65_536
  end

  defp transfer(target, blob, timeout) do
    case :erpc.call(target, DSPEx.Clustering.Migration, :accept, [blob], timeout) do
      {:ok, pid} when is_pid(pid) -> {:ok, pid}
      {:error, reason} -> {:error, {:restore_failed, reason}}
      other -> {:error, {:restore_failed, other}}
    end
  catch
    :error, {:erpc, reason} -> {:error, {:transfer_failed, reason}}
    kind, reason -> {:error, {:transfer_failed, {kind, reason}}}
  end

  defp validate(pid, mref, timeout) do
    case GenServer.call(pid, :"$dspex_health", timeout) do
      :ok ->
        :ok

      other ->
        Process.demonitor(mref, [:flush])
        {:error, {:validate_failed, other}, pid}
    end
  catch
    :exit, reason ->
      Process.demonitor(mref, [:flush])
      {:error, {:validate_failed, reason}, pid}
  end

  # Everything already in the mailbox goes to the target, in order (our monitor's DOWN aside),
  # except what the target has of its own since its init: its sensor timers (forwarding ours
  # would double every sensor's rate on each move) and, for an agent with signal routes, the
  # signals (it subscribed itself; forwarding would deliver them twice).
  defp forward_pending(pid, mref, acc) do
    receive do
      {:DOWN, ^mref, :process, ^pid, _} = down ->
        # Kept for grace/6 to see.
        Process.put(:"$dspex_migration_down", down)
        acc

      message ->
        forward_pending(pid, mref, forward(pid, message, acc))
    after
      0 -> acc
    end
  end

  defp forward(_pid, {:"$agent_sense", _name, _ms}, acc), do: acc

  defp forward(pid, {:signal, _} = message, acc) do
    if Process.get(:"$dspex_routes?"), do: acc, else: forward_any(pid, message, acc)
  end

  defp forward(pid, message, acc), do: forward_any(pid, message, acc)

  defp forward_any(pid, message, acc) do
    send(pid, message)
    [message | acc]
  end

  defp grace(id, pid, mref, forwarded, opts, info) do
    deadline = System.monotonic_time(:millisecond) + Keyword.get(opts, :grace_ms, 500)

    case Process.delete(:"$dspex_migration_down") do
      nil -> grace_loop(id, pid, mref, forwarded, deadline, info)
      {:DOWN, _, _, _, :normal} -> grace_loop(id, pid, nil, forwarded, deadline, info)
      {:DOWN, _, _, _, reason} -> late_rollback(id, forwarded, reason, info)
    end
  end

  # Stragglers go to wherever the agent is now: it may already have moved on from our target
  # (whose own grace period may be over). Numbered messages find their order there.
  defp current(id, pid) do
    case Registry.whereis(id) do
      nil -> pid
      now -> now
    end
  end

  defp grace_loop(id, pid, mref, forwarded, deadline, info) do
    left = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      # our target moved on and stopped normally: not a failure
      {:DOWN, ^mref, :process, ^pid, :normal} ->
        grace_loop(id, pid, nil, forwarded, deadline, info)

      {:DOWN, ^mref, :process, ^pid, reason} ->
        late_rollback(id, forwarded, reason, info)

      message ->
        grace_loop(id, pid, mref, forward(current(id, pid), message, forwarded), deadline, info)
    after
      left ->
        if mref, do: Process.demonitor(mref, [:flush])
        :moved
    end
  end

  defp late_rollback(id, forwarded, reason, info) do
    Registry.switch(id, self())
    signal("rolled_back", Map.merge(info, %{reason: {:target_down, reason}, after_switch: true}))
    {:resume, Enum.reverse(forwarded)}
  end

  defp rolled_back(from, info, reason) do
    signal("rolled_back", Map.put(info, :reason, reason))
    GenServer.reply(from, {:error, reason})
    {:resume, []}
  end

  defp signal(step, data) do
    SignalBus.publish(Signal.new!("cluster.migration." <> step, data))
  end
end
