#!/usr/bin/env bash
# Benchmarks, side by side in one run (these machines are noisy: read the ratios).
#   1. forwarding: bulkhead vs dpdk-testpmd io on net_null,copy=1 ports, same core
#   2. forwarding with the full policy (1,000 segments, 10,000 CIDRs, ~1,000 rules)
#      vs testpmd io on the same net_pcap (infinite_rx) ports, same core
#   3. established-flow forwarding with conntrack holding 1,000,000 flows (the same
#      policy; every packet of the pcaps a distinct UDP flow) vs testpmd io, same ports
#      and core (needs ~5 GB of memory: infinite_rx keeps every packet in an mbuf)
#   4. classifier ns/packet vs a bare LPM lookup (criterion)
#   5. conntrack at 1,000,000 flows: lookup hits per packet and batched, new flows per
#      second including classification, bytes per flow (criterion + summary)
# Results go to results/ (JSON and Markdown). Needs root only for nothing; needs the
# DPDK runtime and dpdk-testpmd (scripts/install-deps.sh).
#   scripts/bench.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
trials=3 seconds=5
[ "${1:-}" = "--quick" ] && trials=1 seconds=3
mkdir -p results
cargo build --release -q -p mgmt
cargo run --release -q -p mgmt --example bench_data -- results/bench-data 2048
python3 scripts/bench_forwarding.py --scenario null --trials $trials --seconds $seconds --modes io,5tswap \
  --json results/forwarding-null.json | tee results/forwarding.md
python3 scripts/bench_forwarding.py --scenario policy --workdir results/bench-data --trials $trials --seconds $seconds \
  --json results/forwarding-policy.json | tail -1 | tee -a results/forwarding.md
cargo run --release -q -p mgmt --example bench_data -- results/bench-flows --flows 1000000
python3 scripts/bench_forwarding.py --scenario flows --workdir results/bench-flows --trials $trials --seconds $((seconds + 5)) \
  --json results/forwarding-flows.json | tail -1 | tee -a results/forwarding.md
cargo bench -q -p dataplane --bench classify -- --warm-up-time 1 --measurement-time 3 2>&1 | tee results/classify.txt | grep -E "time:|classify|lpm" || true
cargo bench -q -p dataplane --bench conntrack -- --warm-up-time 1 --measurement-time 3 2>&1 | tee results/conntrack.txt | grep -E "time:|conntrack" || true
