#!/usr/bin/env bash
# Starts the Pub/Sub and Firestore emulators on loopback, waits until both
# answer, and stops exactly what it started.
#
#   scripts/emulators.sh start   # start both, write .run/emulators.env, return
#   scripts/emulators.sh stop [pubsub|firestore ...]  # stop what `start` started
#   scripts/emulators.sh run CMD # start, run CMD with the emulator env, stop
#   scripts/emulators.sh status
#
# Google's own emulators from the Cloud SDK are used when installed; otherwise
# the fallbacks: Google's pstest fake for Pub/Sub
# (a small Go server in this repo) and the npm @firestore-emulator/server for
# Firestore. Ports: PUBSUB_PORT (8085), FIRESTORE_PORT (8086).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state="${EMULATOR_STATE_DIR:-$root/.run}"
mkdir -p "$state"
pubsub_port="${PUBSUB_PORT:-8085}"
firestore_port="${FIRESTORE_PORT:-8086}"
project="${GOOGLE_CLOUD_PROJECT:-local-project}"
sdk="${CLOUDSDK_ROOT:-/usr/lib/google-cloud-sdk}"

log() { printf 'emulators: %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_ready NAME PORT PIDFILE LOG: wait for the port, or show the log if the
# process died.
wait_ready() {
  local name=$1 port=$2 pidfile=$3 logfile=$4 deadline=$((SECONDS + ${EMULATOR_START_TIMEOUT:-90}))
  while ! port_open "$port"; do
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      log "$name emulator exited before it was ready; its log:"
      tail -n 50 "$logfile" >&2 || true
      return 1
    fi
    if ((SECONDS > deadline)); then
      log "$name emulator not ready on 127.0.0.1:$port after ${EMULATOR_START_TIMEOUT:-90}s; its log:"
      tail -n 50 "$logfile" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

# spawn NAME PIDFILE LOG CMD...: start CMD in its own process group.
spawn() {
  local name=$1 pidfile=$2 logfile=$3
  shift 3
  setsid "$@" >"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
  log "started $name (pid $!, log $logfile)"
}

start_pubsub() {
  local pidfile="$state/pubsub.pid" logfile="$state/pubsub.log"
  if port_open "$pubsub_port"; then
    log "Pub/Sub emulator port $pubsub_port already answers; using it (not ours to stop)"
    return
  fi
  started+=(pubsub)
  local bin="$sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
  if [[ -x "$bin" ]] && command -v java >/dev/null; then
    spawn "Pub/Sub emulator" "$pidfile" "$logfile" "$bin" --host=127.0.0.1 --port="$pubsub_port"
    echo google >"$state/pubsub.kind"
  else
    log "Cloud SDK Pub/Sub emulator not found; using the pstest fallback"
    (cd "$root/shared" && go build -o "$state/pstest-server" ./internal/pstestserver)
    spawn "pstest Pub/Sub fake" "$pidfile" "$logfile" "$state/pstest-server" -addr "127.0.0.1:$pubsub_port"
    echo pstest >"$state/pubsub.kind"
  fi
  wait_ready "Pub/Sub" "$pubsub_port" "$pidfile" "$logfile"
}

start_firestore() {
  local pidfile="$state/firestore.pid" logfile="$state/firestore.log"
  if port_open "$firestore_port"; then
    log "Firestore emulator port $firestore_port already answers; using it (not ours to stop)"
    return
  fi
  started+=(firestore)
  local bin="$sdk/platform/cloud-firestore-emulator/cloud_firestore_emulator"
  if [[ -x "$bin" ]] && command -v java >/dev/null; then
    spawn "Firestore emulator" "$pidfile" "$logfile" "$bin" start --host=127.0.0.1 --port="$firestore_port"
    echo google >"$state/firestore.kind"
  else
    log "Cloud SDK Firestore emulator not found; using the npm fallback"
    local dir="$state/firestore-fallback"
    mkdir -p "$dir"
    if [[ ! -d "$dir/node_modules/@firestore-emulator/server" ]]; then
      (cd "$dir" && npm install --silent --no-audit --no-fund @firestore-emulator/server@0.3.15 >&2)
    fi
    cat >"$dir/start.js" <<JS
const { FirestoreServer } = require('@firestore-emulator/server');
new FirestoreServer().start(Number(process.argv[2]));
JS
    spawn "Firestore fallback" "$pidfile" "$logfile" node "$dir/start.js" "$firestore_port"
    echo npm >"$state/firestore.kind"
  fi
  wait_ready "Firestore" "$firestore_port" "$pidfile" "$logfile"
}

write_env() {
  # FIRESTORE_EMULATOR_KIND (google or npm) lets a test skip what the npm
  # fallback does not implement.
  local fkind=""
  [[ -f "$state/firestore.kind" ]] && fkind=$(cat "$state/firestore.kind")
  cat >"$state/emulators.env" <<ENV
export PUBSUB_EMULATOR_HOST=127.0.0.1:$pubsub_port
export FIRESTORE_EMULATOR_HOST=127.0.0.1:$firestore_port
export FIRESTORE_EMULATOR_KIND=$fkind
export GOOGLE_CLOUD_PROJECT=$project
ENV
}

stop_one() {
  local name=$1 pidfile="$state/$1.pid"
  [[ -f "$pidfile" ]] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    # The process leads its own group (setsid): stop the whole group, which
    # includes the java process the SDK wrapper forks.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    log "stopped $name (pid $pid)"
  fi
  rm -f "$pidfile" "$state/$name.kind"
}

started=()
case "${1:-}" in
start)
  start_pubsub
  start_firestore
  write_env
  # What this call started, for `run` (and scripts/run.sh) to stop exactly that.
  echo "${started[*]}" >"$state/emulators.started"
  log "ready: PUBSUB_EMULATOR_HOST=127.0.0.1:$pubsub_port FIRESTORE_EMULATOR_HOST=127.0.0.1:$firestore_port (source $state/emulators.env)"
  ;;
stop)
  shift
  names=("$@")
  ((${#names[@]})) || names=(pubsub firestore)
  for n in "${names[@]}"; do stop_one "$n"; done
  ;;
status)
  for n in pubsub firestore; do
    if [[ -f "$state/$n.pid" ]] && kill -0 "$(cat "$state/$n.pid")" 2>/dev/null; then
      echo "$n: running ($(cat "$state/$n.kind" 2>/dev/null || echo ?), pid $(cat "$state/$n.pid"))"
    else
      echo "$n: not started by this script"
    fi
  done
  ;;
run)
  shift
  "$0" start
  read -r -a ours <"$state/emulators.started" || ours=()
  if ((${#ours[@]})); then
    trap '"$0" stop "${ours[@]}"' EXIT
  fi
  # shellcheck disable=SC1091
  source "$state/emulators.env"
  "$@"
  ;;
*)
  echo "usage: $0 start|stop|status|run CMD..." >&2
  exit 2
  ;;
esac
