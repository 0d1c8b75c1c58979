#!/usr/bin/env python3
"""bulkhead against nftables on the veth test-bed, the same policy, one after the other
in the same run.

Three namespaces: src -- west [app] east -- dst. In `nftables` mode the app namespace is
a Linux router (ip_forward) whose forward hook runs the policy translated by
scripts/nft_policy.py (interval maps, verdict maps, `ct state`); in `bulkhead` mode the
app namespace's two veths are bulkhead's ports (one worker, connection tracking on) and
src and dst share one L2 segment. bulkhead runs once per kernel I/O path of --io:
`af_packet` (net_af_packet: a packet socket with an mmap'ed ring) and `af_xdp`
(net_af_xdp: an XDP socket, copy mode on veth; the XDP program takes packets before the
kernel's stack does). The policy is the benchmark's full
policy (1,000 segments, 10,000 CIDRs, ~1,000 rules) with two segments for src
(198.18.1.0/24) and dst (198.18.2.0/24) and rules allowing UDP 9 and TCP 5201 between
them in front. Third, dpdk-testpmd io on the same ports (per I/O path): the most the PMD
and the kernel path under it carry here with no packet looked at (the I/O ceiling of any
forwarder on that path on this test-bed).

Measured per mode, `--trials` times, medians reported:
  udp   64-byte UDP frames from trafgen (netsniff-ng; 256 flows, --packets per trial,
        bounded by --seconds) on src's CPU 0; delivered = dst's rx counter.
  tcp   iperf3, one stream, --seconds long.
A forwarder's CPU cost per packet comes from /proc/stat (user+system+irq+softirq over
all CPUs) minus the cost of generating and receiving a packet (a baseline run: the same
trafgen sending from the app namespace's east port straight to dst), and, for bulkhead,
with its poll-mode core counted only for the cycles of the rounds that received packets
(`busy_cycles`), not for idle polling. The machine must be otherwise idle: /proc/stat
counts every process. On this
2-core VM the generator and the kernel's share of the work (veth, af_packet) run on
CPU 0, bulkhead's worker on CPU 1.

Writes JSON to --json and prints a Markdown table. Needs root, trafgen, iperf3, nft.
Cleans up its namespaces, also on failure.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P = f"bhb{os.getpid() % 10000}"
SRC4, DST4 = "198.18.1.10", "198.18.2.10"


def sh(*cmd, check=True, **kw):
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)


def ns(box, *cmd, **kw):
    return sh("ip", "netns", "exec", f"{P}-{box}", *cmd, **kw)


def up():
    down()
    for b in ("src", "dst", "app"):
        sh("ip", "netns", "add", f"{P}-{b}")
        ns(b, "ip", "link", "set", "lo", "up")
    for host, port in (("src", "west"), ("dst", "east")):
        sh("ip", "link", "add", f"{P}-{host}", "netns", f"{P}-{host}", "type", "veth",
           "peer", "name", port, "netns", f"{P}-app")
        ns(host, "ip", "link", "set", f"{P}-{host}", "name", "eth0")
        ns(host, "ip", "link", "set", "eth0", "up")
        ns("app", "ip", "link", "set", port, "up")
        ns("app", "sysctl", "-qw", f"net.ipv6.conf.{port}.disable_ipv6=1")
        # The same offloads for both forwarders: af_packet needs them off.
        ns(host, "ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off", "gro", "off", check=False)
        ns("app", "ethtool", "-K", port, "tx", "off", "tso", "off", "gso", "off", "gro", "off", check=False)


def down():
    for b in ("src", "dst", "app"):
        n = f"{P}-{b}"
        pids = sh("ip", "netns", "pids", n, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", n, check=False)


def routed(on):
    """nftables mode (a router in app) or bulkhead mode (one L2 segment through app)."""
    for host, port, net, a in (("src", "west", "198.18.1", SRC4), ("dst", "east", "198.18.2", DST4)):
        ns(host, "ip", "addr", "flush", "dev", "eth0")
        ns("app", "ip", "addr", "flush", "dev", port)
        ns(host, "ip", "neigh", "flush", "dev", "eth0")
        if on:
            ns("app", "ip", "addr", "add", f"{net}.1/24", "dev", port)
            ns(host, "ip", "addr", "add", f"{a}/24", "dev", "eth0")
            ns(host, "ip", "route", "add", "default", "via", f"{net}.1")
        else:
            ns(host, "ip", "addr", "add", f"{a}/16", "dev", "eth0")
    ns("app", "sysctl", "-qw", f"net.ipv4.ip_forward={1 if on else 0}")


def stop(proc):
    """SIGINT, as an operator would stop it; SIGKILL if it has not exited in 20 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def mac(box, dev):
    return ns(box, "cat", f"/sys/class/net/{dev}/address").stdout.strip()


