#!/usr/bin/env bash
# A three-node RabbitMQ 4 cluster on loopback for node-loss tests: private nodes (see
# rabbitmq-private-node.sh) of the trixie root of ensure-rabbitmq4.sh, with their own names,
# ports and data directories under <dir>, clustered with join_cluster.
#
#   rabbitmq-cluster.sh start   <dir>           starts and clusters node1..node3; prints one line per node
#   rabbitmq-cluster.sh nodes   <dir>           prints those lines again
#   rabbitmq-cluster.sh kill    <dir> <n>       kill -9 of node n's Erlang VM (beam.smp)
#   rabbitmq-cluster.sh restart <dir> <n>       starts node n again; returns once it runs in the cluster
#   rabbitmq-cluster.sh ctl     <dir> <n> <rabbitmqctl arguments...>
#   rabbitmq-cluster.sh queues  <dir> <n> <rabbitmq-queues arguments...>
#   rabbitmq-cluster.sh leader  <dir> <vhost> <queue>   the number of the node leading a quorum queue
#   rabbitmq-cluster.sh stop    <dir>           stops every node and removes their data (not <dir>)
#
# A node line, also in <dir>/nodes (the file tests read):
#   node1 amqp=5691 management=15691 dist=25691 name=logstream-cluster-5691@localhost
# Ports: node n gets AMQP B+n-1, management 10000 more, distribution 20000 more, where B is
# LOGSTREAM_CLUSTER_BASE_PORT or the first of 5691, 5694, 5697... with all nine ports free.
# guest/guest works on every node (loopback). LOGSTREAM_CLUSTER_KEEP=1: stop keeps the data.
#
# `leader` asks a running node (rabbitmq-queues quorum_status) which member is the Raft
# leader; right after the leader was killed there is none until the election ends (about
# the cluster's election timeout, a few seconds): it then fails with status 3; poll it.
set -euo pipefail

scripts=$(cd "$(dirname "$0")" && pwd)
node_script=$scripts/rabbitmq-private-node.sh
export RMQ4_LOG_PREFIX=rabbitmq-cluster
# shellcheck source-path=SCRIPTDIR source=lib/rabbitmq4.sh
. "$scripts/lib/rabbitmq4.sh"
export LOGSTREAM_RABBITMQ_VERSION=4
NODES=3

usage() {
  sed -n '6,13p' "$0" >&2
  exit 64
}

say() { echo "rabbitmq-cluster: $*" >&2; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The field of node n's line in <dir>/nodes, e.g. `field <dir> 2 name`.
field() {
  awk -v node="node$2" -v key="$3" '$1 == node {
    for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) print kv[2] } }' "$1/nodes"
}

node_pid() { cat "$1/node$2/rabbitmq.pid" 2>/dev/null || true; }

running() {
  local pid
  pid=$(node_pid "$1" "$2")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

ctl() {
  local dir=$1 n=$2
  shift 2
  "$node_script" ctl "$dir/node$n" "$@"
}

# Runs a CLI tool other than rabbitmqctl against node n, inside the root.
tool() {
  local dir=$1 n=$2 tool=$3
  shift 3
  local name
  name=$(field "$dir" "$n" name)
  # shellcheck disable=SC2016 # expanded inside the root
  rmq4_chroot --bind "$dir/node$n:/logstream-node" --user "${SUDO_UID:-$(id -u)}:${SUDO_GID:-$(id -g)}" -- /bin/sh -c \
    'set -a; . /logstream-node/node.env; set +a; cd "$HOME"; exec "$@"' tool "$tool" -n "$name" "$@"
}

# The nodes node n's cluster runs, as numbers, e.g. "1 2 3".
running_members() {
  local dir=$1 n=$2 json
  json=$(ctl "$dir" "$n" cluster_status --formatter json 2>/dev/null) || return 1
  python3 - "$json" "$dir/nodes" <<'PY'
import json, sys
status = json.loads(sys.argv[1])
names = {}
for line in open(sys.argv[2]):
    fields = line.split()
    names[dict(f.split("=", 1) for f in fields[1:])["name"]] = fields[0][len("node"):]
print(" ".join(sorted(names[n] for n in status.get("running_nodes", []) if n in names)))
PY
}

start() {
  local dir=$1
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/nodes" ]; then
    say "$dir already holds a cluster; stop it first"
    exit 1
  fi
  rmq4_require_root "$0" start "$dir"
  rmq4_install
  local started=$SECONDS base=${LOGSTREAM_CLUSTER_BASE_PORT:-}
  if [ -z "$base" ]; then
    local candidate
    for ((candidate = 5691; candidate < 5791; candidate += NODES)); do
      local free=1 p
      for ((p = candidate; p < candidate + NODES; p++)); do
        if ! port_free "$p" || ! port_free $((p + 10000)) || ! port_free $((p + 20000)); then
          free=0
          break
        fi
      done
      if [ "$free" = 1 ]; then base=$candidate; break; fi
    done
    [ -n "$base" ] || { say "no free ports between 5691 and 5790"; exit 1; }
  fi
  local cookie n
  cookie=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr 'a-f' 'A-F')
  : >"$dir/nodes.partial"
  for ((n = 1; n <= NODES; n++)); do
    local amqp=$((base + n - 1))
    echo "node$n amqp=$amqp management=$((amqp + 10000)) dist=$((amqp + 20000)) name=logstream-cluster-$amqp@localhost" >>"$dir/nodes.partial"
  done
  mv "$dir/nodes.partial" "$dir/nodes"

  # Three nodes boot side by side, then node2 and node3 join node1.
  local pids=() failed=0
  for ((n = 1; n <= NODES; n++)); do
    LOGSTREAM_NODE_COOKIE=$cookie LOGSTREAM_NODE_NAME=$(field "$dir" "$n" name) "$node_script" start "$dir/node$n" \
      "$(field "$dir" "$n" amqp)" "$(field "$dir" "$n" management)" "$(field "$dir" "$n" dist)" \
      >"$dir/node$n.start.out" 2>&1 &
    pids+=($!)
  done
  for ((n = 1; n <= NODES; n++)); do
    if ! wait "${pids[n - 1]}"; then
      say "node$n did not start:"
      cat "$dir/node$n.start.out" >&2
      failed=1
    fi
  done
  if [ "$failed" = 1 ]; then stop "$dir"; exit 1; fi
  local first
  first=$(field "$dir" 1 name)
  for ((n = 2; n <= NODES; n++)); do
    if ! { ctl "$dir" "$n" stop_app && ctl "$dir" "$n" join_cluster "$first" && ctl "$dir" "$n" start_app; } >"$dir/node$n.join.out" 2>&1; then
      say "node$n did not join $first:"
      cat "$dir/node$n.join.out" >&2
      stop "$dir"
      exit 1
    fi
  done
  local all
  all=$(seq -s ' ' 1 "$NODES")
  for _ in $(seq 1 60); do
    if [ "$(running_members "$dir" 1)" = "$all" ]; then
      cat "$dir/nodes"
      say "$NODES nodes clustered in $((SECONDS - started)) s (data in $dir)"
      return 0
    fi
    sleep 1
  done
  say "the cluster did not form: $(ctl "$dir" 1 cluster_status 2>&1)"
  stop "$dir"
  exit 1
}

