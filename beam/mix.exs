defmodule DSPEx.Clustering.MixProject do
  use Mix.Project

  def project do
    [
      app: :dspex_cluster,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: []
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]

  def application do
    [
      extra_applications: [:logger, :crypto, :os_mon, :inets, :runtime_tools],
      mod: {DSPEx.Clustering.Application, []}
    ]
  end
end
