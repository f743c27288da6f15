defmodule DSPEx.Clustering.LoadReporter do
  @moduledoc """
  Publishes `cluster.load.report` every `load_interval_ms` with `cpu` (busy share 0..1: OS
  CPU from os_mon, else scheduler utilisation), `memory` (used share of system memory, else
  of the VM's own total against the largest seen), `free_memory_mb`, `agents` (agents
  running here), `run_queue`, `capabilities` (this node's, from config) and `kind: :beam`.
  The placement front reads these reports from every node.
  """
  use DSPEx.Clustering.Agent, name: :dspex_load_reporter

  alias DSPEx.Clustering.{Agent, Config, Vitals}

  @impl true
  def init_agent(opts) do
    Vitals.os_cpu()
    interval = Keyword.get_lazy(opts, :interval_ms, fn -> Config.get(:load_interval_ms) end)
    {:ok, %{interval: interval, sample: Vitals.scheduler_sample()}}
  end

  @impl true
  def sensors(state), do: [load: {:every, state.interval}]

  @impl true
  def sense(:load, state) do
    sample = Vitals.scheduler_sample()
    schedulers = Vitals.scheduler_utilization(state.sample, sample).total
    os_memory = Vitals.os_memory()

    load = %{
      cpu: Vitals.os_cpu() || schedulers,
      scheduler_utilization: schedulers,
      memory: if(os_memory, do: os_memory.used_fraction, else: nil),
      free_memory_mb: if(os_memory, do: div(os_memory.available, 1_048_576), else: nil),
      vm_memory_mb: div(:erlang.memory(:total), 1_048_576),
      agents: Agent.count(),
      run_queue: :erlang.statistics(:total_run_queue_lengths),
      capabilities: Config.get(:capabilities),
      kind: :beam,
      interval_ms: state.interval
    }

    {:ok, [Signal.load_report(load, source: "load_reporter")], %{state | sample: sample}}
  end
end
