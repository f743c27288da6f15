defmodule DSPEx.Clustering.Degrader do
  @moduledoc """
  Fault injection for demos and tests: makes this node sick the way real nodes get sick —
  CPU hogs that keep its schedulers busy and a steadily growing memory footprint (a leak).

      :erpc.call(node, DSPEx.Clustering.Degrader, :start, [[hogs: 2, leak_mb_per_s: 8]])
      :erpc.call(node, DSPEx.Clustering.Degrader, :stop, [])

  The processes are not linked to the caller; `stop/0` ends them and frees the memory.
  """

  @name :dspex_degrader

  @doc """
  Starts `hogs` processes, each busy `duty` of the time (1.0: always; in 10 ms slices), and a
  leak of `leak_mb_per_s` (in 10 steps a second).
  """
  @spec start(keyword()) :: {:ok, pid()} | {:error, :already_started}
  def start(opts \\ []) do
    if Process.whereis(@name) do
      {:error, :already_started}
    else
      hogs = Keyword.get(opts, :hogs, 2)
      duty = Keyword.get(opts, :duty, 1.0)
      mb = Keyword.get(opts, :leak_mb_per_s, 8)

      pid =
        spawn(fn ->
          Process.flag(:trap_exit, true)
          for _ <- 1..hogs//1, do: spawn_link(fn -> hog(duty) end)
          leak([], round(mb * 1_048_576 / 10))
        end)

      Process.register(pid, @name)
      {:ok, pid}
    end
  end

  @doc "Stops the hogs and the leak."
  @spec stop() :: :ok
  def stop do
    if pid = Process.whereis(@name), do: Process.exit(pid, :kill)
    :ok
  end

  defp hog(duty) when duty >= 1.0 do
    DSPEx.Clustering.Workload.spin(100_000, 1)
    hog(duty)
  end

  defp hog(duty) do
    busy_until = System.monotonic_time(:millisecond) + 10
    burn_until(busy_until)
    Process.sleep(round(10 * (1 - duty) / max(duty, 0.01)))
    hog(duty)
  end

  defp burn_until(t) do
    if System.monotonic_time(:millisecond) < t do
      DSPEx.Clustering.Workload.spin(2_000, 1)
      burn_until(t)
    end
  end

  # held binaries: the node's footprint grows step by step
  defp leak(held, bytes) do
    receive do
      {:EXIT, _, _} -> :ok
    after
      100 -> leak([:binary.copy(<<1>>, bytes) | held], bytes)
    end
  end
end
