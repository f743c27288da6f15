defmodule DSPEx.Clustering.Variable do
  @moduledoc """
  Cognitive Variables: cluster-wide, typed, versioned values that agents share and adapt.

      {:ok, _pid} = Variable.start("lb.exploration", type: :float, range: {0.0, 1.0}, value: 0.1,
                                   consistency: :strong)
      {:ok, version} = Variable.set("lb.exploration", 0.2)
      {:ok, value, version} = Variable.get("lb.exploration")
      :ok = Variable.subscribe("lb.exploration", self(), from_version: 0)
      # receive {:variable, "lb.exploration", value, version} — every version, in order
      {:ok, info} = Migration.migrate({:variable, "lb.exploration"}, target_node)
      Variable.where("lb.exploration")        # the node it lives on now
      {:ok, value, version} = Variable.feedback("lb.exploration", reward)

  A variable is an agent (`Variable.Server`, id `{:variable, name}`) under the cluster's
  supervision on its owner node (`node:` option, default the calling node; `start/2` may be
  called from anywhere, also through `:erpc`, and is not linked to the caller). Every call here
  works from every BEAM node, wherever the variable lives, and follows it when it moves
  (`Migration.migrate/3`) or is restarted after its node died (see `Variable.Keeper`).

  Types and options: see `Variable.Type`. Consistency: `:strong` commits every change to the
  strong `DSPEx.Clustering.State` first (refused with `{:error, :no_quorum}` on a side without
  quorum, the last committed value still served); `:eventual` (default) changes at once, last
  writer wins when two sides meet after a partition (`cluster.variable.conflict` is published
  when both had written).

  Subscribers (any pid, on any node, Python included) get `{:variable, name, value, version}`
  for every version after `from_version`, in order, without gaps. The last `history` changes
  (default 1,000) are kept for resuming; asking for older ones gives
  `{:variable_resync, name, value, version}` (the current value) and the stream goes on from
  there. `{:variable_deleted, name}` ends it.
  """

  alias DSPEx.Clustering.{Agent, Migration}
  alias DSPEx.Clustering.Variable.{Keeper, Server, Store, Type}

  @type name :: term()

  @doc "Starts variable `name` (see the module doc); `{:error, reason}` for a bad spec or value."
  @spec start(name(), keyword()) :: {:ok, pid()} | {:error, term()}
  def start(name, opts) do
    owner = Keyword.get(opts, :node, node())

    with {:ok, spec} <- Type.spec(opts),
         {:ok, value} <- Type.validate(spec, Keyword.get(opts, :value)),
         :ok <- strong_available(spec, owner) do
      server_opts = [id: {:variable, name}, variable: name, spec: spec, value: value]

      server_opts =
        if resume = resumable(name, spec),
          do: [{:resume, resume} | server_opts],
          else: server_opts

      Migration.start_agent(Server, server_opts, owner)
    end
  end

  @doc "Sets the value; returns its new version."
  @spec set(name(), term()) :: {:ok, pos_integer()} | {:error, term()}
  def set(name, value), do: request(name, {:set, value})

  @doc "The current value and its version."
  @spec get(name()) :: {:ok, term(), pos_integer()} | {:error, term()}
  def get(name), do: request(name, :get)

  @doc """
  Subscribes `pid`: it gets every version after `from_version` (default: the current one, so
  only future changes). Options: `from_version`.
  """
  @spec subscribe(name(), pid(), keyword()) :: :ok | {:error, term()}
  def subscribe(name, pid \\ self(), opts \\ []) when is_pid(pid),
    do: Keeper.subscribe(Keeper.keeper_for(pid), name, pid, opts[:from_version])

  @doc "Ends `pid`'s subscription."
  @spec unsubscribe(name(), pid()) :: :ok
  def unsubscribe(name, pid \\ self()), do: Keeper.unsubscribe(Keeper.keeper_for(pid), name, pid)

  @doc "The node the variable lives on now, or nil."
  @spec where(name()) :: node() | nil
  def where(name), do: Migration.where({:variable, name})

  @doc """
  Reward for the value being served: a float takes a gradient step, a choice updates its
  Thompson sampler (see `Variable.Adaptation`). Returns the new value and version.
  """
  @spec feedback(name(), number()) :: {:ok, term(), pos_integer()} | {:error, term()}
  def feedback(name, reward), do: request(name, {:feedback, reward})

  @doc "Spec, value, version, node and adaptation estimate."
  @spec info(name()) :: {:ok, map()} | {:error, term()}
  def info(name), do: request(name, :info)

  @doc "Stops the variable everywhere and forgets it (subscribers get `{:variable_deleted, name}`)."
  @spec delete(name()) :: :ok | {:error, term()}
  def delete(name), do: request(name, :delete)

  # Unknown here and registered nowhere: answer at once instead of waiting for a restart.
  defp request(name, req) do
    id = {:variable, name}

    if DSPEx.Clustering.Migration.Registry.whereis(id) == nil and Keeper.entry(name) == nil do
      {:error, :not_found}
    else
      try do
        Agent.request(id, req, 5_000)
      catch
        :exit, {:timeout, _} -> {:error, :timeout}
      end
    end
  end

  defp strong_available(%{consistency: :strong}, owner) do
    available =
      if owner == node(), do: Store.available?(), else: :erpc.call(owner, Store, :available?, [])

    if available, do: :ok, else: {:error, :strong_state_unavailable}
  catch
    :error, {:erpc, reason} -> {:error, {:unreachable, owner, reason}}
  end

  defp strong_available(_spec, _owner), do: :ok

  # An eventual variable started again under a name this node still holds a replica of
  # resumes from it (its versions go on).
  defp resumable(name, %{consistency: :eventual}) do
    case Keeper.entry(name) do
      %{version: _} = e -> e
      nil -> nil
    end
  end

  defp resumable(_name, _spec), do: nil
end
