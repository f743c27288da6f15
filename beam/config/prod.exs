import Config

# Ra logs at debug level otherwise
config :logger, level: :info
