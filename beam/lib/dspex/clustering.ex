defmodule DSPEx.Clustering do
  @moduledoc """
  The public API of the BEAM half of DSPEx Cluster.

      DSPEx.Clustering.members()
      #=> [%{node: :"a@127.0.0.1", kind: :beam, status: :up, phi: 0.0, local: true, …}, …]

      :ok = DSPEx.Clustering.subscribe("cluster.node.*")
      {:ok, _n} = DSPEx.Clustering.publish(DSPEx.Clustering.Signal.node_up(node(), :beam))
      {:ok, node} = DSPEx.Clustering.place({MyAgent, []}, min_memory_mb: 512, kinds: [:beam])
  """

  alias DSPEx.Clustering.{LoadBalancer, Membership, Signal, SignalBus}

  @doc """
  Every member this node knows, itself included: maps with `node`, `kind` (`:beam | :python`),
  `status` (`:up | :suspect | :down`), `phi` (the failure detector's current value), and
  `node_type`, `rtt_ms`, `since` (system time, ms, of the last status change), `local`,
  `down_reason`.
  """
  @spec members() :: [Membership.member()]
  def members, do: Membership.members()

  @doc "Subscribes `pid` to signals whose type matches `pattern` (see `SignalBus`)."
  @spec subscribe(String.t(), pid()) :: :ok | {:error, term()}
  def subscribe(pattern, pid \\ self()), do: SignalBus.subscribe(pattern, pid)

  @doc "Removes a subscription."
  @spec unsubscribe(String.t(), pid()) :: :ok
  def unsubscribe(pattern, pid \\ self()), do: SignalBus.unsubscribe(pattern, pid)

  @doc "Publishes a signal; returns how many subscribers it was sent to."
  @spec publish(Signal.t()) :: {:ok, non_neg_integer()} | {:error, Signal.error()}
  def publish(signal), do: SignalBus.publish(signal)

  @doc """
  Chooses a node for `agent_spec`: `{:ok, node}` or `{:error, :no_suitable_nodes}`.
  Constraints filter first — `min_memory_mb`, `capabilities` (all required), `exclude_nodes`,
  `nodes`, `kinds`, `max_cpu`, `max_agents` — then a weighted score of CPU, memory, agent
  count, network latency and `prefer_capabilities` decides (see `PlacementScore`);
  configured advisors are asked first within `placement_budget_ms` (see `LoadBalancer`).
  """
  @spec place(term(), keyword() | map()) :: {:ok, node()} | {:error, :no_suitable_nodes}
  def place(agent_spec, constraints \\ []), do: LoadBalancer.place(agent_spec, constraints)
end
