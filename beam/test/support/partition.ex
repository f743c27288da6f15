defmodule DSPEx.Test.Partition do
  @moduledoc """
  Partitions between peers on one host: a per-node cookie that does not match (so every
  handshake with that node fails, in both directions) plus a disconnect; healing restores the
  cookie and connects. Run on the peers themselves (through `:peer.call/4`, which uses the
  peer's stdio, not distribution), so the test node can cut itself off from the cluster first
  and not bridge the two sides.
  """

  @doc "Cuts this node off from `nodes`."
  @spec block([node()]) :: :ok
  def block(nodes) do
    for n <- nodes do
      # a cookie of our own: two sides that both blocked each other must still not match
      :erlang.set_cookie(n, :"partitioned_#{node()}")
      :erlang.disconnect_node(n)
    end

    :ok
  end

  @doc "Lets this node talk to `nodes` again and connects to them."
  @spec heal([node()]) :: [boolean()]
  def heal(nodes) do
    for n <- nodes do
      :erlang.set_cookie(n, :erlang.get_cookie())
      Node.connect(n)
    end
  end
end
