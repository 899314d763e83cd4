#!/usr/bin/env bash
# make bench: every benchmark, each printing ratios against a baseline
# measured in the same run. Results are recorded in docs/benchmarks.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
echo "== agent fleet: anvil-controller vs a bare gRPC server"
go run ./test/bench/agentload -controller bin/anvil-controller -agents "${BENCH_AGENTS:-1000,10000}"
