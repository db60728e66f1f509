# shellcheck shell=bash disable=SC2016  # single-quoted bash -c scripts are intentional
# infra/common.sh - shared helpers, sourced by kafka.sh, clickhouse.sh, stripe-mock.sh,
# moto-s3.sh, stack.sh.
#
# A service script sets SERVICE, PROC_MATCH (a string found in the process's command
# line), PORTS (ports it will listen on; the first is the main one), START_TIMEOUT and
# STOP_TIMEOUT, defines the hooks below, then calls `service_main "$@"`:
#   svc_install    install binaries if missing (fast no-op when installed)
#   svc_prepare    write config / initialise data before a launch
#   svc_launch     start the process with `start_bg CMD...`
#   svc_healthy    exit 0 when the service answers requests (quiet)
#   svc_describe   one-line description (addresses) for status output
set -euo pipefail

INFRA_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$INFRA_DIR")
LOCAL=${GPUMETER_LOCAL_DIR:-$REPO_ROOT/.local}
mkdir -p "$LOCAL/bin" "$LOCAL/run" "$LOCAL/logs"
LOCAL=$(cd "$LOCAL" && pwd)
# Keep everything under $LOCAL out of git even without a root .gitignore entry.
[[ -f $LOCAL/.gitignore ]] || echo '*' >"$LOCAL/.gitignore"

# Ports (override with env vars); one place so stack.sh can print them.
KAFKA_PORT=${KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19093}
CLICKHOUSE_PORT=${CLICKHOUSE_PORT:-19000}
CLICKHOUSE_HTTP_PORT=${CLICKHOUSE_HTTP_PORT:-18123}
CLICKHOUSE_INTERSERVER_PORT=${CLICKHOUSE_INTERSERVER_PORT:-19009}
STRIPE_MOCK_PORT=${STRIPE_MOCK_PORT:-12111}
STRIPE_MOCK_HTTPS_PORT=${STRIPE_MOCK_HTTPS_PORT:-12112}
S3_PORT=${S3_PORT:-18333}

log() { printf '[%s] %s\n' "${SERVICE:-infra}" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "${SERVICE:-infra}" "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }

as_root() {
  if ((EUID == 0)); then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"; fi
}

# render_template SRC DST KEY=VALUE... : copy SRC to DST replacing every @KEY@ with VALUE.
render_template() {
  local src=$1 dst=$2 kv key val args=()
  shift 2
  for kv in "$@"; do
    key=${kv%%=*} val=${kv#*=}
    val=$(printf '%s' "$val" | sed -e 's/[\\|&]/\\&/g')
    args+=(-e "s|@${key}@|${val}|g")
  done
  sed "${args[@]}" "$src" >"$dst.tmp" && mv "$dst.tmp" "$dst"
}

port_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null; }

wait_for_port() { # PORT [TIMEOUT_S]
  local port=$1 deadline=$((SECONDS + ${2:-30}))
  until port_open "$port"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

pid_file() { echo "$LOCAL/run/$SERVICE.pid"; }
log_file() { echo "$LOCAL/logs/$SERVICE.log"; }

# Alive and not a zombie (PID 1 in containers does not always reap).
pid_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# Prints the pid from the pid file if that process is alive and is really our service.
running_pid() {
  local pid
  pid=$(cat "$(pid_file)" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" || return 1
  grep -qaF -- "$PROC_MATCH" "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

# start_bg CMD... : run CMD detached (own session, immune to SIGHUP), output appended to
# the log file, pid in the pid file. fd 9 (the lock) is not inherited.
start_bg() {
  local pf log i
  pf=$(pid_file) log=$(log_file)
  rm -f "$pf"
  if (($(stat -c %s "$log" 2>/dev/null || echo 0) > 20 * 1024 * 1024)); then mv -f "$log" "$log.1"; fi
  printf '\n===== %s: starting %s =====\n' "$(date '+%F %T')" "$*" >>"$log"
  setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$pf" "$@" </dev/null >>"$log" 2>&1 9>&- &
  for ((i = 0; i < 50; i++)); do
    if [[ -s $pf ]]; then return 0; fi
    sleep 0.1
  done
  die "could not launch $1 (no pid file)"
}

show_log() {
  log "last 30 lines of $(log_file):"
  tail -n 30 "$(log_file)" 2>/dev/null | sed 's/^/    /' >&2 || true
}

wait_healthy() {
  local deadline=$((SECONDS + START_TIMEOUT)) start=$SECONDS pid
  until svc_healthy; do
    if ! pid=$(running_pid); then
      rm -f "$(pid_file)"
      show_log
      die "$SERVICE exited during startup (log: $(log_file))"
    fi
    if ((SECONDS >= deadline)); then
      show_log
      die "$SERVICE (pid $pid) not healthy after ${START_TIMEOUT}s; still running - inspect the log, then '$0 stop' (or '$0 restart' if you changed its ports)"
    fi
    sleep 0.5
  done
  log "healthy after $((SECONDS - start))s (pid $(running_pid || echo '?')): $(svc_describe)"
}

service_start() {
  local pid port
  if pid=$(running_pid); then
    if svc_healthy; then
      log "already running and healthy (pid $pid) - reusing: $(svc_describe)"
      return 0
    fi
    log "running (pid $pid) but not healthy yet - waiting up to ${START_TIMEOUT}s"
  else
    if port_open "${PORTS[0]}" && svc_healthy; then
      log "a healthy $SERVICE not started from $LOCAL already serves port ${PORTS[0]} - reusing it (stop will not touch it)"
      return 0
    fi
    for port in "${PORTS[@]}"; do
      if port_open "$port"; then die "port $port is already in use by another process (see: ss -ltnp | grep :$port)"; fi
    done
    svc_install
    svc_prepare
    log "starting (log: $(log_file))"
    svc_launch
  fi
  wait_healthy
}

service_stop() {
  local pid i
  if ! pid=$(running_pid); then
    rm -f "$(pid_file)"
    log "not running"
    return 0
  fi
  log "stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_TIMEOUT * 2; i++)); do
    pid_alive "$pid" || break
    sleep 0.5
  done
  if pid_alive "$pid"; then
    log "still running after ${STOP_TIMEOUT}s - sending SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$(pid_file)"
  log "stopped"
}

# One line on stdout; exit 0 only when up and healthy.
service_status() {
  local pid
  if pid=$(running_pid); then
    if svc_healthy; then echo "$SERVICE: up (pid $pid) $(svc_describe)"; return 0; fi
    echo "$SERVICE: UNHEALTHY (pid $pid running, not answering) - log: $(log_file)"; return 1
  fi
  if port_open "${PORTS[0]}" && svc_healthy; then
    echo "$SERVICE: up (not managed from $LOCAL: no pid file) $(svc_describe)"; return 0
  fi
  echo "$SERVICE: down"
  return 3
}

with_lock() { # serialise concurrent start/stop of the same service
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$LOCAL/run/$SERVICE.lock"
    flock 9
  fi
  "$@"
}

service_main() {
  case "${1:-}" in
    install) with_lock svc_install ;;
    start) with_lock service_start ;;
    stop) with_lock service_stop ;;
    restart) with_lock service_stop && service_start ;;
    status) service_status ;;
    logs) tail -n "${2:-50}" "$(log_file)" ;;
    *) echo "usage: $0 {install|start|stop|restart|status|logs [N]}" >&2; exit 2 ;;
  esac
}
