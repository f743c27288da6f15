defmodule DSPEx.Clustering.Vitals do
  @moduledoc """
  Measurements of this node, shared by `HealthSensor` and `LoadReporter`. Scheduler
  utilisation needs two samples (`scheduler_sample/0` now and at the next report); `os_mon`
  figures (`cpu_sup`, `memsup`) are included only when os_mon runs — its `cpu_sup.util/0`
  is relative to the previous call by the same process, so each agent keeps its own baseline.
  """

  @doc "A scheduler wall-time sample (enables the flag on first use)."
  @spec scheduler_sample() :: term()
  def scheduler_sample, do: :scheduler.sample_all()

  @doc "Total and per-scheduler utilisation (0..1) between two samples."
  @spec scheduler_utilization(term(), term()) :: %{total: float(), per_scheduler: [float()]}
  def scheduler_utilization(previous, current) do
    util = :scheduler.utilization(previous, current)

    total =
      Enum.find_value(util, 0.0, fn
        {:total, u, _} -> u
        _ -> nil
      end)

    per = for {:normal, _id, u, _} <- util, do: Float.round(u * 1.0, 4)
    %{total: Float.round(total * 1.0, 4), per_scheduler: per}
  end

  @doc "The process with the longest message queue: `%{pid, name, length}`."
  @spec longest_message_queue() :: map()
  def longest_message_queue do
    {pid, len} =
      Enum.reduce(Process.list(), {nil, -1}, fn pid, {_, best} = acc ->
        case Process.info(pid, :message_queue_len) do
          {:message_queue_len, n} when n > best -> {pid, n}
          _ -> acc
        end
      end)

    name =
      case pid && Process.info(pid, :registered_name) do
        {:registered_name, name} when is_atom(name) -> name
        _ -> nil
      end

    %{pid: pid, name: name, length: max(len, 0)}
  end

  @doc "Busy CPU share (0..1) from os_mon since this process's last call, or nil."
  @spec os_cpu() :: float() | nil
  def os_cpu do
    if Process.whereis(:cpu_sup) do
      case :cpu_sup.util() do
        u when is_number(u) -> Float.round(u / 100, 4)
        _ -> nil
      end
    end
  end

  @doc "System memory from os_mon in bytes (`total`, `available`, `free`), or nil."
  @spec os_memory() :: map() | nil
  def os_memory do
    if Process.whereis(:memsup) do
      data = :memsup.get_system_memory_data()
      total = data[:total_memory] || data[:system_total_memory]
      free = data[:free_memory]
      available = data[:available_memory] || free

      if total && available,
        do: %{
          total: total,
          available: available,
          free: free || available,
          used_fraction: Float.round(1 - available / total, 4)
        }
    end
  end

  @doc "Run queue lengths: total, CPU schedulers and IO (dirty) schedulers."
  @spec run_queue() :: map()
  def run_queue,
    do: %{
      total: :erlang.statistics(:total_run_queue_lengths_all),
      cpu: :erlang.statistics(:total_run_queue_lengths)
    }
end
