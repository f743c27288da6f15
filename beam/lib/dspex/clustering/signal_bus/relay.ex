defmodule DSPEx.Clustering.SignalBus.Relay do
  @moduledoc """
  Holds subscriptions of processes that cannot join this node's `:pg` scope themselves
  (pids on other nodes, Python nodes' pids in particular). Registered as
  `:dspex_signal_relay`; the relay joins each pattern's group once and forwards each
  cluster-scoped signal once to every foreign pid whose patterns match.

      GenServer.call({:dspex_signal_relay, :"a@127.0.0.1"}, {:subscribe, "cluster.**", pid})

  A process that cannot reach the pg scope can also publish through the relay:
  `GenServer.call(relay, {:publish, signal})` replies with `SignalBus.publish/1`'s result,
  `GenServer.cast(relay, {:publish, signal})` does the same without a reply.
  """
  use GenServer

  alias DSPEx.Clustering.Names
  alias DSPEx.Clustering.SignalBus.Pattern

  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(_opts), do: GenServer.start_link(__MODULE__, :ok, name: Names.signal_relay())

  @impl true
  def init(:ok), do: {:ok, %{subs: %{}, monitors: %{}}}

  @impl true
  def handle_call({:subscribe, pattern, pid}, _from, state) when is_pid(pid) do
    if Pattern.valid?(pattern) do
      {:reply, :ok, add(state, pattern, pid)}
    else
      {:reply, {:error, {:invalid_pattern, pattern}}, state}
    end
  end

  def handle_call({:unsubscribe, pattern, pid}, _from, state),
    do: {:reply, :ok, remove(state, pattern, pid)}

  def handle_call(:subscriptions, _from, state), do: {:reply, state.subs, state}

  def handle_call({:publish, signal}, _from, state),
    do: {:reply, DSPEx.Clustering.SignalBus.publish(signal), state}

  @impl true
  def handle_cast({:publish, signal}, state) do
    DSPEx.Clustering.SignalBus.publish(signal)
    {:noreply, state}
  end

  @impl true
  def handle_info({:signal, %{type: type, scope: :cluster}} = message, state) do
    for {pid, patterns} <- state.subs,
        Enum.any?(patterns, &Pattern.match?(&1, type)),
        do: :erlang.send(pid, message, [:noconnect])

    {:noreply, state}
  end

  def handle_info({:signal, _local_scope}, state), do: {:noreply, state}

  def handle_info({:DOWN, _ref, :process, pid, _}, state) do
    patterns = Map.get(state.subs, pid, MapSet.new())
    {:noreply, Enum.reduce(patterns, state, &remove(&2, &1, pid))}
  end

  defp add(state, pattern, pid) do
    unless pattern_used?(state, pattern), do: :pg.join(Names.signal_bus(), pattern, self())

    monitors = Map.put_new_lazy(state.monitors, pid, fn -> Process.monitor(pid) end)
    subs = Map.update(state.subs, pid, MapSet.new([pattern]), &MapSet.put(&1, pattern))
    %{state | subs: subs, monitors: monitors}
  end

  defp remove(state, pattern, pid) do
    case Map.fetch(state.subs, pid) do
      {:ok, patterns} ->
        left = MapSet.delete(patterns, pattern)

        state =
          if MapSet.size(left) == 0 do
            Process.demonitor(Map.fetch!(state.monitors, pid), [:flush])

            %{
              state
              | subs: Map.delete(state.subs, pid),
                monitors: Map.delete(state.monitors, pid)
            }
          else
            %{state | subs: Map.put(state.subs, pid, left)}
          end

        unless pattern_used?(state, pattern), do: :pg.leave(Names.signal_bus(), pattern, self())
        state

      :error ->
        state
    end
  end

  defp pattern_used?(state, pattern),
    do: Enum.any?(state.subs, fn {_pid, patterns} -> MapSet.member?(patterns, pattern) end)
end
