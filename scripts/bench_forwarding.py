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
  flows   established-flow forwarding with conntrack holding --flows flows (default
          1,000,000, the per-worker capacity): the same policy, net_pcap ports
          replaying (infinite_rx) two pcaps in which every packet is a distinct UDP
          flow the policy allows (`bench_data OUT_DIR --flows N`, see scripts/bench.sh);
          the first pass through the files creates the flows, every later packet is a
          conntrack hit. Only seconds with the table holding >= 99% of --flows are
          counted (the fill is left out), and the run fails if it never gets there.
          infinite_rx keeps every pcap packet in an mbuf, so the mempool and EAL
          memory of both programs are sized for --flows (about 4.8 GB at 1,000,000:
          with --no-huge each mbuf takes a 4 KiB page).
          Implies --conntrack. Against testpmd io on the same ports and core.

Each figure also comes per CPU second of the polling thread (its schedstat run time
between the stats samples): on a shared machine the neighbours take a varying share of
the benchmark core, and that share does not count there; cycles/packet are given from
both (at the nominal clock of /proc/cpuinfo).

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


# One mbuf in the pool: with --no-huge an object may not cross a 4 KiB page (DPDK
# mempools on 4K pages), so each mbuf (rte_mbuf + 2048 + 128 headroom) takes a page.
MBUF_BYTES = 4096


def mbufs(args):
    """Mbufs for either program: with infinite_rx every pcap packet holds one (a copy per
    queue with several workers)."""
    return args.flows + 32767 if args.scenario == "flows" else 16383 * args.workers


def memory_mb(args):
    return max(1024, mbufs(args) * MBUF_BYTES // (1 << 20) + 768)


def extra_eal():
    """EAL arguments from $BULKHEAD_BENCH_EAL (e.g. `-d DIR/librte_net_pcap.so.23` where the
    PMDs are not in DPDK's default plugin directory, as on a machine without the package)."""
    return os.environ.get("BULKHEAD_BENCH_EAL", "").split()


def eal_common(args, prefix):
    return extra_eal() + ["--no-huge", "-m", str(memory_mb(args)), "--no-pci", "--no-shconf", "--file-prefix", prefix,
            "--log-level", "*:warning", "--no-telemetry"]


def vdevs(args):
    """The two ports; with N workers each has N queues (net_pcap: one pcap per rx queue)."""
    if args.scenario == "null":
        return ["net_null0,copy=1", "net_null1,copy=1"]
    return [f"net_pcap{i}," + ",".join([f"rx_pcap={args.workdir}/traffic-{i}.pcap"] * args.workers) + ",infinite_rx=1"
            for i in (0, 1)]


def testpmd(args, mode):
    n = args.workers
    cmd = ["dpdk-testpmd", "-l", f"0-{n}"] + eal_common(args, f"bench-tp-{os.getpid()}")
    for v in vdevs(args):
        cmd += ["--vdev", v]
    cmd += ["--", f"--forward-mode={mode}", f"--total-num-mbufs={mbufs(args) + 1}", "--stats-period", "1",
            f"--nb-cores={n}", f"--rxq={n}", f"--txq={n}", "--burst=32", "--rxd=1024", "--txd=1024"]
    # With --stats-period testpmd prints rates every second until SIGINT (without it, it
    # would wait for its stdin to close).
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = read_live(p.stdout, p.pid, lambda line: "Tx-pps" in line)
    # Time the run from testpmd's first stats period: its start-up (memory, ports, loading
    # a million-packet pcap into mbufs) grows with the cores, the mbufs and the pcaps.
    deadline = time.monotonic() + 120
    while not any(c is not None for c, _ in list(lines)) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(args.seconds + 0.5)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=30)
    lines.reader.join(timeout=30)
    out = "".join(l for _, l in lines)
    pps = [int(x) for x in re.findall(r"Tx-pps:\s+(\d+)", out)]
    # One line per port per period: sum the ports of each period.
    periods = [sum(pps[i:i + 2]) for i in range(0, len(pps) - 1, 2)]
    if len(periods) < 3:
        raise SystemExit(f"testpmd gave too few samples:\n{out[-3000:]}")
    # Packets per second of the forwarding thread's own CPU time: cumulative TX-packets
    # of both ports at the end of each period, against that thread's CPU time then.
    samples, tx, port = [], {}, None
    for cpu, l in lines:
        m = re.search(r"NIC statistics for port (\d+)", l)
        if m:
            port = int(m.group(1))
        m = re.search(r"TX-packets:\s+(\d+)", l)
        if m:
            tx[port] = int(m.group(1))
        if cpu is not None and len(tx) == 2 and port == 1:
            samples.append((cpu, sum(tx.values())))
    return periods[1:], cpu_rates(samples[1:])


