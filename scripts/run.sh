#!/usr/bin/env bash
# Runs the whole system locally, on loopback: the Pub/Sub and Firestore
# emulators, the Startdeliver stand-in, deliver (pull mode) and ingest. It
# registers a demo account, prints its key and a curl line to try, and stops
# everything on Ctrl-C. Binaries come from `make build` (bin/).
#
# Ports: ingest 8080, deliver 8081, stand-in 8090, emulators 8085/8086.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
state=.run
mkdir -p "$state"
bin=bin
for b in ingest deliver accounts startdeliver-standin tracetree; do
  [[ -x "$bin/$b" ]] || { echo "run: $bin/$b missing: run 'make build' (make run does)" >&2; exit 1; }
done

pids=()
stopping=
cleanup() {
  trap - EXIT INT TERM
  stopping=1
  echo
  echo "run: stopping"
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if ((${#ours[@]})); then scripts/emulators.sh stop "${ours[@]}"; fi
}
ours=()
trap cleanup EXIT INT TERM

scripts/emulators.sh start
read -r -a ours <"$state/emulators.started" || ours=()
# shellcheck disable=SC1091
source "$state/emulators.env"
export GOOGLE_CLOUD_PROJECT LOG_LEVEL="${LOG_LEVEL:-info}"
export OTEL_TRACES_EXPORTER="${OTEL_TRACES_EXPORTER:-console}" OTEL_CONSOLE_FILE="${OTEL_CONSOLE_FILE:-$root/$state/traces.jsonl}"
export OTEL_METRICS_EXPORTER="${OTEL_METRICS_EXPORTER:-none}"

wait_http() {
  local url=$1 pid=$2 name=$3 log=$4
  for _ in $(seq 150); do
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run: $name exited; its log ($log):" >&2
      tail -n 30 "$log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "run: $name did not answer at $url" >&2
  return 1
}

# The demo account's key: made once, kept in .run/demo-key.
if [[ ! -s "$state/demo-key" ]]; then
  printf 'sd-demo-%s\n' "$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$state/demo-key"
fi
key=$(cat "$state/demo-key")

STANDIN_KEYS="$key" "$bin/startdeliver-standin" -listen 127.0.0.1:8090 >"$state/standin.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:8090/_standin/state "$!" stand-in "$state/standin.log"

"$bin/accounts" put -file scripts/demo/account.json -key-file "$state/demo-key"

HOST=127.0.0.1 PORT=8081 DELIVER_MODE=pull STARTDELIVER_API_URL=http://127.0.0.1:8090/api/v1 \
  "$bin/deliver" >"$state/deliver.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:8081/healthz "$!" deliver "$state/deliver.log"

# ingest's explain looks users up (read-only) in the stand-in.
HOST=127.0.0.1 PORT=8080 STARTDELIVER_API_URL=http://127.0.0.1:8090/api/v1 \
  "$bin/ingest" >"$state/ingest.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:8080/readyz "$!" ingest "$state/ingest.log"

auth=$(printf '%s:' "$key" | base64 | tr -d '\n')
cat <<MSG

The Startdeliver destination is running locally.

  ingest (Segment calls this)   http://127.0.0.1:8080
  event console                 http://127.0.0.1:8080/console/   (paste the demo key: where is my event, explain)
  deliver (health)              http://127.0.0.1:8081/healthz
  Startdeliver stand-in         http://127.0.0.1:8090/_standin/   (users, customers, usage as they land)
  logs                          $state/ingest.log $state/deliver.log $state/standin.log
  traces                        $OTEL_CONSOLE_FILE  (bin/tracetree -last)

Demo account API key: $key

Send a first event:

  curl -sS http://127.0.0.1:8080/ \\
    -H 'Content-Type: application/json' \\
    -H 'Authorization: Basic $auth' \\
    -d '{"type":"track","userId":"97980cfea0067","event":"Login Button Clicked"}'

then see it at http://127.0.0.1:8090/_standin/, its journey in the console
(http://127.0.0.1:8080/console/, with the key above) and its trace with:
bin/tracetree -last

Ctrl-C stops everything.
MSG
wait -n "${pids[@]}" || true
[[ -n $stopping ]] || echo "run: a process exited; see $state/*.log" >&2
