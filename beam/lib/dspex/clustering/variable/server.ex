defmodule DSPEx.Clustering.Variable.Server do
  @moduledoc """
  The agent that holds one Cognitive Variable (id `{:variable, name}`): the single sequencer
  of its versions. Every change gets the next version, goes into a bounded history (for
  subscribers resuming from a version), and is published as `cluster.variable.sync` (data:
  `name`, `value`, `version`, `stamp`, `spec`, `node`), from which every node's `Keeper`
  updates its replica and feeds its local subscribers.

  `:strong`: a change is committed first (`Store.cas` on the strong State); without quorum it
  is refused (`{:error, :no_quorum}`) and the last committed value stays. `:eventual`: a change
  applies here at once, stamped `{os_time_us, node}` (last writer wins on merge).

  When a healed partition finds two instances (`Migration.Registry.resolve/3`), the loser
  sends its snapshot to the winner and stops; the winner merges: a strong variable re-reads
  the committed record; an eventual one keeps the later-stamped value under a version above
  both, and publishes `cluster.variable.conflict` when both sides had written.
  """
  use DSPEx.Clustering.Agent

  alias DSPEx.Clustering.{Signal, SignalBus}
  alias DSPEx.Clustering.Variable.{Adaptation, Store, Type}

  @impl true
  def init_agent(opts) do
    name = Keyword.fetch!(opts, :variable)
    spec = Keyword.fetch!(opts, :spec)

    with {:ok, base} <- initial(name, spec, opts) do
      history = resumed_history(opts[:resume], base) || [{base.version, base.value, base.stamp}]

      st =
        Map.merge(base, %{
          name: name,
          spec: spec,
          history: history,
          adapt: Adaptation.new(spec, base.value),
          origin: {base.version, base.stamp}
        })

      send(self(), :"$publish_current")
      {:ok, st}
    else
      {:error, reason} -> {:stop, reason}
    end
  end

  # Strong: the committed record wins over anything given (a restart resumes from it).
  defp initial(name, %{consistency: :strong} = spec, opts) do
    case Store.load(name, spec.commit_timeout) do
      {:ok, rec, sv} ->
        {:ok, %{value: rec.value, version: rec.version, stamp: rec.stamp, store_version: sv}}

      {:error, :not_found} ->
        rec = %{value: opts[:value], version: 1, stamp: stamp(nil), spec: spec}

        case Store.cas(name, :none, rec, spec.commit_timeout) do
          {:ok, sv} -> {:ok, Map.put(Map.delete(rec, :spec), :store_version, sv)}
          {:error, {:version_mismatch, _}} -> initial(name, spec, opts)
          {:error, reason} -> {:error, reason}
        end

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp initial(_name, _spec, opts) do
    case opts[:resume] do
      %{value: value, version: version, stamp: stamp} ->
        {:ok, %{value: value, version: version, stamp: stamp, store_version: nil}}

      nil ->
        {:ok, %{value: opts[:value], version: 1, stamp: stamp(nil), store_version: nil}}
    end
  end

  defp resumed_history(%{history: [{v, _, _} | _] = history}, %{version: v}), do: history
  defp resumed_history(_, _), do: nil

  # The history's newest entry is always the current value: it travels once, not twice.
  @impl true
  def checkpoint(st), do: Map.update!(st, :history, &tl/1)

  @impl true
  def restore(cp, _opts),
    do: {:ok, Map.update!(cp, :history, &[{cp.version, cp.value, cp.stamp} | &1])}

  # The initial value and the keeper's replica served the first start only.
  @impl true
  def migrated_opts(opts), do: Keyword.drop(opts, [:value, :resume])

  @impl true
  def handle_request(:get, _from, st), do: {:reply, {:ok, st.value, st.version}, st}

  def handle_request(:snapshot, _from, st), do: {:reply, {:ok, snapshot(st)}, st}

  def handle_request(:info, _from, st) do
    info = %{
      node: node(),
      spec: st.spec,
      value: st.value,
      version: st.version,
      estimate: Adaptation.estimate(st.adapt),
      feedback_steps: (st.adapt && st.adapt.steps) || 0
    }

    {:reply, {:ok, info}, st}
  end

  def handle_request({:set, value}, _from, st) do
    case Type.validate(st.spec, value) do
      {:ok, value} ->
        case commit(st, value) do
          {:ok, st} -> {:reply, {:ok, st.version}, st}
          {:error, reason, st} -> {:reply, {:error, reason}, st}
        end

      error ->
        {:reply, error, st}
    end
  end

  def handle_request({:feedback, reward}, _from, st) do
    case Adaptation.feedback(st.adapt, st.spec, st.value, reward) do
      {:ok, value, adapt} ->
        case commit(%{st | adapt: adapt}, value) do
          {:ok, st} -> {:reply, {:ok, st.value, st.version}, st}
          # not committed: the exploration step is not taken either
          {:error, reason, _} -> {:reply, {:error, reason}, st}
        end

      {:error, reason} ->
        {:reply, {:error, reason}, st}
    end
  end

  def handle_request({:since, from_version}, _from, st), do: {:reply, since(st, from_version), st}

  def handle_request(:delete, _from, st) do
    publish_sync(st, %{deleted: true})
    DSPEx.Clustering.Migration.Registry.unregister({:variable, st.name}, self())
    send(self(), :"$dspex_stop")
    {:reply, :ok, st}
  end

  def handle_request(request, _from, st), do: {:reply, {:error, {:unknown_request, request}}, st}

  @impl true
  def handle_event(:"$dspex_stop", _st), do: exit(:normal)

  def handle_event(:"$publish_current", st) do
    publish_sync(st, %{})
    {:ok, [], st}
  end

  def handle_event({:"$dspex_agent_superseded", winner}, st) do
    send(winner, {:"$dspex_variable_merge", snapshot(st)})
    exit(:normal)
  end

  def handle_event({:"$dspex_variable_merge", other}, st), do: {:ok, [], merge(st, other)}
  def handle_event(_message, st), do: {:ok, [], st}

  @doc false
  @spec snapshot(map()) :: map()
  def snapshot(st) do
    Map.take(st, [:name, :spec, :value, :version, :stamp, :history])
    |> Map.put(:node, node())
  end

  # -- changes --------------------------------------------------------------------------------

  defp commit(%{spec: %{consistency: :strong}} = st, value), do: commit_strong(st, value, 1)

  defp commit(st, value),
    do: {:ok, apply_change(st, value, st.version + 1, stamp(st.stamp))}

  defp commit_strong(st, value, retries) do
    version = st.version + 1
    stamp = stamp(st.stamp)
    rec = %{value: value, version: version, stamp: stamp, spec: st.spec}

    case Store.cas(st.name, st.store_version, rec, st.spec.commit_timeout) do
      {:ok, sv} ->
        {:ok, apply_change(%{st | store_version: sv}, value, version, stamp)}

      {:error, {:version_mismatch, _}} when retries > 0 ->
        case adopt_committed(st) do
          {:ok, st} -> commit_strong(st, value, retries - 1)
          {:error, reason} -> {:error, reason, st}
        end

      {:error, {:version_mismatch, _}} ->
        {:error, :conflict, st}

      {:error, reason} ->
        {:error, reason, st}
    end
  end

  # Another instance committed (a stale duplicate here): take the committed record.
  defp adopt_committed(st) do
    case Store.load(st.name, st.spec.commit_timeout) do
      {:ok, rec, sv} when rec.version > st.version ->
        {:ok, apply_change(%{st | store_version: sv}, rec.value, rec.version, rec.stamp)}

      {:ok, _rec, sv} ->
        {:ok, %{st | store_version: sv}}

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp apply_change(st, value, version, stamp) do
    history = Enum.take([{version, value, stamp} | st.history], st.spec.history)
    st = %{st | value: value, version: version, stamp: stamp, history: history}
    publish_sync(st, %{})
    st
  end

  defp since(st, from) when from >= st.version, do: {:changes, []}

  defp since(st, from) do
    {oldest, _, _} = List.last(st.history)

    if from + 1 >= oldest do
      changes = for {v, value, _} <- Enum.reverse(st.history), v > from, do: {v, value}
      {:changes, changes}
    else
      {:resync, st.value, st.version}
    end
  end

  defp merge(%{spec: %{consistency: :strong}} = st, _other) do
    case adopt_committed(st) do
      {:ok, st} -> st
      {:error, _} -> st
    end
  end

  defp merge(st, other) do
    mine = {st.version, st.stamp}
    theirs = {other.version, other.stamp}
    seen = fn history, point -> Enum.any?(history, fn {v, _, s} -> {v, s} == point end) end

    cond do
      theirs == mine or seen.(st.history, theirs) ->
        st

      seen.(other.history, mine) ->
        apply_change(st, other.value, max(st.version, other.version) + 1, stamp(other.stamp))

      true ->
        {kept, lost} = if other.stamp > st.stamp, do: {other, st}, else: {st, other}

        SignalBus.publish(
          Signal.new!("cluster.variable.conflict", %{
            name: st.name,
            kept: kept.value,
            kept_stamp: kept.stamp,
            lost: lost.value,
            lost_stamp: lost.stamp,
            versions: [st.version, other.version],
            node: node()
          })
        )

        apply_change(st, kept.value, max(st.version, other.version) + 1, stamp(kept.stamp))
    end
  end

  defp publish_sync(st, extra) do
    data =
      Map.merge(
        %{
          name: st.name,
          value: st.value,
          version: st.version,
          stamp: st.stamp,
          spec: st.spec,
          node: node()
        },
        extra
      )

    scope = if st.spec.coordination_scope == :local, do: :local, else: :cluster
    SignalBus.publish(Signal.new!("cluster.variable.sync", data, scope: scope))
  end

  # Last-writer-wins stamps: wall clock in µs with the node as tie-breaker, never going back.
  defp stamp(nil), do: {System.os_time(:microsecond), node()}
  defp stamp({us, _}), do: {max(System.os_time(:microsecond), us + 1), node()}
end
