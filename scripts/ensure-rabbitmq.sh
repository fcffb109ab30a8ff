#!/usr/bin/env bash
# Makes sure a RabbitMQ broker with the management API answers on loopback for the tests.
#
# - AMQP_ADDR set: that broker is used as it is; nothing is installed or started.
# - A broker already answers on 127.0.0.1:15672: it is used.
# - Otherwise RabbitMQ is installed from Debian when missing (apt-get, as root or with sudo),
#   the management plugin is enabled, and the node is started detached.
set -euo pipefail

if [ -n "${AMQP_ADDR:-}" ]; then
  echo "ensure-rabbitmq: using AMQP_ADDR; not starting a local broker"
  exit 0
fi

management_answers() {
  python3 - <<'PY'
import base64, sys, urllib.request
req = urllib.request.Request("http://127.0.0.1:15672/api/overview",
    headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
try:
    urllib.request.urlopen(req, timeout=2)
except Exception:
    sys.exit(1)
PY
}

if management_answers; then
  echo "ensure-rabbitmq: a broker already answers on 127.0.0.1"
  exit 0
fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "ensure-rabbitmq: need root (or sudo) to run: $*" >&2; exit 1; fi
}

if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
  echo "ensure-rabbitmq: installing rabbitmq-server from Debian"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # The package's own service start is denied in containers (no init); we start it below.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
fi
export PATH="$PATH:/usr/sbin"

as_root rabbitmq-plugins enable --offline rabbitmq_management >/dev/null
if ! as_root rabbitmqctl status >/dev/null 2>&1; then
  echo "ensure-rabbitmq: starting rabbitmq-server"
  as_root rabbitmq-server -detached
fi

# await_startup fails at once while the node has not registered yet: retry it.
for _ in $(seq 1 60); do
  if as_root rabbitmqctl await_startup --timeout 10 >/dev/null 2>&1; then break; fi
  sleep 1
done
for _ in $(seq 1 60); do
  if management_answers; then
    # Queue statistics every second instead of every 5 s, so tests of the autoscaler see
    # fresh figures; applies to queues created from now on.
    as_root rabbitmqctl eval 'application:set_env(rabbit, collect_statistics_interval, 1000).' >/dev/null
    echo "ensure-rabbitmq: RabbitMQ $(as_root rabbitmqctl version 2>/dev/null) is up (AMQP 5672, management 15672)"
    exit 0
  fi
  sleep 1
done
echo "ensure-rabbitmq: RabbitMQ did not come up; see /var/log/rabbitmq/" >&2
exit 1
