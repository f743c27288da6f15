defmodule DSPEx.Clustering.ConfigTest do
  use ExUnit.Case, async: false
  alias DSPEx.Clustering.Config

  setup do
    saved = Application.get_all_env(:dspex_cluster)

    on_exit(fn ->
      for {k, _} <- Application.get_all_env(:dspex_cluster),
          do: Application.delete_env(:dspex_cluster, k)

      Application.put_all_env(dspex_cluster: saved)
    end)
  end

  test "profile defaults, and per-node overrides win" do
    Application.delete_env(:dspex_cluster, :load_interval_ms)
    Application.put_env(:dspex_cluster, :profile, :production)
    assert Config.profile() == :production
    assert Config.get(:load_interval_ms) == Config.profile_defaults(:production).load_interval_ms

    Application.put_env(:dspex_cluster, :profile, "development")
    assert Config.profile() == :development
    assert Config.get(:load_interval_ms) == Config.profile_defaults(:development).load_interval_ms

    Application.put_env(:dspex_cluster, :load_interval_ms, 1234)
    assert Config.get(:load_interval_ms) == 1234
    assert Config.all().load_interval_ms == 1234
  end

  test "both profiles define the same keys, with a detector that suspects within ~1 s" do
    dev = Config.profile_defaults(:development)
    prod = Config.profile_defaults(:production)
    assert Map.keys(dev) == Map.keys(prod)

    for p <- [dev, prod] do
      # silence at which phi crosses the threshold with a steady history (std at its floor)
      z = 5.612
      crossing = p.heartbeat_interval_ms + p.acceptable_pause_ms + z * p.min_std_dev_ms
      assert crossing < 1_000
    end
  end

  test "library mode: no discovery strategies unless :discovery is set" do
    Application.delete_env(:dspex_cluster, :discovery)
    Application.put_env(:dspex_cluster, :profile, :development)
    assert Config.get(:discovery) == [:epmd]
    Application.put_env(:dspex_cluster, :mode, :library)
    assert Config.get(:discovery) == []
    assert DSPEx.Clustering.NodeDiscovery.options_from_config()[:strategies] == []
    Application.put_env(:dspex_cluster, :discovery, [:epmd])
    assert Config.get(:discovery) == [:epmd]
  end
end
