defmodule DSPEx.Clustering.PhiAccrualDetector do
  @moduledoc """
  The phi-accrual failure detector of Hayashibara et al. (2004), as Akka and Cassandra use it.

  Heartbeat inter-arrival times are kept in a sliding window; their mean and standard
  deviation describe a normal distribution. With `t` the time since the last heartbeat,

      phi(t) = -log10(P(X > t)),  X ~ N(mean + acceptable_pause, max(std, min_std))

  so phi = 1 means a 10 % chance that a heartbeat is still to come, phi = 8 one in 10^8.
  `P(X > t) = erfc(z / sqrt 2) / 2`; for large `z`, where `erfc` underflows, the asymptotic
  expansion of `log erfc` keeps phi finite and increasing.

  The first heartbeat seeds the window with `expected ± expected/4` (Akka's bootstrap), so a
  node that stops right after joining is still suspected.
  """

  @enforce_keys [:window, :min_std_ms, :pause_ms, :expected_ms]
  defstruct [
    :window,
    :min_std_ms,
    :pause_ms,
    :expected_ms,
    :last_ms,
    samples: :queue.new(),
    n: 0,
    sum: 0.0,
    sum_sq: 0.0
  ]

  @type t :: %__MODULE__{}

  @doc "A detector. Options: `:window`, `:min_std_ms`, `:pause_ms`, `:expected_ms`."
  @spec new(keyword()) :: t()
  def new(opts) do
    %__MODULE__{
      window: Keyword.get(opts, :window, 100),
      min_std_ms: Keyword.get(opts, :min_std_ms, 100) * 1.0,
      pause_ms: Keyword.get(opts, :pause_ms, 0) * 1.0,
      expected_ms: Keyword.get(opts, :expected_ms, 100) * 1.0
    }
  end

  @doc """
  Records a heartbeat that arrived at `now_ms`. With `sample?: false` only the arrival time
  is kept (used after a suspicion, so the long silence does not distort the distribution).
  """
  @spec heartbeat(t(), number(), keyword()) :: t()
  def heartbeat(detector, now_ms, opts \\ [])

  def heartbeat(%__MODULE__{last_ms: nil} = d, now_ms, _opts) do
    std = d.expected_ms / 4
    %{d | last_ms: now_ms} |> add(d.expected_ms - std) |> add(d.expected_ms + std)
  end

  def heartbeat(%__MODULE__{} = d, now_ms, opts) do
    d = if Keyword.get(opts, :sample?, true), do: add(d, max(now_ms - d.last_ms, 0)), else: d
    %{d | last_ms: now_ms}
  end

  @doc "phi at `now_ms`; 0.0 before the first heartbeat."
  @spec phi(t(), number()) :: float()
  def phi(%__MODULE__{last_ms: nil}, _now_ms), do: 0.0

  def phi(%__MODULE__{} = d, now_ms) do
    {mean, std} = stats(d)
    phi(now_ms - d.last_ms, mean + d.pause_ms, max(std, d.min_std_ms))
  end

  @doc "phi of an elapsed time under N(mean, std) — the formula itself."
  @spec phi(number(), number(), number()) :: float()
  def phi(elapsed, mean, std) do
    x = (elapsed - mean) / (std * :math.sqrt(2))

    if x < 25.0 do
      p_later = 0.5 * :math.erfc(x)
      -:math.log10(p_later)
    else
      # log(erfc x) ~ -x^2 - log(x sqrt(pi)) + log(1 - 1/(2x^2))
      ln_erfc = -x * x - :math.log(x * :math.sqrt(:math.pi())) + :math.log(1 - 1 / (2 * x * x))
      (:math.log(2) - ln_erfc) / :math.log(10)
    end
  end

  @doc "Mean and standard deviation (ms) of the inter-arrival samples in the window."
  @spec stats(t()) :: {float(), float()}
  def stats(%__MODULE__{n: 0, expected_ms: e}), do: {e, 0.0}

  def stats(%__MODULE__{n: n, sum: sum, sum_sq: sum_sq}) do
    mean = sum / n
    {mean, :math.sqrt(max(sum_sq / n - mean * mean, 0.0))}
  end

  defp add(d, interval) do
    interval = interval * 1.0

    d = %{
      d
      | samples: :queue.in(interval, d.samples),
        n: d.n + 1,
        sum: d.sum + interval,
        sum_sq: d.sum_sq + interval * interval
    }

    if d.n > d.window do
      {{:value, old}, rest} = :queue.out(d.samples)
      %{d | samples: rest, n: d.n - 1, sum: d.sum - old, sum_sq: d.sum_sq - old * old}
    else
      d
    end
  end
end
