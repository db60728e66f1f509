#!/usr/bin/env bash
# An S3-compatible endpoint for the partners' export buckets: moto's standalone server
# (https://github.com/getmoto/moto, Apache-2.0), S3 API only, pinned, in its own virtual
# environment under $GPUMETER_LOCAL_DIR/moto. Buckets live in memory (gone after a restart).
#
# SeaweedFS (the first choice) builds from its Go module with `go build` in its module
# folder (`go install …@version` refuses its go.mod's replace directives), but the build took
# over 30 minutes on this project's 2-core machines: too slow for a fresh `make stack-up`.
# usage: infra/moto-s3.sh {install|start|stop|restart|status|logs [N]}
source "$(dirname "$0")/common.sh"

SERVICE=moto-s3
PROC_MATCH=moto_server
MOTO_VERSION=5.2.5
PORTS=("$S3_PORT")
START_TIMEOUT=30
STOP_TIMEOUT=10

VENV=$LOCAL/moto/venv
STAMP=$VENV/.moto.version

svc_install() {
  if [[ -x $VENV/bin/moto_server && -f $STAMP && $(<"$STAMP") == "$MOTO_VERSION" ]]; then return 0; fi
  need python3 "install Python 3.9+"
  log "installing moto $MOTO_VERSION (S3 server) into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >&2
  "$VENV/bin/pip" install -q "moto[s3]==$MOTO_VERSION" flask flask-cors >&2 ||
    die "pip install moto[s3]==$MOTO_VERSION failed (is PyPI reachable?)"
  echo "$MOTO_VERSION" >"$STAMP"
}

svc_prepare() { :; }

svc_launch() {
  start_bg "$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT"
}

svc_healthy() {
  local body
  body=$(curl -s -m 3 "http://127.0.0.1:$S3_PORT/" 2>/dev/null) && [[ $body == *ListAllMyBucketsResult* ]]
}

svc_describe() { echo "s3=http://127.0.0.1:$S3_PORT (moto $MOTO_VERSION, in memory)"; }

need curl "install curl (e.g. apt-get install -y curl)"
service_main "$@"
