import Config

# Profile defaults live in DSPEx.Clustering.Config; set keys here (or per node at run time,
# see config/runtime.exs) to override them.
config :dspex_cluster, profile: :development

import_config "#{config_env()}.exs"
