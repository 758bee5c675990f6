#!/usr/bin/env bash
# make bench: benchmarks, each reported against baselines measured in the
# same run on the same machine. `make bench` runs this under
# scripts/emulators.sh run.
#
#   1. ingest under load from wrk (a separate process): single events at
#      POST / and /v1/batch of 100 ~1 KB track events, at 64 and 256
#      connections, against Google's Pub/Sub emulator; baselines on the same
#      payloads: a bare net/http decoder (ceiling) and a minimal
#      decode-and-publish server on the same emulator (floor); a comparison
#      row with PUBSUB_ORDERING=false at 64 connections. Besides events/s,
#      p50 and p99, each row tells the CPU the server and the emulator spent
#      per event: on 2 shared cores that, more than anything, sets events/s.
#   2. Go benchmarks with their in-run baselines (-bench, allocations).
#   3. deliver's benchmark (scripts/bench-deliver.sh), when present.
# The report is printed and written to docs/benchmarks.md.
#
# By default part 1 runs on fresh emulators of its own (BENCH_INGEST_PUBSUB_PORT,
# BENCH_INGEST_FIRESTORE_PORT: 8185, 8186), stopped after: a Pub/Sub emulator
# that other runs have loaded can keep a core busy for minutes and would
# skew the figures. BENCH_INGEST_SHARED_EMULATORS=1 uses the environment's.
# BENCH_DURATION (default 10s) sets each wrk run's length; about 3 minutes
# for part 1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export GOOGLE_CLOUD_PROJECT="${GOOGLE_CLOUD_PROJECT:-local-project}"
duration="${BENCH_DURATION:-10s}"
out=docs/benchmarks.md
state=.run/bench
mkdir -p "$state" docs