def rx_packets(box, dev):
    return int(ns(box, "cat", f"/sys/class/net/{dev}/statistics/rx_packets").stdout)


def cpu_busy():
    """Busy seconds per CPU (user+nice+system+irq+softirq) from /proc/stat."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = [int(x) for x in line.split()[1:]]
                out[line.split()[0]] = (v[0] + v[1] + v[2] + v[5] + v[6]) / hz
    return out


def trafgen(dst_mac, args, box="src", dev="eth0"):
    """trafgen on `box`'s `dev` towards `dst_mac`; counts what reaches dst's eth0."""
    src_mac = mac(box, dev)
    conf = tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False)
    conf.write(f"{{ eth(da={dst_mac}, sa={src_mac}), ipv4(saddr={SRC4}, daddr={DST4}, ttl=64), "
               f"udp(sp=dinc(1024, 1279), dp=9), fill(0x00, 18) }}\n")
    conf.close()
    try:
        before_rx, before_cpu, t0 = rx_packets("dst", "eth0"), cpu_busy(), time.monotonic()
        ns(box, "timeout", str(args.seconds), "trafgen", "--dev", dev, "--conf", conf.name,
           "--num", str(args.packets), "--cpus", "1", "-q", check=False)
        elapsed = time.monotonic() - t0
        after_cpu = cpu_busy()
        time.sleep(0.2)  # the last bursts through a poll-mode forwarder
        delivered = rx_packets("dst", "eth0") - before_rx
    finally:
        os.unlink(conf.name)
    return {"elapsed_s": elapsed, "delivered": delivered,
            "cpu_s": {c: after_cpu[c] - before_cpu[c] for c in after_cpu}}


def iperf(args):
    ns("dst", "iperf3", "-s", "-1", "-D", "-B", DST4)
    time.sleep(0.5)
    r = ns("src", "timeout", str(args.seconds + 20), "iperf3", "-c", DST4, "-t", str(args.seconds), "-J", check=False)
    try:
        return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]
    except (ValueError, KeyError):
        return 0.0


def bed_policy(args, path):
    with open(os.path.join(args.workdir, "policy.yaml")) as f:
        body = f.read()
    head = """segments:
  - name: bed-src
    cidrs: [198.18.1.0/24]
  - name: bed-dst
    cidrs: [198.18.2.0/24]
"""
    rules = """rules:
  - { name: bed-udp, from: bed-src, to: bed-dst, protocol: udp, ports: [9], action: allow }
  - { name: bed-tcp, from: bed-src, to: bed-dst, protocol: tcp, ports: [5201], action: allow }
"""
    # The synthetic policy denies ARP; the bed's hosts need it (nftables does not see it).
    body = body.replace("segments:\n", head, 1).replace("rules:\n", rules, 1).replace("  arp: deny", "  arp: allow")
    with open(path, "w") as f:
        f.write(body)


def vdevs(io):
    """The app namespace's two veths as DPDK ports on kernel I/O path `io`."""
    return [f"net_{io}0,iface=west", f"net_{io}1,iface=east"]


