#!/usr/bin/env python3
"""Forwarding rate of the bulkhead worker loop against dpdk-testpmd, side by side.

Both run on the same virtual ports and the same worker core (lcore 1; the main /
management thread on lcore 0), one after the other, for --trials rounds; each figure is
the median of the per-second rates after a warm-up second, and the ratio is taken
between the medians of the same run. These machines are shared and noisy: read the
ratio, not the absolute rates.

Scenarios:
  null    net_null,copy=1 ports (64-byte all-zero frames: 802.3 frames, forwarded by
          bulkhead because the policy allows LLC); bulkhead with an allow-all policy
          against testpmd --forward-mode=io.
  policy  net_pcap ports replaying (infinite_rx) IPv4/IPv6 traffic with a realistic
          address mix drawn from a large policy (1,000 segments, 10,000 CIDRs, 1,000
          rules); bulkhead enforcing that policy against testpmd io on the same ports.
          Needs --workdir with policy.yaml and traffic-*.pcap (see scripts/bench.sh).

Writes a JSON summary to --json if given and prints a Markdown table.
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def extra_eal():
    """EAL arguments from $BULKHEAD_BENCH_EAL (e.g. `-d DIR/librte_net_pcap.so.23` where the
    PMDs are not in DPDK's default plugin directory, as on a machine without the package)."""
    return os.environ.get("BULKHEAD_BENCH_EAL", "").split()


def eal_common(prefix, args):
    return extra_eal() + ["--no-huge", "-m", str(memory_mb(args)), "--no-pci", "--no-shconf", "--file-prefix", prefix,
            "--log-level", "*:warning", "--no-telemetry"]


def vdevs(args):
    """The two ports; with N workers each has N queues (net_pcap: one pcap per rx queue)."""
    if args.scenario == "null":
        return ["net_null0,copy=1", "net_null1,copy=1"]
    return [f"net_pcap{i}," + ",".join([f"rx_pcap={args.workdir}/traffic-{i}.pcap"] * args.workers) + ",infinite_rx=1"
            for i in (0, 1)]


def mbufs(args):
    """Mbufs for both programs: net_pcap's infinite_rx holds a copy of its pcap per queue."""
    return 16383 * args.workers


def testpmd(args, mode):
    n = args.workers
    cmd = ["dpdk-testpmd", "-l", f"0-{n}"] + eal_common(f"bench-tp-{os.getpid()}", args)
    for v in vdevs(args):
        cmd += ["--vdev", v]
    cmd += ["--", f"--forward-mode={mode}", f"--total-num-mbufs={mbufs(args) + 1}", "--stats-period", "1",
            f"--nb-cores={n}", f"--rxq={n}", f"--txq={n}", "--burst=32", "--rxd=1024", "--txd=1024"]
    # With --stats-period testpmd prints rates every second until SIGINT (without it, it
    # would wait for its stdin to close).
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Time the run from testpmd's first stats period: its start-up (memory, ports) grows
    # with the number of cores and mbufs.
    lines, started = [], threading.Event()

    def read():
        for line in p.stdout:
            lines.append(line)
            if "Tx-pps" in line:
                started.set()
        started.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started.wait(timeout=120)
    time.sleep(args.seconds + 0.5)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=30)
    reader.join(timeout=10)
    out = "".join(lines)
    pps = [int(x) for x in re.findall(r"Tx-pps:\s+(\d+)", out)]
    # One line per port per period: sum the ports of each period.
    periods = [sum(pps[i:i + 2]) for i in range(0, len(pps) - 1, 2)]
    if len(periods) < 3:
        raise SystemExit(f"testpmd gave too few samples:\n{out[-3000:]}")
    return periods[1:]


def memory_mb(args):
    return 1024 * args.workers + (1024 if args.conntrack else 0) * args.workers


def bulkhead_config(args):
    ports = vdevs(args)
    conntrack = "{ capacity: 1000000 }" if args.conntrack else "{ enabled: false }"
    head = f"""appliance:
  ports:
    - {{ name: p0, device: "{ports[0]}" }}
    - {{ name: p1, device: "{ports[1]}" }}
  pairs: [[p0, p1]]
  workers: [{", ".join(str(w) for w in range(1, args.workers + 1))}]
  management_core: 0
  mempool: {{ mbufs: {mbufs(args)}, cache: 256 }}
  hugepages: false
  memory_mb: {memory_mb(args)}
  management: {{ metrics: off, control_socket: off, watch: false }}
  conntrack: {conntrack}
  eal_args: {json.dumps(extra_eal())}
"""
    if args.scenario == "null":
        return head + """segments:
  - name: all
    cidrs: [0.0.0.0/0, "::/0"]
default: allow
intra_segment: allow
unmatched: drop
non_ip:
  llc: allow
"""
    with open(os.path.join(args.workdir, "policy.yaml")) as f:
        return head + f.read()


