defmodule DSPEx.Clustering.MixProject do
  use Mix.Project

  # Ra (the strong state's Raft) and its dependencies are OTP applications unpacked by
  # `make setup` from Debian's rabbitmq-server package into .cache/otp-libs (no hex, no network).
  @otp_libs Path.expand("../.cache/otp-libs", __DIR__)
  for ebin <- Path.wildcard(Path.join(@otp_libs, "*/ebin")), do: Code.prepend_path(ebin)

  def project do
    [
      app: :dspex_cluster,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      elixirc_paths: elixirc_paths(Mix.env()),
      # Elixir >= 1.15 drops code paths that no dependency owns: keep .cache/otp-libs (above)
      prune_code_paths: false,
      deps: []
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]

  def application do
    [
      extra_applications: [:logger, :crypto, :os_mon, :inets, :runtime_tools, :ra],
      mod: {DSPEx.Clustering.Application, []}
    ]
  end
end
