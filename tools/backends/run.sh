#!/usr/bin/env bash
# `make jaeger`: Jaeger v2 and the OpenTelemetry Collector (collector-config/otel-collector.yaml)
# on 127.0.0.1, without Docker, from the binaries tools/backends/build.sh made. Your app (or
# `kilostar-otel demo --otlp-endpoint http://127.0.0.1:4317`) sends OTLP to the collector, which
# tail-samples and forwards to Jaeger. Ctrl-C stops both. Every port can be moved by its variable.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

jaeger_bin="$("$here/path.sh" jaeger)"
collector_bin="$("$here/path.sh" collector)"
for bin in "$jaeger_bin" "$collector_bin"; do
    [[ -x "$bin" ]] || { echo "run.sh: $bin is missing: run \`make backends\` first" >&2; exit 1; }
done

# The collector: the app's entry point, on the usual OTLP ports.
export COLLECTOR_OTLP_GRPC_ENDPOINT="${COLLECTOR_OTLP_GRPC_ENDPOINT:-127.0.0.1:4317}"
export COLLECTOR_OTLP_HTTP_ENDPOINT="${COLLECTOR_OTLP_HTTP_ENDPOINT:-127.0.0.1:4318}"
export COLLECTOR_HEALTH_ENDPOINT="${COLLECTOR_HEALTH_ENDPOINT:-127.0.0.1:13133}"
export COLLECTOR_METRICS_HOST="${COLLECTOR_METRICS_HOST:-127.0.0.1}"
export COLLECTOR_METRICS_PORT="${COLLECTOR_METRICS_PORT:-8888}"
# Jaeger: its own OTLP ports (only the collector sends there), its UI/API, its health check.
export JAEGER_OTLP_GRPC_ENDPOINT="${JAEGER_OTLP_GRPC_ENDPOINT:-127.0.0.1:14317}"
export JAEGER_OTLP_HTTP_ENDPOINT="${JAEGER_OTLP_HTTP_ENDPOINT:-127.0.0.1:14318}"
export JAEGER_QUERY_HTTP_ENDPOINT="${JAEGER_QUERY_HTTP_ENDPOINT:-127.0.0.1:16686}"
export JAEGER_QUERY_GRPC_ENDPOINT="${JAEGER_QUERY_GRPC_ENDPOINT:-127.0.0.1:16685}"
export JAEGER_HEALTH_ENDPOINT="${JAEGER_HEALTH_ENDPOINT:-127.0.0.1:13134}"

logs="$(mktemp -d "${TMPDIR:-/tmp}/kilostar-backends.XXXXXX")"
jaeger_pid="" collector_pid=""

stop() {
    trap - INT TERM EXIT
    echo
    # The collector first, so what it still holds goes to Jaeger before Jaeger stops.
    for pid in $collector_pid $jaeger_pid; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    echo "stopped the collector and Jaeger (logs in $logs)"
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

wait_healthy() {  # name pid url
    for _ in $(seq 1 300); do
        kill -0 "$2" 2>/dev/null || { echo "$1 exited; its log:" >&2; tail -20 "$logs/$1.log" >&2; exit 1; }
        if curl -fsS -o /dev/null "$3" 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    echo "$1 did not become healthy; its log: $logs/$1.log" >&2
    exit 1
}

# Each in its own session: Ctrl-C reaches this script only, which stops them in order.
setsid "$jaeger_bin" --config "$here/jaeger/config.yaml" >"$logs/jaeger.log" 2>&1 &
jaeger_pid=$!
wait_healthy jaeger "$jaeger_pid" "http://$JAEGER_HEALTH_ENDPOINT/status"

setsid "$collector_bin" --config="$root/collector-config/otel-collector.yaml" >"$logs/collector.log" 2>&1 &
collector_pid=$!
wait_healthy collector "$collector_pid" "http://$COLLECTOR_HEALTH_ENDPOINT/"

cat <<TEXT
Jaeger v2 and the OpenTelemetry Collector are running on this machine (Ctrl-C stops both).

  send OTLP/gRPC to    http://$COLLECTOR_OTLP_GRPC_ENDPOINT   (the collector)
  send OTLP/HTTP to    http://$COLLECTOR_OTLP_HTTP_ENDPOINT   (path /v1/traces)
  Jaeger UI and API    http://$JAEGER_QUERY_HTTP_ENDPOINT  (e.g. /api/services, /api/traces/<trace_id>)
  collector health     http://$COLLECTOR_HEALTH_ENDPOINT/
  tail sampling        decision_wait ${TAIL_SAMPLING_DECISION_WAIT:-10s}, ${TAIL_SAMPLING_PERCENTAGE:-10}% of plain traces
  logs                 $logs

Try, in another terminal:  kilostar-otel demo --otlp-endpoint http://$COLLECTOR_OTLP_GRPC_ENDPOINT
TEXT
wait -n "$jaeger_pid" "$collector_pid" || true
echo "a back end exited on its own; its log is in $logs" >&2
exit 1
