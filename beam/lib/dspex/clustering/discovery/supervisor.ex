defmodule DSPEx.Clustering.Discovery.Supervisor do
  @moduledoc """
  Supervises `DSPEx.Clustering.NodeDiscovery` and one `DSPEx.Clustering.Discovery.Runner` per
  strategy, `rest_for_one`: the agent starts first, so the runners always have someone to report
  to; when the agent restarts, the runners restart and report afresh.
  """
  use Supervisor

  alias DSPEx.Clustering.Discovery.{Epmd, Gossip, Runner}
  alias DSPEx.Clustering.NodeDiscovery

  @doc "Starts the tree; `opts` as documented in `DSPEx.Clustering.NodeDiscovery`."
  @spec start_link(keyword()) :: Supervisor.on_start()
  def start_link(opts) do
    opts = opts |> NodeDiscovery.normalise() |> expand()
    name = Keyword.get(opts, :name, NodeDiscovery.name())
    Supervisor.start_link(__MODULE__, opts, name: NodeDiscovery.supervisor_name(name))
  end

  @impl true
  def init(opts) do
    name = Keyword.get(opts, :name, NodeDiscovery.name())
    cluster = to_string(Keyword.get(opts, :cluster_name, "dspex"))
    interval = Keyword.get(opts, :interval, 5_000)

    runners =
      opts
      |> Keyword.get(:strategies, [])
      |> Enum.with_index()
      |> Enum.map(fn {{module, s_opts}, i} ->
        {Runner,
         id: {i, module},
         strategy: module,
         strategy_opts: Keyword.put_new(s_opts, :cluster_name, cluster),
         interval: Keyword.get(s_opts, :interval, interval),
         report_to: name}
      end)

    agent = %{
      id: NodeDiscovery,
      start: {NodeDiscovery, :start_link, [Keyword.put(opts, :name, name)]}
    }

    Supervisor.init([agent | runners], strategy: :rest_for_one, max_restarts: 10, max_seconds: 10)
  end

  @doc "Expands shorthand strategy atoms (`:epmd`, `:gossip`) to `{module, opts}`."
  @spec expand(keyword()) :: keyword()
  def expand(opts) do
    Keyword.update(opts, :strategies, [], fn list ->
      Enum.map(list, fn
        :epmd -> {Epmd, []}
        :gossip -> {Gossip, []}
        {module, s_opts} when is_atom(module) and is_list(s_opts) -> {module, s_opts}
        module when is_atom(module) -> {module, []}
      end)
    end)
  end
end