def read_live(stream, pid, is_stats):
    """Collects the lines of `stream` (an output of process `pid`) in a list, each with the
    CPU time of the process's threads when a line `is_stats` says opens a stats period
    arrived (None for other lines)."""
    lines = Lines()

    def run():
        for line in stream:
            lines.append((thread_cpu_ns(pid) if is_stats(line) else None, line))

    lines.reader = threading.Thread(target=run, daemon=True)
    lines.reader.start()
    return lines


class Lines(list):
    """A list of output lines with the thread that reads them (.reader)."""


def thread_cpu_ns(pid):
    """Nanoseconds on CPU of each thread of pid (/proc/PID/task/TID/schedstat)."""
    out = {}
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[tid] = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def cpu_rates(samples):
    """Packets per second of CPU time of the busiest thread (the polling one) between
    consecutive (cpu snapshot, cumulative packets) samples: the rate the program would
    have on a core of its own, whatever share of the core the neighbours took."""
    rates = []
    for (ca, na), (cb, nb) in zip(samples, samples[1:]):
        busy = max((cb[t] - ca.get(t, 0) for t in cb), default=0)
        if busy > 0 and nb > na:
            rates.append((nb - na) * 1e9 / busy)
    return rates


def bulkhead_config(args):
    ports = vdevs(args)
    conntrack = f"{{ capacity: {max(args.flows, 1000000)} }}" if args.conntrack else "{ enabled: false }"
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
    set beside testpmd's) or packets received and judged ("rx"); with the drops by reason,
    the conntrack figures, the rates per CPU second and the workers' cycles per packet."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(bulkhead_config(args))
        path = f.name
    try:
        cmd = [args.bulkhead, "run", "--config", path, "--duration", str(args.seconds), "--stats-interval", "1"]
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = read_live(p.stderr, p.pid, lambda line: line.startswith("policy version"))
        stdout = p.stdout.read() if p.stdout else ""
        p.wait(timeout=args.seconds + 60)
        lines.reader.join(timeout=30)
    finally:
        os.unlink(path)
    stderr = "".join(l for _, l in lines)
    if p.returncode != 0:
        raise SystemExit(f"bulkhead failed:\n{stderr[-3000:]}")
    cpus = [c for c, _ in lines if c is not None]
    samples = []
    for block in stderr.split("policy version")[1:]:
        m = re.search(r"uptime ([\d.]+) s", block)
        col = 1 if getattr(args, "count", "tx") == "rx" else 3
        tx = sum(int(l.split()[col]) for l in block.splitlines() if re.match(r"p[01] ", l))
        ct = re.search(r"conntrack: (\d+) flows, .* (\d+) hits", block)
        flows, hits = (int(ct.group(1)), int(ct.group(2))) if ct else (0, 0)
        if m:
            samples.append((float(m.group(1)), tx, flows, hits))
    full = 0.99 * args.flows
    rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(samples, samples[1:])
             if b[0] > a[0] and (args.scenario != "flows" or a[2] >= full)]
    if args.scenario == "flows" and not any(s[2] >= full for s in samples):
        raise SystemExit(f"the flow table never held {full:.0f} flows:\n{stderr[-3000:]}")
    if len(rates) < 2:
        raise SystemExit(f"bulkhead gave too few samples:\n{stderr[-3000:]}")
    drops = re.findall(r"^\s+(\w+)\s+(\d+)\s+\(", stdout, re.M)
    ct = {"flows": samples[-1][2], "hits": samples[-1][3]} if samples else {}
    # The same per CPU second of the worker thread, over the samples counted above.
    kept = [(c, sm[1]) for c, sm in zip(cpus, samples) if args.scenario != "flows" or sm[2] >= full]
    cpu = cpu_rates(kept if args.scenario == "flows" else kept[1:])
    # Per worker: TSC cycles of the rounds that received packets, per packet (the last
    # stats block, the whole run).
    cycles = [float(c) for c in re.findall(r"^worker \d+: .* ([\d.]+) cycles/packet", stdout, re.M)]
    # In the flows scenario every sample kept is measured on a full table: no warm-up to drop.
    return (rates if args.scenario == "flows" else rates[1:]), dict((k, int(v)) for k, v in drops), ct, cpu, cycles


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=["null", "policy", "flows"], default="null")
    ap.add_argument("--workdir", default=os.path.join(ROOT, "results", "bench-data"))
    ap.add_argument("--bulkhead", default=os.path.join(ROOT, "target", "release", "bulkhead"))
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--modes", default="io", help="testpmd forward modes, comma-separated (io,5tswap)")
    ap.add_argument("--conntrack", action="store_true", help="enable connection tracking (1,000,000 flows per worker)")
    ap.add_argument("--flows", type=int, default=1000000, help="flows in the pcaps of --scenario flows")
    ap.add_argument("--count", choices=["tx", "rx"], default="tx",
                    help="bulkhead's rate: packets forwarded (tx, default) or received and judged (rx)")
    ap.add_argument("--workers", type=int, default=1, help="workers (bulkhead) and forwarding cores (testpmd), "
                    "lcores 1..N; the ports get one queue each")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.scenario == "flows":
        args.conntrack = True

    runs = {"bulkhead": []}
    drops, ct = {}, {}
    cycles = []
    modes = args.modes.split(",")
    for m in modes:
        runs[f"testpmd-{m}"] = []
    cpu_runs = {k: [] for k in runs}
    for t in range(args.trials):
        for m in modes:
            rates, cpu = testpmd(args, m)
            runs[f"testpmd-{m}"] += rates
            cpu_runs[f"testpmd-{m}"] += cpu
        rates, drops, ct, cpu, c = bulkhead(args)
        cycles += c
        runs["bulkhead"] += rates
        cpu_runs["bulkhead"] += cpu
        print(f"trial {t + 1}/{args.trials}: " + ", ".join(
            f"{k} {statistics.median(v) / 1e6:.2f} Mpps" for k, v in runs.items())
            + (f"; conntrack {ct['flows']} flows, {ct['hits']} hits" if args.conntrack and ct else ""), file=sys.stderr)

    med = {k: statistics.median(v) for k, v in runs.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu_runs.items() if v}
    result = {
        "scenario": args.scenario + ("+conntrack" if args.conntrack and args.scenario != "flows" else ""),
        "workers": args.workers,
        "trials": args.trials,
        "seconds_per_trial": args.seconds,
        "median_pps": med,
        "ratios": {f"bulkhead/{k}": med["bulkhead"] / med[k] for k in med if k != "bulkhead"},
        # Rates per second of the polling thread's CPU time (the share of the core the
        # neighbours left does not count): the fairer comparison on a shared machine.
        "median_pps_per_cpu_second": cpu_med,
        "cpu_ratios": {f"bulkhead/{k}": cpu_med["bulkhead"] / cpu_med[k]
                       for k in cpu_med if k != "bulkhead" and "bulkhead" in cpu_med and cpu_med[k]},
        "load_average": os.getloadavg(),
        "bulkhead_drops_last_trial": {k: v for k, v in drops.items() if v},
        "bulkhead_conntrack_last_trial": ct,
        # Per worker and trial: TSC cycles of the rounds that received packets, per packet.
        "bulkhead_cycles_per_packet": statistics.median(cycles) if cycles else None,
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "mhz": cpu_mhz()},
    }
    # Cycles per packet of the whole loop on its core (driver included): clock / rate.
    if cpu_mhz():
        result["cycles_per_packet"] = {k: cpu_mhz() * 1e6 / v for k, v in med.items()}
    print(f"| scenario | {' | '.join(med)} | " + " | ".join(result["ratios"]) + " |")
    print("|---" * (len(med) + len(result["ratios"]) + 1) + "|")
    print(f"| {result['scenario']} | " + " | ".join(f"{v / 1e6:.2f} Mpps" for v in med.values()) + " | "
          + " | ".join(f"{r:.3f}" for r in result["ratios"].values()) + " |")
    if cpu_med:
        print("per CPU second of the polling thread: " + ", ".join(
            f"{k} {v / 1e6:.2f} Mpps" for k, v in cpu_med.items()) + "; " + ", ".join(
            f"{k} {v:.3f}" for k, v in result["cpu_ratios"].items()), file=sys.stderr)
        if cpu_mhz():
            result["cycles_per_packet_on_cpu"] = {k: cpu_mhz() * 1e6 / v for k, v in cpu_med.items()}
            print("cycles/packet on CPU: " + ", ".join(
                f"{k} {v:.0f}" for k, v in result["cycles_per_packet_on_cpu"].items()), file=sys.stderr)
    if "cycles_per_packet" in result:
        print("cycles/packet at %.0f MHz: " % cpu_mhz() + ", ".join(
            f"{k} {v:.0f}" for k, v in result["cycles_per_packet"].items()), file=sys.stderr)
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


def cpu_mhz():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return 0.0


if __name__ == "__main__":
    sys.exit(main())
