#!/usr/bin/env bash
# Runs one of RabbitMQ 4's CLI tools against the shared RabbitMQ 4 node of
# ensure-rabbitmq4.sh (logstream-rmq4@localhost), inside its root, as its user:
#
#   scripts/rabbitmq4.sh rabbitmqctl list_queues -p / name type messages
#   scripts/rabbitmq4.sh rabbitmq-queues quorum_status my-queue
#   scripts/rabbitmq4.sh rabbitmq-diagnostics status
set -euo pipefail
export RMQ4_LOG_PREFIX=rabbitmq4
# shellcheck source-path=SCRIPTDIR source=lib/rabbitmq4.sh
. "$(dirname "$0")/lib/rabbitmq4.sh"

case "${1:-}" in
  rabbitmqctl | rabbitmq-diagnostics | rabbitmq-queues | rabbitmq-plugins | rabbitmq-streams | rabbitmq-upgrade) ;;
  *)
    sed -n '2,7p' "$0" >&2
    exit 64
    ;;
esac
rmq4_require_root "$0" "$@"
if ! rmq4_installed; then
  rmq4_log "RabbitMQ 4 is not installed in $RMQ4_ROOT; run scripts/ensure-rabbitmq4.sh"
  exit 1
fi
user="$(awk -F: '$1 == "rabbitmq" { print $3 ":" $4 }' "$RMQ4_ROOT/etc/passwd")"
rmq4_chroot --user "$user" -- HOME=/var/lib/rabbitmq "$@"
