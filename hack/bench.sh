#!/usr/bin/env bash
# make bench: every benchmark, each printing ratios against a baseline
# measured in the same run. Results are recorded in docs/benchmarks.md.
# BENCH=fleet, image, fwapply, fwconn, boot or power runs one of them.
# Fleet: BENCH_AGENTS, BENCH_RUNS, BENCH_RATE (registrations/s offered to both
# servers), BENCH_REPLICAS (controllers on PostgreSQL).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
which=${BENCH:-all}
if [ "$which" = all ] || [ "$which" = fleet ]; then
  echo "== agent fleet: anvil-controller vs a bare gRPC server and the floor (bare + SQLite), each on CPU 0, the load generator on CPU 1"
  go build -o bin/agentload ./test/bench/agentload
  # BENCH_REPLICAS=3 adds N controllers on one PostgreSQL and a kill -9 failover.
  taskset -c 1 bin/agentload -controller bin/anvil-controller -server-cpus 0 -agents "${BENCH_AGENTS:-1000,10000}" \
    -runs "${BENCH_RUNS:-5}" -rate "${BENCH_RATE:-100}" ${BENCH_REPLICAS:+-replicas "$BENCH_REPLICAS" -postgres}
fi
if [ "$which" = all ] || [ "$which" = image ]; then
  echo "== image writing and disk erase: agent vs curl|zstd|dd, metal-hammer style, zstd -d, dd"
  go build -o bin/imagewrite-bench ./test/bench/imagewrite
  bin/imagewrite-bench -runs "${BENCH_RUNS:-3}"
fi
if [ "$which" = all ] || [ "$which" = fwapply ]; then
  echo "== firewall: compile + apply vs nft -f of the same ruleset text, and the anchor's nft -c -f + nft -f"
  go build -o bin/fwapply-bench ./test/bench/fwapply
  bin/fwapply-bench -runs "${BENCH_RUNS:-3}" ${BENCH_FW_SIZES:+-policies "$BENCH_FW_SIZES"}
fi
if [ "$which" = all ] || [ "$which" = boot ]; then
  echo "== boot: power-on to Provisioned in the QEMU lab (UEFI and BIOS network boot) vs direct -kernel boots"
  make -s initramfs images-tiny
  go build -o bin/boottime-bench ./test/bench/boottime
  bin/boottime-bench -kernel "${ANVIL_CACHE:-/var/cache/anvil}/kernel/vmlinuz"
fi
if [ "$which" = all ] || [ "$which" = power ]; then
  echo "== BMC power actions/s: anvil's operator API (per-BMC serialisation, events) vs the IPMI driver alone, on ipmi_sim"
  go build -o bin/powerrate-bench ./test/bench/powerrate
  bin/powerrate-bench -bmcs "${BENCH_BMCS:-8}" -runs "${BENCH_RUNS:-3}"
fi
if [ "$which" = all ] || [ "$which" = fwconn ]; then
  echo "== firewall: new connections/s through the fw namespace: no table vs conntrack only vs anvil with 10,000 CIDRs"
  go build -o bin/fwconn-bench ./test/bench/fwconn
  bin/fwconn-bench -runs "${BENCH_RUNS:-5}"
fi
