#!/usr/bin/env bash
# stripe-mock (https://github.com/stripe/stripe-mock), built with `go install`, pinned.
# usage: infra/stripe-mock.sh {install|start|stop|restart|status|logs [N]}
source "$(dirname "$0")/common.sh"

SERVICE=stripe-mock
PROC_MATCH=stripe-mock
STRIPE_MOCK_VERSION=v0.203.0
PORTS=("$STRIPE_MOCK_PORT" "$STRIPE_MOCK_HTTPS_PORT")
START_TIMEOUT=30
STOP_TIMEOUT=10

BIN=$LOCAL/bin/stripe-mock
STAMP=$LOCAL/bin/.stripe-mock.version # `stripe-mock -version` prints "master" for go-installed builds

svc_install() {
  if [[ -x $BIN && -f $STAMP && $(<"$STAMP") == "$STRIPE_MOCK_VERSION" ]]; then return 0; fi
  need go "install Go 1.22+ (https://go.dev/dl/ or apt-get install -y golang)"
  log "building stripe-mock $STRIPE_MOCK_VERSION with go install into $LOCAL/bin"
  GOBIN=$LOCAL/bin GOFLAGS=-mod=mod go install "github.com/stripe/stripe-mock@$STRIPE_MOCK_VERSION" >&2 ||
    die "go install github.com/stripe/stripe-mock@$STRIPE_MOCK_VERSION failed (is the Go module proxy reachable?)"
  echo "$STRIPE_MOCK_VERSION" >"$STAMP"
}

svc_prepare() { :; }

svc_launch() {
  start_bg "$BIN" -http-addr "127.0.0.1:$STRIPE_MOCK_PORT" -https-addr "127.0.0.1:$STRIPE_MOCK_HTTPS_PORT"
}

svc_healthy() {
  local body
  body=$(curl -s -m 3 -H 'Authorization: Bearer sk_test_123' "http://127.0.0.1:$STRIPE_MOCK_PORT/v1/customers" 2>/dev/null) &&
    [[ $body == '{'* ]]
}

svc_describe() { echo "http=http://127.0.0.1:$STRIPE_MOCK_PORT https=https://127.0.0.1:$STRIPE_MOCK_HTTPS_PORT ($STRIPE_MOCK_VERSION)"; }

need curl "install curl (e.g. apt-get install -y curl)"
service_main "$@"
