defmodule DSPEx.Clustering.Discovery.Runner do
  @moduledoc """
  One process per configured strategy: it owns the strategy's state (and sockets), polls it every
  `interval` ms, forwards other messages to the strategy's `handle_info/2`, and reports each result
  to its agent as

      {:dspex_discovery, runner_id, {:ok, [node()]} | {:error, reason}}

  Strategy I/O (epmd, DNS, HTTP) therefore never blocks `DSPEx.Clustering.NodeDiscovery`. When the
  strategy's `init/1` fails (a port in use, a missing option), the runner logs why and retries it
  every interval instead of crashing its supervisor in a loop.
  """
  use GenServer

  require Logger

  @type option ::
          {:id, term()}
          | {:strategy, module()}
          | {:strategy_opts, keyword()}
          | {:interval, pos_integer()}
          | {:report_to, GenServer.server()}

  @doc "Starts a runner. Options: `:id`, `:strategy`, `:strategy_opts`, `:interval`, `:report_to`."
  @spec start_link([option()]) :: GenServer.on_start()
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

  @doc "Child spec with `:id` as the child id."
  @spec child_spec([option()]) :: Supervisor.child_spec()
  def child_spec(opts),
    do: %{id: {__MODULE__, Keyword.fetch!(opts, :id)}, start: {__MODULE__, :start_link, [opts]}}

  @doc "Polls the strategy now (used when a node asks for an immediate scan)."
  @spec poll(GenServer.server()) :: :ok
  def poll(runner), do: GenServer.cast(runner, :poll)

  @impl true
  def init(opts) do
    state = %{
      id: Keyword.fetch!(opts, :id),
      module: Keyword.fetch!(opts, :strategy),
      strategy_opts: Keyword.get(opts, :strategy_opts, []),
      interval: Keyword.get(opts, :interval, 5_000),
      report_to: Keyword.fetch!(opts, :report_to),
      strategy: nil,
      init_error: nil,
      timer: nil
    }

    {:ok, state, {:continue, :start_strategy}}
  end

  @impl true
  def handle_continue(:start_strategy, state), do: {:noreply, start_strategy(state)}

  @impl true
  def handle_cast(:poll, state), do: {:noreply, poll_now(state)}

  @impl true
  def handle_info(:poll, state), do: {:noreply, poll_now(%{state | timer: nil})}

  def handle_info(msg, %{strategy: nil} = state) do
    Logger.debug(
      "discovery runner #{inspect(state.id)}: dropped #{inspect(msg, limit: 5, printable_limit: 80)} (not started)"
    )

    {:noreply, state}
  end

  def handle_info(msg, state) do
    if function_exported?(state.module, :handle_info, 2) do
      case strategy_handle_info(state, msg) do
        {:ok, nodes, strategy} ->
          report(state, {:ok, nodes})
          {:noreply, %{state | strategy: strategy}}

        {:noreply, strategy} ->
          {:noreply, %{state | strategy: strategy}}
      end
    else
      {:noreply, state}
    end
  end

  # A message the strategy cannot handle (a hostile packet it fails on) costs that message, not
  # the strategy's state: a restart would lose, say, gossip's replay guard.
  defp strategy_handle_info(state, msg) do
    state.module.handle_info(msg, state.strategy)
  rescue
    error ->
      text = error |> Exception.message() |> String.slice(0, 200)
      Logger.error("discovery #{inspect(state.module)} failed on a message (state kept): #{text}")
      {:noreply, state.strategy}
  end

  @impl true
  def terminate(_reason, %{strategy: strategy, module: module}) when strategy != nil do
    if function_exported?(module, :terminate, 1), do: module.terminate(strategy)
  end

  def terminate(_reason, _state), do: :ok

  defp start_strategy(state) do
    Code.ensure_loaded(state.module)

    case state.module.init(state.strategy_opts) do
      {:ok, strategy} ->
        poll_now(%{state | strategy: strategy, init_error: nil})

      {:error, reason} ->
        if reason != state.init_error,
          do:
            Logger.warning("discovery #{inspect(state.module)} cannot start: #{inspect(reason)}")

        report(state, {:error, {:init, reason}})
        schedule(%{state | init_error: reason})
    end
  end

  defp poll_now(%{strategy: nil} = state), do: start_strategy(cancel(state))

  defp poll_now(state) do
    state = cancel(state)

    case state.module.discover(state.strategy) do
      {:ok, nodes, strategy} ->
        report(state, {:ok, nodes})
        schedule(%{state | strategy: strategy})

      {:error, reason, strategy} ->
        Logger.debug("discovery #{inspect(state.module)}: #{inspect(reason)}")
        report(state, {:error, reason})
        schedule(%{state | strategy: strategy})
    end
  end

  defp report(state, result), do: send_to(state.report_to, {:dspex_discovery, state.id, result})

  defp send_to(pid, msg) when is_pid(pid), do: send(pid, msg)

  defp send_to(name, msg) when is_atom(name) do
    if Process.whereis(name), do: send(name, msg)
    :ok
  end

  defp schedule(state), do: %{state | timer: Process.send_after(self(), :poll, state.interval)}

  defp cancel(%{timer: nil} = state), do: state

  defp cancel(state) do
    Process.cancel_timer(state.timer)
    %{state | timer: nil}
  end
end
