#!/usr/bin/env bash
# make bench: benchmarks, each reported against baselines measured in the
# same run on the same machine. `make bench` runs this under
# scripts/emulators.sh run.
#
#   1. ingest under load from wrk (a separate process, 2 threads), ~1 KB
#      Segment track events: single events at POST / with 64 and 256
#      connections, /v1/batch of 100 with 64 connections. Every server runs
#      against the same fresh Pub/Sub emulator, and beside ingest:
#        B  the floor: a minimal honest ingest (encoding/json decode, a
#           default pubsub/v2 Publisher, 10 ms bundling, no ordering, 200
#           only after every PublishResult.Get);
#        A  the ceiling: read and decode only;
#      and ingest variants for comparison (other publishers, ordering on).
#      Each row is BENCH_DURATION (30s) in BENCH_SLICES (3) stretches, the
#      servers of a workload taking turns stretch by stretch, each stretch
#      after a warm-up of the same server and workload (BENCH_WARMUP, 3s,
#      before the first; BENCH_SLICE_WARMUP, 1s, before the others); round
#      1 follows one warm-up of every server and workload; BENCH_ROUNDS (2)
#      rounds, all shown.
#      Besides events/s, p50 and p99, each row gives the CPU the server and
#      the emulator spent per event, and ingest's ratios to B.
#   2. Go benchmarks with their in-run baselines (-bench, allocations).
#   3. deliver's benchmark (scripts/bench-deliver.sh), when present.
# The report is printed and written to docs/benchmarks.md.
#
#   scripts/bench.sh          all three
#   scripts/bench.sh ingest   part 1 only; replaces the "## ingest" section
#                             of docs/benchmarks.md
#
# Part 1 runs on fresh emulators of its own (BENCH_INGEST_PUBSUB_PORT,
# BENCH_INGEST_FIRESTORE_PORT: 8185, 8186), stopped after: a Pub/Sub
# emulator that other runs have loaded can keep a core busy for minutes.
# BENCH_INGEST_SHARED_EMULATORS=1 uses the environment's. BENCH_SERVERS
# chooses the servers (default: all below), BENCH_WORKLOADS the workloads,
# BENCH_PROFILE=1 takes a CPU profile of ingest in each workload (written
# to .run/bench/ingest-<workload>.pprof with its top functions beside it).
# About 34 minutes for part 1 with the defaults (about 20 with
# BENCH_DURATION=15s, whose rounds are too noisy to judge a 10-20% margin:
# scripts/bench/notes.md, "30 s rows by default").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export GOOGLE_CLOUD_PROJECT="${GOOGLE_CLOUD_PROJECT:-local-project}"
duration="${BENCH_DURATION:-30s}"
warmup="${BENCH_WARMUP:-3s}"
rounds="${BENCH_ROUNDS:-2}"
slices="${BENCH_SLICES:-3}"
slice_warmup="${BENCH_SLICE_WARMUP:-1s}"
slice_secs=$((${duration%s} / slices))
((slice_secs >= 1)) || { echo "bench: BENCH_DURATION ($duration) is shorter than BENCH_SLICES ($slices) seconds" >&2; exit 1; }
out=docs/benchmarks.md
state=.run/bench
mkdir -p "$state" docs

# The servers part 1 can run: NAME -> description. ingest-* are the ingest
# binary built with -tags bench (ingest/bench_variants.go), which adds only
# the publisher switch and pprof.
declare -A server_doc=(
  [ingest]="ingest as deployed: default configuration, and GOGC=400 GOMEMLIMIT=384MiB as infra/run.tf sets them"
  [ingest-ordered]="ingest, PUBSUB_ORDERING=true"
  [ingest-unordered]="ingest, PUBSUB_ORDERING=false"
  [ingest-defaultgc]="ingest with Go's default GOGC=100 and no GOMEMLIMIT"
  [ingest-otelhttp]="ingest with otelhttp's server span and metrics instead of telemetry.Server"
  [ingest-client]="ingest with the client library's pubsub.Publisher (default settings), no ordering"
  [ingest-client-ordered]="ingest with the client library's pubsub.Publisher (default settings), ordering keys"
  [B]="floor B: encoding/json, default pubsub/v2 Publisher, no ordering, 200 after every Get"
  [A]="ceiling A: read and decode only"
)
servers=(${BENCH_SERVERS:-ingest B A ingest-otelhttp ingest-ordered ingest-client ingest-client-ordered ingest-defaultgc})
# NAME:PATH:BATCH:CONNS
workloads=(${BENCH_WORKLOADS:-single-64:/:0:64 single-256:/:0:256 batch-64:/v1/batch:100:64})

