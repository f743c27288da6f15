defmodule DSPEx.Clustering.DrainMoveTest do
  use ExUnit.Case, async: false
  @moduletag :distributed

  alias DSPEx.Clustering.{Agent, Drain, LoadBalancer, Migration}
  alias DSPEx.Test.{PeerNode, RecordingAgent}

  test "a drained node's agents with ids move away with their state" do
    peers = [PeerNode.start("dm_a"), PeerNode.start("dm_b")]
    on_exit(fn -> Enum.each(peers, &PeerNode.stop/1) end)
    [a, b] = Enum.map(peers, & &1.node)
    true = :erpc.call(a, Node, :connect, [b])
    # a knows b's load (it is a placement candidate)
    PeerNode.eventually(fn ->
      Enum.any?(
        :erpc.call(a, LoadBalancer, :candidates, []),
        &(&1.node == b and Map.has_key?(&1, :cpu))
      )
    end)

    ids = for i <- 1..3, do: {:agent, "drain-#{i}-#{System.unique_integer([:positive])}"}
    for id <- ids, do: {:ok, _} = Migration.start_agent(RecordingAgent, [id: id], a)
    for id <- ids, i <- 1..20, do: :ok = Agent.send(id, {:msg, :d, i})
    hashes = for id <- ids, do: Agent.call(id, :hash)

    :ok = :erpc.call(a, Drain, :drain, [a, :test])
    PeerNode.eventually(fn -> Enum.all?(ids, &(Migration.where(&1) not in [nil, a])) end, 10_000)
    assert for(id <- ids, do: Agent.call(id, :hash)) == hashes
    for id <- ids, do: assert(Enum.reverse(Agent.call(id, :seen)[:d]) == Enum.to_list(1..20))
  end
end
