defmodule DSPEx.Test.StandInBalancer do
  @moduledoc """
  A BEAM stand-in for the Python `dspex_load_balancer`, run on a plain hidden peer (which
  membership takes for a Python node): it answers `{:advise, spec, c, candidates}` as told by
  its mode and counts the requests. Modes: `:first` (the first candidate), `{:sleep, ms}`
  (answers too late), `:no_advice`.
  """

  @doc "Registers the stand-in as `:dspex_load_balancer` on this node."
  @spec start(term()) :: pid()
  def start(mode) do
    pid = spawn(fn -> loop(mode, 0) end)
    Process.register(pid, :dspex_load_balancer)
    pid
  end

  defp loop(mode, n) do
    receive do
      {:"$gen_call", from, {:advise, _spec, _c, candidates}} ->
        reply(mode, from, candidates)
        loop(mode, n + 1)

      {:"$gen_cast", {:placement_outcome, _node, _features, _ms}} ->
        loop(mode, n)

      {:count, pid} ->
        send(pid, {:count, n})
        loop(mode, n)
    end
  end

  defp reply(:first, from, [c | _]), do: GenServer.reply(from, {:ok, c.node})
  defp reply(:no_advice, from, _), do: GenServer.reply(from, :no_advice)

  defp reply({:sleep, ms}, from, [c | _]) do
    Process.sleep(ms)
    GenServer.reply(from, {:ok, c.node})
  end

  @doc "How many advise requests the stand-in on `node` got."
  @spec count(node()) :: non_neg_integer()
  def count(node) do
    send({:dspex_load_balancer, node}, {:count, self()})

    receive do
      {:count, n} -> n
    after
      2_000 -> raise "stand-in on #{node} did not answer"
    end
  end
end
