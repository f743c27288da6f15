defmodule DSPEx.Clustering.State.HLC do
  @moduledoc """
  A hybrid logical clock (Kulkarni et al., 2014): physical milliseconds, a logical counter
  and the node name as the final tie-break.

  A timestamp is the tuple `{physical_ms, logical, node}`; Erlang's term order on it is the
  clock's total order (physical, then logical, then node name), so timestamps compare with
  `<`, `>` and `max/2`. A timestamp from a node's clock is unique cluster-wide, which is why
  the eventual store uses it both as the version of a write and as its *dot* (its identity).

  Rules, checked by `DSPEx.Clustering.State.HLCTest`:

    * `now/2` is strictly monotonic on one clock, even when the wall clock steps back;
    * after `observe/3` of a received timestamp the clock is not behind it, so the next
      `now/2` is greater than anything observed;
    * bounded drift: a received timestamp whose physical part is more than `max_drift_ms`
      ahead of this node's wall clock is *not* adopted (`{:drift, ahead_ms}`): a node with a
      runaway clock cannot drag every other clock into the future. The caller still keeps the
      data (convergence does not depend on clocks, see `DSPEx.Clustering.State.KeyState`).
  """

  @type stamp :: {non_neg_integer(), non_neg_integer(), node()}
  @type t :: %{
          pt: non_neg_integer(),
          l: non_neg_integer(),
          node: node(),
          max_drift_ms: pos_integer()
        }

  @doc "A clock for `node` (default: this node) that refuses stamps more than `max_drift_ms` ahead."
  @spec new(node(), pos_integer()) :: t()
  def new(node \\ node(), max_drift_ms \\ 60_000),
    do: %{pt: 0, l: 0, node: node, max_drift_ms: max_drift_ms}

  @doc "A new timestamp, greater than every earlier one of this clock and every observed one."
  @spec now(t(), non_neg_integer()) :: {stamp(), t()}
  def now(clock, wall_ms \\ wall_ms()) do
    {pt, l} = if wall_ms > clock.pt, do: {wall_ms, 0}, else: {clock.pt, clock.l + 1}
    {{pt, l, clock.node}, %{clock | pt: pt, l: l}}
  end

  @doc """
  Takes in a received timestamp: afterwards the clock is at or past it, unless it lies more
  than `max_drift_ms` ahead of `wall_ms`, which gives `{:drift, ahead_ms}` and an unchanged clock.
  """
  @spec observe(t(), stamp(), non_neg_integer()) :: {:ok | {:drift, pos_integer()}, t()}
  def observe(clock, {pt, l, _node}, wall_ms \\ wall_ms()) do
    cond do
      pt - wall_ms > clock.max_drift_ms -> {{:drift, pt - wall_ms}, clock}
      {pt, l} > {clock.pt, clock.l} -> {:ok, %{clock | pt: pt, l: l}}
      true -> {:ok, clock}
    end
  end

  @doc "The physical part of a timestamp, in Unix milliseconds."
  @spec physical_ms(stamp()) :: non_neg_integer()
  def physical_ms({pt, _l, _node}), do: pt

  @doc "This node's wall clock in Unix milliseconds."
  @spec wall_ms() :: integer()
  def wall_ms, do: System.system_time(:millisecond)
end
