#!/usr/bin/env bash
# A private, throw-away RabbitMQ node for tests that must disrupt a broker (stop_app/start_app)
# without touching the shared node every other test uses.
#
#   rabbitmq-private-node.sh start   <dir> <amqp-port> <management-port> <dist-port> [tls options]
#   rabbitmq-private-node.sh ctl     <dir> <rabbitmqctl arguments...>
#   rabbitmq-private-node.sh stop    <dir>
#   rabbitmq-private-node.sh restart <dir>   (starts a stopped or killed node again, as it was)
#
# TLS options (after the ports): `--tls <cert-dir> <amqps-port> <https-port>` adds an AMQPS
# listener and the management API over https, with the PEM files ca.crt, server.crt and
# server.key of <cert-dir> (copied into <dir>/tls, so that a chrooted RabbitMQ 4 node reads
# them); `--require-client-cert` after it makes the AMQPS listener refuse clients without a
# certificate signed by ca.crt (ssl_options.fail_if_no_peer_cert = true).
#
# Everything the node writes lives under <dir>: its database, logs, pid file, config, plugin
# list and a private HOME holding the Erlang cookie (the shared node's cookie when it is
# readable, as the brief of issue 3 asks, else a fresh random one; LOGSTREAM_NODE_COOKIE, when
# set, is used instead, so that the nodes of a cluster share one). The node has its own name
# (logstream-private-<amqp-port>@localhost, or LOGSTREAM_NODE_NAME), AMQP, management and
# distribution ports, and listens on 127.0.0.1 only. It shares nothing
# with the shared node but the epmd daemon, which only maps node names to ports.
#
# Which RabbitMQ: the version of the broker under test, so that a test run against RabbitMQ 4
# disrupts a RabbitMQ 4 node:
# - LOGSTREAM_RABBITMQ_VERSION (e.g. 4, 4.0.5, 3.10.8: its major counts), when set;
# - else 4 when AMQP_ADDR names port 5682 (the shared RabbitMQ 4 node of ensure-rabbitmq4.sh);
# - else 3: Debian's own rabbitmq-server (3.10 on bookworm).
# A RabbitMQ 4 node runs the binaries of the trixie root of ensure-rabbitmq4.sh (installed
# when missing), chrooted, with <dir> bind-mounted at /logstream-node inside a mount namespace
# of the node's own (so its config names /logstream-node/...); this needs root or sudo. The
# version is recorded in <dir>, so ctl, stop and restart follow it whatever the environment.
#
# The Debian wrappers in /usr/sbin switch to the rabbitmq user and reset the environment, so
# the scripts in /usr/lib/rabbitmq/bin are called directly, as the current user.
set -euo pipefail

scripts=$(cd "$(dirname "$0")" && pwd)
RABBIT_BIN=${RABBIT_BIN:-/usr/lib/rabbitmq/bin}
SHARED_COOKIE=/var/lib/rabbitmq/.erlang.cookie
export RMQ4_LOG_PREFIX=rabbitmq-private-node
# shellcheck source-path=SCRIPTDIR source=lib/rabbitmq4.sh
. "$scripts/lib/rabbitmq4.sh"
# Where <dir> appears inside the RabbitMQ 4 root.
INNER=/logstream-node
# Who a RabbitMQ 4 node runs as: the caller, also when this script runs through sudo.
NODE_USER=${SUDO_UID:-$(id -u)}:${SUDO_GID:-$(id -g)}

usage() {
  sed -n '2,15p' "$0" >&2
  exit 64
}

# The RabbitMQ major version a new node gets (see the header).
wanted_version() {
  local version=${LOGSTREAM_RABBITMQ_VERSION:-}
  if [ -z "$version" ]; then
    version=3
    local uri_port='^amqps?://([^@/]*@)?([^:/]*):([0-9]+)'
    if [[ "${AMQP_ADDR:-}" =~ $uri_port ]] && [ "${BASH_REMATCH[3]}" = "$RMQ4_AMQP_PORT" ]; then
      version=4
    fi
  fi
  case "${version%%.*}" in
    4) echo 4 ;;
    3) echo 3 ;;
    *) echo "rabbitmq-private-node: unsupported LOGSTREAM_RABBITMQ_VERSION=$version" >&2; exit 64 ;;
  esac
}

# The version of the node started in <dir>.
node_version() {
  cat "$1/version" 2>/dev/null || echo 3
}

