#!/usr/bin/env bash
# Makes sure a Redis server answers on loopback for the tests (the shared dedup store).
#
# - REDIS_URL set: that server is used as it is; nothing is installed or started.
# - Something already answers PING on 127.0.0.1:6379: it is used.
# - Otherwise Debian's redis-server is installed when missing (apt-get, as root or with sudo)
#   and started daemonized on 127.0.0.1:6379, without persistence (a test store).
#
# The tests reach it with REDIS_URL (default redis://127.0.0.1:6379).
set -euo pipefail

if [ -n "${REDIS_URL:-}" ]; then
  echo "ensure-redis: using REDIS_URL; not starting a local Redis"
  exit 0
fi

# PING over a bare TCP connection: no client needed.
redis_answers() {
  python3 - <<'PY'
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", 6379), timeout=2) as s:
        s.sendall(b"PING\r\n")
        sys.exit(0 if s.recv(64).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PY
}

version() {
  python3 - <<'PY'
import socket
with socket.create_connection(("127.0.0.1", 6379), timeout=2) as s:
    s.sendall(b"INFO server\r\n")
    data = b""
    while b"redis_version:" not in data or not data.endswith(b"\r\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
for line in data.decode(errors="replace").splitlines():
    if line.startswith("redis_version:"):
        print(line.split(":", 1)[1])
PY
}

if redis_answers; then
  echo "ensure-redis: Redis $(version) already answers on 127.0.0.1:6379"
  exit 0
fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "ensure-redis: need root (or sudo) to run: $*" >&2; exit 1; fi
}

if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
  echo "ensure-redis: installing redis-server from Debian"
  # The package's own service start is denied in containers (no init); we start it below.
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null 2>&1; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
fi

# The package may have started its service (where an init runs): use it then.
if ! redis_answers; then
  echo "ensure-redis: starting redis-server on 127.0.0.1:6379"
  # As the package's redis user, in its directories (no persistence: nothing is written there
  # but the log and the pid file).
  as_root runuser -u redis -- /usr/bin/redis-server --bind 127.0.0.1 --port 6379 \
    --daemonize yes --save '' --appendonly no --dir /var/lib/redis \
    --logfile /var/log/redis/logstream.log --pidfile /var/lib/redis/logstream.pid
fi
for _ in $(seq 1 50); do
  if redis_answers; then
    echo "ensure-redis: Redis $(version) is up (127.0.0.1:6379)"
    exit 0
  fi
  sleep 0.2
done
echo "ensure-redis: Redis did not come up; see /var/log/redis/logstream.log" >&2
exit 1
