# shellcheck shell=bash disable=SC2034 # the settings are used by the scripts that source this
# RabbitMQ 4 for the tests: Debian 13 "trixie"'s rabbitmq-server (4.0.5, Erlang 27) in a
# debootstrap root, shared by every clone and worktree on the machine. Sourced by
# ensure-rabbitmq4.sh, rabbitmq4.sh, rabbitmq-private-node.sh and rabbitmq-cluster.sh.
#
# - LOGSTREAM_RABBITMQ4_ROOT: where the root lives (default /var/lib/logstream/rabbitmq4-root).
# - LOGSTREAM_DEBIAN_MIRROR: the Debian mirror for debootstrap (default: deb.debian.org when it
#   answers, else the first Debian mirror in this machine's apt sources).
#
# Every command runs in the root through rmq4_chroot: a private mount namespace (unshare -m)
# in which /proc is mounted inside the root (all Erlang needs besides the root's own /dev
# nodes) and the caller's directories are bind-mounted; nothing stays mounted on the host,
# and the namespace goes away with the last process in it (the node, for a node). The network
# is the host's: nodes listen on loopback and register with the host's epmd (4369), the
# 3.10 node's when it runs, else an epmd the first RabbitMQ 4 node starts.
#
# Needs root, or passwordless sudo (debootstrap, unshare, mount, chroot).

RMQ4_ROOT=${LOGSTREAM_RABBITMQ4_ROOT:-/var/lib/logstream/rabbitmq4-root}
RMQ4_SUITE=trixie
# The shared node (ensure-rabbitmq4.sh); the 3.10 node uses 5672, 15672 and 25672.
RMQ4_NODENAME=logstream-rmq4@localhost
RMQ4_AMQP_PORT=5682
RMQ4_MANAGEMENT_PORT=15682
RMQ4_DIST_PORT=25682
# Where the root's binaries are; PATH inside the root.
RMQ4_BIN=/usr/lib/rabbitmq/bin
RMQ4_PATH=$RMQ4_BIN:/usr/sbin:/usr/bin:/sbin:/bin
# Written last by rmq4_install: the root is complete.
RMQ4_MARKER=.logstream-rabbitmq4-installed

rmq4_log() { echo "${RMQ4_LOG_PREFIX:-rabbitmq4}: $*" >&2; }

rmq4_as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else
    rmq4_log "need root (or sudo) to run: $*"; return 1; fi
}

rmq4_installed() { [ -f "$RMQ4_ROOT/$RMQ4_MARKER" ]; }

# rmq4_chroot [--bind HOST_DIR:ROOT_DIR]... [--user UID:GID] -- [VAR=value...] COMMAND [ARGS...]
# Runs COMMAND inside the root with only PATH, LANG and the given variables in its
# environment, as root or as UID:GID.
rmq4_chroot() {
  local binds=() user=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --bind) binds+=("$2"); shift 2 ;;
      --user) user=$2; shift 2 ;;
      --) shift; break ;;
      *) break ;;
    esac
  done
  local drop=()
  if [ -n "$user" ] && [ "$user" != 0:0 ]; then
    drop=(/usr/bin/setpriv --reuid="${user%%:*}" --regid="${user#*:}" --clear-groups)
  fi
  # shellcheck disable=SC2016 # expanded by the inner bash
  rmq4_as_root unshare --mount --propagation private -- /bin/bash -c '
    set -e
    root=$1 nbinds=$2 ndrop=$3; shift 3
    mount -t proc proc "$root/proc"
    for ((i = 0; i < nbinds; i++)); do
      mkdir -p "$root${1#*:}"
      mount --bind "${1%%:*}" "$root${1#*:}"
      shift
    done
    drop=("${@:1:ndrop}"); shift "$ndrop"
    exec chroot "$root" "${drop[@]}" /usr/bin/env -i PATH="'"$RMQ4_PATH"'" LANG=C.UTF-8 "$@"
  ' rmq4-chroot "${RMQ4_CHROOT:-$RMQ4_ROOT}" "${#binds[@]}" "${#drop[@]}" "${binds[@]}" "${drop[@]}" "$@"
}

