defmodule DSPEx.Clustering.StrongStateTest do
  use ExUnit.Case, async: false
  @moduletag :distributed

  alias DSPEx.Clustering.State
  alias DSPEx.Test.PeerNode

  @env [
    state_voter: true,
    replication_factor: 3,
    state_form_after_ms: 0,
    state_check_interval_ms: 200
  ]

  setup_all do
    peers = for p <- ~w(st_a st_b st_c), do: PeerNode.start(p, @env)
    [a | rest] = peers
    for p <- rest, do: true = :erpc.call(a.node, Node, :connect, [p.node])
    on_exit(fn -> Enum.each(peers, &PeerNode.stop/1) end)
    PeerNode.eventually(fn -> formed?(a.node, peers) end, 20_000)
    %{peers: peers}
  end

  defp formed?(node, peers) do
    status = :erpc.call(node, State, :status, [])

    status.leader != nil and
      Enum.sort(status.members) == Enum.sort(Enum.map(peers, & &1.node))
  end

  defp call(node, fun, args), do: :erpc.call(node, State, fun, args, 10_000)

  test "a three-member group forms by itself and serves put/get/cas/delete from any node",
       %{peers: [a, b, c]} do
    key = {:user, make_ref()}
    assert {:error, :not_found} = call(a.node, :get, [key, [consistency: :strong]])
    assert {:ok, v1} = call(a.node, :put, [key, %{n: 1}, [consistency: :strong]])
    assert {:ok, %{n: 1}, ^v1} = call(b.node, :get, [key, [consistency: :strong]])

    assert {:error, {:version_mismatch, ^v1}} =
             call(c.node, :cas, [key, :none, :x, [consistency: :strong]])

    assert {:ok, v2} = call(c.node, :cas, [key, v1, %{n: 2}, [consistency: :strong]])
    assert v2 > v1

    assert {:error, {:version_mismatch, ^v2}} =
             call(a.node, :cas, [key, v1, :y, [consistency: :strong]])

    assert :ok = call(b.node, :delete, [key, [consistency: :strong]])
    # a cas holding the version read before the delete fails: versions are never reused
    assert {:error, {:version_mismatch, :none}} =
             call(a.node, :cas, [key, v2, :z, [consistency: :strong]])

    assert {:ok, v3} = call(a.node, :cas, [key, :none, :fresh, [consistency: :strong]])
    assert v3 > v2
    # the test node is no member (state_voter: false) but a client like any other
    assert {:ok, :fresh, ^v3} = State.get(key, consistency: :strong)
  end

  test "values over max_value_bytes are refused with a clear error, nothing written",
       %{peers: [a | _]} do
    big = :binary.copy(<<1>>, 1_048_577)

    assert {:error, {:value_too_large, size, 1_048_576}} =
             call(a.node, :put, [:big, big, [consistency: :strong]])

    assert size > 1_048_576
    assert {:error, :not_found} = call(a.node, :get, [:big, [consistency: :strong]])
  end

  test "status shows leader, members, term, commit index and lag per member", %{peers: peers} do
    [a | _] = peers
    {:ok, _} = call(a.node, :put, [:status_key, 1, [consistency: :strong]])
    # Ra refreshes the metrics the lag is computed from about every second
    PeerNode.eventually(
      fn ->
        s = call(a.node, :status, [])

        is_integer(s.commit_index) and s.term >= 1 and map_size(s.lag) == 3 and
          Enum.all?(Map.values(s.lag), &is_integer/1)
      end,
      5_000
    )

    s = call(a.node, :status, [])
    assert s.leader in Enum.map(peers, & &1.node)
  end

  test "a call repeated with its request_id is applied once and answers its first reply",
       %{peers: [a, b, _]} do
    key = {:once, make_ref()}
    id = {:client, make_ref()}
    {:ok, v1} = call(a.node, :put, [key, 0, [consistency: :strong]])
    opts = [consistency: :strong, request_id: id]
    assert {:ok, v2} = call(a.node, :cas, [key, v1, 1, opts])
    # the same cas again, through another node: not a mismatch, the first reply
    assert {:ok, ^v2} = call(b.node, :cas, [key, v1, 1, opts])
    assert {:ok, 1, ^v2} = call(b.node, :get, [key, [consistency: :strong]])
    # without the id it is a new call
    assert {:error, {:version_mismatch, ^v2}} =
             call(b.node, :cas, [key, v1, 1, [consistency: :strong]])
  end

  test "an unknown consistency is refused" do
    assert {:error, {:unsupported_consistency, :bogus}} = State.get(:k, consistency: :bogus)
  end
end
