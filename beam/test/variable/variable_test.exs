defmodule DSPEx.Clustering.VariableTest do
  use ExUnit.Case, async: false

  alias DSPEx.Clustering.Variable
  alias DSPEx.Clustering.Variable.{Adaptation, Type}

  defp uniq(prefix), do: "#{prefix}.#{System.unique_integer([:positive])}"

  test "types are validated with clear errors" do
    assert {:error, {:invalid_spec, :type, _}} = Type.spec(type: :string)
    assert {:error, {:invalid_spec, :range, _}} = Type.spec(type: :float, range: {1.0, 0.0})
    assert {:error, {:invalid_spec, :options, _}} = Type.spec(type: :choice, options: [])
    assert {:error, {:invalid_spec, :consistency, _}} = Type.spec(type: :map, consistency: :weak)

    name = uniq("t.float")

    assert {:error, {:invalid_value, 2.0, "out of range {0.0, 1.0}"}} =
             Variable.start(name, type: :float, range: {0.0, 1.0}, value: 2.0)

    {:ok, _} = Variable.start(name, type: :float, range: {0.0, 1.0}, value: 0.5)
    assert {:ok, 0.5, 1} = Variable.get(name)
    assert {:error, {:invalid_value, "x", "expected a float"}} = Variable.set(name, "x")
    assert {:error, {:invalid_value, 1.5, _}} = Variable.set(name, 1.5)
    assert {:ok, 2} = Variable.set(name, 1)
    assert {:ok, 1.0, 2} = Variable.get(name)
    assert {:error, {:already_started, _}} = Variable.start(name, type: :float, value: 0.1)

    c = uniq("t.choice")
    {:ok, _} = Variable.start(c, type: :choice, options: [:a, :b], value: :a)
    assert {:error, {:invalid_value, :z, "expected one of [:a, :b]"}} = Variable.set(c, :z)

    assert {:error, {:not_adaptive, :map}} =
             (fn ->
                m = uniq("t.map")
                {:ok, _} = Variable.start(m, type: :map, required_keys: [:k], value: %{k: 1})
                assert {:error, {:invalid_value, %{}, "missing keys [:k]"}} = Variable.set(m, %{})
                assert {:error, {:invalid_value, 3, "expected a map"}} = Variable.set(m, 3)
                Variable.feedback(m, 1.0)
              end).()

    i = uniq("t.int")
    {:ok, _} = Variable.start(i, type: :integer, range: {1, 10}, value: 3)
    assert {:error, {:invalid_value, 3.5, "expected an integer"}} = Variable.set(i, 3.5)
    assert {:error, :not_found} = Variable.get(uniq("t.absent"))
    assert Variable.where(i) == node()
  end

  test "a subscriber gets every version in order; resume from a version, or a resync" do
    name = uniq("t.sub")
    {:ok, _} = Variable.start(name, type: :integer, value: 0, history: 5)
    :ok = Variable.subscribe(name, self(), from_version: 0)
    for n <- 1..20, do: {:ok, _} = Variable.set(name, n)
    for v <- 1..21, do: assert_receive({:variable, ^name, _, ^v}, 1_000)
    refute_receive {:variable, ^name, _, _}, 50

    # resume within the history: exactly the missed versions
    late = DSPEx.Test.Collector.start()
    :ok = Variable.subscribe(name, late, from_version: 18)
    # beyond it: an explicit resync, then the stream goes on
    old = DSPEx.Test.Collector.start()
    :ok = Variable.subscribe(name, old, from_version: 3)
    {:ok, 22} = Variable.set(name, 99)
    Process.sleep(100)

    assert [
             {:variable, ^name, 18, 19},
             {:variable, ^name, 19, 20},
             {:variable, ^name, 20, 21},
             {:variable, ^name, 99, 22}
           ] = DSPEx.Test.Collector.dump(late)

    assert [{:variable_resync, ^name, 20, 21}, {:variable, ^name, 99, 22}] =
             DSPEx.Test.Collector.dump(old)
  end

  test "adaptation: a float converges to the best value of a toy reward" do
    name = uniq("t.adapt")

    {:ok, _} =
      Variable.start(name,
        type: :float,
        range: {0.0, 1.0},
        value: 0.1,
        learning_rate: 0.02,
        exploration: 0.05,
        seed: 7
      )

    for _ <- 1..400 do
      {:ok, x, _} = Variable.get(name)
      {:ok, _, _} = Variable.feedback(name, -:math.pow(x - 0.7, 2) * 10)
    end

    {:ok, info} = Variable.info(name)
    assert abs(info.estimate - 0.7) < 0.05, "theta #{info.estimate}"
  end

  test "adaptation: Thompson sampling settles on the best choice" do
    name = uniq("t.bandit")
    {:ok, _} = Variable.start(name, type: :choice, options: [:a, :b, :c], value: :a, seed: 3)
    pay = %{a: 0.2, b: 0.5, c: 0.8}
    :rand.seed(:exsss, 11)

    served =
      for _ <- 1..400 do
        {:ok, x, _} = Variable.get(name)
        r = if :rand.uniform() < pay[x], do: 1.0, else: 0.0
        {:ok, _, _} = Variable.feedback(name, r)
        x
      end

    last = Enum.take(served, -100)
    assert Enum.count(last, &(&1 == :c)) >= 80, inspect(Enum.frequencies(last))
    # and the unit itself refuses a bad reward
    assert {:error, {:invalid_reward, "x"}} =
             Adaptation.feedback(%{theta: 0.0}, %{type: :float}, 0.0, "x")
  end
end
