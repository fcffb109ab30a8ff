#!/usr/bin/env bash
# Makes sure a RabbitMQ 4 broker with the management API answers on loopback, beside the
# 3.10 node of ensure-rabbitmq.sh, so that every broker test also runs on RabbitMQ 4.
#
# - AMQP_ADDR_RABBITMQ4 set: that broker is used as it is; nothing is installed or started.
# - A broker already answers on 127.0.0.1:15682: it is used.
# - Otherwise Debian trixie's rabbitmq-server (4.0.5, Erlang 27) is installed, when missing,
#   in a debootstrap root shared by every clone on the machine (LOGSTREAM_RABBITMQ4_ROOT,
#   default /var/lib/logstream/rabbitmq4-root; see scripts/lib/rabbitmq4.sh), and its node is
#   started detached: logstream-rmq4@localhost, AMQP 5682, management 15682, distribution
#   25682, all on 127.0.0.1; guest/guest (loopback only), collect_statistics_interval 1 s.
#
# The tests reach it with
#   AMQP_ADDR=amqp://guest:guest@127.0.0.1:5682/%2f MANAGEMENT_ADDR=http://127.0.0.1:15682
# and scripts/rabbitmq4.sh runs rabbitmqctl (and the other CLI tools) against it.
# Needs root (or passwordless sudo) to install or start the node.
set -euo pipefail
export RMQ4_LOG_PREFIX=ensure-rabbitmq4
# shellcheck source-path=SCRIPTDIR source=lib/rabbitmq4.sh
. "$(dirname "$0")/lib/rabbitmq4.sh"

if [ -n "${AMQP_ADDR_RABBITMQ4:-}" ]; then
  echo "ensure-rabbitmq4: using AMQP_ADDR_RABBITMQ4; not starting a local broker"
  exit 0
fi

version_from_api() {
  python3 - "$RMQ4_MANAGEMENT_PORT" <<'PY'
import base64, json, sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/api/overview",
    headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
overview = json.load(urllib.request.urlopen(req, timeout=5))
print(f"RabbitMQ {overview['rabbitmq_version']} (Erlang {overview['erlang_version']}, node {overview['node']})")
PY
}

if rmq4_management_answers "$RMQ4_MANAGEMENT_PORT"; then
  echo "ensure-rabbitmq4: $(version_from_api) already answers on 127.0.0.1:$RMQ4_MANAGEMENT_PORT"
  exit 0
fi

rmq4_require_root "$0" "$@"
started=$SECONDS
rmq4_install

# The node's configuration lives in the root, where the Debian CLI wrappers find it too.
# Rewritten on every start, so that a root installed by an older script gets today's.
conf=$(mktemp)
trap 'rm -f "$conf"' EXIT
cat >"$conf" <<EOF
# Written by LogStream's scripts/ensure-rabbitmq4.sh.
listeners.tcp.default = 127.0.0.1:$RMQ4_AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $RMQ4_MANAGEMENT_PORT
# guest/guest works from loopback only (RabbitMQ's default, said out loud).
loopback_users.guest = true
# Queue statistics every second instead of every 5 s, as ensure-rabbitmq.sh sets on 3.10.
# Measured on both: the management API's figures still move in 5 s steps (the management
# agent's sample retention policies keep 5 s samples), and a quorum queue's only every 10 s on
# 4.0.5 (quorum_tick_interval, 5 s, on top); 1 s samples and quorum_tick_interval = 1000 in
# advanced.config bring both to 1-2 s. Kept like 3.10's for parity.
collect_statistics_interval = 1000
log.file.level = warning
EOF
rmq4_as_root install -m 0644 "$conf" "$RMQ4_ROOT/etc/rabbitmq/rabbitmq.conf"
cat >"$conf" <<EOF
# Written by LogStream's scripts/ensure-rabbitmq4.sh (read by the server and the CLI tools).
NODENAME=$RMQ4_NODENAME
USE_LONGNAME=false
NODE_IP_ADDRESS=127.0.0.1
NODE_PORT=$RMQ4_AMQP_PORT
DIST_PORT=$RMQ4_DIST_PORT
# The distribution listener on loopback too (it defaults to every interface).
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
rmq4_as_root install -m 0644 "$conf" "$RMQ4_ROOT/etc/rabbitmq/rabbitmq-env.conf"
echo '[rabbitmq_management].' >"$conf"
rmq4_as_root install -m 0644 "$conf" "$RMQ4_ROOT/etc/rabbitmq/enabled_plugins"
rmq4_as_root cp /etc/hosts "$RMQ4_ROOT/etc/hosts"

# The node runs as the root's rabbitmq user, its data in the root's /var/lib/rabbitmq.
user="$(awk -F: '$1 == "rabbitmq" { print $3 ":" $4 }' "$RMQ4_ROOT/etc/passwd")"
node() {
  rmq4_chroot --user "$user" -- HOME=/var/lib/rabbitmq "$@"
}

if node rabbitmqctl status >/dev/null 2>&1; then
  echo "ensure-rabbitmq4: $RMQ4_NODENAME runs but its management API does not answer yet"
else
  echo "ensure-rabbitmq4: starting $RMQ4_NODENAME"
  rmq4_ensure_epmd "$user"
  rmq4_as_root install -d -o "${user%%:*}" -g "${user#*:}" "$RMQ4_ROOT/var/log/rabbitmq"
  node /bin/sh -c 'cd /var/lib/rabbitmq && exec rabbitmq-server -detached' \
    >"$RMQ4_ROOT.startup.log" 2>&1 || {
    echo "ensure-rabbitmq4: rabbitmq-server -detached failed:" >&2
    cat "$RMQ4_ROOT.startup.log" >&2
    exit 1
  }
fi

# await_startup fails at once while the node has not registered yet: retry it.
for _ in $(seq 1 60); do
  if node rabbitmqctl await_startup --timeout 10 >/dev/null 2>&1; then break; fi
  sleep 1
done
for _ in $(seq 1 60); do
  if rmq4_management_answers "$RMQ4_MANAGEMENT_PORT"; then
    echo "ensure-rabbitmq4: $(version_from_api) is up (AMQP $RMQ4_AMQP_PORT, management $RMQ4_MANAGEMENT_PORT) in $((SECONDS - started)) s"
    exit 0
  fi
  sleep 1
done
echo "ensure-rabbitmq4: RabbitMQ 4 did not come up; see $RMQ4_ROOT/var/log/rabbitmq/" >&2
exit 1
