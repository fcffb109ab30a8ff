#!/usr/bin/env bash
# Installs checkov (the policy scanner `make test` runs over the rendered chart and the worker
# Deployment the operator builds) into .tools/ (idempotent, no root needed): from PyPI, in a
# venv of its own (.tools/checkov-venv; its dependencies are many and pinned tightly), linked
# as .tools/bin/checkov.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"
version="${CHECKOV_VERSION:-3.3.30}"
mkdir -p "$tools/bin"
if [ ! -x "$tools/checkov-venv/bin/checkov" ]; then
  echo "install-checkov: installing checkov $version (PyPI)"
  python3 -m venv "$tools/checkov-venv"
  "$tools/checkov-venv/bin/pip" install --quiet --disable-pip-version-check "checkov==$version"
fi
ln -sf "$tools/checkov-venv/bin/checkov" "$tools/bin/checkov"
echo "install-checkov: checkov $("$tools/bin/checkov" --version)"
