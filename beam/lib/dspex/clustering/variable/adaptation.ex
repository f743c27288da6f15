defmodule DSPEx.Clustering.Variable.Adaptation do
  @moduledoc """
  How a Cognitive Variable adapts its own value from rewards (`Variable.feedback/2`).

    * `:float` — gradient steps estimated from its own exploration (Gaussian smoothing, as in
      evolution strategies): the variable serves `theta + eps` with `eps ~ N(0, sigma)`
      (`sigma` = `exploration` × the range's width); a reward `r` for it moves `theta` by
      `learning_rate × (r − baseline) × eps / sigma²` (capped at `sigma` a step), where the
      baseline is a running mean of rewards. `theta` and the served value stay within range.
    * `:choice` — Thompson sampling: a Beta(α, β) per option, the reward (clamped to [0, 1])
      for the option being served adds to its α and its complement to its β; the next value is
      the option whose sampled mean is highest.

  The random stream is part of the state (seeded by the spec's `seed`), so it travels with a
  migration and a seeded run is reproducible.
  """

  alias DSPEx.Clustering.Variable.Type

  @type t :: map() | nil

  @doc "The adaptation state for `spec` starting from `value` (nil for a type that cannot adapt)."
  @spec new(Type.spec(), term()) :: t()
  def new(%{type: :float} = spec, value) do
    %{theta: value * 1.0, baseline: nil, eps: 0.0, rand: seed(spec), steps: 0}
  end

  def new(%{type: :choice, options: options} = spec, _value) do
    %{
      alpha: Map.new(options, &{&1, 1.0}),
      beta: Map.new(options, &{&1, 1.0}),
      rand: seed(spec),
      steps: 0
    }
  end

  def new(_spec, _value), do: nil

  @doc "Applies reward `reward` for the value being served; returns the next value."
  @spec feedback(t(), Type.spec(), term(), number()) ::
          {:ok, term(), t()} | {:error, term()}
  def feedback(nil, spec, _value, _reward), do: {:error, {:not_adaptive, spec.type}}

  def feedback(_state, _spec, _value, reward) when not is_number(reward),
    do: {:error, {:invalid_reward, reward}}

  def feedback(%{theta: theta} = st, %{type: :float} = spec, _value, reward) do
    {lo, hi} = spec.range || {theta - 1.0, theta + 1.0}
    sigma = max(spec.exploration * (hi - lo), 1.0e-12)
    baseline = st.baseline || reward
    step = spec.learning_rate * (reward - baseline) * st.eps / (sigma * sigma)
    theta = clamp(theta + clamp(step, -sigma, sigma), lo, hi)
    {z, rand} = :rand.normal_s(:rand.seed_s(st.rand))
    eps = z * sigma
    value = clamp(theta + eps, lo, hi)

    st = %{
      st
      | theta: theta,
        baseline: baseline + 0.1 * (reward - baseline),
        eps: value - theta,
        rand: :rand.export_seed_s(rand),
        steps: st.steps + 1
    }

    {:ok, value, st}
  end

  def feedback(%{alpha: alpha, beta: beta} = st, %{type: :choice}, value, reward) do
    r = clamp(reward * 1.0, 0.0, 1.0)
    alpha = Map.update!(alpha, value, &(&1 + r))
    beta = Map.update!(beta, value, &(&1 + 1.0 - r))

    {best, _, rand} =
      Enum.reduce(Map.keys(alpha), {nil, -1.0, :rand.seed_s(st.rand)}, fn option, {b, bs, rand} ->
        {sample, rand} = beta_sample(alpha[option], beta[option], rand)
        if sample > bs, do: {option, sample, rand}, else: {b, bs, rand}
      end)

    {:ok, best,
     %{st | alpha: alpha, beta: beta, rand: :rand.export_seed_s(rand), steps: st.steps + 1}}
  end

  @doc "The value a float variable is converging to (`theta`), or nil."
  @spec estimate(t()) :: float() | nil
  def estimate(%{theta: theta}), do: theta
  def estimate(_), do: nil

  defp seed(%{seed: nil}), do: :rand.export_seed_s(:rand.seed_s(:exsss))
  defp seed(%{seed: seed}), do: :rand.export_seed_s(:rand.seed_s(:exsss, seed))

  defp clamp(x, lo, hi), do: x |> max(lo) |> min(hi)

  defp beta_sample(a, b, rand) do
    {x, rand} = gamma_sample(a, rand)
    {y, rand} = gamma_sample(b, rand)
    {x / (x + y), rand}
  end

  # Marsaglia & Tsang (2000); shape < 1 through Gamma(shape + 1) * U^(1/shape).
  defp gamma_sample(shape, rand) when shape < 1.0 do
    {g, rand} = gamma_sample(shape + 1.0, rand)
    {u, rand} = :rand.uniform_s(rand)
    {g * :math.pow(u, 1.0 / shape), rand}
  end

  defp gamma_sample(shape, rand) do
    d = shape - 1.0 / 3.0
    c = 1.0 / :math.sqrt(9.0 * d)
    gamma_loop(d, c, rand)
  end

  defp gamma_loop(d, c, rand) do
    {z, rand} = :rand.normal_s(rand)
    v = :math.pow(1.0 + c * z, 3)
    {u, rand} = :rand.uniform_s(rand)

    if v > 0 and :math.log(u) < 0.5 * z * z + d - d * v + d * :math.log(v),
      do: {d * v, rand},
      else: gamma_loop(d, c, rand)
  end
end
