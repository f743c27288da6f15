defmodule DSPEx.Clustering.HealthSensor do
  @moduledoc """
  Publishes `cluster.health.data` every `health_interval_ms`: scheduler utilisation (total
  and per scheduler), run queues, memory by kind (`:erlang.memory/0`), process count,
  the longest message queue, reductions (total and since the last report) and, where
  os_mon runs, OS CPU (busy share since the last report) and system memory.
  """
  use DSPEx.Clustering.Agent, name: :dspex_health_sensor

  alias DSPEx.Clustering.{Config, Vitals}

  @impl true
  def init_agent(opts) do
    Vitals.os_cpu()
    interval = Keyword.get_lazy(opts, :interval_ms, fn -> Config.get(:health_interval_ms) end)
    {:ok, %{interval: interval, sample: Vitals.scheduler_sample()}}
  end

  @impl true
  def sensors(state), do: [health: {:every, state.interval}]

  @impl true
  def sense(:health, state) do
    sample = Vitals.scheduler_sample()
    {reductions, since_last} = :erlang.statistics(:reductions)

    vitals = %{
      scheduler_utilization: Vitals.scheduler_utilization(state.sample, sample),
      run_queue: Vitals.run_queue(),
      memory: Map.new(:erlang.memory()),
      process_count: :erlang.system_info(:process_count),
      longest_message_queue: Vitals.longest_message_queue(),
      reductions: %{total: reductions, since_last_call: since_last},
      os_cpu: Vitals.os_cpu(),
      os_memory: Vitals.os_memory(),
      interval_ms: state.interval
    }

    {:ok, [Signal.health_data(vitals, source: "health_sensor")], %{state | sample: sample}}
  end
end
