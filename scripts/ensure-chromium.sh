#!/usr/bin/env bash
# Makes sure a headless Chromium is available for the dashboard's browser test.
#
# - CHROMIUM set: that binary is used as it is; nothing is installed.
# - `chromium` already on PATH: it is used.
# - Otherwise Debian's `chromium` package is installed (apt-get, as root or with sudo).
set -euo pipefail

if [ -n "${CHROMIUM:-}" ]; then
  echo "ensure-chromium: using CHROMIUM=$CHROMIUM"
  exit 0
fi

if command -v chromium >/dev/null 2>&1; then
  echo "ensure-chromium: $(chromium --version 2>/dev/null || echo chromium) is installed"
  exit 0
fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "ensure-chromium: need root (or sudo) to run: $*" >&2; exit 1; fi
}

echo "ensure-chromium: installing chromium from Debian"
as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# Fonts so that the screenshot shows text, not boxes.
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  chromium fonts-dejavu-core >/dev/null
echo "ensure-chromium: $(chromium --version 2>/dev/null) is installed"
