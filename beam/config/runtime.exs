import Config

# Per-node overrides from the environment (the bin/dspex-node launcher sets these).
split = fn value -> value |> String.split(",", trim: true) |> Enum.map(&String.trim/1) end

if profile = System.get_env("DSPEX_PROFILE"),
  do: config(:dspex_cluster, profile: String.to_atom(profile))

if strategies = System.get_env("DSPEX_DISCOVERY"),
  do: config(:dspex_cluster, discovery: Enum.map(split.(strategies), &String.to_atom/1))

if hosts = System.get_env("DSPEX_HOSTS"), do: config(:dspex_cluster, hosts: split.(hosts))
# nodes to stay connected to, beside what the discovery strategies find (bin/dspex-node --join)
if join = System.get_env("DSPEX_JOIN"), do: config(:dspex_cluster, join: split.(join))
if file = System.get_env("DSPEX_COOKIE_FILE"), do: config(:dspex_cluster, cookie_file: file)

if caps = System.get_env("DSPEX_CAPABILITIES"),
  do: config(:dspex_cluster, capabilities: Enum.map(split.(caps), &String.to_atom/1))

if dir = System.get_env("DSPEX_STATE_DIR"), do: config(:dspex_cluster, state_dir: dir)

if port = System.get_env("DSPEX_METRICS_PORT"),
  do: config(:dspex_cluster, metrics_port: String.to_integer(port))

if bind = System.get_env("DSPEX_METRICS_BIND"), do: config(:dspex_cluster, metrics_bind: bind)

# DNS discovery (--discovery dns), e.g. a Kubernetes headless service: deploy/kubernetes/
if query = System.get_env("DSPEX_DNS_QUERY"), do: config(:dspex_cluster, dns_query: query)
if base = System.get_env("DSPEX_DNS_BASENAME"), do: config(:dspex_cluster, dns_basename: base)

if type = System.get_env("DSPEX_DNS_TYPE"),
  do: config(:dspex_cluster, dns_type: String.to_existing_atom(type))
