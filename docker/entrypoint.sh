#!/bin/sh
# The one entrypoint of the image, for every kind of node (the netns tests run it too):
#
#   docker/entrypoint.sh beam   --name beam1@beam1 [bin/dspex-node flags ...]
#   docker/entrypoint.sh agent  --name py1@py1 --join beam1@beam1,... [agent-node flags ...]
#   docker/entrypoint.sh node   --name py2@py2 [node flags ...]       (a plain Python node)
#   docker/entrypoint.sh health                                       (the healthcheck)
#
# It adds what every container needs: the cookie from DSPEX_COOKIE_FILE (default the compose
# secret /run/secrets/cookie), /metrics on DSPEX_METRICS_PORT (9568) on every interface, a fixed
# distribution port DSPEX_DIST_PORT (9100, which the image EXPOSEs), and for agent nodes the
# dashboard on DSPEX_DASHBOARD_PORT (8080). A Python node needs an epmd on its host, as every
# Erlang node does; one is started unless one answers already.
set -eu

root=$(CDPATH='' cd "$(dirname "$0")/.." && pwd -P)
python=${DSPEX_PYTHON:-$root/.venv/bin/python}
cookie_file=${DSPEX_COOKIE_FILE:-/run/secrets/cookie}
metrics_port=${DSPEX_METRICS_PORT:-9568}
dist_port=${DSPEX_DIST_PORT:-9100}
dashboard_port=${DSPEX_DASHBOARD_PORT:-8080}

ensure_epmd() {
  epmd ${ERL_EPMD_PORT:+-port "$ERL_EPMD_PORT"} -names >/dev/null 2>&1 ||
    epmd ${ERL_EPMD_PORT:+-port "$ERL_EPMD_PORT"} -daemon
}

kind=${1:-}
[ $# -gt 0 ] && shift
case "$kind" in
  beam)
    export DSPEX_METRICS_BIND=${DSPEX_METRICS_BIND:-0.0.0.0}
    exec "$root/beam/bin/dspex-node" --cookie-file "$cookie_file" \
      --metrics-port "$metrics_port" --dist-port "$dist_port" "$@" ;;
  agent)
    ensure_epmd
    exec "$python" -m dspex_cluster agent-node --cookie-file "$cookie_file" \
      --metrics-port "$metrics_port" --dashboard-port "$dashboard_port" --http-host 0.0.0.0 \
      --dist-port "$dist_port" "$@" ;;
  node)
    ensure_epmd
    exec "$python" -m dspex_cluster node --cookie-file "$cookie_file" \
      --metrics-port "$metrics_port" --http-host 0.0.0.0 --dist-port "$dist_port" "$@" ;;
  health)
    exec "$python" -c "
import sys, urllib.request
with urllib.request.urlopen('http://127.0.0.1:$metrics_port/metrics', timeout=5) as r:
    sys.exit(0 if r.status == 200 and b'dspex_' in r.read() else 1)
" ;;
  *)
    echo "usage: $0 beam|agent|node|health [flags...]" >&2
    exit 2 ;;
esac