def bulkhead(args):
    """bulkhead's per-second rates: packets forwarded (args.count == "tx", the figure to
    set beside testpmd's) or packets received and judged ("rx")."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(bulkhead_config(args))
        path = f.name
    try:
        cmd = [args.bulkhead, "run", "--config", path, "--duration", str(args.seconds), "--stats-interval", "1"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 60)
    finally:
        os.unlink(path)
    if r.returncode != 0:
        raise SystemExit(f"bulkhead failed:\n{r.stderr[-3000:]}")
    samples = []
    for block in r.stderr.split("policy version")[1:]:
        m = re.search(r"uptime ([\d.]+) s", block)
        ports = [l.split() for l in block.splitlines() if re.match(r"p[01] ", l)]
        col = 1 if args.count == "rx" else 3
        if m:
            samples.append((float(m.group(1)), sum(int(p[col]) for p in ports)))
    rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(samples, samples[1:]) if b[0] > a[0]]
    if len(rates) < 2:
        raise SystemExit(f"bulkhead gave too few samples:\n{r.stderr[-3000:]}")
    drops = re.findall(r"^\s+(\w+)\s+(\d+)\s+\(", r.stdout, re.M)
    cycles = [float(c) for c in re.findall(r"^worker \d+: .* ([\d.]+) cycles/packet", r.stdout, re.M)]
    return rates[1:], dict((k, int(v)) for k, v in drops), cycles


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=["null", "policy"], default="null")
    ap.add_argument("--workdir", default=os.path.join(ROOT, "results", "bench-data"))
    ap.add_argument("--bulkhead", default=os.path.join(ROOT, "target", "release", "bulkhead"))
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--modes", default="io", help="testpmd forward modes, comma-separated (io,5tswap)")
    ap.add_argument("--conntrack", action="store_true", help="enable connection tracking (1,000,000 flows per worker)")
    ap.add_argument("--count", choices=["tx", "rx"], default="tx",
                    help="bulkhead's rate: packets forwarded (tx, default) or received and judged (rx)")
    ap.add_argument("--workers", type=int, default=1, help="workers (bulkhead) and forwarding cores (testpmd), "
                    "lcores 1..N; the ports get one queue each")
    ap.add_argument("--json")
    args = ap.parse_args()

    runs = {"bulkhead": []}
    drops = {}
    cycles = []
    modes = args.modes.split(",")
    for m in modes:
        runs[f"testpmd-{m}"] = []
    for t in range(args.trials):
        for m in modes:
            runs[f"testpmd-{m}"] += testpmd(args, m)
        rates, drops, c = bulkhead(args)
        runs["bulkhead"] += rates
        cycles += c
        print(f"trial {t + 1}/{args.trials}: " + ", ".join(
            f"{k} {statistics.median(v) / 1e6:.2f} Mpps" for k, v in runs.items()), file=sys.stderr)

    med = {k: statistics.median(v) for k, v in runs.items()}
    result = {
        "scenario": args.scenario + ("+conntrack" if args.conntrack else ""),
        "workers": args.workers,
        "trials": args.trials,
        "seconds_per_trial": args.seconds,
        "median_pps": med,
        "ratios": {f"bulkhead/{k}": med["bulkhead"] / med[k] for k in med if k != "bulkhead"},
        # Per worker and trial: TSC cycles of the rounds that received packets, per packet.
        "bulkhead_cycles_per_packet": statistics.median(cycles) if cycles else None,
        "bulkhead_drops_last_trial": {k: v for k, v in drops.items() if v},
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model()},
    }
    print(f"| scenario | {' | '.join(med)} | " + " | ".join(result["ratios"]) + " |")
    print("|---" * (len(med) + len(result["ratios"]) + 1) + "|")
    print(f"| {result['scenario']} | " + " | ".join(f"{v / 1e6:.2f} Mpps" for v in med.values()) + " | "
          + " | ".join(f"{r:.3f}" for r in result["ratios"].values()) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
