defmodule DSPEx.Test.Collector do
  @moduledoc """
  A process that records every message it receives (for history checks in multi-node tests);
  `dump/1` returns them in arrival order. Started with `spawn/1`, so it can live on a peer.
  """

  @doc "Starts a collector here (not linked)."
  @spec start() :: pid()
  def start, do: spawn(fn -> loop([]) end)

  @doc "The messages received so far, oldest first."
  @spec dump(pid(), timeout()) :: [term()]
  def dump(pid, timeout \\ 5_000) do
    ref = make_ref()
    send(pid, {:"$collector_dump", self(), ref})

    receive do
      {^ref, messages} -> messages
    after
      timeout -> raise "collector #{inspect(pid)} did not answer"
    end
  end

  defp loop(acc) do
    receive do
      {:"$collector_dump", from, ref} ->
        send(from, {ref, Enum.reverse(acc)})
        loop(acc)

      message ->
        loop([message | acc])
    end
  end
end
