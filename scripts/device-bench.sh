#!/usr/bin/env bash
# Benchmarks on a second machine that has more cores but no DPDK package and no package
# registry (the worker-scaling runs need more than this 2-core VM has).
#
#   scripts/device-bench.sh pack          here: builds and fills target/device-carry/ with
#                                         the stripped release binaries, dpdk-testpmd, the
#                                         PMDs they load and every shared library they need
#                                         (glibc and its loader included), ~45 MB
#   scripts/device-bench.sh run OUT [ARGS...]
#                                         there: runs scripts/bench_all.py with those
#                                         binaries (through the carried loader), results
#                                         into OUT; ARGS go to bench_all.py
#
# The carried loader runs everything against the carried libraries, so the other
# machine's own libc version does not matter; the PMDs (net_null, net_pcap) are passed to
# the EAL with -d through $BULKHEAD_BENCH_EAL (with the ring mempool driver).
set -euo pipefail
cd "$(dirname "$0")/.."
C=target/device-carry
PMDS=/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0
PMD_LIBS=(librte_mempool_ring.so.23 librte_net_null.so.23 librte_net_pcap.so.23)

pack() {
  export PATH="$HOME/.cargo/bin:$PATH"
  cargo build --release -q -p mgmt --bin bulkhead --example bench_data --example latency
  rm -rf "$C"
  mkdir -p "$C/bin" "$C/lib" "$C/pmd" "$C/wrap"
  local dir=${CARGO_TARGET_DIR:-target}/release
  cp "$dir/bulkhead" "$dir/examples/bench_data" "$dir/examples/latency" "$(command -v dpdk-testpmd)" "$C/bin/"
  strip "$C"/bin/*
  for p in "${PMD_LIBS[@]}"; do cp -L "$PMDS/$p" "$C/pmd/"; done
  # Every library the binaries and the PMDs resolve to here, the loader included.
  { for f in "$C"/bin/* "$C"/pmd/*; do ldd "$f"; done; } \
    | awk '/=>/ && $3 ~ /^\// {print $3} /ld-linux/ && $1 ~ /^\// {print $1}' | sort -u \
    | while read -r lib; do cp -L "$lib" "$C/lib/"; done
  for b in "$C"/bin/*; do
    n=$(basename "$b")
    cat >"$C/wrap/$n" <<EOF
#!/bin/sh
C=\$(cd "\$(dirname "\$0")/.." && pwd)
exec "\$C/lib/ld-linux-x86-64.so.2" --library-path "\$C/lib" "\$C/bin/$n" "\$@"
EOF
    chmod +x "$C/wrap/$n"
  done
  du -sh "$C"
}

run() {
  local out=${1:?usage: device-bench.sh run OUT [ARGS...]}
  shift
  local c
  c=$(cd "$C" && pwd)
  export PATH="$c/wrap:$PATH"
  local p eal=""
  for p in "${PMD_LIBS[@]}"; do eal="$eal -d $c/pmd/$p"; done
  export BULKHEAD_BENCH_EAL="$eal"
  mkdir -p "$out"
  { nproc; uname -a; head -30 /proc/cpuinfo | grep -E "model name|MHz"; free -g; } >"$out/machine.txt" 2>&1 || true
  python3 scripts/bench_all.py --out "$out" --bulkhead "$c/wrap/bulkhead" --bench-data "$c/wrap/bench_data" \
    --latency "$c/wrap/latency" "$@"
}

case "${1:-}" in
  pack) pack ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 pack | run OUT [bench_all.py args]" >&2; exit 2 ;;
esac
