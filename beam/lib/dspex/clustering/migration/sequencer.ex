defmodule DSPEx.Clustering.Migration.Sequencer do
  @moduledoc """
  Per-sender order and exactly-once delivery for messages sent to an agent by its cluster-wide
  id (`Agent.call/cast/send`). Every such message carries `{sender, seq}` (the sender's own
  counter for that agent id). During a migration a sender's older messages may travel through
  the source (buffered, then forwarded) while its newer ones go straight to the target, so the
  target can see them out of order: the sequencer holds a message until its predecessors came,
  and drops one it already delivered (a duplicate).

  A gap that never fills (a message lost with a killed node) is given up after `hold_ms`: the
  held messages are then delivered in order. The table travels with the agent's checkpoint.
  It keeps at most 100,000 senders; beyond that the least recently seen half is forgotten (a
  forgotten sender's next message is taken as new). Messages numbered 0 are not sequenced.
  """

  @default_hold_ms 5_000
  @max_senders 100_000

  @enforce_keys [:last, :held, :touched, :clock]
  defstruct last: %{}, held: %{}, touched: %{}, clock: 0

  @type sender :: pid()
  @type t :: %__MODULE__{
          last: %{sender() => non_neg_integer()},
          held: %{sender() => %{pos_integer() => {term(), integer()}}},
          touched: %{sender() => non_neg_integer()},
          clock: non_neg_integer()
        }

  @doc "An empty table."
  @spec new() :: t()
  def new, do: %__MODULE__{last: %{}, held: %{}, touched: %{}, clock: 0}

  @doc """
  Offers message `msg` numbered `seq` from `sender`. Returns the messages now deliverable, in
  order (`msg` itself, maybe followed by held ones; none when it is held or a duplicate).
  """
  @spec offer(t(), sender(), pos_integer(), term(), integer()) :: {[term()], t()}
  def offer(%__MODULE__{} = t, sender, seq, msg, now_ms) do
    last = Map.get(t.last, sender, 0)
    t = touch(t, sender)

    cond do
      seq <= last ->
        {[], t}

      seq == last + 1 ->
        release(%{t | last: Map.put(t.last, sender, seq)}, sender, [msg])

      true ->
        held = Map.get(t.held, sender, %{})
        {[], %{t | held: Map.put(t.held, sender, Map.put_new(held, seq, {msg, now_ms}))}}
    end
  end

  @doc "Delivers (in order) held messages whose gap has been open longer than `hold_ms`."
  @spec expire(t(), integer(), non_neg_integer()) :: {[term()], t()}
  def expire(%__MODULE__{} = t, now_ms, hold_ms \\ @default_hold_ms) do
    Enum.reduce(t.held, {[], t}, fn {sender, held}, {out, t} ->
      oldest = held |> Map.values() |> Enum.map(&elem(&1, 1)) |> Enum.min()

      if now_ms - oldest >= hold_ms do
        first = held |> Map.keys() |> Enum.min()
        t = %{t | last: Map.put(t.last, sender, first - 1)}
        {msgs, t} = release(t, sender, [])
        {out ++ msgs, t}
      else
        {out, t}
      end
    end)
  end

  @doc "Whether any message is held (waiting for a predecessor)."
  @spec holding?(t()) :: boolean()
  def holding?(%__MODULE__{held: held}), do: held != %{}

  @doc "Default time a gap is waited for, in ms."
  @spec default_hold_ms() :: pos_integer()
  def default_hold_ms, do: @default_hold_ms

  # Moves the run of consecutive held messages after `last` to the output.
  defp release(t, sender, acc) do
    held = Map.get(t.held, sender, %{})
    next = Map.fetch!(t.last, sender) + 1

    case Map.pop(held, next) do
      {nil, _} ->
        held_map = if held == %{}, do: Map.delete(t.held, sender), else: t.held
        {Enum.reverse(acc), %{t | held: held_map}}

      {{msg, _at}, rest} ->
        t = %{t | last: Map.put(t.last, sender, next), held: Map.put(t.held, sender, rest)}
        release(t, sender, [msg | acc])
    end
  end

  defp touch(t, sender) do
    t = %{t | clock: t.clock + 1, touched: Map.put(t.touched, sender, t.clock + 1)}
    if map_size(t.last) > @max_senders, do: forget_oldest(t), else: t
  end

  # Keeps the most recently seen half: amortised O(1) per message.
  defp forget_oldest(t) do
    keep =
      t.touched
      |> Enum.sort_by(&elem(&1, 1), :desc)
      |> Enum.take(div(@max_senders, 2))
      |> Map.new()

    %{
      t
      | last: Map.take(t.last, Map.keys(keep)),
        touched: keep,
        held: Map.take(t.held, Map.keys(keep))
    }
  end
end
