#!/usr/bin/env bash
# make bench: every benchmark, each printing ratios against a baseline
# measured in the same run. Results are recorded in docs/benchmarks.md.
# BENCH=fleet or BENCH=image runs one of them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
which=${BENCH:-all}
if [ "$which" = all ] || [ "$which" = fleet ]; then
  echo "== agent fleet: anvil-controller vs a bare gRPC server"
  go run ./test/bench/agentload -controller bin/anvil-controller -agents "${BENCH_AGENTS:-1000,10000}"
fi
if [ "$which" = all ] || [ "$which" = image ]; then
  echo "== image writing and disk erase: agent vs curl|zstd|dd, metal-hammer style, zstd -d, dd"
  go build -o bin/imagewrite-bench ./test/bench/imagewrite
  bin/imagewrite-bench -runs "${BENCH_RUNS:-3}"
fi
