defmodule DSPEx.Clustering.Names do
  @moduledoc """
  Registered names other nodes rely on (the BEAM half of DESIGN.md "Names both sides rely on").
  """

  @doc "The `:pg` scope of the signal bus (also the scope process's registered name)."
  @spec signal_bus() :: atom()
  def signal_bus, do: :dspex_signal_bus

  @doc "The relay that holds subscriptions of processes on other nodes."
  @spec signal_relay() :: atom()
  def signal_relay, do: :dspex_signal_relay

  @doc "The Membership + FailureDetector agent."
  @spec membership() :: atom()
  def membership, do: :dspex_membership

  @doc "The placement front (BEAM side)."
  @spec load_balancer_front() :: atom()
  def load_balancer_front, do: :dspex_placement

  @doc "The `:pg` group (in the signal-bus scope) of the eventual-state replicas of `table`."
  @spec state_replica_group(atom()) :: {:dspex_state_eventual, atom()}
  def state_replica_group(table), do: {:dspex_state_eventual, table}

  @doc "Names registered on every Python agent node."
  @spec python_agents() :: [atom()]
  def python_agents,
    do: [
      :dspex_load_balancer,
      :dspex_health_monitor,
      :dspex_failure_predictor,
      :dspex_performance
    ]
end