# One variable of <dir>/node.env, e.g. RABBITMQ_NODENAME.
node_var() {
  (load_env "$1" && printenv "$2")
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

# Runs one of RabbitMQ's scripts (rabbitmq-server, rabbitmqctl...) with the node's environment.
in_node() {
  local dir=$1
  shift
  if [ "$(node_version "$dir")" = 4 ]; then
    # shellcheck disable=SC2016 # expanded inside the root
    rmq4_chroot --bind "$dir:$INNER" --user "$NODE_USER" -- /bin/sh -c \
      'set -a; . '"$INNER"'/node.env; set +a; cd "$HOME"; exec "$@"' in-node "$@"
  else
    (load_env "$dir" && exec "$RABBIT_BIN/$1" "${@:2}")
  fi
}

ctl() {
  local dir=$1 name
  shift
  name=$(node_var "$dir" RABBITMQ_NODENAME)
  in_node "$dir" rabbitmqctl -n "$name" "$@"
}

start() {
  local dir=$1 amqp_port=$2 management_port=$3 dist_port=$4 version
  shift 4
  local tls_dir="" amqps_port="" https_port="" require_client_cert=false
  while [ $# -gt 0 ]; do
    case "$1" in
      --tls) [ $# -ge 4 ] || usage; tls_dir=$(cd "$2" && pwd); amqps_port=$3; https_port=$4; shift 4 ;;
      --require-client-cert) require_client_cert=true; shift ;;
      *) usage ;;
    esac
  done
  version=$(wanted_version)
  mkdir -p "$dir/home" "$dir/mnesia" "$dir/log"
  dir=$(cd "$dir" && pwd)
  echo "$version" >"$dir/version"

  # Paths as the node sees them.
  local base=$dir shared_cookie=$SHARED_COOKIE
  if [ "$version" = 4 ]; then
    rmq4_require_root "$0" start "$@"
    rmq4_install
    base=$INNER
    shared_cookie=$RMQ4_ROOT/var/lib/rabbitmq/.erlang.cookie
    # Run through sudo: the node runs as the caller, and <dir> stays the caller's.
    if [ "$NODE_USER" != 0:0 ]; then chown -R "$NODE_USER" "$dir"; fi
  fi

  rm -f "$dir/home/.erlang.cookie"
  if [ -n "${LOGSTREAM_NODE_COOKIE:-}" ]; then
    printf '%s' "$LOGSTREAM_NODE_COOKIE" >"$dir/home/.erlang.cookie"
  elif [ -r "$shared_cookie" ]; then
    cp "$shared_cookie" "$dir/home/.erlang.cookie"
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
  if [ -n "$tls_dir" ]; then
    mkdir -p "$dir/tls"
    cp "$tls_dir/ca.crt" "$tls_dir/server.crt" "$tls_dir/server.key" "$dir/tls/"
    chmod 600 "$dir/tls/server.key"
    cat >>"$dir/rabbitmq.conf" <<EOF
listeners.ssl.default = 127.0.0.1:$amqps_port
ssl_options.cacertfile = $base/tls/ca.crt
ssl_options.certfile = $base/tls/server.crt
ssl_options.keyfile = $base/tls/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = $require_client_cert
management.ssl.port = $https_port
management.ssl.ip = 127.0.0.1
management.ssl.cacertfile = $base/tls/ca.crt
management.ssl.certfile = $base/tls/server.crt
management.ssl.keyfile = $base/tls/server.key
EOF
  fi
  echo '[rabbitmq_management].' >"$dir/enabled_plugins"
  : >"$dir/rabbitmq-env.conf"

  cat >"$dir/node.env" <<EOF
HOME=$base/home
RABBITMQ_NODENAME=${LOGSTREAM_NODE_NAME:-logstream-private-$amqp_port@localhost}
RABBITMQ_USE_LONGNAME=false
RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
RABBITMQ_NODE_PORT=$amqp_port
RABBITMQ_DIST_PORT=$dist_port
RABBITMQ_MNESIA_BASE=$base/mnesia
RABBITMQ_LOG_BASE=$base/log
RABBITMQ_PID_FILE=$base/rabbitmq.pid
RABBITMQ_CONFIG_FILE=$base/rabbitmq.conf
RABBITMQ_ADVANCED_CONFIG_FILE=$base/advanced.config
RABBITMQ_ENABLED_PLUGINS_FILE=$base/enabled_plugins
RABBITMQ_CONF_ENV_FILE=$base/rabbitmq-env.conf
EOF
  if [ "$version" = 4 ]; then
    # The distribution listener on loopback too (it defaults to every interface).
    echo 'RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"' >>"$dir/node.env"
  fi
  if [ "$NODE_USER" != 0:0 ] && [ "$version" = 4 ]; then chown -R "$NODE_USER" "$dir"/*; fi
  launch "$dir"
}

# Starts the node configured in <dir> and waits until it runs.
launch() {
  local dir=$1 name
  name=$(node_var "$dir" RABBITMQ_NODENAME)
  local pid_file=$dir/rabbitmq.pid
  rm -f "$pid_file"
  if [ "$(node_version "$dir")" = 4 ]; then
    rmq4_ensure_epmd "$NODE_USER"
  fi
  in_node "$dir" rabbitmq-server -detached >"$dir/log/startup.out" 2>&1
  # await_startup fails at once until the node has registered with epmd: retry it.
  for _ in $(seq 1 90); do
    if ctl "$dir" await_startup --timeout 5 >/dev/null 2>&1; then
      echo "rabbitmq-private-node: $name up (RabbitMQ $(node_version "$dir"), AMQP $(node_var "$dir" RABBITMQ_NODE_PORT), management $(management_port "$dir"))"
      return 0
    fi
    # A node that died (a port in use, a bad config) will not come up: say so at once.
    if [ -f "$pid_file" ] && ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
      break
    fi
    sleep 0.5
  done
  echo "rabbitmq-private-node: $name did not start; see $dir/log" >&2
  grep -h -m 3 -E "\[error\]" "$dir"/log/*.log >&2 || true
  stop "$dir" || true
  return 1
}

management_port() {
  awk '$1 == "management.tcp.port" { print $3 }' "$1/rabbitmq.conf"
}

stop() {
  local dir=$1 pid=""
  node_var "$dir" RABBITMQ_NODENAME >/dev/null
  [ -f "$dir/rabbitmq.pid" ] && pid=$(cat "$dir/rabbitmq.pid")
  ctl "$dir" stop >/dev/null 2>&1 || true
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
dir=$1
if [ "$command" != start ] && [ -d "$dir" ]; then
  dir=$(cd "$dir" && pwd)
  if [ "$(node_version "$dir")" = 4 ]; then rmq4_require_root "$0" "$command" "$@"; fi
fi
shift
case "$command" in
  start) [ $# -ge 3 ] || usage; start "$dir" "$@" ;;
  stop) stop "$dir" ;;
  restart) launch "$dir" ;;
  ctl) ctl "$dir" "$@" ;;
  *) usage ;;
esac
