#!/usr/bin/env bash
# ClickHouse server (Debian's clickhouse-server package) with its own config and data dir.
# usage: infra/clickhouse.sh {install|start|stop|restart|status|logs [N]|client [ARGS...]}
source "$(dirname "$0")/common.sh"

SERVICE=clickhouse
PROC_MATCH=clickhouse
CLICKHOUSE_LOG_LEVEL=${CLICKHOUSE_LOG_LEVEL:-information}
PORTS=("$CLICKHOUSE_PORT" "$CLICKHOUSE_HTTP_PORT" "$CLICKHOUSE_INTERSERVER_PORT")
START_TIMEOUT=60
STOP_TIMEOUT=30

HOME_DIR=$LOCAL/clickhouse
ETC=$HOME_DIR/etc
DATA=$HOME_DIR/data

# Sets CH_SERVER / CH_CLIENT (arrays). Old packages ship clickhouse-server + clickhouse-client,
# newer ones a single `clickhouse` binary.
find_binaries() {
  local server client
  server=$(command -v clickhouse-server || command -v /usr/sbin/clickhouse-server) || true
  client=$(command -v clickhouse-client) || true
  if [[ -n $server && -n $client ]]; then CH_SERVER=("$server") CH_CLIENT=("$client"); return 0; fi
  if command -v clickhouse >/dev/null 2>&1; then CH_SERVER=(clickhouse server) CH_CLIENT=(clickhouse client); return 0; fi
  return 1
}

svc_install() {
  if find_binaries; then return 0; fi
  need apt-get "clickhouse-server not found: install the clickhouse-server and clickhouse-client packages"
  log "installing clickhouse-server + clickhouse-client with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -q clickhouse-server clickhouse-client >&2 ||
    { as_root apt-get update -q >&2 && as_root apt-get install -y -q clickhouse-server clickhouse-client >&2; } ||
    die "clickhouse-server not found and apt-get could not install clickhouse-server clickhouse-client"
  find_binaries || die "clickhouse-server not found even after apt-get install"
}

svc_prepare() {
  mkdir -p "$ETC" "$DATA"
  render_template "$INFRA_DIR/clickhouse/config.xml" "$ETC/config.xml" \
    TCP_PORT="$CLICKHOUSE_PORT" HTTP_PORT="$CLICKHOUSE_HTTP_PORT" \
    INTERSERVER_PORT="$CLICKHOUSE_INTERSERVER_PORT" DATA_DIR="$DATA" LOG_LEVEL="$CLICKHOUSE_LOG_LEVEL"
  cp "$INFRA_DIR/clickhouse/users.xml" "$ETC/users.xml"
}

svc_launch() { start_bg "${CH_SERVER[@]}" --config-file="$ETC/config.xml"; }

client() { timeout 10 "${CH_CLIENT[@]}" --host 127.0.0.1 --port "$CLICKHOUSE_PORT" "$@"; }

svc_healthy() {
  [[ $(curl -s -m 2 "http://127.0.0.1:$CLICKHOUSE_HTTP_PORT/ping" 2>/dev/null) == "Ok." ]] &&
    client -q 'SELECT version()' >/dev/null 2>&1
}

svc_describe() { echo "native=127.0.0.1:$CLICKHOUSE_PORT http=http://127.0.0.1:$CLICKHOUSE_HTTP_PORT data=$DATA"; }

need curl "install curl (e.g. apt-get install -y curl)"
CH_SERVER=() CH_CLIENT=()
find_binaries || true
if [[ ${1:-} == client ]]; then
  shift
  svc_install
  exec "${CH_CLIENT[@]}" --host 127.0.0.1 --port "$CLICKHOUSE_PORT" "$@"
fi
service_main "$@"
