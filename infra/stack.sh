#!/usr/bin/env bash
# The whole local stack: Kafka, ClickHouse, stripe-mock, S3 (moto).
# usage: infra/stack.sh {up|down|status|env|restart-kafka|restart-clickhouse}
#   up/env print `export ...` lines on stdout (logs go to stderr): eval "$(infra/stack.sh up)"
source "$(dirname "$0")/common.sh"
SERVICE=stack
SERVICES=(kafka clickhouse stripe-mock moto-s3)

print_env() {
  cat <<ENV
export GPUMETER_KAFKA_BOOTSTRAP=localhost:$KAFKA_PORT
export GPUMETER_CLICKHOUSE_HOST=127.0.0.1
export GPUMETER_CLICKHOUSE_PORT=$CLICKHOUSE_PORT
export GPUMETER_STRIPE_API_BASE=http://127.0.0.1:$STRIPE_MOCK_PORT
export GPUMETER_S3_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
ENV
  # the local stack's Stripe test key and webhook secret (infra/local.env)
  sed -n 's/^\(GPUMETER_[A-Z_]*=.*\)$/export \1/p' "$INFRA_DIR/local.env"
}

up() {
  local s start=$SECONDS
  for s in "${SERVICES[@]}"; do "$INFRA_DIR/$s.sh" start; done
  cat >&2 <<SUMMARY

gpumeter local stack is up ($((SECONDS - start))s); data, logs and pids in $LOCAL
  kafka        localhost:$KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT)
  clickhouse   native 127.0.0.1:$CLICKHOUSE_PORT, http http://127.0.0.1:$CLICKHOUSE_HTTP_PORT (interserver $CLICKHOUSE_INTERSERVER_PORT)
  stripe-mock  http://127.0.0.1:$STRIPE_MOCK_PORT, https://127.0.0.1:$STRIPE_MOCK_HTTPS_PORT
  s3 (moto)    http://127.0.0.1:$S3_PORT

SUMMARY
  print_env
}

down() { # reverse order
  local i
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do "$INFRA_DIR/${SERVICES[i]}.sh" stop; done
}

status() {
  local s rc=0
  for s in "${SERVICES[@]}"; do "$INFRA_DIR/$s.sh" status || rc=1; done
  return "$rc"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) print_env ;;
  restart-kafka) "$INFRA_DIR/kafka.sh" restart ;;
  restart-clickhouse) "$INFRA_DIR/clickhouse.sh" restart ;;
  *) echo "usage: $0 {up|down|status|env|restart-kafka|restart-clickhouse}" >&2; exit 2 ;;
esac