def bulkhead_config(args, policy_path, sock, io):
    with open(policy_path) as f:
        policy = f.read()
    west, east = vdevs(io)
    return f"""appliance:
  ports:
    - {{ name: west, device: "{west}" }}
    - {{ name: east, device: "{east}" }}
  pairs: [[west, east]]
  workers: [1]
  management_core: 0
  mempool: {{ mbufs: 8191, cache: 256 }}
  hugepages: false
  conntrack: {{ capacity: 65536 }}
  management: {{ metrics: off, control_socket: {sock}, watch: false }}
""" + policy


def bulkhead_stats(sock):
    r = sh(args_global.bulkhead, "stats", "--socket", sock, "--json", check=False)
    return json.loads(r.stdout) if r.returncode == 0 else None


def busy_seconds(before, after):
    cycles = sum(w["busy_cycles"] for w in after["workers"]) - sum(w["busy_cycles"] for w in before["workers"])
    return cycles / after["tsc_hz"]


def cost_per_packet(run, baseline_cost, worker_cpu=None, worker_busy_s=None):
    """CPU seconds per delivered packet, the generator's own cost taken out."""
    total = sum(run["cpu_s"].values())
    if worker_cpu is not None:
        total += worker_busy_s - run["cpu_s"][worker_cpu]
    return total / max(run["delivered"], 1) - baseline_cost


LABELS = {
    "nftables": "nftables",
    "bulkhead": "bulkhead, af_packet ports",
    "bulkhead-af_xdp": "bulkhead, af_xdp ports",
    "testpmd": "dpdk-testpmd io, same af_packet ports (I/O ceiling)",
    "testpmd-af_xdp": "dpdk-testpmd io, same af_xdp ports (I/O ceiling)",
}


def markdown_table(result):
    """The Markdown rows of a result (this script's JSON): one row per forwarder, then
    bulkhead/nftables per I/O path. Reports from before af_xdp have af_packet only."""
    s, q = result["summary"], result["ratios_bulkhead_over_nftables"]
    rows = ["| forwarder | 64-byte UDP delivered | CPU per packet | packets/s per core | TCP (iperf3) |",
            "|---|---|---|---|---|"]
    for k, label in LABELS.items():
        if k not in s:
            continue
        r = s[k]
        cost = f"{r['udp64_cost_ns_per_packet']:.0f} ns" if "udp64_cost_ns_per_packet" in r else ""
        per_core = f"{r['udp64_pps_per_core'] / 1e6:.2f} Mpps" if "udp64_pps_per_core" in r else ""
        rows.append(f"| {label} | {r['udp64_delivered_pps'] / 1e3:.0f} kpps | {cost} | {per_core} | "
                    f"{r['tcp_bits_per_second'] / 1e9:.2f} Gbit/s |")
    for io, suffix in (("af_packet", ""), ("af_xdp", "_af_xdp")):
        if "per_core_udp64" + suffix in q:
            rows.append(f"| bulkhead/nftables, {io} | {q['delivered_udp64' + suffix]:.2f} | | "
                        f"{q['per_core_udp64' + suffix]:.2f} (goal 3) | {q['tcp' + suffix]:.2f} |")
    for io, why in result.get("failed", {}).items():
        reason = (why.strip().splitlines() or ["?"])[0][:120].replace("|", "/")
        rows.append(f"| {io}: not measured | {reason} | | | |")
    return rows


class ForwarderFailed(Exception):
    """A forwarder that could not run on an I/O path (say, no XDP sockets here)."""


def forwarder(program, io):
    """A forwarder's name in the results: `bulkhead` and `testpmd` on af_packet (the names
    of the first reports), `bulkhead-af_xdp` and `testpmd-af_xdp` on XDP sockets."""
    return program if io == "af_packet" else f"{program}-{io}"


