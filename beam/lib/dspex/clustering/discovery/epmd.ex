defmodule DSPEx.Clustering.Discovery.Epmd do
  @moduledoc """
  Asks the epmd daemon on each host which node names it has registered, and proposes
  `name@host` for each, so nodes find each other without being told the others' names.

      {DSPEx.Clustering.Discovery.Epmd, hosts: ["127.0.0.1", "db1.example.org"]}

  Options:
    * `:hosts` — list of hosts (strings, charlists, atoms or IP tuples). The host part of the
      proposed node names is the host exactly as written, so it must match how the nodes there
      named themselves (`-name app@127.0.0.1` pairs with host `"127.0.0.1"`). Default: the host
      part of this node's own name.
    * `:only` — optional `Regex` or prefix string; only epmd names matching it are proposed
      (useful when unrelated nodes share the epmd).
    * `:timeout` — ms for each host's query (default 2_000).

  The query is `:erl_epmd.names/1`, the kernel's own NAMES_REQ client, so the epmd port is the one
  the kernel uses: `ERL_EPMD_PORT` from the environment (or the `-kernel epmd_port` flag), else 4369.
  An unreachable host is skipped; the strategy reports an error only when every host failed.
  """
  @behaviour DSPEx.Clustering.Discovery.Strategy

  alias DSPEx.Clustering.Discovery.Strategy

  @impl true
  def init(opts) do
    hosts = Keyword.get_lazy(opts, :hosts, fn -> [Strategy.host_of(node())] end)

    if is_list(hosts) and hosts != [] do
      {:ok,
       %{
         hosts: hosts,
         only: Keyword.get(opts, :only),
         timeout: Keyword.get(opts, :timeout, 2_000)
       }}
    else
      {:error, {:invalid_option, :hosts}}
    end
  end

  @impl true
  def discover(state) do
    results = Enum.map(state.hosts, &{&1, names_with_timeout(&1, state.timeout)})

    nodes =
      for {host, {:ok, names}} <- results,
          {name, _port} <- names,
          name = List.to_string(name),
          wanted?(name, state.only),
          do: Strategy.node_name(name, host_string(host))

    errors = for {host, {:error, reason}} <- results, do: {host, reason}

    if nodes == [] and errors != [] and length(errors) == length(state.hosts),
      do: {:error, {:epmd_unreachable, errors}, state},
      else: {:ok, Enum.uniq(nodes), state}
  end

  # :erl_epmd.names/1 can hang on a black-holed host; bound it.
  defp names_with_timeout(host, timeout) do
    task = Task.async(fn -> :erl_epmd.names(Strategy.parse_address(host_string(host))) end)

    case Task.yield(task, timeout) || Task.shutdown(task, :brutal_kill) do
      {:ok, {:ok, names}} -> {:ok, names}
      {:ok, {:error, reason}} -> {:error, reason}
      {:ok, other} -> {:error, other}
      {:exit, reason} -> {:error, reason}
      nil -> {:error, :timeout}
    end
  end

  defp host_string(host) when is_tuple(host), do: List.to_string(:inet.ntoa(host))
  defp host_string(host), do: to_string(host)

  defp wanted?(_name, nil), do: true
  defp wanted?(name, %Regex{} = re), do: Regex.match?(re, name)
  defp wanted?(name, prefix) when is_binary(prefix), do: String.starts_with?(name, prefix)
end
