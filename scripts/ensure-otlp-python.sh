#!/usr/bin/env bash
# Makes sure a Python with the OpenTelemetry protobuf definitions (PyPI `opentelemetry-proto`,
# which brings `protobuf`) is available for the worker's OTLP JSON test, in a venv under
# target/otlp-venv. Prints the venv's python on its last line. Idempotent, safe to run from
# several tests at once (a lock serializes the install).
#
# - OTLP_PYTHON set: that interpreter is used as it is; nothing is installed.
# - Otherwise python3 -m venv (Debian's python3-venv is installed when venv is missing).
set -euo pipefail

if [ -n "${OTLP_PYTHON:-}" ]; then
  echo "$OTLP_PYTHON"
  exit 0
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/otlp-venv"
mkdir -p "$root/target"

check() { "$venv/bin/python" -c 'import opentelemetry.proto.logs.v1.logs_pb2, google.protobuf.json_format' 2>/dev/null; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "ensure-otlp-python: need root (or sudo) to run: $*" >&2; exit 1; fi
}

exec 9>"$root/target/otlp-venv.lock"
flock 9
if ! check; then
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "ensure-otlp-python: installing python3-venv from Debian" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >&2
  fi
  echo "ensure-otlp-python: creating $venv with opentelemetry-proto" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q opentelemetry-proto >&2
  check
fi
echo "$venv/bin/python"