# The Debian mirror to bootstrap from: LOGSTREAM_DEBIAN_MIRROR, else deb.debian.org when it
# serves trixie, else the first Debian mirror of this machine's apt sources that does.
rmq4_mirror() {
  if [ -n "${LOGSTREAM_DEBIAN_MIRROR:-}" ]; then
    echo "$LOGSTREAM_DEBIAN_MIRROR"
    return
  fi
  local candidates=(http://deb.debian.org/debian) uri
  while read -r uri; do candidates+=("$uri"); done < <(
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\//) { print $i; break } }'
    cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }'
  )
  for uri in "${candidates[@]}"; do
    uri=${uri%/}
    case "$uri" in *-security | *security.debian.org*) continue ;; esac
    if wget -q -T 10 -t 1 -O /dev/null "$uri/dists/$RMQ4_SUITE/Release" 2>/dev/null; then
      echo "$uri"
      return
    fi
  done
  rmq4_log "no Debian mirror serving $RMQ4_SUITE answered (tried ${candidates[*]}); set LOGSTREAM_DEBIAN_MIRROR"
  return 1
}

# Builds the root when it is missing: debootstrap (minbase) and rabbitmq-server from trixie.
# Serialized by a lock so that concurrent runs (several worktrees) build it once.
rmq4_install() {
  rmq4_installed && return 0
  local parent
  parent=$(dirname "$RMQ4_ROOT")
  rmq4_as_root mkdir -p "$parent"
  # Held through file descriptor 9 until the function returns (root only: the lock file
  # lives beside the root).
  if [ "$(id -u)" -eq 0 ] && command -v flock >/dev/null; then
    exec 9>>"$RMQ4_ROOT.lock"
    if ! flock -n 9; then
      rmq4_log "another run is installing $RMQ4_ROOT; waiting for it"
      flock 9
    fi
  fi
  if rmq4_installed; then
    exec 9>&-
    return 0
  fi
  if [ -e "$RMQ4_ROOT" ]; then
    rmq4_log "$RMQ4_ROOT exists but is incomplete (no $RMQ4_MARKER); remove it to reinstall"
    return 1
  fi
  local started=$SECONDS partial="$RMQ4_ROOT.partial"
  if ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ]; then
    rmq4_log "installing debootstrap from Debian"
    rmq4_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 || {
      rmq4_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
      rmq4_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
  fi
  local mirror
  mirror=$(rmq4_mirror)
  # A run that died half-way left a partial root: nothing can be mounted in it (debootstrap
  # runs in a private mount namespace below), but check before deleting it.
  if [ -e "$partial" ]; then
    if grep -qF " $partial/" /proc/mounts; then
      rmq4_log "$partial has mounts; unmount them and remove it"
      return 1
    fi
    rmq4_as_root rm -rf "$partial"
  fi
  rmq4_log "debootstrap --variant=minbase $RMQ4_SUITE from $mirror into $RMQ4_ROOT"
  # debootstrap mounts /proc and /sys in the root while it works: a private mount namespace
  # keeps those mounts from outliving it on the host.
  if ! rmq4_as_root unshare --mount --propagation private -- \
    debootstrap --variant=minbase "$RMQ4_SUITE" "$partial" "$mirror" >"$RMQ4_ROOT.debootstrap.log" 2>&1; then
    rmq4_log "debootstrap failed; see $RMQ4_ROOT.debootstrap.log"
    tail -n 5 "$RMQ4_ROOT.debootstrap.log" >&2
    return 1
  fi
  rmq4_log "debootstrap done in $((SECONDS - started)) s; installing rabbitmq-server"
  local RMQ4_CHROOT=$partial
  # No service starts in the root: ensure-rabbitmq4.sh starts the node itself.
  rmq4_as_root sh -c "printf '#!/bin/sh\nexit 101\n' >'$partial/usr/sbin/policy-rc.d' && chmod 755 '$partial/usr/sbin/policy-rc.d'"
  rmq4_as_root cp /etc/hosts "$partial/etc/hosts"
  # The root's rabbitmq user gets the host's rabbitmq uid and gid when there is one, so that
  # the files of the shared node show up as rabbitmq's on the host too.
  local ids=""
  if getent passwd rabbitmq >/dev/null && getent group rabbitmq >/dev/null; then
    ids="{ groupadd --system --gid $(getent group rabbitmq | cut -d: -f3) rabbitmq &&
      useradd --system --uid $(id -u rabbitmq) --gid rabbitmq --home-dir /var/lib/rabbitmq \
        --shell /usr/sbin/nologin rabbitmq; } || echo 'the package picks the uid';"
  fi
  if ! rmq4_chroot -- DEBIAN_FRONTEND=noninteractive /bin/sh -c "$ids
      apt-get update -qq &&
      apt-get install -y -qq --no-install-recommends rabbitmq-server &&
      apt-get clean" >"$RMQ4_ROOT.apt.log" 2>&1; then
    rmq4_log "installing rabbitmq-server in the root failed; see $RMQ4_ROOT.apt.log"
    tail -n 5 "$RMQ4_ROOT.apt.log" >&2
    return 1
  fi
  rmq4_as_root touch "$partial/$RMQ4_MARKER"
  rmq4_as_root mv "$partial" "$RMQ4_ROOT"
  exec 9>&-
  unset RMQ4_CHROOT
  rmq4_log "installed $(rmq4_package_version) in $RMQ4_ROOT in $((SECONDS - started)) s"
}