# ingest_load is part 1; it writes $state/ingest.md.
ingest_load() {
  : "${PUBSUB_EMULATOR_HOST:?run through scripts/emulators.sh run}"
  : "${FIRESTORE_EMULATOR_HOST:?run through scripts/emulators.sh run}"
  if ! command -v wrk >/dev/null; then
    echo "bench: installing wrk (Debian package)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2
  fi
  go build -o "$state/ingest" ./ingest
  go build -o "$state/accounts" ./ingest/cmd/accounts
  go build -o "$state/benchbaseline" ./ingest/cmd/benchbaseline

  local run_id key auth collection
  run_id=$(date +%s)
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

  declare -A port pid
  # server NAME PORT CMD...: start a server in the background.
  server() {
    local name=$1
    port[$name]=$2
    shift 2
    "$@" 2>"$state/$name.log" &
    pids+=($!)
    pid[$name]=$!
  }
  ingest_env=(env HOST=127.0.0.1 ACCOUNTS_COLLECTION="$collection" LOG_LEVEL=error
    OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none)
  server ingest 8180 "${ingest_env[@]}" PORT=8180 PUBSUB_TOPIC="bench-ingest-$run_id" "$state/ingest"
  server ingest-unordered 8183 "${ingest_env[@]}" PORT=8183 PUBSUB_TOPIC="bench-unordered-$run_id" PUBSUB_ORDERING=false "$state/ingest"
  server floor 8181 "$state/benchbaseline" -mode floor -addr 127.0.0.1:8181 -topic "bench-floor-$run_id"
  server ceiling 8182 "$state/benchbaseline" -mode ceiling -addr 127.0.0.1:8182
  local name
  for name in "${!port[@]}"; do
    local ok=
    for _ in $(seq 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/${port[$name]}") 2>/dev/null; then ok=1 && break; fi
      kill -0 "${pid[$name]}" 2>/dev/null || break
      sleep 0.1
    done
    if [[ -z $ok ]]; then
      echo "bench: $name did not start; its log:" >&2
      tail -n 20 "$state/$name.log" >&2
      return 1
    fi
  done

  # The emulator's process, to count the CPU it spends (empty if unknown).
  local emu
  emu=$(ss -ltnpH "sport = :${PUBSUB_EMULATOR_HOST##*:}" 2>/dev/null | sed -nE 's/.*pid=([0-9]+).*/\1/p' | head -1)
  cpu_ticks() { if [[ -n $1 && -r /proc/$1/stat ]]; then awk '{print $14 + $15}' "/proc/$1/stat"; else echo 0; fi; }
  local hz
  hz=$(getconf CLK_TCK)

  declare -gA result
  # field NAME LINE: the value of NAME=... in wrk's BENCH line.
  field() { sed -E "s/.*[ ]$1=([0-9.]+).*/\\1/" <<<" $2"; }
  # measure NAME SCENARIO PATH BATCH CONNS
  measure() {
    local name=$1 scen=$2 path=$3 batch=$4 conns=$5 id="$1.$2.$5" line s0 e0 s1 e1
    s0=$(cpu_ticks "${pid[$name]}")
    e0=$(cpu_ticks "$emu")
    line=$(BENCH_BODY=scripts/bench/track.json BENCH_BATCH=$batch BENCH_AUTH=$auth \
      wrk -t2 -c"$conns" -d"$duration" --timeout 10s -s scripts/bench/post.lua "http://127.0.0.1:${port[$name]}$path" | grep '^BENCH')
    s1=$(cpu_ticks "${pid[$name]}")
    e1=$(cpu_ticks "$emu")
    local per=$((batch > 0 ? batch : 1)) rps p50_us p99_us errors non2xx
    rps=$(field rps "$line")
    p50_us=$(field p50_us "$line")
    p99_us=$(field p99_us "$line")
    errors=$(field errors "$line")
    non2xx=$(field non2xx "$line")
    result[$id]=$(awk -v r="$rps" -v p="$per" 'BEGIN{printf "%.0f", r*p}')
    result[$id.p50]=$(awk -v v="$p50_us" 'BEGIN{printf "%.1f", v/1000}')
    result[$id.p99]=$(awk -v v="$p99_us" 'BEGIN{printf "%.1f", v/1000}')
    result[$id.err]=$((errors + non2xx))
    # CPU per event in µs: ticks × 1e6/hz ÷ (events/s × seconds).
    result[$id.cpu]=$(awk -v t=$((s1 - s0)) -v hz="$hz" -v e="${result[$id]}" -v d="${duration%s}" 'BEGIN{ if (e>0) printf "%.0f", t*1e6/hz/(e*d); else print "n/a" }')
    result[$id.emu]=$(awk -v t=$((e1 - e0)) -v hz="$hz" -v e="${result[$id]}" -v d="${duration%s}" -v known="$emu" 'BEGIN{ if (e>0 && known!="") printf "%.0f", t*1e6/hz/(e*d); else print "n/a" }')
    echo "bench: $name $scen c$conns: ${result[$id]} events/s, p50 ${result[$id.p50]} ms, p99 ${result[$id.p99]} ms, CPU/event server ${result[$id.cpu]} µs emulator ${result[$id.emu]} µs, errors ${result[$id.err]}" >&2
  }

  # Warm up (the emulator is a JVM: its first seconds are slow) and let
  # each server open its connections.
  echo "bench: warming up" >&2
  for name in ingest floor; do
    BENCH_BODY=scripts/bench/track.json BENCH_BATCH=0 BENCH_AUTH=$auth \
      wrk -t2 -c64 -d3s -s scripts/bench/post.lua "http://127.0.0.1:${port[$name]}/" >/dev/null
    BENCH_BODY=scripts/bench/track.json BENCH_BATCH=100 BENCH_AUTH=$auth \
      wrk -t2 -c64 -d3s -s scripts/bench/post.lua "http://127.0.0.1:${port[$name]}/v1/batch" >/dev/null
  done

  local load_before load_after s c sname spath sbatch
  load_before=$(cut -d' ' -f1 /proc/loadavg)
  for s in "single:/:0" "batch:/v1/batch:100"; do
    IFS=: read -r sname spath sbatch <<<"$s"
    for c in 64 256; do
      measure ingest "$sname" "$spath" "$sbatch" "$c"
      if ((c == 64)); then measure ingest-unordered "$sname" "$spath" "$sbatch" "$c"; fi
      measure floor "$sname" "$spath" "$sbatch" "$c"
      measure ceiling "$sname" "$spath" "$sbatch" "$c"
    done
  done
  load_after=$(cut -d' ' -f1 /proc/loadavg)

  ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "n/a" }'; }
  local emu_kind="Google's Pub/Sub emulator"
  if [[ -z $emu ]] || ! grep -q pubsub-emulator "/proc/$emu/cmdline" 2>/dev/null; then emu_kind="the Pub/Sub emulator at $PUBSUB_EMULATOR_HOST"; fi
  {
    echo "# Benchmarks"
    echo
    echo "Measured by \`make bench\` on $(date -u +%Y-%m-%d), $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB."
    echo "**The load generator (wrk, 2 threads), the server under test and $emu_kind share these $(nproc) cores**,"
    echo "so absolute figures are this machine's; the ratios, measured in the same run, are what to compare."
    echo "One-minute load average before / after the ingest runs: $load_before / $load_after (well above 3 means other work shared the cores too)."
    echo
    echo "## ingest"
    echo
    echo "~1 KB track events (\`scripts/bench/track.json\`), userId varied per event (so ordering keys vary as in real traffic); wrk -t2, $duration per run."
    echo "ingest does its real work: Basic auth (cached account), decoding, validation, envelope, ordering key, spans (export off), publish and wait for the confirmation."
    echo "Floor: decode and publish each event with a default pubsub/v2 publisher (no ordering, 10 ms batching delay), wait for the result. Ceiling: read and decode the body only."
    echo "CPU/event: CPU time the server process, and the emulator, spent per event during the run."
    echo
    echo "| scenario | conns | server | events/s | p50 ms | p99 ms | ÷ floor | ÷ ceiling | server CPU/event µs | emulator CPU/event µs | errors |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    local srv i f k
    for s in single batch; do
      for c in 64 256; do
        f=floor.$s.$c k=ceiling.$s.$c
        for srv in ingest ingest-unordered floor ceiling; do
          i=$srv.$s.$c
          [[ -n ${result[$i]:-} ]] || continue
          local label=$srv
          [[ $srv == ingest ]] && label="**ingest**"
          [[ $srv == ingest-unordered ]] && label="ingest, PUBSUB_ORDERING=false"
          echo "| $s | $c | $label | ${result[$i]} | ${result[$i.p50]} | ${result[$i.p99]} | $(ratio "${result[$i]}" "${result[$f]}") | $(ratio "${result[$i]}" "${result[$k]}") | ${result[$i.cpu]} | ${result[$i.emu]} | ${result[$i.err]} |"
        done
      done
    done
    echo
    [[ -f scripts/bench/notes.md ]] && cat scripts/bench/notes.md && echo
  } >"$state/ingest.md"
  cleanup
  trap - EXIT
}

if [[ "${1:-}" == "--ingest" ]]; then
  ingest_load
  exit
fi

if [[ "${BENCH_INGEST_SHARED_EMULATORS:-}" == "1" ]]; then
  "$0" --ingest
else
  echo "bench: starting fresh emulators for the ingest load test" >&2
  (unset PUBSUB_EMULATOR_HOST FIRESTORE_EMULATOR_HOST
    EMULATOR_STATE_DIR="$root/$state/emulators" \
      PUBSUB_PORT="${BENCH_INGEST_PUBSUB_PORT:-8185}" FIRESTORE_PORT="${BENCH_INGEST_FIRESTORE_PORT:-8186}" \
      scripts/emulators.sh run "$0" --ingest)
fi

echo "== Go benchmarks (each with its baseline in the same run)" >&2
# A fixed count for shared and deliver (their per-op metrics want whole
# runs); ingest's batch benchmark takes milliseconds per op, so 1s each.
go_bench=$(for m in shared:2000x deliver:2000x ingest:1s; do
  (cd "${m%%:*}" || exit 0; go test -run '^$' -bench . -benchmem -benchtime "${m#*:}" ./... 2>/dev/null | grep -E '^Benchmark' || true)
done)
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