# ingest_load is part 1; it writes $state/ingest.md.
ingest_load() {
  : "${PUBSUB_EMULATOR_HOST:?run through scripts/emulators.sh run}"
  : "${FIRESTORE_EMULATOR_HOST:?run through scripts/emulators.sh run}"
  if ! command -v wrk >/dev/null; then
    echo "bench: installing wrk (Debian package)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2
  fi
  go build -tags bench -o "$state/ingest" ./ingest
  go build -o "$state/accounts" ./ingest/cmd/accounts
  (cd scripts/bench/baseline && GOWORK=off go build -o "$root/$state/benchbaseline" .)

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

  declare -A port pid pprof
  # server NAME PORT CMD...: start a server in the background.
  server() {
    local name=$1
    port[$name]=$2
    shift 2
    "$@" 2>"$state/$name.log" &
    pids+=($!)
    pid[$name]=$!
  }
  # ingest as infra/run.tf deploys it (GOGC, GOMEMLIMIT), traces and
  # metrics recorded by the SDK but not exported.
  ingest_env=(env HOST=127.0.0.1 ACCOUNTS_COLLECTION="$collection" LOG_LEVEL=error
    OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none GOGC=400 GOMEMLIMIT=384MiB)
  local name n=0 p
  for name in "${servers[@]}"; do
    [[ -n ${server_doc[$name]:-} ]] || { echo "bench: unknown server $name (know: ${!server_doc[*]})" >&2; return 1; }
    p=$((8170 + n))
    n=$((n + 1))
    pprof[$name]=127.0.0.1:$((8280 + n))
    case $name in
    B) server B "$p" "$state/benchbaseline" -mode floor -addr "127.0.0.1:$p" -topic "bench-B-$run_id" ;;
    A) server A "$p" "$state/benchbaseline" -mode ceiling -addr "127.0.0.1:$p" ;;
    ingest*)
      local extra=()
      case $name in
      ingest-ordered) extra=(PUBSUB_ORDERING=true) ;;
      ingest-unordered) extra=(PUBSUB_ORDERING=false) ;;
      ingest-defaultgc) extra=(GOGC=100 GOMEMLIMIT=off) ;;
      ingest-otelhttp) extra=(BENCH_SERVER_SPAN=otelhttp) ;;
      ingest-client) extra=(BENCH_PUBLISHER=client PUBSUB_ORDERING=false) ;;
      ingest-client-ordered) extra=(BENCH_PUBLISHER=client PUBSUB_ORDERING=true) ;;
      esac
      server "$name" "$p" "${ingest_env[@]}" PORT="$p" PUBSUB_TOPIC="bench-$name-$run_id" \
        BENCH_PPROF_ADDR="${pprof[$name]}" "${extra[@]}" "$state/ingest"
      ;;
    esac
  done
  for name in "${servers[@]}"; do
    local ok=
    for _ in $(seq 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/${port[$name]}") 2>/dev/null; then ok=1 && break; fi
      kill -0 "${pid[$name]}" 2>/dev/null || break
      sleep 0.1
    done
    # The port may answer for another process (a run still under way):
    # the server must be ours and alive.
    kill -0 "${pid[$name]}" 2>/dev/null || ok=
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
  # load NAME PATH BATCH CONNS DURATION: run wrk, print its BENCH line.
  load() {
    BENCH_BODY=scripts/bench/track.json BENCH_BATCH=$3 BENCH_AUTH=$auth \
      wrk -t2 -c"$4" -d"$5" --timeout 10s -s scripts/bench/post.lua "http://127.0.0.1:${port[$1]}$2" | grep '^BENCH' || true
  }
  # A row is BENCH_SLICES (3) stretches of duration ÷ slices, and the
  # servers of a workload take turns stretch by stretch: ingest, B, A, ...,
  # then B, A, ..., ingest, and so on (each stretch starts one server
  # later). This machine's speed drifts by ±20% from one row to the next
  # (B's own CPU per event ranged 126–170 µs between full runs, with nothing
  # else running); one 15 s stretch per server put that drift between
  # ingest's row and B's, taking turns spreads it over both. Each stretch follows a warm-up of the same server and workload
  # ($warmup before the first, BENCH_SLICE_WARMUP (1s) before the others:
  # wrk's connections are new each time). BENCH_SLICES=1 is one stretch per
  # row, as before 2026-12-01 18:00.
  # pubstats NAME: "calls messages" of ingest's publisher so far (none for others).
  pubstats() { [[ $1 == ingest* ]] && curl -s "http://${pprof[$1]}/debug/publish" 2>/dev/null | sed -nE 's/calls=([0-9]+) messages=([0-9]+)/\1 \2/p' || true; }
  declare -A acc
  # stretch NAME WORKLOAD PATH BATCH CONNS ROUND SLICE: one stretch of a
  # row, added to the row's sums in acc.
  stretch() {
    local name=$1 wl=$2 path=$3 batch=$4 conns=$5 id="$1.$2.$6" s=$7 line s0 e0 s1 e1 prof= ps0 ps1=
    local warm=$slice_warmup
    ((s == 1)) && warm=$warmup
    load "$name" "$path" "$batch" "$conns" "$warm" >/dev/null
    if [[ ${BENCH_PROFILE:-} == 1 && $name == ingest && $6 == 1 ]]; then
      curl -s -o "$state/ingest-$wl.$s.pprof" "http://${pprof[$name]}/debug/pprof/profile?seconds=$((slice_secs > 2 ? slice_secs - 1 : 1))" &
      prof=$!
    fi
    ps0=$(pubstats "$name")
    s0=$(cpu_ticks "${pid[$name]}")
    e0=$(cpu_ticks "$emu")
    line=$(BENCH_HIST="$state/hist.$id" load "$name" "$path" "$batch" "$conns" "${slice_secs}s")
    if [[ -z $line || $(field requests "$line") == 0 ]]; then
      echo "bench: $name answered nothing in stretch $s of round $6 ($wl); its log:" >&2
      tail -n 20 "$state/$name.log" >&2
      return 1
    fi
    s1=$(cpu_ticks "${pid[$name]}")
    e1=$(cpu_ticks "$emu")
    [[ -n $ps0 ]] && ps1=$(pubstats "$name")
    [[ -n $prof ]] && { wait "$prof" || true; }
    acc[$id.req]=$((${acc[$id.req]:-0} + $(field requests "$line")))
    acc[$id.us]=$((${acc[$id.us]:-0} + $(field duration_us "$line")))
    acc[$id.err]=$((${acc[$id.err]:-0} + $(field errors "$line") + $(field non2xx "$line")))
    acc[$id.ticks]=$((${acc[$id.ticks]:-0} + s1 - s0))
    acc[$id.emu]=$((${acc[$id.emu]:-0} + e1 - e0))
    if [[ -n $ps0 && -n $ps1 ]]; then
      acc[$id.calls]=$((${acc[$id.calls]:-0} + ${ps1% *} - ${ps0% *}))
      acc[$id.msgs]=$((${acc[$id.msgs]:-0} + ${ps1#* } - ${ps0#* }))
    fi
    local per=$((batch > 0 ? batch : 1))
    echo "bench:   stretch $s of round $6, $name $wl: $(awk -v n="$(field requests "$line")" -v p="$per" -v us="$(field duration_us "$line")" 'BEGIN{ if (us > 0) printf "%.0f", n*p*1e6/us; else print 0 }') events/s, server CPU/event $(awk -v t=$((s1 - s0)) -v hz="$hz" -v n="$(field requests "$line")" -v p="$per" 'BEGIN{ if (n > 0) printf "%.0f", t*1e6/hz/(n*p); else print "n/a" }') µs" >&2
  }
  # percentile FILE P: the P-th percentile, in ms, of a merged histogram.
  percentile() {
    sort -n -k1,1 "$1" | awk -v p="$2" '{ v[NR] = $1; c[NR] = $2; n += $2 }
      END { t = n * p / 100; s = 0; for (i = 1; i <= NR; i++) { s += c[i]; if (s >= t) { printf "%.1f", v[i] / 1000; exit } } print "n/a" }'
  }
  # row NAME WORKLOAD BATCH ROUND: a row's figures from its stretches' sums.
  row() {
    local name=$1 wl=$2 id="$1.$2.$4" per=$(($3 > 0 ? $3 : 1)) events
    events=$((${acc[$id.req]:-0} * per))
    result[$id]=$(awk -v e="$events" -v us="${acc[$id.us]:-0}" 'BEGIN{ if (us > 0) printf "%.0f", e * 1e6 / us; else print 0 }')
    result[$id.p50]=$(percentile "$state/hist.$id" 50)
    result[$id.p99]=$(percentile "$state/hist.$id" 99)
    result[$id.err]=${acc[$id.err]:-0}
    # CPU per event in µs: ticks × 1e6/hz ÷ events.
    result[$id.cpu]=$(awk -v t="${acc[$id.ticks]:-0}" -v hz="$hz" -v e="$events" 'BEGIN{ if (e>0) printf "%.0f", t*1e6/hz/e; else print "n/a" }')
    result[$id.emu]=$(awk -v t="${acc[$id.emu]:-0}" -v hz="$hz" -v e="$events" -v known="$emu" 'BEGIN{ if (e>0 && known!="") printf "%.0f", t*1e6/hz/e; else print "n/a" }')
    result[$id.mpc]=$(awk -v c="${acc[$id.calls]:-0}" -v m="${acc[$id.msgs]:-0}" 'BEGIN{ if (c > 0) printf "%.1f", m/c; else print "n/a" }')
    echo "bench: round $4 $name $wl: ${result[$id]} events/s, p50 ${result[$id.p50]} ms, p99 ${result[$id.p99]} ms, CPU/event server ${result[$id.cpu]} µs emulator ${result[$id.emu]} µs, messages/call ${result[$id.mpc]}, errors ${result[$id.err]}" >&2
  }

  local uptime_before uptime_after r w wname wpath wbatch wconns s
  # A fresh emulator's JVM is slow until it has compiled its hot code: the
  # first rows measured on it paid for that (in a run of 2026-12-01 the
  # first server of round 1 cost the emulator 5.5x the CPU per event it did
  # in round 2). So before round 1 every server runs every workload for the
  # warm-up time, unmeasured, and again until BENCH_EMULATOR_WARMUP (60)
  # seconds have passed: with only two servers and one workload one pass
  # is 6 s, and in such a run ingest's first row still cost the emulator
  # 3.5x what its second did.
  echo "bench: warming up the emulator with every server and workload" >&2
  local warm_until=$((SECONDS + ${BENCH_EMULATOR_WARMUP:-60}))
  while :; do
    for w in "${workloads[@]}"; do
      IFS=: read -r wname wpath wbatch wconns <<<"$w"
      for name in "${servers[@]}"; do
        load "$name" "$wpath" "$wbatch" "$wconns" "$warmup" >/dev/null
      done
    done
    ((SECONDS < warm_until)) || break
  done
  rm -f "$state"/hist.* "$state"/ingest-*.pprof
  uptime_before=$(uptime)
  echo "bench: $uptime_before" >&2
  for r in $(seq "$rounds"); do
    for w in "${workloads[@]}"; do
      IFS=: read -r wname wpath wbatch wconns <<<"$w"
      # Stretch s starts at the s-th server, so that no server always
      # follows the same one.
      local nsrv=${#servers[@]} k
      for s in $(seq "$slices"); do
        for k in $(seq 0 $((nsrv - 1))); do
          stretch "${servers[$(((s - 1 + k) % nsrv))]}" "$wname" "$wpath" "$wbatch" "$wconns" "$r" "$s"
        done
      done
      for name in "${servers[@]}"; do
        row "$name" "$wname" "$wbatch" "$r"
      done
      if [[ ${BENCH_PROFILE:-} == 1 && $r == 1 ]] && compgen -G "$state/ingest-$wname.*.pprof" >/dev/null; then
        go tool pprof -proto "$state/ingest" "$state/ingest-$wname".*.pprof >"$state/ingest-$wname.pprof" 2>/dev/null || true
        go tool pprof -top -nodecount=40 "$state/ingest" "$state/ingest-$wname.pprof" >"$state/ingest-$wname.top" 2>/dev/null || true
      fi
    done
  done
  uptime_after=$(uptime)
  echo "bench: $uptime_after" >&2

  ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a!="n/a" && b!="n/a" && b>0) printf "%.2f", a/b; else print "n/a" }'; }
  # each KEY: the values of all rounds, "a / b".
  each() {
    local k=$1 out="" v
    for r in $(seq "$rounds"); do
      v=${result[${k/@/$r}]:-n/a}
      out+="${out:+ / }$v"
    done
    echo "$out"
  }
  # each_ratio KEY BASEKEY
  each_ratio() {
    local out="" r
    for r in $(seq "$rounds"); do
      out+="${out:+ / }$(ratio "${result[${1/@/$r}]:-n/a}" "${result[${2/@/$r}]:-n/a}")"
    done
    echo "$out"
  }
  # goal KEY BASEKEY OP LIMIT: "met"/"not met" in every round.
  goal() {
    local out="" r
    for r in $(seq "$rounds"); do
      # Judged on the exact ratio, shown rounded: 0.996 is not 1.0.
      out+="${out:+ / }$(awk -v a="${result[${1/@/$r}]:-n/a}" -v b="${result[${2/@/$r}]:-n/a}" -v op="$3" -v l="$4" 'BEGIN{
        if (a=="n/a" || b=="n/a" || b<=0) { print "n/a"; exit }
        v=a/b; s=sprintf("%.2f", v)
        if ((op==">=" && v>=l) || (op=="<=" && v<=l)) print "**" s "** met"; else print "**" s "** NOT met" }')"
    done
    echo "$out"
  }
  local emu_kind="Google's Pub/Sub emulator"
  if [[ -z $emu ]] || ! grep -q pubsub-emulator "/proc/$emu/cmdline" 2>/dev/null; then emu_kind="the Pub/Sub emulator at $PUBSUB_EMULATOR_HOST"; fi
  local has_b=
  [[ " ${servers[*]} " == *" B "* ]] && has_b=1
  {
    echo "## ingest"
    echo
    echo "Measured by \`scripts/bench.sh ingest\` (part of \`make bench\`) on $(date -u '+%Y-%m-%d %H:%M UTC'), $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB."
    echo "**The load generator (wrk, 2 threads), the server under test and $emu_kind share these $(nproc) cores**;"
    echo "the ratios, measured in the same run, are what to compare. ${BENCH_MACHINE_NOTE:-}\`uptime\` before and after the runs:"
    echo
    echo "    $uptime_before"
    echo "    $uptime_after"
    echo
    echo "~1 KB track events (\`scripts/bench/track.json\`), userId varied per event (5,000 people per wrk thread); wrk -t2, $duration per row in $slices stretches of ${slice_secs}s, the servers of a workload taking turns stretch by stretch (each stretch starting one server later: ingest, B, A, …, then B, A, …, ingest), each stretch after a warm-up of the same server and workload ($warmup before the first, $slice_warmup before the others); $rounds rounds (values \"round 1 / round 2\"); p50 and p99 are of a row's stretches' latencies together. Every server publishes to its own topic on the same fresh emulator."
    echo "ingest does its real work: Basic auth (cached account), decoding, validation, envelope, spans and metrics (SDKs on, export off), publish and wait for the confirmation."
    echo "CPU/event: CPU time the server process, and the emulator, spent per event during the row. Messages/Publish call: ingest's own publisher's count (B's library publisher bundles for 10 ms, up to 100 messages)."
    echo
    echo "Servers:"
    echo
    for name in "${servers[@]}"; do echo "- \`$name\`: ${server_doc[$name]}"; done
    echo
    if [[ -n $has_b ]]; then
      echo "### Goals (issue 11): ingest against B in the same round"
      echo
      echo "| workload | events/s ÷ B (≥ 1.0) | p99 ÷ B's (≤ 1.5) | server CPU/event ÷ B's (≤ 1.5) | emulator CPU/event ÷ B's (≤ 2) |"
      echo "|---|---|---|---|---|"
      for w in "${workloads[@]}"; do
        IFS=: read -r wname _ _ _ <<<"$w"
        echo "| $wname | $(goal "ingest.$wname.@" "B.$wname.@" ">=" 1.0) | $(goal "ingest.$wname.@.p99" "B.$wname.@.p99" "<=" 1.5) | $(goal "ingest.$wname.@.cpu" "B.$wname.@.cpu" "<=" 1.5) | $(goal "ingest.$wname.@.emu" "B.$wname.@.emu" "<=" 2) |"
      done
      echo
    fi
    echo "### All rows"
    echo
    echo "| workload | server | events/s | ÷ B | p50 ms | p99 ms | server CPU/event µs | ÷ B's | emulator CPU/event µs | ÷ B's | messages/Publish call | errors |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    for w in "${workloads[@]}"; do
      IFS=: read -r wname _ _ _ <<<"$w"
      for name in "${servers[@]}"; do
        local i="$name.$wname.@" b="B.$wname.@" label=$name
        [[ $name == ingest ]] && label="**ingest**"
        echo "| $wname | $label | $(each "$i") | $(each_ratio "$i" "$b") | $(each "$i.p50") | $(each "$i.p99") | $(each "$i.cpu") | $(each_ratio "$i.cpu" "$b.cpu") | $(each "$i.emu") | $(each_ratio "$i.emu" "$b.emu") | $(each "$i.mpc") | $(each "$i.err") |"
      done
    done
    echo
    [[ -f scripts/bench/notes.md ]] && cat scripts/bench/notes.md && echo
  } >"$state/ingest.md"
  cleanup
  trap - EXIT
}

# ingest_part runs part 1 on its own emulators (or the environment's).
ingest_part() {
  if [[ "${BENCH_INGEST_SHARED_EMULATORS:-}" == "1" ]]; then
    "$0" --ingest
  else
    echo "bench: starting fresh emulators for the ingest load test" >&2
    (unset PUBSUB_EMULATOR_HOST FIRESTORE_EMULATOR_HOST
      EMULATOR_STATE_DIR="$root/$state/emulators" \
        PUBSUB_PORT="${BENCH_INGEST_PUBSUB_PORT:-8185}" FIRESTORE_PORT="${BENCH_INGEST_FIRESTORE_PORT:-8186}" \
        scripts/emulators.sh run "$0" --ingest)
  fi
}

# One run at a time: two would share the cores and every figure with them.
if [[ ${1:-} != --ingest ]]; then
  exec 9>"$state/lock"
  flock -n 9 || { echo "bench: another run is under way ($state/lock)" >&2; exit 1; }
fi

case "${1:-}" in
--ingest)
  ingest_load
  exit
  ;;
ingest)
  ingest_part
  # Replace the "## ingest" section of the report, keep the rest.
  if [[ -f $out ]] && grep -q '^## ingest' "$out"; then
    awk -v f="$state/ingest.md" '
      /^## / { if (skip) skip = 0 }
      /^## ingest$/ { while ((getline l < f) > 0) print l; skip = 1; next }
      !skip { print }' "$out" >"$state/report.md"
  else
    { echo "# Benchmarks"; echo; cat "$state/ingest.md"; } >"$state/report.md"
  fi
  cp "$state/report.md" "$out"
  cat "$state/ingest.md"
  exit
  ;;
esac

ingest_part

echo "== Go benchmarks (each with its baseline in the same run)" >&2
# A fixed count for shared and deliver (their per-op metrics want whole
# runs); ingest's batch benchmark takes milliseconds per op, so 1s each.
go_bench=$(for m in shared:2000x deliver:2000x ingest:1s; do
  (cd "${m%%:*}" || exit 0; go test -run '^$' -bench . -benchmem -benchtime "${m#*:}" ./... 2>/dev/null | grep -E '^Benchmark' || true)
done)
{
  echo "# Benchmarks"
  echo
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