def run_bulkhead(args, tmp, policy, sock, io, base):
    """bulkhead on `io` ports: the UDP run (with its CPU cost per packet) and TCP."""
    cfg = os.path.join(tmp, f"bulkhead-{io}.yaml")
    with open(cfg, "w") as f:
        f.write(bulkhead_config(args, policy, sock, io))
    log = os.path.join(tmp, f"bulkhead-{io}.log")
    with open(log, "w") as out:
        proc = subprocess.Popen(["ip", "netns", "exec", f"{P}-app", args.bulkhead, "run", "--config", cfg],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while bulkhead_stats(sock) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(log) as f:
                    raise ForwarderFailed(f"bulkhead on {io} ports did not start: " + f.read()[-2000:])
            time.sleep(0.2)
        ns("src", "ping", "-c", "1", "-W", "2", DST4, check=False)
        before = bulkhead_stats(sock)
        r = trafgen(mac("dst", "eth0"), args)
        after = bulkhead_stats(sock)
        r["worker_busy_s"] = busy_seconds(before, after)
        r["cost_s"] = cost_per_packet(r, base, "cpu1", r["worker_busy_s"])
        return {"udp": r, "tcp": iperf(args)}
    finally:
        stop(proc)


def run_testpmd(args, io):
    """dpdk-testpmd io on the same `io` ports: what the PMD and the kernel path under it
    carry at most here, with no packet looked at."""
    cmd = ["ip", "netns", "exec", f"{P}-app", "dpdk-testpmd", "-l", "0,1", "--no-huge", "-m", "512", "--no-pci",
           "--no-shconf", "--file-prefix", f"{P}-tp", "--log-level", "*:warning"]
    for v in vdevs(io):
        cmd += ["--vdev", v]
    cmd += ["--", "--forward-mode=io", "--total-num-mbufs=8192", "--stats-period", "1"]
    err = tempfile.TemporaryFile("w+")
    tp = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        time.sleep(3)
        if tp.poll() is not None:
            err.seek(0)
            raise ForwarderFailed(f"dpdk-testpmd on {io} ports exited ({tp.returncode}): " + err.read()[-2000:])
        ns("src", "ping", "-c", "1", "-W", "2", DST4, check=False)
        return {"udp": trafgen(mac("dst", "eth0"), args), "tcp": iperf(args)}
    finally:
        stop(tp)
        err.close()


def main():
    global args_global
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=os.path.join(ROOT, "results", "bench-data"))
    ap.add_argument("--bulkhead", default=os.path.join(ROOT, "target", "release", "bulkhead"))
    ap.add_argument("--nft-policy", default=os.path.join(ROOT, "scripts", "nft_policy.py"))
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--packets", type=int, default=2_000_000)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--io", default="af_packet,af_xdp",
                    help="kernel I/O paths for bulkhead's and testpmd's ports, comma-separated (af_packet, af_xdp)")
    ap.add_argument("--json")
    args = args_global = ap.parse_args()
    args.io = list(dict.fromkeys(io for io in args.io.split(",") if io))
    if not args.io or any(io not in ("af_packet", "af_xdp") for io in args.io):
        raise SystemExit(f"--io: af_packet and/or af_xdp, not {args.io}")

    tmp = tempfile.mkdtemp(prefix="bh-bench-")
    policy = os.path.join(tmp, "policy.yaml")
    bed_policy(args, policy)
    nft_rules = os.path.join(tmp, "policy.nft")
    with open(nft_rules, "w") as f:
        subprocess.run([sys.executable, args.nft_policy, policy], stdout=f, check=True)
    sock = os.path.join(tmp, "control.sock")
    kinds = ["nftables"] + [forwarder(f, io) for io in args.io for f in ("bulkhead", "testpmd")]
    res = {"baseline": [], **{k: [] for k in kinds}}
    tcp = {k: [] for k in kinds}
    failed = {}  # I/O path -> why it could not run
    try:
        up()
        for t in range(args.trials):
            # nftables: router + policy.
            routed(True)
            ns("app", "nft", "-f", nft_rules)
            ns("src", "ping", "-c", "1", "-W", "2", DST4, check=False)
            # Baseline: the same generator sending from the app namespace's east port
            # straight to dst: generating and receiving, no forwarding.
            b = trafgen(mac("dst", "eth0"), args, box="app", dev="east")
            res["baseline"].append(b)
            base = sum(b["cpu_s"].values()) / max(b["delivered"], 1)
            r = trafgen(mac("app", "west"), args)
            r["cost_s"] = cost_per_packet(r, base)
            res["nftables"].append(r)
            tcp["nftables"].append(iperf(args))
            ns("app", "nft", "flush", "ruleset")

            # bulkhead, then dpdk-testpmd io on the same ports, per kernel I/O path.
            routed(False)
            for io in [io for io in args.io if io not in failed]:
                # An I/O path this machine cannot run (no XDP sockets, no libxdp) is
                # reported as failed; the other paths' figures still count.
                try:
                    b = run_bulkhead(args, tmp, policy, sock, io, base)
                    p = run_testpmd(args, io)
                except ForwarderFailed as e:
                    failed[io] = str(e)
                    print(f"{io}: {e}", file=sys.stderr)
                    continue
                for program, r in (("bulkhead", b), ("testpmd", p)):
                    res[forwarder(program, io)].append(r["udp"])
                    tcp[forwarder(program, io)].append(r["tcp"])
            print(f"trial {t + 1}/{args.trials}: " + ", ".join(
                f"{k} {res[k][-1]['delivered'] / res[k][-1]['elapsed_s'] / 1e3:.0f} kpps" for k in res if res[k])
                + ", tcp " + ", ".join(f"{k} {v[-1] / 1e9:.2f} Gbit/s" for k, v in tcp.items() if v), file=sys.stderr)
    finally:
        down()

    def med(xs):
        return statistics.median(xs) if xs else 0.0

    summary = {}
    ran = [io for io in args.io if io not in failed]
    bulkheads = [forwarder("bulkhead", io) for io in ran]
    for k in ["nftables"] + bulkheads:
        runs = res[k]
        cost = med([r["cost_s"] for r in runs])
        summary[k] = {
            "udp64_delivered_pps": med([r["delivered"] / r["elapsed_s"] for r in runs]),
            "udp64_cost_ns_per_packet": cost * 1e9,
            "udp64_pps_per_core": 1 / cost if cost > 0 else 0.0,
            "tcp_bits_per_second": med(tcp[k]),
            # Every trial, in order, for the spread the medians hide (the report keeps
            # these; it drops the raw runs).
            "udp64_cost_ns_per_packet_trials": [r["cost_s"] * 1e9 for r in runs],
            "udp64_delivered_pps_trials": [r["delivered"] / r["elapsed_s"] for r in runs],
            "tcp_bits_per_second_trials": list(tcp[k]),
        }
    for io in ran:
        k = forwarder("testpmd", io)
        summary[k] = {
            "udp64_delivered_pps": med([r["delivered"] / r["elapsed_s"] for r in res[k]]),
            "tcp_bits_per_second": med(tcp[k]),
        }
    summary["baseline_pps"] = med([r["delivered"] / r["elapsed_s"] for r in res["baseline"]] or [0])
    ratio = {}
    for io in ran:
        b, n, tp = summary[forwarder("bulkhead", io)], summary["nftables"], summary[forwarder("testpmd", io)]
        suffix = "" if io == "af_packet" else f"_{io}"
        ratio["per_core_udp64" + suffix] = b["udp64_pps_per_core"] / max(n["udp64_pps_per_core"], 1e-9)
        ratio["delivered_udp64" + suffix] = b["udp64_delivered_pps"] / max(n["udp64_delivered_pps"], 1e-9)
        ratio["tcp" + suffix] = b["tcp_bits_per_second"] / max(n["tcp_bits_per_second"], 1e-9)
        ratio["delivered_udp64_bulkhead_over_testpmd" + suffix] = b["udp64_delivered_pps"] / max(tp["udp64_delivered_pps"], 1e-9)
    result = {"trials": args.trials, "packets_per_trial": args.packets, "summary": summary,
              "ratios_bulkhead_over_nftables": ratio, "failed": failed, "runs": res, "tcp_runs": tcp}
    print("\n".join(markdown_table(result)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
