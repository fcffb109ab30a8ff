#!/usr/bin/env bash
# `make test`'s test run: every test of the workspace, once per broker, each run headed by the
# broker it talks to, and a summary of the test counts per broker at the end.
#
# - rabbitmq3: the broker of AMQP_ADDR / MANAGEMENT_ADDR as they are (by default Debian's
#   RabbitMQ 3.10 of ensure-rabbitmq.sh on 5672).
# - rabbitmq4: AMQP_ADDR_RABBITMQ4 / MANAGEMENT_ADDR_RABBITMQ4, by default the RabbitMQ 4.0.5
#   node of ensure-rabbitmq4.sh (amqp://guest:guest@127.0.0.1:5682/%2f, management
#   http://127.0.0.1:15682, with the AMQP URI's credentials). When only AMQP_ADDR_RABBITMQ4 is set, the management
#   API is derived from it as for AMQP_ADDR (same host, port 15672).
#
# Each run exports LOGSTREAM_RABBITMQ_VERSION, the version the broker's management API reports
# (e.g. 3.10.8, 4.0.5; its major alone when the API does not answer): tests that need a 4.x
# feature (named *_on_rabbitmq4) compare its major through logstream_testkit::broker_has and
# skip themselves on 3.x with a printed "SKIPPED ..." line, counted in the summary; and
# rabbitmq-private-node.sh starts a private node of that major.
#
# TEST_BROKERS chooses the runs (default "rabbitmq3 rabbitmq4"); extra arguments go to
# `cargo nextest run` (or `cargo test`). Exits non-zero when a run failed; both run regardless.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
CARGO=${CARGO:-cargo}
logs=target/test-logs
mkdir -p "$logs"

# Prints "<version>" of the broker of the current AMQP_ADDR / MANAGEMENT_ADDR, or nothing.
broker_version() {
  python3 - <<'PY' 2>/dev/null
import base64, json, os, urllib.parse, urllib.request
amqp = urllib.parse.urlsplit(os.environ.get("AMQP_ADDR", "amqp://guest:guest@127.0.0.1:5672/%2f"))
mgmt = os.environ.get("MANAGEMENT_ADDR", "").strip()
if mgmt:
    m = urllib.parse.urlsplit(mgmt)
    user = urllib.parse.unquote(m.username) if m.username else urllib.parse.unquote(amqp.username or "guest")
    password = urllib.parse.unquote(m.password) if m.password is not None else urllib.parse.unquote(amqp.password or "guest")
    base = f"{m.scheme}://{m.hostname}" + (f":{m.port}" if m.port else "") + m.path
else:
    user = urllib.parse.unquote(amqp.username or "guest")
    password = urllib.parse.unquote(amqp.password or "guest")
    host = amqp.hostname if ":" not in (amqp.hostname or "") else f"[{amqp.hostname}]"
    base = f"{'https' if amqp.scheme == 'amqps' else 'http'}://{host}:15672/"
if not base.endswith("/"):
    base += "/"
req = urllib.request.Request(base + "api/overview",
    headers={"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()})
print(json.load(urllib.request.urlopen(req, timeout=5))["rabbitmq_version"])
PY
}

# The URI without its password.
redact() { sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"; }

if $CARGO nextest --version >/dev/null 2>&1; then
  runner=("$CARGO" nextest run --workspace --no-fail-fast)
else
  runner=("$CARGO" test --workspace --no-fail-fast)
fi

# The environment as given, restored before each run.
given_amqp=${AMQP_ADDR-unset} given_management=${MANAGEMENT_ADDR-unset}
restore() {
  if [ "$given_amqp" = unset ]; then unset AMQP_ADDR; else export AMQP_ADDR=$given_amqp; fi
  if [ "$given_management" = unset ]; then unset MANAGEMENT_ADDR; else export MANAGEMENT_ADDR=$given_management; fi
}

read -r -a brokers <<<"${TEST_BROKERS:-rabbitmq3 rabbitmq4}"
summary=()
failed=0
i=0
for broker in "${brokers[@]}"; do
  i=$((i + 1))
  restore
  case "$broker" in
    rabbitmq3)
      major=3
      ;;
    rabbitmq4)
      major=4
      if [ -n "${AMQP_ADDR_RABBITMQ4:-}" ]; then
        export AMQP_ADDR=$AMQP_ADDR_RABBITMQ4
        if [ -n "${MANAGEMENT_ADDR_RABBITMQ4:-}" ]; then
          export MANAGEMENT_ADDR=$MANAGEMENT_ADDR_RABBITMQ4
        else
          unset MANAGEMENT_ADDR
        fi
      else
        export AMQP_ADDR=amqp://guest:guest@127.0.0.1:5682/%2f
        # Without credentials: the management API then takes the AMQP URI's, as it does for
        # a URI the tests build (a test that uses a wrong AMQP password expects the management
        # API to refuse it too).
        export MANAGEMENT_ADDR=${MANAGEMENT_ADDR_RABBITMQ4:-http://127.0.0.1:15682}
      fi
      ;;
    *)
      echo "test-brokers: unknown broker $broker in TEST_BROKERS (rabbitmq3, rabbitmq4)" >&2
      exit 64
      ;;
  esac
  version=$(broker_version)
  export LOGSTREAM_RABBITMQ_VERSION=${version:-$major}
  label="RabbitMQ ${version:-$major.x (its management API did not answer)}"
  where="$(redact "${AMQP_ADDR:-amqp://guest:guest@127.0.0.1:5672/%2f}")"
  [ -n "${MANAGEMENT_ADDR:-}" ] && where="$where, management $(redact "$MANAGEMENT_ADDR")"
  echo
  echo "==== test run $i/${#brokers[@]} ($broker): $label at $where; LOGSTREAM_RABBITMQ_VERSION=$LOGSTREAM_RABBITMQ_VERSION"
  log=$logs/$broker.log
  started=$SECONDS
  "${runner[@]}" "$@" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  [ "$status" -eq 0 ] || failed=1
  # nextest's "Summary [ 95.1s] 300 tests run: 300 passed, 2 skipped", else cargo test's result.
  counts=$(sed -E 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^ *Summary \[' | tail -n 1 | sed -E 's/^ *Summary \[ *[0-9.]+s\] *//')
  [ -n "$counts" ] || counts="exit status $status"
  # Tests of a RabbitMQ 4 feature (named *_on_rabbitmq4) pass on an older broker by skipping
  # themselves, each with one "SKIPPED <test>: needs RabbitMQ 4 or later (...)" line (nextest
  # indents it).
  skipped=$(grep -c '^ *SKIPPED .*: needs RabbitMQ' "$log")
  [ "$skipped" -eq 0 ] || counts="$counts ($skipped of the passed skipped themselves: they need a newer RabbitMQ)"
  summary+=("$broker ($label): $counts in $((SECONDS - started)) s$([ "$status" -eq 0 ] || echo ' FAILED')")
  # The failing tests (nextest lists them after its summary line).
  while IFS= read -r line; do summary+=("    $line"); done < <(
    sed -E 's/\x1b\[[0-9;]*m//g' "$log" | sed -n '/^ *Summary \[/,$p' | grep -E '^ *(FAIL|SIGSEGV|SIGABRT|TIMEOUT|LEAK)' | sed -E 's/^ +//')
done

echo
echo "==== test runs per broker (logs in $logs/)"
printf '%s\n' "${summary[@]}"
exit "$failed"
