defmodule DSPEx.Test.StateWriters do
  @moduledoc """
  Writer loops that run *on* a peer node (started there with `:erpc`), so concurrent writers
  on several nodes really race, instead of being serialised by round trips from the test node.
  """
  alias DSPEx.Clustering.State.Eventual

  @doc """
  From `start_at` (system ms, the same for every writer), puts `{node(), round}` to every key,
  `rounds` times, in key order; then from `final_at` one last round, so that the last writes
  of every key race too. The acked versions.
  """
  @spec lww_rounds(atom(), [term()], pos_integer(), integer(), integer()) :: [{term(), map()}]
  def lww_rounds(table, keys, rounds, start_at, final_at) do
    Process.sleep(max(start_at - System.system_time(:millisecond), 0))
    acked = for round <- 1..rounds, key <- keys, do: put(table, key, round)
    Process.sleep(max(final_at - System.system_time(:millisecond), 0))
    acked ++ for key <- keys, do: put(table, key, :final)
  end

  defp put(table, key, round) do
    {:ok, v} = Eventual.put(key, {node(), round}, table: table)
    {key, v}
  end

  @doc """
  `count` writes to random keys of a `:siblings` table: one in three a blind add
  (`context: %{}`), the others read-modify-writes with the context just read. Returns
  `{key, stamp, context_given, value}` for each acknowledged write.
  """
  @spec sibling_writes(atom(), [term()], pos_integer()) :: [{term(), tuple(), map(), term()}]
  def sibling_writes(table, keys, count) do
    for i <- 1..count do
      key = Enum.random(keys)

      context =
        if rem(i, 3) == 0 do
          %{}
        else
          case Eventual.get(key, table: table) do
            {:ok, {:siblings, _}, version} -> version.context
            {:error, :not_found} -> %{}
          end
        end

      value = {node(), i}
      {:ok, v} = Eventual.put(key, value, table: table, context: context)
      if rem(i, 5) == 0, do: Process.sleep(1)
      {key, v.stamp, context, value}
    end
  end
end
