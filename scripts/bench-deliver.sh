#!/usr/bin/env bash
# deliver's benchmark (TestBenchDeliver in deliver/bench_test.go), printed as
# a markdown section for docs/benchmarks.md. Needs the emulators.
set -euo pipefail
cd "$(dirname "$0")/../deliver"
DELIVER_BENCH=1 go test -v -count=1 -run '^TestBenchDeliver$' -timeout 15m . | sed -n '/^## deliver/,/^--- /p' | sed '$d'
