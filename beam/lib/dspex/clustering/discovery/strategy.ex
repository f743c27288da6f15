defmodule DSPEx.Clustering.Discovery.Strategy do
  @moduledoc """
  The behaviour every discovery strategy implements.

  A strategy is a plain module: it never connects to nodes itself, it only answers "which nodes
  should exist?". `DSPEx.Clustering.Discovery.Runner` owns one process per configured strategy, calls
  `c:init/1` once, `c:discover/1` every poll interval, and hands any other message the process
  receives (e.g. a UDP datagram for the gossip strategy) to `c:handle_info/2`. The runner reports
  the node lists to `DSPEx.Clustering.NodeDiscovery`, which connects, validates and tracks them.

  Callbacks return node names as atoms; the strategy's own node may appear in the list (the agent
  drops it).
  """

  @typedoc "Whatever the strategy keeps between calls."
  @type state :: term()

  @doc "Validates options and opens any resources (sockets). Runs in the runner process."
  @callback init(opts :: keyword()) :: {:ok, state()} | {:error, term()}

  @doc "One poll: the nodes this strategy currently knows of."
  @callback discover(state()) :: {:ok, [node()], state()} | {:error, term(), state()}

  @doc """
  A message the runner process received (socket data, timers). Return `{:ok, nodes, state}` when the
  known node list changed, or `{:noreply, state}`.
  """
  @callback handle_info(msg :: term(), state()) :: {:ok, [node()], state()} | {:noreply, state()}

  @doc "Releases resources when the runner stops."
  @callback terminate(state()) :: term()

  @optional_callbacks handle_info: 2, terminate: 1

  @doc """
  Builds `basename@host`. `host` may be a string, charlist, atom or an IP tuple; a trailing dot of a
  DNS name is dropped.
  """
  @spec node_name(String.t() | atom(), String.t() | charlist() | atom() | :inet.ip_address()) ::
          node()
  def node_name(basename, host) when is_tuple(host),
    do: node_name(basename, List.to_string(:inet.ntoa(host)))

  def node_name(basename, host) do
    host = host |> to_string() |> String.trim_trailing(".")
    String.to_atom("#{basename}@#{host}")
  end

  @doc "The host part of a node name, as a string."
  @spec host_of(node()) :: String.t()
  def host_of(node) do
    case String.split(Atom.to_string(node), "@", parts: 2) do
      [_, host] -> host
      [_] -> "nohost"
    end
  end

  @doc """
  Parses `"1.2.3.4"`, `~c"1.2.3.4"` or a tuple into an IP tuple; other strings are left as
  charlists (host names).
  """
  @spec parse_address(String.t() | charlist() | :inet.ip_address()) ::
          :inet.ip_address() | charlist()
  def parse_address(addr) when is_tuple(addr), do: addr

  def parse_address(addr) do
    chars = to_charlist(addr)

    case :inet.parse_address(chars) do
      {:ok, ip} -> ip
      {:error, _} -> chars
    end
  end
end
