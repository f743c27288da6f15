defmodule DSPEx.Clustering.Membership.Announcement do
  @moduledoc """
  Which connected nodes the cluster's agents (membership, discovery) may message unasked.

  A node connected to us is one of:

    * a **visible** node — a full Erlang node. OTP's own services (`global`, `:pg`, `rex`'s
      feature probe) message every visible node on connect; so do membership and discovery;
    * a **hidden** node that **announced itself**: a BEAM node of this cluster (its membership
      sends `{:dspex_heartbeat, ...}` or its discovery says `:hello`) or a Python node that joined
      (`{:dspex_hello, node, %{kind: :python}}` to `:dspex_membership` and `:dspex_node_discovery`);
    * any other **hidden** node — `erl_call`, a C node on erl_interface, a remote shell started
      with `-hidden`, a plain `-hidden` node: a client that came to make calls. It gets **no**
      message it did not ask for: a C node's `ei_rpc` fails if anything but the `rex` reply
      arrives first. (A remote shell started without `-hidden` is a visible, full node: it is
      treated as OTP treats one, and gets one heartbeat and one hello to names it does not have.)

  A node that is itself hidden (started with `-hidden`) joins as a client does: it announces
  itself (a heartbeat, a hello) to every node it connects to, as a Python node does.
  """

  @typedoc "What a joining non-BEAM node sends to `:dspex_membership` and `:dspex_node_discovery`."
  @type hello :: {:dspex_hello, node(), %{optional(atom()) => term()}}

  @doc "May we message a node that has just connected with this `node_type`, before it spoke?"
  @spec contact_on_nodeup?(:visible | :hidden) :: boolean()
  def contact_on_nodeup?(:visible), do: true
  def contact_on_nodeup?(_hidden), do: self_hidden?()

  @doc "Was this node started hidden (`-hidden`)?"
  @spec self_hidden?() :: boolean()
  def self_hidden?, do: match?({:ok, _}, :init.get_argument(:hidden))

  @doc "The kind a hello announces (`:python` unless it says `:beam`)."
  @spec kind(map()) :: :beam | :python
  def kind(info) when is_map(info) do
    case Map.get(info, :kind) do
      :beam -> :beam
      _ -> :python
    end
  end

  @doc "`:visible` or `:hidden` while `node` is connected, else nil."
  @spec connection_type(node()) :: :visible | :hidden | nil
  def connection_type(node) do
    cond do
      node in Node.list(:visible) -> :visible
      node in Node.list(:hidden) -> :hidden
      true -> nil
    end
  end
end
