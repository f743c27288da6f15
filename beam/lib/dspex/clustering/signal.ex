defmodule DSPEx.Clustering.Signal do
  @moduledoc """
  A signal: CloudEvents 1.0 attributes as an atom-keyed Erlang map (no struct, so the
  wire form is the same map a Python node builds).

      %{specversion: "1.0", id: "…", source: "dspex://a@127.0.0.1/membership",
        type: "cluster.node.suspect", subject: "b@127.0.0.1",
        time: "2026-11-27T01:00:00.000000Z", datacontenttype: "application/x-erlang-term",
        data: %{node: :"b@127.0.0.1", phi: 9.1}, priority: :high, scope: :cluster}

  Extensions: `priority` (`:low | :normal | :medium | :high`) and `scope` (`:local` — only
  subscribers on the publishing node, `:cluster` — every matching subscriber on every node).
  Types are dotted lower-case names (`"cluster.node.down"`).

  Build with `new/3` (or a named constructor such as `node_down/2`), check with `validate/1`:

      {:ok, s} = Signal.new("cluster.load.report", %{cpu: 0.2}, source: "membership")
      {:error, {:invalid_signal, :type, "must be a dotted lower-case name" <> _}} =
        Signal.validate(%{s | type: "Bad Type"})
  """

  @type priority :: :low | :normal | :medium | :high
  @type scope :: :local | :cluster
  @type t :: %{
          required(:specversion) => String.t(),
          required(:id) => String.t(),
          required(:source) => String.t(),
          required(:type) => String.t(),
          optional(:subject) => String.t() | nil,
          optional(:time) => String.t() | nil,
          optional(:datacontenttype) => String.t() | nil,
          optional(:data) => term(),
          required(:priority) => priority(),
          required(:scope) => scope(),
          optional(atom()) => term()
        }
  @type error :: {:invalid_signal, atom(), String.t()}

  @specversion "1.0"
  @content_type "application/x-erlang-term"
  @priorities [:low, :normal, :medium, :high]
  @scopes [:local, :cluster]
  @core [:specversion, :id, :source, :type, :subject, :time, :datacontenttype, :data]
  @type_regex ~r/^[a-z0-9_]+(\.[a-z0-9_]+)+$/
  @extension_regex ~r/^[a-z0-9]{1,20}$/

  @doc """
  Builds and validates a signal. Options: `:source` (a URI reference or a component name,
  made into `dspex://<node>/<name>`), `:subject`, `:priority` (default `:normal`), `:scope`
  (default `:cluster`), `:id`, `:time`, `:datacontenttype`, `:extensions` (map).
  """
  @spec new(String.t(), term(), keyword()) :: {:ok, t()} | {:error, error()}
  def new(type, data, opts \\ []) do
    signal =
      %{
        specversion: @specversion,
        id: Keyword.get_lazy(opts, :id, &new_id/0),
        source: source(Keyword.get(opts, :source, "dspex")),
        type: type,
        subject: Keyword.get(opts, :subject),
        time: Keyword.get_lazy(opts, :time, &now/0),
        datacontenttype: Keyword.get(opts, :datacontenttype, @content_type),
        data: data,
        priority: Keyword.get(opts, :priority, :normal),
        scope: Keyword.get(opts, :scope, :cluster)
      }
      |> Map.merge(Keyword.get(opts, :extensions, %{}))

    with :ok <- validate(signal), do: {:ok, signal}
  end

  @doc "Like `new/3` but raises `ArgumentError` on an invalid signal."
  @spec new!(String.t(), term(), keyword()) :: t()
  def new!(type, data, opts \\ []) do
    case new(type, data, opts) do
      {:ok, signal} -> signal
      {:error, {:invalid_signal, field, why}} -> raise ArgumentError, "signal #{field} #{why}"
    end
  end

  @doc "Checks every attribute; the first problem is returned as `{:invalid_signal, field, why}`."
  @spec validate(term()) :: :ok | {:error, error()}
  def validate(signal) when is_map(signal) do
    Enum.find_value(checks(), :ok, fn {field, check} ->
      case check.(Map.get(signal, field)) do
        :ok -> nil
        {:bad, why} -> {:error, {:invalid_signal, field, why}}
      end
    end)
    |> then(fn
      :ok -> validate_extensions(signal)
      error -> error
    end)
  end

  def validate(_other), do: {:error, {:invalid_signal, :signal, "must be a map"}}

  @doc "True when `type` is a well-formed dotted lower-case signal type."
  @spec valid_type?(term()) :: boolean()
  def valid_type?(type), do: is_binary(type) and Regex.match?(@type_regex, type)

  defp checks do
    [
      specversion: fn v -> (v == @specversion && :ok) || {:bad, "must be \"1.0\""} end,
      id: &non_empty/1,
      source: &non_empty/1,
      type: fn v ->
        (valid_type?(v) && :ok) ||
          {:bad,
           "must be a dotted lower-case name such as \"cluster.node.up\", got #{inspect(v)}"}
      end,
      subject: &optional_string/1,
      time: fn
        nil -> :ok
        v when is_binary(v) -> rfc3339(v)
        v -> {:bad, "must be an RFC 3339 string, got #{inspect(v)}"}
      end,
      datacontenttype: &optional_string/1,
      priority: fn v ->
        (v in @priorities && :ok) ||
          {:bad, "must be one of #{inspect(@priorities)}, got #{inspect(v)}"}
      end,
      scope: fn v ->
        (v in @scopes && :ok) || {:bad, "must be one of #{inspect(@scopes)}, got #{inspect(v)}"}
      end
    ]
  end

  defp validate_extensions(signal) do
    signal
    |> Map.keys()
    |> Enum.reject(&(&1 in @core or &1 in [:priority, :scope]))
    |> Enum.find_value(:ok, fn key ->
      if is_atom(key) and Regex.match?(@extension_regex, Atom.to_string(key)),
        do: nil,
        else:
          {:error,
           {:invalid_signal, :extensions,
            "attribute names must be lower-case alphanumeric atoms, got #{inspect(key)}"}}
    end)
  end

  defp non_empty(v) when is_binary(v) and byte_size(v) > 0, do: :ok
  defp non_empty(v), do: {:bad, "must be a non-empty string, got #{inspect(v)}"}

  defp optional_string(nil), do: :ok
  defp optional_string(v) when is_binary(v), do: :ok
  defp optional_string(v), do: {:bad, "must be a string or nil, got #{inspect(v)}"}

  defp rfc3339(v) do
    case DateTime.from_iso8601(v) do
      {:ok, _, _} -> :ok
      {:error, _} -> {:bad, "must be an RFC 3339 timestamp, got #{inspect(v)}"}
    end
  end

  defp source("dspex://" <> _ = uri), do: uri
  defp source(name) when is_binary(name), do: "dspex://#{node()}/#{name}"
  defp source(name) when is_atom(name), do: source(Atom.to_string(name))

  defp new_id do
    <<a::32, b::16, _::4, c::12, _::2, d::62>> = :crypto.strong_rand_bytes(16)
    # RFC 4122 version-4 UUID layout.
    <<a::32, b::16, 4::4, c::12, 2::2, d::62>>
    |> Base.encode16(case: :lower)
    |> then(fn <<p1::binary-8, p2::binary-4, p3::binary-4, p4::binary-4, p5::binary-12>> ->
      Enum.join([p1, p2, p3, p4, p5], "-")
    end)
  end

  defp now, do: DateTime.utc_now() |> DateTime.to_iso8601()

  # -- constructors for the cluster's signal types --------------------------------------------

  @doc "`cluster.node.announce`: a node presents itself (name, kind, version, capabilities…)."
  @spec node_announce(node(), map(), keyword()) :: t()
  def node_announce(node, info, opts \\ []),
    do: node_signal("cluster.node.announce", node, Map.put(info, :node, node), :normal, opts)

  @doc "`cluster.node.up`: `node` is a live member of `kind`."
  @spec node_up(node(), :beam | :python, keyword()) :: t()
  def node_up(node, kind, opts \\ []),
    do: node_signal("cluster.node.up", node, %{node: node, kind: kind}, :normal, opts)

  @doc "`cluster.node.suspect`: the failure detector's phi for `node` crossed the threshold."
  @spec node_suspect(node(), number(), keyword()) :: t()
  def node_suspect(node, phi, opts \\ []) do
    data = %{node: node, phi: phi * 1.0} |> Map.merge(Map.new(Keyword.get(opts, :data, [])))
    node_signal("cluster.node.suspect", node, data, :high, Keyword.delete(opts, :data))
  end

  @doc "`cluster.node.down`: the connection to `node` is gone (reason from net_kernel)."
  @spec node_down(node(), term(), keyword()) :: t()
  def node_down(node, reason, opts \\ []) do
    data = %{node: node, reason: reason} |> Map.merge(Map.new(Keyword.get(opts, :data, [])))
    node_signal("cluster.node.down", node, data, :high, Keyword.delete(opts, :data))
  end

  @doc "`cluster.load.report`: `load` holds at least `:cpu`, `:memory` and `:agents`."
  @spec load_report(map(), keyword()) :: t()
  def load_report(load, opts \\ []),
    do: node_signal("cluster.load.report", node(), Map.put_new(load, :node, node()), :low, opts)

  @doc "`cluster.health.data`: a node's vitals."
  @spec health_data(map(), keyword()) :: t()
  def health_data(vitals, opts \\ []),
    do: node_signal("cluster.health.data", node(), Map.put_new(vitals, :node, node()), :low, opts)

  @doc "`cluster.health.alert`: something on `node` needs attention (`severity`, `message`)."
  @spec health_alert(node(), atom(), String.t(), keyword()) :: t()
  def health_alert(node, severity, message, opts \\ []),
    do:
      node_signal(
        "cluster.health.alert",
        node,
        %{node: node, severity: severity, message: message},
        :high,
        opts
      )

  @doc "`cluster.rebalance.request`: ask for agents to move off (or onto) `nodes`."
  @spec rebalance_request([node()], term(), keyword()) :: t()
  def rebalance_request(nodes, reason, opts \\ []),
    do:
      new!("cluster.rebalance.request", %{nodes: nodes, reason: reason}, defaults(:medium, opts))

  @doc "`cluster.placement.request` / `cluster.placement.decision`."
  @spec placement_request(term(), keyword() | map(), keyword()) :: t()
  def placement_request(agent_spec, constraints, opts \\ []),
    do:
      new!(
        "cluster.placement.request",
        %{agent_spec: agent_spec, constraints: Map.new(constraints)},
        defaults(:normal, opts)
      )

  @spec placement_decision(term(), node(), map(), keyword()) :: t()
  def placement_decision(agent_spec, node, scores, opts \\ []),
    do:
      node_signal(
        "cluster.placement.decision",
        node,
        %{agent_spec: agent_spec, node: node, scores: scores},
        :normal,
        opts
      )

  @doc "`cluster.consensus.proposal`: `proposal_id` proposes `value` for `topic`."
  @spec consensus_proposal(term(), term(), term(), keyword()) :: t()
  def consensus_proposal(proposal_id, topic, value, opts \\ []),
    do:
      new!(
        "cluster.consensus.proposal",
        %{proposal_id: proposal_id, topic: topic, value: value, proposer: node()},
        defaults(:medium, opts)
      )

  @doc "`cluster.consensus.vote`: this node's `vote` (`:yes | :no | :abstain`) on a proposal."
  @spec consensus_vote(term(), :yes | :no | :abstain, keyword()) :: t()
  def consensus_vote(proposal_id, vote, opts \\ []) when vote in [:yes, :no, :abstain],
    do:
      new!(
        "cluster.consensus.vote",
        %{proposal_id: proposal_id, vote: vote, voter: node()},
        defaults(:medium, opts)
      )

  @doc "`cluster.variable.sync`: a cognitive variable's new value and version."
  @spec variable_sync(term(), term(), non_neg_integer(), keyword()) :: t()
  def variable_sync(name, value, version, opts \\ []),
    do:
      new!(
        "cluster.variable.sync",
        %{name: name, value: value, version: version, origin: node()},
        defaults(:normal, opts)
      )

  @doc "`cluster.variable.conflict`: two versions of one variable disagree."
  @spec variable_conflict(term(), [term()], keyword()) :: t()
  def variable_conflict(name, versions, opts \\ []),
    do:
      new!("cluster.variable.conflict", %{name: name, versions: versions}, defaults(:high, opts))

  @doc "`cluster.partition.detected` / `cluster.partition.healed`."
  @spec partition_detected([node()], [node()], keyword()) :: t()
  def partition_detected(reachable, unreachable, opts \\ []),
    do:
      new!(
        "cluster.partition.detected",
        %{reachable: reachable, unreachable: unreachable},
        defaults(:high, opts)
      )

  @spec partition_healed([node()], keyword()) :: t()
  def partition_healed(nodes, opts \\ []),
    do: new!("cluster.partition.healed", %{nodes: nodes}, defaults(:high, opts))

  @doc "`cluster.health.anomaly`: an anomaly `score` for `node` with what was unusual."
  @spec health_anomaly(node(), number(), map(), keyword()) :: t()
  def health_anomaly(node, score, details, opts \\ []),
    do:
      node_signal(
        "cluster.health.anomaly",
        node,
        %{node: node, score: score, details: details},
        :medium,
        opts
      )

  @doc "`cluster.failure.predicted`: `node` may fail within `horizon_s` with `probability`."
  @spec failure_predicted(node(), float(), number(), keyword()) :: t()
  def failure_predicted(node, probability, horizon_s, opts \\ []),
    do:
      node_signal(
        "cluster.failure.predicted",
        node,
        %{node: node, probability: probability, horizon_s: horizon_s},
        :high,
        opts
      )

  @doc "`cluster.migration.started|completed|rolled_back` for `agent` moving `from` → `to`."
  @spec migration(:started | :completed | :rolled_back, term(), node(), node(), keyword()) :: t()
  def migration(stage, agent, from, to, opts \\ [])
      when stage in [:started, :completed, :rolled_back],
      do:
        new!(
          "cluster.migration.#{stage}",
          %{agent: agent, from: from, to: to},
          defaults(:medium, opts)
        )

  defp node_signal(type, node, data, priority, opts),
    do:
      new!(type, data, Keyword.put_new(defaults(priority, opts), :subject, Atom.to_string(node)))

  defp defaults(priority, opts), do: Keyword.put_new(opts, :priority, priority)
end
