defmodule DSPEx.Clustering.Variable.Type do
  @moduledoc """
  A Cognitive Variable's spec (from `Variable.start/2`'s options) and value validation.

    * `type: :float`, `range: {lo, hi}` (optional) — integers are taken as floats;
    * `type: :integer`, `range: {lo, hi}` (optional);
    * `type: :choice`, `options: [...]` (required, non-empty);
    * `type: :map`, `required_keys: [...]` (optional).

  Other options: `consistency` (`:eventual`, default, or `:strong`), `coordination_scope`
  (`:cluster`, default, or `:local`), `history` (changes kept for resuming subscribers, default
  1,000), `learning_rate` and `exploration` (float adaptation), `seed` (adaptation's random
  stream), `commit_timeout` (ms a `:strong` commit may take before `{:error, :no_quorum}` or
  `{:error, :timeout}`, default 2,000; requests wait at most 5 s). A bad value is refused with
  `{:error, {:invalid_value, value, why}}`, a bad spec with `{:error, {:invalid_spec, option, why}}`.
  """

  @type spec :: %{
          type: :float | :integer | :choice | :map,
          range: {number(), number()} | nil,
          options: [term()] | nil,
          required_keys: [term()],
          consistency: :strong | :eventual,
          coordination_scope: :local | :cluster,
          history: pos_integer(),
          learning_rate: float(),
          exploration: float(),
          seed: integer() | nil,
          commit_timeout: pos_integer()
        }

  @doc "Builds the spec from start options."
  @spec spec(keyword()) :: {:ok, spec()} | {:error, {:invalid_spec, atom(), String.t()}}
  def spec(opts) when is_list(opts) do
    spec = %{
      type: Keyword.get(opts, :type),
      range: Keyword.get(opts, :range),
      options: Keyword.get(opts, :options),
      required_keys: Keyword.get(opts, :required_keys, []),
      consistency: Keyword.get(opts, :consistency, :eventual),
      coordination_scope: Keyword.get(opts, :coordination_scope, :cluster),
      history: Keyword.get(opts, :history, 1_000),
      learning_rate: Keyword.get(opts, :learning_rate, 0.05),
      exploration: Keyword.get(opts, :exploration, 0.05),
      seed: Keyword.get(opts, :seed),
      commit_timeout: Keyword.get(opts, :commit_timeout, 2_000)
    }

    with :ok <-
           check(
             :type,
             spec.type in [:float, :integer, :choice, :map],
             "one of :float, :integer, :choice, :map"
           ),
         :ok <- check_range(spec),
         :ok <- check_options(spec),
         :ok <- check(:required_keys, is_list(spec.required_keys), "a list of keys"),
         :ok <-
           check(:consistency, spec.consistency in [:strong, :eventual], ":strong or :eventual"),
         :ok <-
           check(
             :coordination_scope,
             spec.coordination_scope in [:local, :cluster],
             ":local or :cluster"
           ),
         :ok <-
           check(:history, is_integer(spec.history) and spec.history > 0, "a positive integer"),
         :ok <-
           check(
             :learning_rate,
             is_number(spec.learning_rate) and spec.learning_rate > 0,
             "a positive number"
           ),
         :ok <-
           check(
             :exploration,
             is_number(spec.exploration) and spec.exploration > 0,
             "a positive number"
           ) do
      {:ok, spec}
    end
  end

  def spec(_), do: {:error, {:invalid_spec, :opts, "a keyword list"}}

  @doc "Checks `value` against the spec; returns it normalised (integers as floats for :float)."
  @spec validate(spec(), term()) :: {:ok, term()} | {:error, {:invalid_value, term(), String.t()}}
  def validate(%{type: :float} = spec, value) when is_number(value),
    do: in_range(spec, value * 1.0)

  def validate(%{type: :float}, value), do: bad(value, "expected a float")

  def validate(%{type: :integer} = spec, value) when is_integer(value), do: in_range(spec, value)
  def validate(%{type: :integer}, value), do: bad(value, "expected an integer")

  def validate(%{type: :choice, options: options}, value) do
    if value in options,
      do: {:ok, value},
      else: bad(value, "expected one of #{inspect(options, limit: 20)}")
  end

  def validate(%{type: :map, required_keys: keys}, value) when is_map(value) do
    case Enum.reject(keys, &Map.has_key?(value, &1)) do
      [] -> {:ok, value}
      missing -> bad(value, "missing keys #{inspect(missing, limit: 20)}")
    end
  end

  def validate(%{type: :map}, value), do: bad(value, "expected a map")

  defp in_range(%{range: nil}, value), do: {:ok, value}

  defp in_range(%{range: {lo, hi}}, value) do
    if value >= lo and value <= hi,
      do: {:ok, value},
      else: bad(value, "out of range #{inspect({lo, hi})}")
  end

  defp check_range(%{range: nil}), do: :ok

  defp check_range(%{range: {lo, hi}, type: type})
       when is_number(lo) and is_number(hi) and lo <= hi and type in [:float, :integer],
       do: :ok

  defp check_range(_),
    do: {:error, {:invalid_spec, :range, "{lo, hi} with lo <= hi, for :float or :integer"}}

  defp check_options(%{type: :choice, options: [_ | _]}), do: :ok

  defp check_options(%{type: :choice}),
    do: {:error, {:invalid_spec, :options, "a non-empty list for :choice"}}

  defp check_options(_), do: :ok

  defp check(_key, true, _why), do: :ok
  defp check(key, false, why), do: {:error, {:invalid_spec, key, "expected " <> why}}

  defp bad(value, why), do: {:error, {:invalid_value, value, why}}
end
