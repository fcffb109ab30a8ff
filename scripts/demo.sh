#!/usr/bin/env bash
# `make demo`: LogStream's main job, end to end.
#
# - With Docker and kind: a kind cluster, the images, the Helm chart with its bundled
#   RabbitMQ, the examples, and a burst from an in-cluster Job: the e2e scenario (`make e2e`),
#   with the cluster kept afterwards to look at.
# - Otherwise, on this machine: `logstream dev -f examples/quickstart.yaml` against the local
#   RabbitMQ (installed and started by scripts/ensure-rabbitmq.sh) meets a burst that arrived
#   while no worker ran; the run ends once the workers scaled up, drained the backlog and
#   scaled back down.
#
# DEMO_LOGS (default 200000) sets the size of the burst.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 && command -v kind >/dev/null 2>&1; then
    echo "demo: Docker and kind found: taking the kind path (the e2e scenario, cluster kept afterwards)"
    scripts/install-chart-tools.sh
    PATH="$PATH:$PWD/.tools/bin" E2E_KEEP_CLUSTER=1 exec cargo run -q --release -p logstream-e2e
fi

echo "demo: no Docker engine or kind here: taking the one-machine path (logstream dev)"
scripts/ensure-rabbitmq.sh
cargo build -q --release -p logstream -p logstream-worker
bin=target/release
logs=${DEMO_LOGS:-200000}
work=$(mktemp -d)
out="$work/dev.out"
manifest=examples/quickstart.yaml
queue=logstream.default.quickstart.stdout

# Waits until `logstream dev`'s output has a line matching $1, for at most $2 seconds.
wait_for() {
    local pattern=$1 deadline=$((SECONDS + $2))
    until grep -q -- "$pattern" "$out"; do
        if ((SECONDS > deadline)) || ! kill -0 "$dev" 2>/dev/null; then
            echo "demo: gave up waiting for \"$pattern\"; logstream dev said:" >&2
            cat "$out" >&2
            exit 1
        fi
        sleep 0.2
    done
}

start_dev() {
    "$bin/logstream" dev -f "$manifest" --listen 127.0.0.1:0 --work-dir "$work" >"$out" 2>&1 &
    dev=$!
    trap 'kill -TERM $dev 2>/dev/null || true; wait $dev 2>/dev/null || true' EXIT
    wait_for "autoscaling" 60
}

# One release worker on this machine writes to its stdout sink about as fast as one
# publisher can send, so a live burst from one producer never needs a second worker here.
# The demo shows the case that does: logs that piled up while no worker ran.
echo "demo: 1/3: logstream dev applies the quickstart topology, then stops"
start_dev
cat "$out"
kill -TERM "$dev"
wait "$dev"

echo "demo: 2/3: a burst of $logs logs arrives while no worker runs"
"$bin/logstream" produce -f "$manifest" --count "$logs"

echo "demo: 3/3: logstream dev again: the autoscaler meets the backlog"
start=$SECONDS
start_dev
metrics=$(grep -o 'http://[^ ]*/metrics' "$out")
wait_for "scaled: .* 0 → " 30
grep "scaled: .* 0 → " "$out" | head -1

echo "demo: waiting for the workers to drain the backlog"
until curl -fsS "$metrics" | grep -q "^logstream_output_depth{.*output=\"stdout\"} 0$"; do
    if ((SECONDS - start > 600)); then
        echo "demo: the backlog did not drain within 10 minutes" >&2
        exit 1
    fi
    sleep 1
done
echo "demo: drained $((SECONDS - start)) s after the workers started; $queue is empty"

echo "demo: waiting for the scale-down (the quickstart's scaleDownDelay is 30s)"
wait_for "→ 1$" 180
grep "scaled:" "$out" | tail -1

kill -TERM "$dev"
wait "$dev"
trap - EXIT
tail -n 2 "$out"
written=$(cat "$work"/quickstart-stdout-*.log | grep -c '^{' || true)
echo "demo: done: $logs logs published, $written written by the workers (see $work), scaled up and back down"
