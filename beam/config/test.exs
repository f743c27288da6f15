import Config

# Tests drive discovery themselves; faster reports keep multi-node tests short.
config :dspex_cluster,
  discovery: [],
  health_interval_ms: 500,
  load_interval_ms: 300

config :logger, level: :info
