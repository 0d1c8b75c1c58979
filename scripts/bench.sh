#!/usr/bin/env bash
# The performance report in one command: builds the release binaries, then
# scripts/bench_all.py runs every benchmark side by side in one run (bulkhead vs
# dpdk-testpmd, rule scaling, classifier, bulkhead vs nftables on the veth test-bed,
# latency, worker scaling) and writes results/<date-time>/{results.json,results.md,
# results.svg}. These machines are noisy: read the ratios, measured in the same run.
#
#   scripts/bench.sh [--quick] [--only forwarding,rules,classify,testbed,latency,workers]
#   scripts/bench.sh --publish DIR    copy DIR's table and plot to docs/perf/ (the README's)
#
# Needs root (test-bed namespaces, DPDK) and scripts/install-deps.sh's packages
# (dpdk, trafgen, nftables, iperf3, python3-matplotlib). About 15 minutes; --quick 5.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# The Python with matplotlib (Debian's, where a pyenv shim shadows it).
PY=python3
$PY -c "import matplotlib, yaml" 2>/dev/null || PY=/usr/bin/python3

if [ "${1:-}" = "--publish" ]; then
  dir=${2:?usage: bench.sh --publish RESULTS_DIR}
  mkdir -p docs/perf
  cp "$dir/results.md" "$dir/results.json" docs/perf/
  [ -f "$dir/results.svg" ] && cp "$dir/results.svg" docs/perf/
  echo "docs/perf/ updated from $dir"
  exit 0
fi

cargo build --release -q -p mgmt --bin bulkhead --example bench_data --example latency
exec $PY scripts/bench_all.py "$@"
