import Config

# Tests drive discovery themselves; faster reports keep multi-node tests short.
config :dspex_cluster,
  discovery: [],
  health_interval_ms: 500,
  load_interval_ms: 300,
  # the test node is a client of the strong state; its peers (PeerNode) form the group
  state_voter: false

config :logger, level: :info
