defmodule DSPEx.Clustering.SignalBus do
  @moduledoc """
  Cluster-wide publish/subscribe over the `:pg` scope `:dspex_signal_bus` (one scope process
  per BEAM node, started by the application).

  ## Group naming — how any process subscribes
  The `:pg` group name **is the pattern binary** (`"cluster.node.*"`); a subscriber is a
  member of that group. So a process subscribes in one of two ways:

    * **join the pg group** — a local process calls `subscribe/2` (which is `:pg.join/3` in the
      scope); a Python node that speaks the pg protocol joins the group `<<"cluster.node.*">>`
      in scope `dspex_signal_bus` from its own scope process (see the checklist, section 7);
    * **call the relay** — any process anywhere (a Python pid included) is subscribed by
      `GenServer.call({:dspex_signal_relay, beam_node}, {:subscribe, pattern, pid})`
      (`{:unsubscribe, pattern, pid}` to leave). `subscribe/2` with a non-local pid does exactly
      this on the local node. The relay monitors the pid and drops it when it dies.

  Publishing from outside: `GenServer.call({:dspex_signal_relay, beam_node}, {:publish, signal})`
  (or a cast, or `:erpc.call(beam_node, DSPEx.Clustering, :publish, [signal])`); a pg-speaking
  node may also send `{:signal, signal}` to the members itself.

  Use one route per process: a pid subscribed both ways (or through two relays) is two
  subscribers.

  ## Delivery
  `publish/1` validates the signal, takes the union of the members of every group whose
  pattern matches the type (cluster-wide for `scope: :cluster`, this node's only for
  `scope: :local`), removes duplicates, and sends `{:signal, signal}` once to each pid — so a
  subscriber whose patterns overlap still gets the signal once, and no node re-broadcasts.
  Sends never auto-connect (`:noconnect`): pg members live on connected nodes.
  Membership changes propagate asynchronously, as `:pg` does.

      :ok = SignalBus.subscribe("cluster.node.*")
      {:ok, _recipients} = SignalBus.publish(Signal.node_up(node(), :beam))
      receive do {:signal, %{type: "cluster.node.up"}} -> :ok end
  """

  alias DSPEx.Clustering.{Names, Signal, Telemetry}
  alias DSPEx.Clustering.SignalBus.Pattern

  @doc "Publishes `signal`; returns how many subscribers it was sent to."
  @spec publish(Signal.t()) :: {:ok, non_neg_integer()} | {:error, Signal.error()}
  def publish(signal) do
    with :ok <- Signal.validate(signal) do
      recipients = subscribers_for(signal.type, signal.scope)
      message = {:signal, signal}
      Enum.each(recipients, &deliver(&1, message))

      Telemetry.execute([:dspex, :signal, :published], %{recipients: length(recipients)}, %{
        type: signal.type,
        scope: signal.scope
      })

      {:ok, length(recipients)}
    end
  end

  @doc "Subscribes `pid` (default: the caller) to signals whose type matches `pattern`."
  @spec subscribe(String.t(), pid()) :: :ok | {:error, {:invalid_pattern, term()}}
  def subscribe(pattern, pid \\ self()) when is_pid(pid) do
    cond do
      not Pattern.valid?(pattern) ->
        {:error, {:invalid_pattern, pattern}}

      node(pid) == node() ->
        if pid not in :pg.get_local_members(Names.signal_bus(), pattern),
          do: :pg.join(Names.signal_bus(), pattern, pid)

        :ok

      true ->
        GenServer.call(Names.signal_relay(), {:subscribe, pattern, pid})
    end
  end

  @doc "Removes `pid`'s subscription to `pattern` (a no-op when there is none)."
  @spec unsubscribe(String.t(), pid()) :: :ok
  def unsubscribe(pattern, pid \\ self()) when is_pid(pid) do
    if node(pid) == node() do
      if pid in :pg.get_local_members(Names.signal_bus(), pattern),
        do: :pg.leave(Names.signal_bus(), pattern, pid)

      :ok
    else
      GenServer.call(Names.signal_relay(), {:unsubscribe, pattern, pid})
    end
  end

  @doc "The distinct pids a signal of `type` and `scope` would be delivered to."
  @spec subscribers_for(String.t(), Signal.scope()) :: [pid()]
  def subscribers_for(type, scope \\ :cluster) do
    members =
      if scope == :local,
        do: &:pg.get_local_members(Names.signal_bus(), &1),
        else: &:pg.get_members(Names.signal_bus(), &1)

    Names.signal_bus()
    |> :pg.which_groups()
    |> Enum.filter(&(is_binary(&1) and Pattern.match?(&1, type)))
    |> Enum.flat_map(members)
    |> Enum.uniq()
  end

  defp deliver(pid, message) when node(pid) == node(), do: send(pid, message)
  defp deliver(pid, message), do: :erlang.send(pid, message, [:noconnect])
end
