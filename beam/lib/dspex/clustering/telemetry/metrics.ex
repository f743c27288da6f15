defmodule DSPEx.Clustering.Metrics do
  @moduledoc """
  This node's Prometheus metrics, rendered in the text exposition format (0.0.4) by `render/0`
  and served at `/metrics` by `DSPEx.Clustering.Metrics.HTTP` when `:metrics_port` is set.

  Counters and histograms are fed by `DSPEx.Clustering.Telemetry` events into one ETS table
  that this process owns (updates are atomic `:ets.update_counter/4` calls from the emitting
  process; nothing goes through this process). Gauges are read at scrape time from membership,
  the drain list, the signal bus, the VM and, when the application has one,
  `DSPEx.Clustering.State.status/0`.

  Why our own writer and not Debian's `prometheus` 4.9.1 (in the rabbitmq-server package): the
  format is a few lines of text per family, the metrics are a dozen, and an embedded
  application (a path or release dependency of another project) then needs nothing beyond OTP.
  The tests parse every scrape with `prometheus_client`'s reference parser.
  """
  use GenServer

  alias DSPEx.Clustering.{Drain, Membership, Names}

  @table :dspex_metrics
  # seconds; +Inf is the count
  @buckets [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
  # distinct signal types counted by name; later ones count as "other"
  @max_signal_types 200

  @doc false
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @impl true
  def init(_opts) do
    :ets.new(@table, [:named_table, :public, :set, write_concurrency: true])
    {:ok, nil}
  end

  @doc "Records a telemetry event (see `DSPEx.Clustering.Telemetry`); unknown events are ignored."
  @spec observe([atom()], map(), map()) :: :ok
  def observe(event, measurements, metadata) do
    if :ets.whereis(@table) != :undefined, do: record(event, measurements, metadata)
    :ok
  end

  defp record([:dspex, :membership, :transition], _m, meta),
    do: inc("dspex_membership_transitions_total", [kind: meta.kind, status: meta.status], 1)

  defp record([:dspex, :placement, :decision], m, meta) do
    inc("dspex_placement_decisions_total", [outcome: meta.outcome], 1)
    seconds = System.convert_time_unit(m.duration, :native, :microsecond) / 1_000_000
    histogram("dspex_placement_decision_duration_seconds", [], seconds)
  end

  defp record([:dspex, :signal, :published], m, meta) do
    labels = [type: signal_type_label(meta.type), scope: meta.scope]
    inc("dspex_signals_published_total", labels, 1)
    inc("dspex_signal_deliveries_total", labels, m.recipients)
  end

  defp record(_event, _m, _meta), do: :ok

  defp inc(name, labels, by),
    do: :ets.update_counter(@table, {name, labels}, by, {{name, labels}, 0})

  defp histogram(name, labels, value) do
    slot = Enum.find_index(@buckets, &(value <= &1)) || length(@buckets)
    # {key, count, sum in microseconds, one slot per bucket and one past the last}
    default =
      List.to_tuple([{:hist, name, labels}, 0, 0 | List.duplicate(0, length(@buckets) + 1)])

    ops = [{2, 1}, {3, round(value * 1_000_000)}, {4 + slot, 1}]
    :ets.update_counter(@table, {:hist, name, labels}, ops, default)
  end

  defp signal_type_label(type) do
    cond do
      :ets.member(@table, {:signal_type, type}) ->
        type

      :ets.update_counter(@table, :signal_types, 1, {:signal_types, 0}) <= @max_signal_types ->
        :ets.insert(@table, {{:signal_type, type}})
        type

      true ->
        "other"
    end
  end

  # -- rendering ---------------------------------------------------------------------------------

  @help %{
    "dspex_membership_transitions_total" => "Member status changes seen by this node.",
    "dspex_placement_decisions_total" =>
      "Placement decisions by outcome (advised by Python, heuristic fallback, none).",
    "dspex_placement_decision_duration_seconds" =>
      "Time to decide a placement, advisors included.",
    "dspex_signals_published_total" => "Signals published on this node, by type.",
    "dspex_signal_deliveries_total" => "Signal deliveries (one per subscriber) from this node."
  }

  @doc "Every metric of this node in the Prometheus text format."
  @spec render() :: iodata()
  def render do
    rows = if :ets.whereis(@table) != :undefined, do: :ets.tab2list(@table), else: []

    counters =
      for {{name, labels}, value} <- rows, is_binary(name), reduce: %{} do
        acc -> Map.update(acc, name, [{labels, value}], &[{labels, value} | &1])
      end

    hists =
      for row <- rows_of_hist(rows), {:hist, name, labels} = elem(row, 0), do: {name, labels, row}

    [
      Enum.map(Enum.sort(counters), fn {name, samples} ->
        family(name, "counter", Map.fetch!(@help, name), Enum.sort(samples))
      end),
      Enum.map(hists, &render_histogram/1),
      gauges()
    ]
  end

  defp rows_of_hist(rows),
    do: for(row <- rows, is_tuple(elem(row, 0)) and elem(elem(row, 0), 0) == :hist, do: row)

  defp render_histogram({name, labels, row}) do
    [_key, count, sum_us | slots] = Tuple.to_list(row)
    cumulative = Enum.scan(slots, &+/2)

    bucket_lines =
      Enum.zip(@buckets ++ ["+Inf"], cumulative)
      |> Enum.map(fn {le, n} ->
        sample(name <> "_bucket", labels ++ [le: le_text(le)], n)
      end)

    [
      header(name, "histogram", Map.fetch!(@help, name)),
      bucket_lines,
      sample(name <> "_sum", labels, sum_us / 1_000_000),
      sample(name <> "_count", labels, count)
    ]
  end

  defp le_text("+Inf"), do: "+Inf"
  defp le_text(le), do: :erlang.float_to_binary(le, [:short])

  # Read at scrape time: what the node knows now.
  defp gauges do
    members = safe(fn -> Membership.members() end, [])

    counts =
      Enum.frequencies_by(members, &{&1.kind, &1.status})
      |> Enum.sort()
      |> Enum.map(fn {{kind, status}, n} -> {[kind: kind, status: status], n} end)

    phis = for m <- members, not m.local, do: {[node: m.node, kind: m.kind], m.phi}
    up = for m <- members, do: {[node: m.node, kind: m.kind], if(m.status == :up, do: 1, else: 0)}
    drained = safe(fn -> length(Drain.drained()) end, 0)
    groups = safe(fn -> length(:pg.which_groups(Names.signal_bus())) end, 0)
    memory = :erlang.memory()

    [
      family("dspex_members", "gauge", "Members this node knows, by kind and status.", counts),
      family("dspex_member_up", "gauge", "1 if the member is up, else 0.", up),
      family("dspex_member_phi", "gauge", "Phi-accrual suspicion of each member.", phis),
      family("dspex_drained_nodes", "gauge", "Nodes drained from placement.", [{[], drained}]),
      family("dspex_signal_subscription_patterns", "gauge", "Signal patterns with subscribers.", [
        {[], groups}
      ]),
      family("dspex_beam_memory_bytes", "gauge", "VM memory by type.", [
        {[type: :total], memory[:total]},
        {[type: :processes], memory[:processes]},
        {[type: :ets], memory[:ets]},
        {[type: :binary], memory[:binary]}
      ]),
      family("dspex_beam_processes", "gauge", "Processes on this VM.", [
        {[], :erlang.system_info(:process_count)}
      ]),
      family("dspex_beam_run_queue", "gauge", "Processes ready to run.", [
        {[], :erlang.statistics(:total_run_queue_lengths)}
      ]),
      state_gauges()
    ]
  end

  # DSPEx.Clustering.State (the strong/eventual state) when the application has it: each
  # numeric or boolean field of its status map becomes dspex_state_<field>.
  defp state_gauges do
    state = DSPEx.Clustering.State

    with true <- Code.ensure_loaded?(state) and function_exported?(state, :status, 0),
         status when is_map(status) <- safe(fn -> apply(state, :status, []) end, nil) do
      for {key, value} <- Enum.sort(status), is_atom(key) do
        name = "dspex_state_" <> Atom.to_string(key)

        family(
          name,
          "gauge",
          "DSPEx.Clustering.State.status/0 field #{key}.",
          state_samples(key, value)
        )
      end
    else
      _ -> []
    end
  end

  # a number or boolean: one sample; a map of node => number (e.g. lag): one per node; a
  # leader: 1 labelled with its node; anything else is not exported
  defp state_samples(:leader, leader) when is_atom(leader) and leader != nil,
    do: [{[node: leader], 1}]

  defp state_samples(_key, value) when is_map(value) do
    for {node, v} <- Enum.sort(value), gauge_value(v) != nil, do: {[node: node], gauge_value(v)}
  end

  defp state_samples(_key, value) do
    case gauge_value(value) do
      nil -> []
      v -> [{[], v}]
    end
  end

  defp gauge_value(v) when is_number(v), do: v
  defp gauge_value(true), do: 1
  defp gauge_value(false), do: 0
  defp gauge_value(_), do: nil

  defp safe(fun, default) do
    fun.()
  catch
    _, _ -> default
  end

  defp family(_name, _type, _help, []), do: []

  defp family(name, type, help, samples),
    do: [header(name, type, help), Enum.map(samples, fn {l, v} -> sample(name, l, v) end)]

  defp header(name, type, help),
    do: ["# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n"]

  defp sample(name, [], value), do: [name, " ", number(value), "\n"]

  defp sample(name, labels, value) do
    pairs =
      Enum.map_join(labels, ",", fn {k, v} -> [Atom.to_string(k), "=\"", escape(v), "\""] end)

    [name, "{", pairs, "} ", number(value), "\n"]
  end

  defp number(v) when is_integer(v), do: Integer.to_string(v)
  defp number(v) when is_float(v), do: :erlang.float_to_binary(v, [:short])

  # label values: backslash, double quote and newline escaped, as the format requires
  defp escape(v) do
    to_string(v)
    |> String.replace("\\", "\\\\")
    |> String.replace("\"", "\\\"")
    |> String.replace("\n", "\\n")
  end
end
