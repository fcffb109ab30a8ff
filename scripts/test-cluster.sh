#!/usr/bin/env bash
# `make test-cluster`: the node-loss tests, on a three-node RabbitMQ 4 cluster started for them
# (scripts/rabbitmq-cluster.sh) and stopped afterwards, pass or fail.
#
# The convention for such a test:
# - it is an integration test (in <crate>/tests/, e.g. worker/tests/cluster.rs) whose function
#   name starts with `cluster_` (e.g. `async fn cluster_leader_loss_loses_nothing()`, at the
#   top of its file, not in a module), and it is
#   `#[ignore = "needs a RabbitMQ cluster: make test-cluster"]`, so that plain runs skip it;
# - it reads the nodes from `$LOGSTREAM_CLUSTER_DIR/nodes`, one line per node:
#     node1 amqp=5691 management=15691 dist=25691 name=logstream-cluster-5691@localhost
#   (guest/guest, vhost /; a test declares its own vhost or unique queue names);
# - it disrupts nodes with `scripts/rabbitmq-cluster.sh kill|restart <dir> <n>`, asks
#   `scripts/rabbitmq-cluster.sh leader <dir> <vhost> <queue>` which node leads a quorum queue,
#   and restarts every node it killed before it ends, pass or fail (a Drop guard);
# - the cluster tests run one at a time (the nextest test group `rabbitmq-cluster`).
# AMQP_ADDR and MANAGEMENT_ADDR name node1 and LOGSTREAM_RABBITMQ_VERSION is set, for the
# shared harness; a test that kills node1 uses the other nodes' ports from the file.
#
# LOGSTREAM_CLUSTER_DIR, when set, is where the cluster lives (default target/rabbitmq-cluster);
# extra arguments go to `cargo nextest run` (or `cargo test`).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
cluster=scripts/rabbitmq-cluster.sh
dir=${LOGSTREAM_CLUSTER_DIR:-$PWD/target/rabbitmq-cluster}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

filter='kind(test) & test(/^cluster_/)'
if $CARGO nextest --version >/dev/null 2>&1; then
  # No such test yet: no cluster either.
  if ! listing=$($CARGO nextest list --workspace --run-ignored only -E "$filter" --message-format oneline 2>"$dir/list.err"); then
    cat "$dir/list.err" >&2
    exit 1
  fi
  if [ -z "$listing" ]; then
    echo "==== cluster tests: none yet (#[ignore]d integration tests named cluster_*); no cluster started"
    exit 0
  fi
fi

# A run that was interrupted left its cluster behind.
if [ -f "$dir/nodes" ]; then "$cluster" stop "$dir" || true; fi
echo "==== cluster tests: starting a three-node RabbitMQ 4 cluster in $dir"
"$cluster" start "$dir"
trap '"$cluster" stop "$dir"' EXIT

port() { awk -v key="$2" '$1 == "node1" { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) print kv[2] } }' "$1/nodes"; }
amqp_port=$(port "$dir" amqp)
management_port=$(port "$dir" management)
export LOGSTREAM_CLUSTER_DIR=$dir
export AMQP_ADDR="amqp://guest:guest@127.0.0.1:$amqp_port/%2f"
export MANAGEMENT_ADDR="http://guest:guest@127.0.0.1:$management_port"
LOGSTREAM_RABBITMQ_VERSION=$(python3 - "$management_port" <<'PY' 2>/dev/null || echo 4
import base64, json, sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/api/overview",
    headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
print(json.load(urllib.request.urlopen(req, timeout=5))["rabbitmq_version"])
PY
)
export LOGSTREAM_RABBITMQ_VERSION

echo "==== cluster tests (RabbitMQ $LOGSTREAM_RABBITMQ_VERSION, 3 nodes; AMQP_ADDR is node1)"
# Each test appends its published / confirmed / written counts here.
counts=target/test-artifacts/cluster-counts.txt
rm -f "$counts"
status=0
if $CARGO nextest --version >/dev/null 2>&1; then
  $CARGO nextest run --workspace --no-fail-fast --run-ignored only -E "$filter" "$@" || status=$?
else
  $CARGO test --workspace --no-fail-fast --tests -- --ignored cluster_ "$@" || status=$?
fi
echo "==== cluster tests: counts ($counts)"
cat "$counts" 2>/dev/null || echo "(none written)"
exit "$status"
