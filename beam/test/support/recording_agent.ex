defmodule DSPEx.Test.RecordingAgent do
  @moduledoc """
  An agent for migration tests: records, per sender tag, every number it was sent (by
  `Agent.send/2` as `{:msg, tag, n}` or `Agent.call/3` as `{:msg, tag, n}`), carries a padding
  binary of `pad_bytes` (random, or zeros with `pad: :zeros`), and can be made slow to restore (`restore_sleep_ms`)
  so a test can kill the target while it restores; `tick_ms` adds a periodic sensor counting
  its ticks.
  """
  use DSPEx.Clustering.Agent

  @impl true
  def init_agent(opts) do
    size = Keyword.get(opts, :pad_bytes, 0)

    pad =
      if opts[:pad] == :zeros,
        do: :binary.copy(<<0>>, size),
        else: :crypto.strong_rand_bytes(size)

    {:ok, %{seen: %{}, pad: pad, count: 0, tick_ms: opts[:tick_ms], ticks: 0}}
  end

  @impl true
  def restore(checkpoint, opts) do
    if ms = opts[:restore_sleep_ms], do: Process.sleep(ms)
    {:ok, checkpoint}
  end

  @impl true
  def sensors(%{tick_ms: ms}) when is_integer(ms), do: [tick: {:every, ms}]
  def sensors(_state), do: []

  @impl true
  def sense(:tick, state), do: {:ok, [], %{state | ticks: state.ticks + 1}}

  @impl true
  def handle_event({:msg, tag, n}, state), do: {:ok, [], record(state, tag, n)}
  def handle_event(_other, state), do: {:ok, [], state}

  @impl true
  def handle_request({:msg, tag, n}, _from, state), do: {:reply, :ok, record(state, tag, n)}
  def handle_request(:seen, _from, state), do: {:reply, state.seen, state}
  def handle_request(:hash, _from, state), do: {:reply, :erlang.phash2(state), state}
  def handle_request(:node, _from, state), do: {:reply, node(), state}
  def handle_request(:ticks, _from, state), do: {:reply, state.ticks, state}

  defp record(state, tag, n),
    do: %{state | seen: Map.update(state.seen, tag, [n], &[n | &1]), count: state.count + 1}
end

defmodule DSPEx.Test.Sender do
  @moduledoc "A sender for migration tests (a module function, so it runs on peers too)."
  alias DSPEx.Clustering.Agent

  @doc """
  Sends `{:msg, tag, i}` for `i` in 1..n to agent `id` (every 10th as an `Agent.call/3`, the
  rest with `Agent.send/2`), then `{:sender_done, tag}` to `report_to`.
  """
  @spec run(term(), term(), pos_integer(), pid()) :: :ok
  def run(id, tag, n, report_to) do
    for i <- 1..n do
      if rem(i, 10) == 0,
        do: :ok = Agent.call(id, {:msg, tag, i}, 10_000),
        else: :ok = Agent.send(id, {:msg, tag, i})

      if rem(i, 4) == 0, do: Process.sleep(1)
    end

    send(report_to, {:sender_done, tag})
    :ok
  end
end
