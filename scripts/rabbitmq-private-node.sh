#!/usr/bin/env bash
# A private, throw-away RabbitMQ node for tests that must disrupt a broker (stop_app/start_app)
# without touching the shared node every other test uses.
#
#   rabbitmq-private-node.sh start <dir> <amqp-port> <management-port> <dist-port>
#   rabbitmq-private-node.sh ctl   <dir> <rabbitmqctl arguments...>
#   rabbitmq-private-node.sh stop  <dir>
#
# Everything the node writes lives under <dir>: its database, logs, pid file, config, plugin
# list and a private HOME holding the Erlang cookie (the shared node's cookie when it is
# readable, as the brief of issue 3 asks, else a fresh random one). The node has its own name,
# AMQP, management and distribution ports, and listens on 127.0.0.1 only. It shares nothing
# with the shared node but the epmd daemon, which only maps node names to ports.
#
# The Debian wrappers in /usr/sbin switch to the rabbitmq user and reset the environment, so
# the scripts in /usr/lib/rabbitmq/bin are called directly, as the current user.
set -euo pipefail

RABBIT_BIN=${RABBIT_BIN:-/usr/lib/rabbitmq/bin}
SHARED_COOKIE=/var/lib/rabbitmq/.erlang.cookie

usage() {
  sed -n '2,8p' "$0" >&2
  exit 64
}

# Exports the node's environment from <dir>/node.env.
load_env() {
  local dir=$1
  if [ ! -f "$dir/node.env" ]; then
    echo "rabbitmq-private-node: no node was started in $dir" >&2
    exit 1
  fi
  set -a
  # shellcheck disable=SC1091
  . "$dir/node.env"
  set +a
}

ctl() {
  "$RABBIT_BIN/rabbitmqctl" -n "$RABBITMQ_NODENAME" "$@"
}

start() {
  local dir=$1 amqp_port=$2 management_port=$3 dist_port=$4
  mkdir -p "$dir/home" "$dir/mnesia" "$dir/log"
  dir=$(cd "$dir" && pwd)

  if [ -r "$SHARED_COOKIE" ]; then
    cp "$SHARED_COOKIE" "$dir/home/.erlang.cookie"
  else
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr 'a-f' 'A-F' >"$dir/home/.erlang.cookie"
  fi
  chmod 400 "$dir/home/.erlang.cookie"

  cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$amqp_port
management.tcp.port = $management_port
management.tcp.ip = 127.0.0.1
log.file.level = warning
EOF
  echo '[rabbitmq_management].' >"$dir/enabled_plugins"
  : >"$dir/rabbitmq-env.conf"

  cat >"$dir/node.env" <<EOF
HOME=$dir/home
RABBITMQ_NODENAME=logstream-private-$amqp_port@localhost
RABBITMQ_USE_LONGNAME=false
RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
RABBITMQ_NODE_PORT=$amqp_port
RABBITMQ_DIST_PORT=$dist_port
RABBITMQ_MNESIA_BASE=$dir/mnesia
RABBITMQ_LOG_BASE=$dir/log
RABBITMQ_PID_FILE=$dir/rabbitmq.pid
RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf
RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config
RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf
EOF
  load_env "$dir"

  "$RABBIT_BIN/rabbitmq-server" -detached >"$dir/log/startup.out" 2>&1
  # await_startup fails at once until the node has registered with epmd: retry it.
  for _ in $(seq 1 90); do
    if ctl await_startup --timeout 5 >/dev/null 2>&1; then
      echo "rabbitmq-private-node: $RABBITMQ_NODENAME up (AMQP $amqp_port, management $management_port)"
      return 0
    fi
    # A node that died (a port in use, a bad config) will not come up: say so at once.
    if [ -f "$RABBITMQ_PID_FILE" ] && ! kill -0 "$(cat "$RABBITMQ_PID_FILE")" 2>/dev/null; then
      break
    fi
    sleep 0.5
  done
  echo "rabbitmq-private-node: $RABBITMQ_NODENAME did not start; see $dir/log" >&2
  grep -h -m 3 -E "\[error\]" "$dir"/log/*.log >&2 || true
  stop "$dir" || true
  return 1
}

stop() {
  local dir=$1
  load_env "$dir"
  local pid=""
  [ -f "$RABBITMQ_PID_FILE" ] && pid=$(cat "$RABBITMQ_PID_FILE")
  ctl stop >/dev/null 2>&1 || true
  # The pid file names the node this script started; make sure it is gone.
  if [ -n "$pid" ]; then
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || return 0
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

[ $# -ge 2 ] || usage
command=$1
shift
case "$command" in
  start) [ $# -eq 4 ] || usage; start "$@" ;;
  stop) stop "$1" ;;
  ctl) dir=$1; shift; load_env "$dir"; ctl "$@" ;;
  *) usage ;;
esac
