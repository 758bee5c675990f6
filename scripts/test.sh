#!/usr/bin/env bash
# Runs every module's tests with the race detector, then each fuzz target
# briefly. Emulator tests need PUBSUB_EMULATOR_HOST / FIRESTORE_EMULATOR_HOST
# (scripts/emulators.sh run sets them); without them they skip, and under
# CI=true they fail.
set -euo pipefail
cd "$(dirname "$0")/.."
# A count, not a duration: when a duration ends while a worker runs an
# input, Go's fuzzing engine can fail the target with "context deadline
# exceeded" and no crasher (CI did once, on FuzzPushBody).
fuzztime="${FUZZTIME:-3000x}"
status=0
for m in $(go list -m -f '{{.Dir}}'); do
  echo "== go vet $(basename "$m")"
  (cd "$m" && go vet ./...) || status=1
  echo "== go test $(basename "$m")"
  # -p 1: one test binary at a time. The packages share the two emulators
  # and the machine's two cores; run side by side, Google's Pub/Sub
  # emulator has failed ordered StreamingPulls (code Unknown) and the
  # Firestore emulator has cancelled calls, races of its own under load.
  (cd "$m" && go test -race -count=1 -p 1 -timeout 15m ./...) || status=1
done
if [[ "$fuzztime" != "0" ]]; then
  # Each fuzz target runs briefly: a seed-corpus run is already part of go
  # test; this explores a little beyond it.
  while read -r dir name; do
    echo "== fuzz $name ($dir, $fuzztime)"
    (cd "$dir" && go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" .) || status=1
  done < <(grep -rl --include='*_test.go' '^func Fuzz' shared ingest deliver | while read -r f; do
    for fn in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //'); do echo "$(dirname "$f") $fn"; done
  done | sort -u)
fi
exit $status
