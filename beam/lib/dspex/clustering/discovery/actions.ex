defmodule DSPEx.Clustering.Discovery.Actions.Hello do
  @moduledoc """
  The validation handshake: a node that has just connected asks this node's discovery agent who it
  is. The reply is `%{node, cluster_name, version, protocol}`; the caller decides whether to keep the
  connection. The caller's own facts ride along in the params (only logged here: each side
  validates the other independently on its own `nodeup`).

      DSPEx.Clustering.Agent.cmd({:dspex_node_discovery, peer}, :hello,
        %{node: node(), cluster_name: "dspex", version: "0.1.0"})
  """
  use DSPEx.Clustering.Action,
    name: :hello,
    schema: [
      node: [type: :node, required: true],
      cluster_name: [type: :binary, required: true],
      version: [type: :binary, required: true]
    ]

  require Logger

  @impl true
  def run(params, %{state: state}) do
    Logger.debug(
      "discovery: hello from #{params.node} (#{params.cluster_name} #{params.version})"
    )

    # A node held as unmanaged (its agent was not up when we asked, or did not answer in time)
    # has just shown that it runs one: validate it again rather than keep the stale verdict.
    peer = params.node

    # A node we do not know yet has announced itself (a hidden node is asked nothing before).
    case state.members do
      %{^peer => %{status: :unmanaged}} ->
        send(self(), {:dspex_nd, :revalidate, peer})

      %{^peer => _} ->
        :ok

      _ ->
        send(self(), {:dspex_nd, :announced, peer})
    end

    {:ok, DSPEx.Clustering.NodeDiscovery.self_info(state)}
  end
end

defmodule DSPEx.Clustering.Discovery.Actions.Ping do
  @moduledoc "Answers `:pong` at once: the round trip a peer's latency probe measures."
  use DSPEx.Clustering.Action, name: :ping, schema: []

  @impl true
  def run(_params, _context), do: {:ok, :pong}
end
