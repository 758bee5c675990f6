#!/usr/bin/env bash
# deliver's benchmark (TestBenchDeliver in deliver/bench_test.go), printed as
# the "## deliver" markdown section of docs/benchmarks.md on stdout; progress
# and the test's log go to stderr. About 3 minutes on 2 cores.
#
# By default it starts its own fresh Pub/Sub and Firestore emulators (on
# BENCH_PUBSUB_PORT, BENCH_FIRESTORE_PORT: 8195, 8196) and stops them after,
# so that what other runs left in the shared emulators (a Pub/Sub emulator
# that has taken ingest's load test keeps a core busy for minutes) does not
# skew the figures. BENCH_DELIVER_SHARED_EMULATORS=1 uses the emulators of
# the environment (PUBSUB_EMULATOR_HOST, FIRESTORE_EMULATOR_HOST) instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
state=.run/bench-deliver
mkdir -p "$state"

if [[ "${1:-}" != "--inner" ]]; then
  go build -o "$state/deliver" ./deliver
  if [[ "${BENCH_DELIVER_SHARED_EMULATORS:-}" == "1" ]]; then
    exec "$0" --inner
  fi
  echo "bench-deliver: starting fresh emulators for the benchmark" >&2
  unset PUBSUB_EMULATOR_HOST FIRESTORE_EMULATOR_HOST
  EMULATOR_STATE_DIR="$root/$state/emulators" \
    PUBSUB_PORT="${BENCH_PUBSUB_PORT:-8195}" FIRESTORE_PORT="${BENCH_FIRESTORE_PORT:-8196}" \
    exec scripts/emulators.sh run "$0" --inner
fi

: "${PUBSUB_EMULATOR_HOST:?needs the Pub/Sub emulator (scripts/emulators.sh run)}"
: "${FIRESTORE_EMULATOR_HOST:?needs the Firestore emulator (scripts/emulators.sh run)}"
echo "bench-deliver: running TestBenchDeliver against $PUBSUB_EMULATOR_HOST and $FIRESTORE_EMULATOR_HOST" >&2
log="$state/test.log"
if ! (cd deliver && DELIVER_BENCH=1 DELIVER_BENCH_BIN="$root/$state/deliver" \
  go test -v -count=1 -run '^TestBenchDeliver$' -timeout 10m . >"$root/$log" 2>&1); then
  echo "bench-deliver: the benchmark failed; its log:" >&2
  cat "$log" >&2
  exit 1
fi
grep -E '^\s+bench_test.go' "$log" >&2 || true
sed -n '/^## deliver/,/^--- end deliver/p' "$log" | sed '$d'
if [[ -f scripts/bench/deliver-notes.md ]]; then
  cat scripts/bench/deliver-notes.md
  echo
fi
