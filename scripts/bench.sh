#!/usr/bin/env bash
# make bench: benchmarks, each reported against baselines measured in the
# same run on the same machine. Needs the emulators (`make bench` runs this
# under scripts/emulators.sh run).
#
#   1. ingest under load from wrk (a separate process): single events at
#      POST / and /v1/batch of 100 ~1 KB track events, at 64 and 256
#      connections, against Google's Pub/Sub emulator; baselines: a bare
#      net/http decoder (ceiling) and a minimal decode-and-publish server
#      (floor). Results go to docs/benchmarks.md.
#   2. Go benchmarks with their in-run baselines (-bench, allocations).
#   3. deliver's benchmark (scripts/bench-deliver.sh), when present.
#
# BENCH_DURATION (default 8s) sets each wrk run's length.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
: "${PUBSUB_EMULATOR_HOST:?run through scripts/emulators.sh run (make bench does)}"
: "${FIRESTORE_EMULATOR_HOST:?run through scripts/emulators.sh run (make bench does)}"
export GOOGLE_CLOUD_PROJECT="${GOOGLE_CLOUD_PROJECT:-local-project}"
duration="${BENCH_DURATION:-8s}"
out=docs/benchmarks.md
state=.run/bench
mkdir -p "$state" docs

if ! command -v wrk >/dev/null; then
  echo "bench: installing wrk (Debian package)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi

go build -o "$state/ingest" ./ingest
go build -o "$state/accounts" ./ingest/cmd/accounts
go build -o "$state/benchbaseline" ./ingest/cmd/benchbaseline

run_id=$(date +%s)
topic="bench-ingest-$run_id"
floor_topic="bench-floor-$run_id"
collection="bench-accounts-$run_id"
key="sd-bench-$run_id"
auth="Basic $(printf '%s:' "$key" | base64 | tr -d '\n')"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

ACCOUNTS_COLLECTION=$collection "$state/accounts" put -file scripts/demo/account.json -key "$key" >/dev/null

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "bench: nothing listening on $1" >&2
  return 1
}

HOST=127.0.0.1 PORT=8180 PUBSUB_TOPIC=$topic ACCOUNTS_COLLECTION=$collection LOG_LEVEL=error \
  OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none "$state/ingest" 2>"$state/ingest.log" &
pids+=($!)
"$state/benchbaseline" -mode floor -addr 127.0.0.1:8181 -topic "$floor_topic" 2>"$state/floor.log" &
pids+=($!)
"$state/benchbaseline" -mode ceiling -addr 127.0.0.1:8182 2>"$state/ceiling.log" &
pids+=($!)
wait_port 8180
wait_port 8181
wait_port 8182

declare -A result
measure() { # name port path batch conns
  local name=$1 port=$2 path=$3 batch=$4 conns=$5 line
  line=$(BENCH_BODY=scripts/bench/track.json BENCH_BATCH=$batch BENCH_AUTH=$auth \
    wrk -t2 -c"$conns" -d"$duration" --timeout 10s -s scripts/bench/post.lua "http://127.0.0.1:$port$path" | grep '^BENCH')
  local per=$((batch > 0 ? batch : 1))
  local rps p50 p99 errors non2xx
  rps=$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$line")
  p50=$(sed -E 's/.*p50_us=([0-9]+).*/\1/' <<<"$line")
  p99=$(sed -E 's/.*p99_us=([0-9]+).*/\1/' <<<"$line")
  errors=$(sed -E 's/.*errors=([0-9]+).*/\1/' <<<"$line")
  non2xx=$(sed -E 's/.*non2xx=([0-9]+).*/\1/' <<<"$line")
  result[$name]=$(awk -v r="$rps" -v p="$per" 'BEGIN{printf "%.0f", r*p}')
  result[$name.p50]=$(awk -v v="$p50" 'BEGIN{printf "%.1f", v/1000}')
  result[$name.p99]=$(awk -v v="$p99" 'BEGIN{printf "%.1f", v/1000}')
  result[$name.err]=$((errors + non2xx))
  echo "bench: $name: ${result[$name]} events/s, p50 ${result[$name.p50]} ms, p99 ${result[$name.p99]} ms, errors $((errors + non2xx))" >&2
}

scenarios=("single:/:0" "batch:/v1/batch:100")
for s in "${scenarios[@]}"; do
  IFS=: read -r sname spath sbatch <<<"$s"
  for c in 64 256; do
    measure "ingest.$sname.$c" 8180 "$spath" "$sbatch" "$c"
    measure "floor.$sname.$c" 8181 "$spath" "$sbatch" "$c"
    measure "ceiling.$sname.$c" 8182 "$spath" "$sbatch" "$c"
  done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "n/a" }'; }
{
  echo "# Benchmarks"
  echo
  echo "Measured by \`make bench\` on $(date -u +%Y-%m-%d), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB."
  echo "The load generator (wrk, 2 threads), the server and Google's Pub/Sub emulator share these cores,"
  echo "so absolute figures are the machine's; the ratios, measured in the same run, are what to compare."
  echo
  echo "## ingest"
  echo
  echo "~1 KB track events (\`scripts/bench/track.json\`), userId varied per event; $duration per run."
  echo "ingest does its real work: auth (cached), validation, envelope, ordering key, tracing (export off), publish and wait."
  echo "Floor: decode and publish each event with a default pubsub/v2 publisher, wait for the result. Ceiling: read and decode the body only."
  echo
  echo "| scenario | conns | ingest events/s | p50 ms | p99 ms | floor events/s | ceiling events/s | ingest ÷ floor | ingest ÷ ceiling | errors |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for s in single batch; do
    for c in 64 256; do
      i=ingest.$s.$c f=floor.$s.$c k=ceiling.$s.$c
      echo "| $s | $c | ${result[$i]} | ${result[$i.p50]} | ${result[$i.p99]} | ${result[$f]} (p50 ${result[$f.p50]}) | ${result[$k]} | $(ratio "${result[$i]}" "${result[$f]}") | $(ratio "${result[$i]}" "${result[$k]}") | ${result[$i.err]} |"
    done
  done
  echo
} >"$state/ingest.md"

echo "== Go benchmarks (each with its baseline in the same run)" >&2
go_bench=$(for m in shared deliver ingest; do (cd "$m" && go test -run '^$' -bench . -benchmem -benchtime 2000x ./... 2>/dev/null | grep -E '^Benchmark' || true); done)
{
  cat "$state/ingest.md"
  echo "## Go benchmarks"
  echo
  echo '```'
  echo "$go_bench"
  echo '```'
  echo
} >"$state/report.md"

if [[ -x scripts/bench-deliver.sh ]]; then
  scripts/bench-deliver.sh >>"$state/report.md"
fi
cp "$state/report.md" "$out"
cat "$out"
