defmodule DSPEx.Test.Forwarder do
  @moduledoc "A subscriber that forwards every signal it gets to `target` as `{:forwarded, node, signal}`."

  @doc "Spawns (on this node) a process subscribed to `patterns`; returns its pid."
  @spec start([String.t()], pid()) :: pid()
  def start(patterns, target) do
    parent = self()

    pid =
      spawn(fn ->
        Enum.each(patterns, &(:ok = DSPEx.Clustering.SignalBus.subscribe(&1)))
        send(parent, {:subscribed, self()})
        loop(target)
      end)

    receive do
      {:subscribed, ^pid} -> pid
    after
      5_000 -> raise "forwarder did not subscribe"
    end
  end

  defp loop(target) do
    receive do
      {:signal, signal} -> send(target, {:forwarded, node(), signal})
    end

    loop(target)
  end
end
