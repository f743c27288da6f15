defmodule DSPEx.Clustering.Action do
  @moduledoc """
  An action: a named, parameter-validated unit of work an agent runs.

      defmodule MyApp.Rename do
        use DSPEx.Clustering.Action,
          name: :rename,
          schema: [name: [type: :binary, required: true], force: [type: :boolean, default: false]]

        @impl true
        def run(%{name: name}, %{state: state}), do: {:ok, :renamed, %{state | name: name}}
      end

  Schema field options: `type` (`:any | :atom | :binary | :integer | :number | :boolean |
  :map | :list | :node | :pid`), `required` (default false), `default`, `in` (allowed values).
  Params may be a map or keyword list; keys may be atoms or strings (as a Python node sends
  them); unknown keys are dropped. `run/2` gets the validated params and a context map
  `%{state: agent_state, agent: pid}` and returns `{:ok, result}`, `{:ok, result, new_state}`
  or `{:error, reason}`.
  """

  @type schema :: keyword(keyword())
  @type context :: %{state: term(), agent: pid()}
  @type result :: {:ok, term()} | {:ok, term(), term()} | {:error, term()}

  @callback name() :: atom()
  @callback schema() :: schema()
  @callback run(params :: map(), context()) :: result()

  defmacro __using__(opts) do
    quote do
      @behaviour DSPEx.Clustering.Action
      @impl true
      def name, do: unquote(Keyword.fetch!(opts, :name))
      @impl true
      def schema, do: unquote(Keyword.get(opts, :schema, []))
    end
  end

  @doc "Validates `params` against `schema`; returns the cleaned atom-keyed map."
  @spec validate(schema(), map() | keyword()) ::
          {:ok, map()} | {:error, {:invalid_params, atom(), String.t()}}
  def validate(schema, params) when is_list(params), do: validate(schema, Map.new(params))

  def validate(schema, params) when is_map(params) do
    Enum.reduce_while(schema, {:ok, %{}}, fn {field, opts}, {:ok, acc} ->
      case fetch(params, field) do
        :error ->
          cond do
            opts[:required] == true ->
              {:halt, {:error, {:invalid_params, field, "is required"}}}

            Keyword.has_key?(opts, :default) ->
              {:cont, {:ok, Map.put(acc, field, opts[:default])}}

            true ->
              {:cont, {:ok, acc}}
          end

        {:ok, value} ->
          case check(value, opts) do
            :ok -> {:cont, {:ok, Map.put(acc, field, value)}}
            {:bad, why} -> {:halt, {:error, {:invalid_params, field, why}}}
          end
      end
    end)
  end

  def validate(_schema, params),
    do: {:error, {:invalid_params, :params, "must be a map, got #{inspect(params)}"}}

  @doc "Validates `params` for `action` and runs it with `context`."
  @spec execute(module(), map() | keyword(), context()) :: result()
  def execute(action, params, context) do
    with {:ok, clean} <- validate(action.schema(), params), do: action.run(clean, context)
  end

  defp fetch(params, field) do
    case Map.fetch(params, field) do
      :error -> Map.fetch(params, Atom.to_string(field))
      found -> found
    end
  end

  defp check(value, opts) do
    type = Keyword.get(opts, :type, :any)

    cond do
      not type?(type, value) ->
        {:bad, "must be of type #{type}, got #{inspect(value)}"}

      Keyword.has_key?(opts, :in) and value not in opts[:in] ->
        {:bad, "must be one of #{inspect(opts[:in])}"}

      true ->
        :ok
    end
  end

  defp type?(:any, _), do: true
  defp type?(:atom, v), do: is_atom(v)
  defp type?(:node, v), do: is_atom(v) and String.contains?(Atom.to_string(v), "@")
  defp type?(:binary, v), do: is_binary(v)
  defp type?(:integer, v), do: is_integer(v)
  defp type?(:number, v), do: is_number(v)
  defp type?(:boolean, v), do: is_boolean(v)
  defp type?(:map, v), do: is_map(v)
  defp type?(:list, v), do: is_list(v)
  defp type?(:pid, v), do: is_pid(v)
end
