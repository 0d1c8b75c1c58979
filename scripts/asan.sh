#!/usr/bin/env bash
# The pcap corpus replay (dataplane/tests/pcap_replay.rs: every tcpdump capture through
# net_pcap and the real worker) built with AddressSanitizer, on the stable toolchain.
#
#   scripts/asan.sh [extra cargo test args]
#
# How: RUSTC_BOOTSTRAP=1 lets stable rustc take -Zsanitizer=address. `--target` keeps
# the flag off build scripts and proc macros (they run on the host, uninstrumented).
# No -Zbuild-std (it needs the rust-src component and a nightly-like cargo): the
# standard library is not instrumented, but ASan intercepts malloc/free process-wide,
# so heap errors in Rust code (ours and inlined/generic std code) are caught, and
# LeakSanitizer reports Rust allocations never freed.
#
# Not covered: DPDK's C code (the system libdpdk is not instrumented) and mbuf memory,
# which DPDK carves from its own mmap'd heap, not malloc: an out-of-bounds read inside
# an mbuf's data room is invisible to ASan. The Rust side guards those with slice
# bounds (Mbuf::data) instead. Leaks inside DPDK and libpcap (EAL state kept for the
# life of the process, rings the ring PMD never frees) are suppressed by library name
# in scripts/lsan.supp; leaks in Rust code still fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

target="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="-Zsanitizer=address ${RUSTFLAGS:-}"
export RUSTDOCFLAGS="-Zsanitizer=address"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp:print_suppressions=0"

time cargo test -p dataplane --target "$target" --test pcap_replay --test fuzz_regressions "$@" -- --test-threads=1 --nocapture
