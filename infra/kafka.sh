#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft) from the Maven Central jars.
# usage: infra/kafka.sh {install|start|stop|restart|status|logs [N]|cli CLASS [ARGS...]}
#   e.g. infra/kafka.sh cli org.apache.kafka.tools.TopicCommand --bootstrap-server localhost:19092 --list
# shellcheck disable=SC2016  # the single-quoted bash -c script is intentional
source "$(dirname "$0")/common.sh"

SERVICE=kafka
PROC_MATCH=kafka.Kafka
KAFKA_VERSION=4.1.1
KAFKA_HEAP=${KAFKA_HEAP:-512m}
PORTS=("$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT")
START_TIMEOUT=90
STOP_TIMEOUT=30

HOME_DIR=$LOCAL/kafka
LIBS=$HOME_DIR/libs
DATA=$HOME_DIR/data
CONF=$HOME_DIR/server.properties
POM=$INFRA_DIR/kafka/pom.xml

need_java() {
  need java "install OpenJDK 17+ (e.g. apt-get install -y openjdk-17-jre-headless)"
  local major
  major=$(java -version 2>&1 | sed -nE '1s/.*version "(1\.)?([0-9]+).*/\2/p')
  if ((${major:-0} < 17)); then die "java $major found, Kafka $KAFKA_VERSION needs 17+: install OpenJDK 17+"; fi
}

# Resolve the jars once; the stamp records the version and the pom it came from.
svc_install() {
  local stamp
  need_java
  stamp="$KAFKA_VERSION $(cksum <"$POM")"
  if [[ -f $LIBS/.stamp && $(<"$LIBS/.stamp") == "$stamp" ]]; then return 0; fi
  need mvn "install Maven 3.6+ (e.g. apt-get install -y maven)"
  log "resolving Kafka $KAFKA_VERSION jars with Maven into $LIBS"
  rm -rf "$LIBS.tmp"
  if ! mvn -q -B -f "$POM" dependency:copy-dependencies -DoutputDirectory="$LIBS.tmp" >"$LOCAL/logs/kafka-install.log" 2>&1; then
    tail -n 30 "$LOCAL/logs/kafka-install.log" >&2
    die "maven could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION (is Maven Central reachable?)"
  fi
  echo "$stamp" >"$LIBS.tmp/.stamp"
  rm -rf "$LIBS" && mv "$LIBS.tmp" "$LIBS"
}

kafka_java() { # CLASS ARGS... : run a Kafka tool in the foreground, warnings to stderr
  java -Dlog4j2.configurationFile="$INFRA_DIR/kafka/tools-log4j2.properties" -cp "$LIBS/*" "$@"
}

svc_prepare() {
  mkdir -p "$DATA"
  render_template "$INFRA_DIR/kafka/server.properties" "$CONF" \
    PORT="$KAFKA_PORT" CONTROLLER_PORT="$KAFKA_CONTROLLER_PORT" DATA_DIR="$DATA"
  # Format the storage once; meta.properties in the data dir is the stamp.
  if [[ ! -f $DATA/meta.properties ]]; then
    local cluster_id
    cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    log "formatting storage in $DATA (cluster id $cluster_id)"
    kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$CONF" >>"$(log_file)" 2>&1 ||
      { show_log; die "kafka storage format failed"; }
  fi
}

svc_launch() { # KAFKA_OPTS: extra JVM flags, word-split on purpose
  # shellcheck disable=SC2086
  start_bg java "-Xms$KAFKA_HEAP" "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$INFRA_DIR/kafka/log4j2.properties" \
    ${KAFKA_OPTS:-} -cp "$LIBS/*" kafka.Kafka "$CONF"
}

# Healthy = the broker answers a Metadata request (api key 3, v4, all topics) on KAFKA_PORT.
# Raw protocol over bash /dev/tcp: a JVM-based client would take seconds per check.
svc_healthy() {
  timeout 5 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
    # size=15 | api_key=3 | version=4 | correlation_id=0x6b6b6b6b | client_id=null | topics=null | auto_create=0
    printf "\x00\x00\x00\x0f\x00\x03\x00\x04\x6b\x6b\x6b\x6b\xff\xff\xff\xff\xff\xff\x00" >&3
    [[ $(head -c 8 <&3 | od -An -tx1 | tr -d " \n") == ????????6b6b6b6b ]]
  ' "$KAFKA_PORT" 2>/dev/null
}

svc_describe() { echo "bootstrap=localhost:$KAFKA_PORT controller=127.0.0.1:$KAFKA_CONTROLLER_PORT data=$DATA"; }

if [[ ${1:-} == cli ]]; then
  shift
  [[ $# -gt 0 ]] || die "usage: $0 cli CLASS [ARGS...]"
  svc_install
  kafka_java "$@"
  exit
fi
service_main "$@"
