#!/usr/bin/env bash
# bulkhead's main job on the embedded default: no NIC, no hugepages.
# Installs what is missing, builds, brings up the network-namespace test-bed, runs
# bulkhead between its two sides with configs/demo.yaml, sends allowed and denied
# traffic, shows the counters, and tears everything down (also on failure or Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "demo: needs root (network namespaces); try: sudo $0" >&2; exit 1; }
scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q -p mgmt
BIN=target/release/bulkhead
P=bhdemo
LOG=$(mktemp)
EVENTS=/tmp/bulkhead-demo-events.jsonl
rm -f "$EVENTS"
pid=""

cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  scripts/testbed.sh down "$P" >/dev/null
  rm -f "$LOG"
}
trap cleanup EXIT INT TERM

in_ns() { ip netns exec "$P-$1" "${@:2}"; }
try() { # try "description" command...: run, report pass/fail without stopping the demo
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then echo "  passes:  $what"; else echo "  blocked: $what"; fi
}

echo "== policy"
$BIN check configs/demo.yaml
echo "== test-bed"
scripts/testbed.sh up "$P"
echo "== bulkhead run (in namespace $P-app)"
# Not through the in_ns function: $! must be bulkhead itself (ip netns exec execs it).
ip netns exec "$P-app" "$BIN" run --config configs/demo.yaml --duration 60 >"$LOG" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "bulkhead: forwarding" "$LOG" && break; sleep 0.1; done
grep "bulkhead: forwarding" "$LOG" || { cat "$LOG"; exit 1; }

echo "== traffic"
try "web -> api  ping"            in_ns web ping -c 3 -i 0.2 -W 1 10.10.2.10
try "web -> api  ping6"           in_ns web ping -6 -c 3 -i 0.2 -W 1 fd10:0:2::10
in_ns api python3 scripts/netprobe.py tcp-server --port 8080 --timeout 8 >/dev/null &
server=$!
sleep 0.3
try "web -> api  tcp/8080 (4 MiB)" in_ns web python3 scripts/netprobe.py tcp-client --host 10.10.2.10 --port 8080 --bytes 4194304 --timeout 5
wait "$server" || true
try "web -> db   ping"            in_ns web ping -c 2 -i 0.2 -W 1 10.10.3.10
try "web -> api  tcp/22"          in_ns web python3 scripts/netprobe.py tcp-client --host 10.10.2.10 --port 22 --bytes 1000 --timeout 2
in_ns db python3 scripts/netprobe.py tcp-server --port 5432 --timeout 8 >/dev/null &
server=$!
sleep 0.3
try "ops -> db   tcp/5432"        in_ns ops python3 scripts/netprobe.py tcp-client --host 10.10.3.10 --port 5432 --bytes 65536 --timeout 5
wait "$server" || true
echo "  explain: why is web -> db blocked?"
$BIN explain configs/demo.yaml --src 10.10.1.10 --dst 10.10.3.10 --proto icmp | sed 's/^/    /' || true

echo "== management"
$BIN status --socket /run/bulkhead/demo.sock | sed 's/^/  /' || true
echo "  metrics (a few of them, from http://127.0.0.1:9464/metrics in $P-app):"
in_ns app python3 -c "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9464/metrics',timeout=3).read().decode())" \
  | grep -E '^bulkhead_(policy_version|drops_total\{reason="policy_deny"|segment_packets_total|conntrack_entries)' | head -8 | sed 's/^/    /'
sleep 1.2   # one event window
echo "  security events (JSON lines, $EVENTS):"
tail -n 3 "$EVENTS" 2>/dev/null | sed 's/^/    /' || echo "    (none yet)"

echo "== stop (SIGTERM) and final counters"
kill -TERM "$pid"
wait "$pid" || true
pid=""
grep -v "^bulkhead: forwarding" "$LOG" || { echo "demo: bulkhead printed no final counters:"; cat "$LOG"; exit 1; }
