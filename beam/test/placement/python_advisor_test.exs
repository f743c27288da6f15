defmodule DSPEx.Clustering.PythonAdvisorTest do
  use ExUnit.Case, async: false
  @moduletag :distributed

  alias DSPEx.Clustering
  alias DSPEx.Clustering.{LoadBalancer, PythonAdvisor}
  alias DSPEx.Test.{PeerNode, StandInBalancer}

  # A plain hidden peer that says hello is what a Python node looks like to membership; the
  # stand-in plays the Python dspex_load_balancer on it.
  defp python_stand_in(prefix, mode) do
    peer = PeerNode.start(prefix, [], hidden: true, app: false)
    on_exit(fn -> PeerNode.stop(peer) end)
    :erpc.call(peer.node, StandInBalancer, :start, [mode])
    PeerNode.say_hello(peer.node)
    PeerNode.eventually(fn -> peer.node in PythonAdvisor.agent_nodes() end)
    peer.node
  end

  defp wait_for_load_report do
    PeerNode.eventually(fn -> Enum.any?(LoadBalancer.candidates(), &Map.has_key?(&1, :cpu)) end)
  end

  defp timed(fun) do
    {us, result} = :timer.tc(fun)
    {div(us, 1000), result}
  end

  setup do
    wait_for_load_report()
    :ok
  end

  test "it is the default advisor; with no Python node place/2 falls back at once" do
    assert PythonAdvisor in DSPEx.Clustering.Config.get(:placement_advisors)
    assert PythonAdvisor.agent_nodes() == []
    me = node()
    {ms, result} = timed(fn -> Clustering.place(%{id: :lonely}, kinds: [:beam]) end)
    assert result == {:ok, me}
    assert ms < 50
  end

  test "a Python node that answers places the agent and is remembered as its advisor" do
    py = python_stand_in("py_good", :first)
    me = node()
    assert {:ok, ^me} = Clustering.place(%{id: :advised_1, work: 0.1}, kinds: [:beam])
    assert StandInBalancer.count(py) == 1
    assert PythonAdvisor.take_advisor(:advised_1) == py
    assert PythonAdvisor.take_advisor(:advised_1) == nil
  end

  test "an answer later than the budget: the heuristic decides, in time, and the node is backed off" do
    py = python_stand_in("py_slow", {:sleep, 400})
    me = node()
    before = PythonAdvisor.stats()

    {ms, result} =
      timed(fn -> Clustering.place(%{id: :slow_1}, kinds: [:beam], budget_ms: 60) end)

    assert result == {:ok, me}
    assert ms < 60 + 40
    assert PythonAdvisor.stats().timeouts == before.timeouts + 1
    assert PythonAdvisor.take_advisor(:slow_1) == nil
    # backed off: the next placement does not wait for it
    refute py in PythonAdvisor.agent_nodes()

    {ms, {:ok, ^me}} =
      timed(fn -> Clustering.place(%{id: :slow_2}, kinds: [:beam], budget_ms: 60) end)

    assert ms < 30
    # one late answer (a busy host) backs it off briefly: it is asked again well within the
    # second in which fail-over must happen
    PeerNode.eventually(fn -> py in PythonAdvisor.agent_nodes() end, 500)
  end

  test "fail-over: a slow Python node first, the next one answers within the same budget" do
    slow = python_stand_in("pa_slow", {:sleep, 1_000})
    good = python_stand_in("pb_good", :first)
    assert hd(PythonAdvisor.agent_nodes()) == slow

    {ms, {:ok, _}} =
      timed(fn -> Clustering.place(%{id: :fo_1}, kinds: [:beam], budget_ms: 150) end)

    assert ms < 150 + 40
    assert PythonAdvisor.take_advisor(:fo_1) == good
    # from now on the one that answered is asked first
    assert PythonAdvisor.agent_nodes() == [good]
    {:ok, _} = Clustering.place(%{id: :fo_2}, kinds: [:beam], budget_ms: 150)
    assert PythonAdvisor.take_advisor(:fo_2) == good
  end

  test "a killed Python node: placements go to the other one at once" do
    peer = PeerNode.start("py_doomed", [], hidden: true, app: false)
    on_exit(fn -> PeerNode.stop(peer) end)
    :erpc.call(peer.node, StandInBalancer, :start, [:first])
    PeerNode.say_hello(peer.node)
    other = python_stand_in("py_other", :first)
    PeerNode.eventually(fn -> peer.node in PythonAdvisor.agent_nodes() end)
    :ok = PeerNode.signal(peer.os_pid, "KILL")
    killed_at = System.monotonic_time(:millisecond)

    # every placement from the kill on answers, advised by the survivor within a second
    advised =
      Stream.repeatedly(fn ->
        id = make_ref()
        assert {:ok, _} = Clustering.place(%{id: id}, kinds: [:beam])
        PythonAdvisor.take_advisor(id)
      end)
      |> Enum.find(&(&1 == other))

    assert advised == other
    assert System.monotonic_time(:millisecond) - killed_at < 1_000
  end

  test "a hidden node without the agent (noproc) is skipped afterwards" do
    peer = PeerNode.start("py_bare", [], hidden: true, app: false)
    on_exit(fn -> PeerNode.stop(peer) end)
    PeerNode.say_hello(peer.node)
    PeerNode.eventually(fn -> peer.node in PythonAdvisor.agent_nodes() end)
    me = node()
    assert {:ok, ^me} = Clustering.place(%{id: :bare}, kinds: [:beam])
    refute peer.node in PythonAdvisor.agent_nodes()
  end

  test "a Python node connected only to another BEAM node is dialled and then asked" do
    beam = PeerNode.start("mesh_beam", discovery: [])
    on_exit(fn -> PeerNode.stop(beam) end)
    py = python_stand_in("py_far", :first)
    # now only the other BEAM node is connected to it
    true = :erpc.call(beam.node, Node, :connect, [py])
    PeerNode.eventually(fn -> py in :erpc.call(beam.node, PythonAdvisor, :agent_nodes, []) end)
    Node.disconnect(py)
    PeerNode.eventually(fn -> py not in Node.list(:hidden) end)

    # within a mesh round (2 s) this node dials it again and may ask it
    PeerNode.eventually(fn -> py in PythonAdvisor.agent_nodes() end, 6_000)
    assert {:ok, _} = Clustering.place(%{id: :far_1}, kinds: [:beam])
    assert PythonAdvisor.take_advisor(:far_1) == py
  end

  test "no_advice from Python: the heuristic decides" do
    py = python_stand_in("py_none", :no_advice)
    me = node()
    assert {:ok, ^me} = Clustering.place(%{id: :none_1}, kinds: [:beam])
    assert StandInBalancer.count(py) == 1
    assert PythonAdvisor.take_advisor(:none_1) == nil
    assert py in PythonAdvisor.agent_nodes()
  end
end
