defmodule DSPEx.Clustering.Migration.Registry do
  @moduledoc """
  Cluster-wide agent ids (`{:agent, id}`, `{:variable, name}`) → the pid that serves them now.

  Built on `:global` (name `{:dspex_agent, id}`), chosen over a compare-and-set in the strong
  `State` because:

    * a lookup is a local ETS read on every BEAM node (`Agent.call/cast/send` resolve an id
      on every message), while a Raft read costs a round trip to the leader;
    * a registration and the migration's switch (`:global.re_register_name/3`) are
      cluster-wide transactions: when `switch/3` returns, every connected node resolves the id
      to the new pid;
    * an entry disappears with its process or its node, so the id of an agent on a dead node
      never resolves to a dead pid, and the `Variable.Keeper`s restart the variable elsewhere;
    * after a partition heals, `:global` finds the two registrations and calls `resolve/3`:
      one pid keeps the name, and the other is told (`{:"$dspex_agent_superseded", winner}`)
      so that it can hand its state over (variables merge by version / last-writer-wins).

  Correctness of a `:strong` variable never rests on this registry: its writes are a `cas` on
  its versioned record in the strong `State`, so a stale duplicate instance cannot commit.
  """

  @type id :: {:agent, term()} | {:variable, term()} | term()

  @doc "Registers `pid` as `id` cluster-wide: `:yes`, or `:no` when another pid has it."
  @spec register(id(), pid()) :: :yes | :no
  def register(id, pid \\ self()), do: :global.register_name(key(id), pid, &resolve/3)

  @doc "The pid serving `id` now, or nil."
  @spec whereis(id()) :: pid() | nil
  def whereis(id) do
    case :global.whereis_name(key(id)) do
      :undefined -> nil
      pid -> pid
    end
  end

  @doc "Points `id` at `pid` (the migration's switch); all connected nodes see it on return."
  @spec switch(id(), pid()) :: :yes
  def switch(id, pid), do: :global.re_register_name(key(id), pid, &resolve/3)

  @doc "Removes `id` if `pid` still holds it."
  @spec unregister(id(), pid()) :: :ok
  def unregister(id, pid) do
    if whereis(id) == pid, do: :global.unregister_name(key(id))
    :ok
  end

  @doc "Every registered id (on this node's view)."
  @spec ids() :: [id()]
  def ids, do: for({:dspex_agent, id} <- :global.registered_names(), do: id)

  @doc false
  # Called by :global when a healed partition brings two registrations together. It must be
  # quick and must not call the pids: the lower pid (by node name, then pid) keeps the name,
  # and the other is told so that it can merge itself into the winner and stop.
  @spec resolve(term(), pid(), pid()) :: pid()
  def resolve(_name, pid1, pid2) do
    [winner, loser] = Enum.sort_by([pid1, pid2], &{node(&1), &1})
    send(loser, {:"$dspex_agent_superseded", winner})
    send(winner, {:"$dspex_agent_merge", loser})
    winner
  end

  defp key(id), do: {:dspex_agent, id}
end