# The Debian version of the root's rabbitmq-server package, e.g. 4.0.5-6+deb13u2.
rmq4_package_version() {
  awk '/^Package: rabbitmq-server$/ { p = 1 } p && /^Version:/ { print $2; exit }' \
    "$RMQ4_ROOT/var/lib/dpkg/status" 2>/dev/null
}

# Succeeds when a management API answers on 127.0.0.1:$1 for guest.
rmq4_management_answers() {
  python3 - "$1" <<'PY'
import base64, sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/api/overview",
    headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
try:
    urllib.request.urlopen(req, timeout=2)
except Exception:
    sys.exit(1)
PY
}

# Re-runs the calling script as root through sudo when it is not root (the scripts write
# under the root and run nodes in it). Call as: rmq4_require_root "$0" "$@".
rmq4_require_root() {
  [ "$(id -u)" -eq 0 ] && return 0
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    exec sudo -n --preserve-env=LOGSTREAM_RABBITMQ4_ROOT,LOGSTREAM_DEBIAN_MIRROR,LOGSTREAM_RABBITMQ_VERSION,LOGSTREAM_NODE_COOKIE,LOGSTREAM_NODE_NAME,AMQP_ADDR,AMQP_ADDR_RABBITMQ4 "$@"
  fi
  rmq4_log "RabbitMQ 4 runs in a chroot: run this as root (or with passwordless sudo)"
  exit 1
}

# Makes sure an epmd answers on 127.0.0.1:4369. Usually the 3.10 node's is there; otherwise one
# from the root is started (loopback only, in a mount namespace of its own, so that it does not
# pin a node's bind mounts), rather than letting the first node start one inside its own.
rmq4_ensure_epmd() {
  local user=${1:-0:0}
  if (exec 3<>/dev/tcp/127.0.0.1/4369) 2>/dev/null; then return 0; fi
  rmq4_log "no epmd answers on 127.0.0.1:4369: starting one from the RabbitMQ 4 root"
  rmq4_chroot --user "$user" -- ERL_EPMD_ADDRESS=127.0.0.1 HOME=/ /usr/bin/epmd -daemon
  for _ in $(seq 1 50); do
    if (exec 3<>/dev/tcp/127.0.0.1/4369) 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  rmq4_log "epmd did not start"
  return 1
}
