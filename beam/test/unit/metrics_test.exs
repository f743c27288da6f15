defmodule DSPEx.Clustering.MetricsTest do
  # The application (started by test_helper) runs DSPEx.Clustering.Metrics; these tests add
  # their own events and read the rendered text back.
  use ExUnit.Case, async: false

  alias DSPEx.Clustering.{Metrics, Telemetry}

  defp rendered, do: IO.iodata_to_binary(Metrics.render())

  test "a published signal is counted by type, label values escaped" do
    type = ~s(test.quote"back\\slash)

    Telemetry.execute([:dspex, :signal, :published], %{recipients: 3}, %{
      type: type,
      scope: :local
    })

    text = rendered()

    assert text =~
             ~s(dspex_signals_published_total{type="test.quote\\"back\\\\slash",scope="local"} 1\n)

    assert text =~
             ~s(dspex_signal_deliveries_total{type="test.quote\\"back\\\\slash",scope="local"} 3\n)
  end

  test "placement decisions fill a cumulative histogram in seconds" do
    before = histogram_count(rendered())
    ms = System.convert_time_unit(1, :millisecond, :native)

    for d <- [ms * 2, ms * 40, ms * 3000] do
      Telemetry.execute([:dspex, :placement, :decision], %{duration: d}, %{
        outcome: :heuristic,
        node: node()
      })
    end

    text = rendered()
    assert histogram_count(text) == before + 3
    assert text =~ "# TYPE dspex_placement_decision_duration_seconds histogram\n"
    buckets = bucket_counts(text)
    # cumulative: never decreasing, +Inf equals the count
    assert buckets == Enum.sort(buckets)
    assert List.last(buckets) == histogram_count(text)
    assert bucket(text, "0.0025") - bucket(text, "0.001") >= 1
    assert bucket(text, "+Inf") - bucket(text, "2.5") >= 1
  end

  test "unknown events are ignored" do
    assert :ok = Telemetry.execute([:dspex, :no_such_event], %{}, %{})
  end

  defp histogram_count(text) do
    case Regex.run(~r/^dspex_placement_decision_duration_seconds_count (\d+)$/m, text) do
      [_, n] -> String.to_integer(n)
      nil -> 0
    end
  end

  defp bucket_counts(text) do
    Regex.scan(~r/^dspex_placement_decision_duration_seconds_bucket\{le="[^"]+"\} (\d+)$/m, text)
    |> Enum.map(fn [_, n] -> String.to_integer(n) end)
  end

  defp bucket(text, le) do
    [_, n] =
      Regex.run(
        ~r/^dspex_placement_decision_duration_seconds_bucket\{le="#{Regex.escape(le)}"\} (\d+)$/m,
        text
      )

    String.to_integer(n)
  end
end
