defmodule DSPEx.Clustering.Discovery.Dns do
  @moduledoc """
  Finds nodes through DNS records — the way Kubernetes headless services and StatefulSets are found.

      # headless service: one A record per ready pod -> app@10.1.2.3, app@10.1.2.4, ...
      {DSPEx.Clustering.Discovery.Dns, query: "app.default.svc.cluster.local", basename: "app"}

      # StatefulSet: SRV records -> app@web-0.web.default.svc.cluster.local, ...
      {DSPEx.Clustering.Discovery.Dns, query: "_epmd._tcp.web.default.svc.cluster.local",
        type: :srv, basename: "app"}

  Options:
    * `:query` (required) — the DNS name to look up.
    * `:basename` (required) — the name part of the proposed node names.
    * `:type` — `:a` (default), `:aaaa` or `:srv`. A/AAAA answers become `basename@<ip>`, SRV
      answers `basename@<target>` (the trailing dot dropped).
    * `:nameservers` — list of `{ip, port}` to ask (e.g. `[{{127, 0, 0, 1}, 5353}]`); default: the
      resolver configuration OTP read from the system (`/etc/resolv.conf`).
    * `:timeout` — ms per query (default 2_000).

  Queries go through OTP's `:inet_res` resolver directly, never through the host lookup order
  (`/etc/hosts` is not consulted). NXDOMAIN or an empty answer yields an empty list; a timeout or
  refused query is reported as an error.
  """
  @behaviour DSPEx.Clustering.Discovery.Strategy

  alias DSPEx.Clustering.Discovery.Strategy

  @impl true
  def init(opts) do
    with {:ok, query} <- fetch_string(opts, :query),
         {:ok, basename} <- fetch_string(opts, :basename),
         {:ok, type} <- fetch_type(opts) do
      res_opts =
        [timeout: Keyword.get(opts, :timeout, 2_000)] ++
          case Keyword.get(opts, :nameservers) do
            nil ->
              []

            ns ->
              [nameservers: Enum.map(ns, fn {ip, port} -> {Strategy.parse_address(ip), port} end)]
          end

      {:ok, %{query: to_charlist(query), basename: basename, type: type, res_opts: res_opts}}
    end
  end

  @impl true
  def discover(state) do
    case resolve(state.query, state.type, state.res_opts) do
      {:ok, answers} -> {:ok, Enum.uniq(Enum.map(answers, &to_node(&1, state))), state}
      {:error, reason} -> {:error, {:dns, reason}, state}
    end
  end

  @doc """
  Resolves `name` (charlist) for the record `type` and returns the answer data of that type only
  (CNAMEs in the answer are skipped): IP tuples for `:a`/`:aaaa`, `{priority, weight, port, target}`
  for `:srv`.
  """
  @spec resolve(charlist(), :a | :aaaa | :srv, keyword()) :: {:ok, [term()]} | {:error, term()}
  def resolve(name, type, res_opts) do
    case :inet_res.resolve(name, :in, type, res_opts) do
      {:ok, msg} ->
        answers =
          for rr <- :inet_dns.msg(msg, :anlist),
              :inet_dns.rr(rr, :type) == type,
              do: :inet_dns.rr(rr, :data)

        {:ok, answers}

      {:error, :nxdomain} ->
        {:ok, []}

      {:error, {:nxdomain, _msg}} ->
        {:ok, []}

      {:error, {reason, _msg}} ->
        {:error, reason}

      {:error, reason} ->
        {:error, reason}
    end
  end

  # an SRV answer and an IPv4 address are both 4-tuples: dispatch on the query type
  defp to_node({_prio, _weight, _port, target}, %{type: :srv} = state),
    do: Strategy.node_name(state.basename, target)

  defp to_node(ip, state), do: Strategy.node_name(state.basename, ip)

  defp fetch_string(opts, key) do
    case Keyword.get(opts, key) do
      v when is_binary(v) and v != "" -> {:ok, v}
      v when is_atom(v) and v not in [nil, true, false] -> {:ok, Atom.to_string(v)}
      _ -> {:error, {:missing_option, key}}
    end
  end

  defp fetch_type(opts) do
    case Keyword.get(opts, :type, :a) do
      t when t in [:a, :aaaa, :srv] -> {:ok, t}
      other -> {:error, {:invalid_option, {:type, other}}}
    end
  end
end
