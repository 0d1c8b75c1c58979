#!/usr/bin/env bash
# The whole test suite: pure Rust (ring 1), in-process DPDK on virtual devices (ring 2)
# and the system tests through the real binary on network namespaces (ring 3, root).
# Installs what is missing first, so it runs on a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo --version

echo "== build"
cargo build --workspace --all-targets
echo "== tests"
cargo test --workspace -- --test-threads=2
echo "== benchmark tools (nftables translation, report)"
PY=python3
$PY -c "import matplotlib, yaml" 2>/dev/null || PY=/usr/bin/python3
$PY scripts/tests/test_bench_tools.py
# Sanitizer and fuzzing rings: short, bounded runs (longer: scripts/fuzz.sh 3600).
# BULKHEAD_QUICK=1 skips them for a fast local loop.
if [ -z "${BULKHEAD_QUICK:-}" ]; then
  echo "== AddressSanitizer: pcap corpus replay and fuzz regressions"
  scripts/asan.sh
  echo "== fuzz: 30 s per target"
  scripts/fuzz.sh 30
fi