kill_node() {
  local dir=$1 n=$2 pid
  pid=$(node_pid "$dir" "$n")
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    say "node$n is not running"
    return 0
  fi
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  say "node$n ($pid) killed"
}

restart() {
  local dir=$1 n=$2 started=$SECONDS
  if running "$dir" "$n"; then
    say "node$n is running already"
  else
    "$node_script" restart "$dir/node$n" >"$dir/node$n.restart.out" 2>&1 || {
      cat "$dir/node$n.restart.out" >&2
      exit 1
    }
  fi
  # Rejoined: every running node's cluster runs it.
  local m ok
  for _ in $(seq 1 120); do
    ok=1
    for ((m = 1; m <= NODES; m++)); do
      running "$dir" "$m" || continue
      case " $(running_members "$dir" "$m" || true) " in
        *" $n "*) ;;
        *) ok=0 ;;
      esac
    done
    if [ "$ok" = 1 ]; then
      say "node$n back in the cluster in $((SECONDS - started)) s"
      return 0
    fi
    sleep 0.5
  done
  say "node$n runs but did not rejoin within 60 s"
  exit 1
}

leader() {
  local dir=$1 vhost=$2 queue=$3 n json
  for ((n = 1; n <= NODES; n++)); do
    running "$dir" "$n" || continue
    json=$(tool "$dir" "$n" rabbitmq-queues quorum_status --vhost "$vhost" "$queue" --formatter json 2>&1) || {
      say "quorum_status on node$n: $json"
      exit 1
    }
    python3 - "$json" "$dir/nodes" <<'PY'
import json, sys
members = json.loads(sys.argv[1])
names = {}
for line in open(sys.argv[2]):
    fields = line.split()
    names[dict(f.split("=", 1) for f in fields[1:])["name"]] = fields[0][len("node"):]
leaders = [m["Node Name"] for m in members if m.get("Raft State") == "leader"]
if not leaders:
    sys.exit(3)
print(names.get(leaders[0], leaders[0]))
PY
    return
  done
  say "no node is running"
  exit 1
}

stop() {
  local dir=$1 n pids=()
  for ((n = 1; n <= NODES; n++)); do
    if [ -f "$dir/node$n/node.env" ]; then
      "$node_script" stop "$dir/node$n" >/dev/null 2>&1 &
      pids+=($!)
    fi
  done
  for pid in "${pids[@]}"; do wait "$pid" || true; done
  if [ "${LOGSTREAM_CLUSTER_KEEP:-0}" != 1 ]; then
    for ((n = 1; n <= NODES; n++)); do
      rm -rf "$dir/node$n" "$dir/node$n".*.out
    done
    rm -f "$dir/nodes"
  fi
  say "stopped"
}

[ $# -ge 2 ] || usage
command=$1
dir=$2
shift 2
if [ "$command" != start ]; then
  [ -f "$dir/nodes" ] || { say "no cluster was started in $dir"; exit 1; }
  dir=$(cd "$dir" && pwd)
  rmq4_require_root "$0" "$command" "$dir" "$@"
fi
node_number() {
  if ! [[ "${1:-}" =~ ^[1-9][0-9]*$ ]] || [ "$1" -gt "$NODES" ]; then
    say "no node ${1:-} (1 to $NODES)"
    exit 64
  fi
}
case "$command" in
  start) [ $# -eq 0 ] || usage; start "$dir" ;;
  nodes) cat "$dir/nodes" ;;
  kill) node_number "${1:-}"; kill_node "$dir" "$1" ;;
  restart) node_number "${1:-}"; restart "$dir" "$1" ;;
  ctl) node_number "${1:-}"; n=$1; shift; ctl "$dir" "$n" "$@" ;;
  queues) node_number "${1:-}"; n=$1; shift; tool "$dir" "$n" rabbitmq-queues "$@" ;;
  leader) [ $# -eq 2 ] || usage; leader "$dir" "$1" "$2" ;;
  stop) stop "$dir" ;;
  *) usage ;;
esac
