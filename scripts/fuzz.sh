#!/usr/bin/env bash
# Fuzzes bulkhead with cargo-fuzz (libFuzzer + AddressSanitizer), each target for a
# bounded time, and fails if any target crashes.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]    default: 30 s each, targets packet and policy
#   scripts/fuzz.sh 3600                     a longer run (an hour per target)
#
# Targets (fuzz/fuzz_targets/, bodies in fuzz/harness/):
#   packet  arbitrary bytes -> frames -> parse, classify (vs the reference evaluator),
#           conntrack, the way the worker judges them
#   policy  arbitrary text -> Config::from_yaml_str -> Policy::compile -> classify
#
# Only a stable toolchain is needed: cargo-fuzz's -Z flags are accepted with
# RUSTC_BOOTSTRAP=1 (installs cargo-fuzz with `cargo install` if it is missing).
# Seeds: the packet target starts from every frame of the tcpdump corpus
# (../shared/corpus/pcap/tcpdump-tests) and the committed regressions; the policy target
# from configs/*.yaml, mgmt/tests/broken/*.yaml and its regressions. The corpus grows in
# fuzz/corpus/<target>/ (ignored by git) and is reused by the next run.
#
# A crash leaves its input in fuzz/artifacts/<target>/. Fix the bug, then commit the
# input as a regression: copy it to dataplane/tests/regressions/packet/ (packet) or
# mgmt/tests/regressions/policy/ (policy), where `cargo test` replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

secs="${1:-30}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(packet policy)

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

corpus_pcap=../shared/corpus/pcap/tcpdump-tests
seed() {
    local t="$1" dir="fuzz/corpus/$1"
    mkdir -p "$dir"
    case "$t" in
    packet)
        cp dataplane/tests/regressions/packet/* "$dir/" 2>/dev/null || true
        if [ -d "$corpus_pcap" ] && [ ! -e "$dir/.pcap-seeded" ]; then
            # One input per captured frame: control byte 0x01 (conntrack on), then the
            # frame with its u16 length, as the harness reads it.
            python3 - "$corpus_pcap" "$dir" <<'EOF'
import os, struct, sys, hashlib
src, out = sys.argv[1], sys.argv[2]
n = 0
for name in sorted(os.listdir(src)):
    data = open(os.path.join(src, name), "rb").read()
    if len(data) < 24:
        continue
    end = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\xa1\xb2\x3c\x4d": ">"}.get(data[:4])
    if end is None or struct.unpack(end + "I", data[20:24])[0] != 1:
        continue
    off = 24
    while off + 16 <= len(data):
        caplen = struct.unpack(end + "I", data[off + 8:off + 12])[0]
        frame = data[off + 16:off + 16 + min(caplen, 65535)]
        off += 16 + caplen
        blob = b"\x01" + struct.pack(">H", len(frame)) + frame
        h = hashlib.sha1(blob).hexdigest()
        with open(os.path.join(out, "pcap-" + h), "wb") as f:
            f.write(blob)
        n += 1
print(f"seeded {n} frames from {src}")
EOF
            touch "$dir/.pcap-seeded"
        fi
        ;;
    policy)
        cp configs/*.yaml mgmt/tests/broken/*.yaml mgmt/tests/regressions/policy/* "$dir/" 2>/dev/null || true
        ;;
    esac
}

status=0
for t in "${targets[@]}"; do
    seed "$t"
    echo "== fuzz $t for ${secs}s"
    # Optimised, with debug assertions (-a: integer overflow panics too) and ASan.
    if ! cargo fuzz run -O -a "$t" "fuzz/corpus/$t" -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1; then
        echo "fuzz: target $t FAILED; its input is in fuzz/artifacts/$t/" >&2
        status=1
    fi
done
exit $status
