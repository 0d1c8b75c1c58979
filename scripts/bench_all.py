#!/usr/bin/env python3
"""The performance report: every benchmark of bulkhead beside what users would run
instead, measured in one run on the machine at hand, written as JSON, a Markdown table
and a plot (scripts/bench.sh builds and calls this).

Sections (--only picks some; all by default):
  forwarding  bulkhead's worker vs dpdk-testpmd io and 5tswap on the same ports and core:
              net_null,copy=1 with no policy; the full policy (1,000 segments, 10,000
              CIDRs, ~1,000 rules) on net_pcap replay; the same with conntrack on
              (scripts/bench_forwarding.py).
  rules       the full policy's segments with 1, 10, 100, 1,000 and 10,000 rules, same
              traffic: bulkhead's rate relative to 1 rule, trials interleaved.
  classify    classifier ns/packet next to a bare LPM lookup (criterion bench), and the
              flow table at 1,000,000 flows (conntrack bench).
  testbed     bulkhead vs nftables with the same policy on the veth test-bed: 64-byte UDP
              rate, CPU per packet, TCP throughput; bulkhead and testpmd on af_packet and
              on af_xdp ports (scripts/bench_testbed.py; root).
  latency     p50/p90/p99/p99.9 through the worker at half its capacity
              (mgmt/examples/latency.rs), without and with conntrack.
  workers     1, 2, 4 and 8 workers (as many as the machine has cores for), bulkhead
              and testpmd, net_null and the full policy.
Medians over --trials; ratios are taken between figures of the same run. These
machines are shared and noisy: read the ratios.

  bench_all.py [--quick] [--only a,b] [--out DIR]      run and report
  bench_all.py --report DIR                            redo table and plot from DIR/results.json
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import bench_testbed  # noqa: E402  (its table of results, for the report)

SECTIONS = ["forwarding", "rules", "classify", "testbed", "latency", "workers"]
RULE_COUNTS = [1, 10, 100, 1000, 10000]
WORKER_COUNTS = [1, 2, 4, 8]


def log(msg):
    print(f"[bench {datetime.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def run_json(cmd, json_path):
    log(" ".join(cmd))
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    with open(json_path) as f:
        return json.load(f)


def forwarding_cmd(args, out, name, extra):
    path = os.path.join(out, f"forwarding-{name}.json")
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "bench_forwarding.py"), "--bulkhead", args.bulkhead,
           "--trials", str(args.trials), "--seconds", str(args.seconds), "--json", path] + extra
    return run_json(cmd, path)


def section_forwarding(args, out):
    data = os.path.join(out, "data")
    return {
        "null": forwarding_cmd(args, out, "null", ["--scenario", "null", "--modes", "io,5tswap"]),
        "policy": forwarding_cmd(args, out, "policy", ["--scenario", "policy", "--workdir", data, "--modes", "io,5tswap"]),
        "flows": section_flows(args, out),
    }


def section_flows(args, out):
    """Established-flow forwarding with conntrack holding --flows flows (1,000,000)."""
    data = os.path.join(out, "flows-data")
    if not os.path.exists(os.path.join(data, "traffic-1.pcap")):
        subprocess.run([args.bench_data, data, "--flows", str(args.flows)], check=True, stdout=sys.stderr, stderr=sys.stderr)
    return forwarding_cmd(args, out, "flows", ["--scenario", "flows", "--workdir", data, "--flows", str(args.flows),
                                                "--modes", "io"])


def section_rules(args, out):
    import bench_forwarding as bf
    base = os.path.join(out, "data")
    rates = {n: [] for n in RULE_COUNTS}
    cycles = {n: [] for n in RULE_COUNTS}
    for n in RULE_COUNTS:
        d = os.path.join(base, f"rules-{n}")
        os.makedirs(d, exist_ok=True)
        subprocess.run([args.bench_data, d, "16", str(n)], check=True, capture_output=True)
        # The same traffic for every rule count (the segments, and so the addresses, are
        # the same; rules do not change the generator's draw).
        for f in ("traffic-0.pcap", "traffic-1.pcap"):
            shutil.copy(os.path.join(base, f), os.path.join(d, f))
    for t in range(args.trials):
        for n in RULE_COUNTS:
            # Packets judged per second: more rules may deny more of the same traffic.
            ns = types.SimpleNamespace(scenario="policy", workdir=os.path.join(base, f"rules-{n}"), bulkhead=args.bulkhead,
                                       seconds=args.seconds, conntrack=False, workers=1, count="rx", flows=0)
            r, _, _, _, c = bf.bulkhead(ns)
            rates[n] += r
            cycles[n] += c
            log(f"rules trial {t + 1}: {n} rules {statistics.median(r) / 1e6:.2f} Mpps")
    med = {n: statistics.median(v) for n, v in rates.items()}
    return {
        "rule_counts": RULE_COUNTS,
        "median_pps": {str(n): med[n] for n in RULE_COUNTS},
        "relative_to_1_rule": {str(n): med[n] / med[1] for n in RULE_COUNTS},
        "cycles_per_packet": {str(n): statistics.median(cycles[n]) if cycles[n] else None for n in RULE_COUNTS},
    }


def cargo_bench(name, args):
    cmd = ["cargo", "bench", "-q", "-p", "dataplane", "--bench", name, "--", "--warm-up-time", "1",
           "--measurement-time", "2" if args.quick else "3"]
    log(" ".join(cmd))
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    return r.stdout


def section_classify(args, out):
    text = cargo_bench("classify", args)
    with open(os.path.join(out, "classify.txt"), "w") as f:
        f.write(text)
    m = re.search(r"bare LPM \(src\+dst\) ([\d.]+) ns/pkt, classify ([\d.]+) ns/pkt.*?classify_burst ([\d.]+) ns/pkt", text)
    tables = re.search(r"tables ([\d.]+) MiB", text)
    res = {}
    if m:
        res.update(lpm_ns=float(m.group(1)), classify_ns=float(m.group(2)), classify_burst_ns=float(m.group(3)))
    if tables:
        res["tables_mib"] = float(tables.group(1))
    text = cargo_bench("conntrack", args)
    with open(os.path.join(out, "conntrack.txt"), "w") as f:
        f.write(text)
    m = re.search(r"conntrack: (\d+) flows, ([\d.]+) bytes/flow .*?lookup hit ([\d.]+) ns/packet per packet, "
                  r"([\d.]+) ns/packet batched.*?insert .*? ([\d.]+) ns/flow", text)
    if m:
        res.update(ct_flows=int(m.group(1)), ct_bytes_per_flow=float(m.group(2)), ct_hit_ns=float(m.group(3)),
                   ct_hit_batched_ns=float(m.group(4)), ct_insert_ns=float(m.group(5)))
    m = re.search(r"new flows with classification .*?: ([\d.]+) ns/flow per packet .*?, ([\d.]+) ns/flow batched", text)
    if m:
        res.update(new_flow_ns=float(m.group(1)), new_flow_batched_ns=float(m.group(2)))
    return res


def section_testbed(args, out):
    path = os.path.join(out, "testbed.json")
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "bench_testbed.py"), "--workdir", os.path.join(out, "data"),
           "--bulkhead", args.bulkhead, "--trials", str(args.trials), "--seconds", str(args.seconds), "--json", path,
           "--io", args.testbed_io]
    if args.quick:
        cmd += ["--packets", "500000"]
    r = run_json(cmd, path)
    r.pop("runs", None)
    return r


def section_latency(args, out):
    res = {}
    data = os.path.join(out, "data")
    for name, extra in (("policy", []), ("policy+conntrack", ["--conntrack"])):
        cmd = [args.latency, os.path.join(data, "policy.yaml"), os.path.join(data, "traffic-0.pcap"), "--load", "0.5",
               "--seconds", str(args.seconds)] + extra
        log(" ".join(cmd))
        trials = [json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                  for _ in range(args.trials)]
        res[name] = {k: statistics.median(t[k] for t in trials) for k in trials[0] if isinstance(trials[0][k], (int, float))
                     and not isinstance(trials[0][k], bool)}
    return res


def section_workers(args, out):
    cpus = os.cpu_count() or 1
    counts = [n for n in WORKER_COUNTS if n <= cpus - 1]
    res = {"counts": counts, "cpus": cpus}
    data = os.path.join(out, "data")
    for scen, extra in (("null", ["--scenario", "null"]), ("policy", ["--scenario", "policy", "--workdir", data])):
        rows = {}
        for n in counts:
            try:
                rows[str(n)] = forwarding_cmd(args, out, f"workers-{scen}-{n}", extra + ["--modes", "io", "--workers", str(n)])
            except subprocess.CalledProcessError as e:
                log(f"workers {scen} {n} failed: {e}")
        res[scen] = rows
    return res


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(), "commit": git,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_average": os.getloadavg()}


# ---- report -------------------------------------------------------------------------------

def mpps(x):
    return f"{x / 1e6:.2f} Mpps"


def markdown(res):
    m = res["machine"]
    lines = [f"Measured {m['date']} on {m['cpu']} ({m['cpus']} CPUs, kernel {m['kernel']}), commit {m['commit']}, "
             f"load average at start {m['load_average'][0]:.1f}; medians of {res.get('trials', '?')} trials.", ""]
    fw = res.get("forwarding")
    if fw:
        lines += ["**Forwarding, one worker core** (same ports and core as dpdk-testpmd, one after the other):", "",
                  "| scenario | bulkhead | cycles/packet | testpmd io | bulkhead/io | testpmd 5tswap | bulkhead/5tswap |",
                  "|---|---|---|---|---|---|---|"]
        names = {"null": "`net_null,copy=1`, no policy", "policy": "full policy, `net_pcap` replay",
                 "flows": "full policy + conntrack, 1,000,000 established flows"}
        for k, r in fw.items():
            p, q = r["median_pps"], r["ratios"]
            cyc = r.get("bulkhead_cycles_per_packet")
            lines.append(f"| {names.get(k, k)} | {mpps(p['bulkhead'])} | {cyc:.0f} | " if cyc else f"| {names.get(k, k)} | {mpps(p['bulkhead'])} | - | ")
            lines[-1] += (f"{mpps(p['testpmd-io'])} | {q['bulkhead/testpmd-io']:.2f} | "
                          + (f"{mpps(p['testpmd-5tswap'])} | {q['bulkhead/testpmd-5tswap']:.2f} |" if "testpmd-5tswap" in p else "- | - |"))
        lines.append("")
    ru = res.get("rules")
    if ru:
        lines += ["**Rule scaling** (full policy's segments, same traffic; packets judged per second relative to 1 rule, "
                  "goal >= 0.9 at 10,000):", "",
                  "| rules | " + " | ".join(f"{int(n):,}" for n in ru["rule_counts"]) + " |",
                  "|---" * (len(ru["rule_counts"]) + 1) + "|",
                  "| rate | " + " | ".join(mpps(ru["median_pps"][str(n)]) for n in ru["rule_counts"]) + " |",
                  "| relative | " + " | ".join(f"{ru['relative_to_1_rule'][str(n)]:.2f}" for n in ru["rule_counts"]) + " |", ""]
    cl = res.get("classify")
    if cl:
        lines += ["**Classifier and flow table** (criterion benches, ns per packet):", "",
                  "| bare LPM src+dst | classify | classify_burst | tables | conntrack hit @1M flows (batched) | "
                  "new flow incl. classify (batched) | bytes/flow |",
                  "|---|---|---|---|---|---|---|",
                  f"| {cl.get('lpm_ns', 0):.1f} ns | {cl.get('classify_ns', 0):.1f} ns | {cl.get('classify_burst_ns', 0):.1f} ns | "
                  f"{cl.get('tables_mib', 0):.2f} MiB | {cl.get('ct_hit_ns', 0):.1f} ns ({cl.get('ct_hit_batched_ns', 0):.1f} ns) | "
                  f"{cl.get('new_flow_ns', 0):.1f} ns ({cl.get('new_flow_batched_ns', 0):.1f} ns) | "
                  f"{cl.get('ct_bytes_per_flow', 0):.1f} |", ""]
    tb = res.get("testbed")
    if tb:
        lines += ["**bulkhead vs nftables on the veth test-bed** (same policy; 64-byte UDP from trafgen; CPU per packet "
                  "without the generator's own cost; bulkhead's core counted for its busy cycles only):", ""]
        lines += bench_testbed.markdown_table(tb) + [""]
    la = res.get("latency")
    if la:
        lines += ["**Latency through the worker at half its capacity** (in-process rings, TSC stamps):", "",
                  "| | capacity | offered | p50 | p90 | p99 | p99.9 | max |", "|---|---|---|---|---|---|---|---|"]
        for k, r in la.items():
            lines.append(f"| {k} | {mpps(r['capacity_pps'])} | {mpps(r['offered_pps'])} | {r['p50_us']:.1f} µs | "
                         f"{r['p90_us']:.1f} µs | {r['p99_us']:.1f} µs | {r['p999_us']:.1f} µs | {r['max_us']:.1f} µs |")
        lines.append("")
    wk = res.get("workers")
    if wk and wk.get("counts"):
        lines += [f"**Worker scaling** ({wk['cpus']} CPUs; lcore 0 runs the management thread / testpmd's main):", "",
                  "| workers | " + " | ".join(str(n) for n in wk["counts"]) + " |", "|---" * (len(wk["counts"]) + 1) + "|"]
        for scen in ("null", "policy"):
            rows = wk.get(scen, {})
            if str(wk["counts"][0]) not in rows:
                continue
            one = rows[str(wk["counts"][0])]["median_pps"]["bulkhead"]

            def cell(n, key, rel):
                r = rows.get(str(n))
                if not r:
                    return "failed"
                v = r["median_pps"][key]
                return f"{mpps(v)} (x{v / one:.2f})" if rel else mpps(v)
            lines.append(f"| bulkhead, {scen} | " + " | ".join(cell(n, "bulkhead", True) for n in wk["counts"]) + " |")
            lines.append(f"| testpmd io, {scen} | " + " | ".join(cell(n, "testpmd-io", False) for n in wk["counts"]) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("forwarding", "rules", "testbed", "latency", "workers") if res.get(k)]
    if res.get("workers") and not res["workers"].get("counts"):
        panels.remove("workers")
    if not panels:
        return False
    rows = 1 if len(panels) <= 3 else 2
    cols = -(-len(panels) // rows)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.3 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    for ax, k in zip(flat, panels):
        if k == "forwarding":
            fw = res[k]
            names = list(fw)
            series = ["bulkhead", "testpmd-io", "testpmd-5tswap"]
            w = 0.27
            for i, s in enumerate(series):
                ax.bar([x + (i - 1) * w for x in range(len(names))],
                       [fw[n]["median_pps"].get(s, 0) / 1e6 for n in names], w, label=s)
            ax.set_xticks(range(len(names)), names, rotation=12)
            ax.set_ylabel("Mpps, one core")
            ax.set_title("Forwarding vs dpdk-testpmd")
            ax.legend(fontsize=8)
        elif k == "rules":
            ru = res[k]
            xs = ru["rule_counts"]
            ax.plot(xs, [ru["relative_to_1_rule"][str(n)] for n in xs], marker="o", label="bulkhead")
            ax.axhline(0.9, color="grey", ls="--", lw=1, label="goal 0.9")
            ax.set_xscale("log")
            ax.set_ylim(0, 1.2)
            ax.set_xlabel("rules")
            ax.set_ylabel("rate relative to 1 rule")
            ax.set_title("Rule scaling")
            ax.legend(fontsize=8)
        elif k == "testbed":
            s = res[k]["summary"]
            metrics = [("udp64_pps_per_core", "UDP64 pkts/s\nper core"), ("udp64_delivered_pps", "UDP64\ndelivered"),
                       ("tcp_bits_per_second", "TCP")]
            shown = [f for f in ("nftables", "bulkhead", "bulkhead-af_xdp") if f in s]
            w = 0.8 / len(shown)
            for i, f in enumerate(shown):
                ax.bar([x + (i - (len(shown) - 1) / 2) * w for x in range(len(metrics))],
                       [s[f][m] / max(s["nftables"][m], 1e-9) for m, _ in metrics], w,
                       label=bench_testbed.LABELS[f].replace(" ports", ""))
            ax.set_xticks(range(len(metrics)), [l for _, l in metrics])
            ax.axhline(3, color="grey", ls="--", lw=1, label="goal 3x per core")
            ax.set_ylabel("relative to nftables")
            ax.set_title("veth test-bed: bulkhead vs nftables")
            ax.legend(fontsize=8)
        elif k == "latency":
            la = res[k]
            ps = [("p50_us", "p50"), ("p90_us", "p90"), ("p99_us", "p99"), ("p999_us", "p99.9")]
            w = 0.8 / max(len(la), 1)
            for i, (name, r) in enumerate(la.items()):
                ax.bar([x + (i - (len(la) - 1) / 2) * w for x in range(len(ps))], [r[p] for p, _ in ps], w, label=name)
            ax.set_xticks(range(len(ps)), [l for _, l in ps])
            ax.set_yscale("log")
            ax.set_ylabel("µs")
            ax.set_title("Latency at half capacity")
            ax.legend(fontsize=8)
        elif k == "workers":
            wk = res[k]
            for scen in ("null", "policy"):
                rows = wk.get(scen) or {}
                xs = [n for n in wk["counts"] if str(n) in rows]
                if xs:
                    ax.plot(xs, [rows[str(n)]["median_pps"]["bulkhead"] / 1e6 for n in xs], marker="o", label=f"bulkhead {scen}")
                    ax.plot(xs, [rows[str(n)]["median_pps"]["testpmd-io"] / 1e6 for n in xs], marker="x", ls=":",
                            label=f"testpmd io {scen}")
            ax.set_xlabel("workers")
            ax.set_ylabel("Mpps")
            ax.set_title(f"Worker scaling ({wk['cpus']} CPUs)")
            ax.legend(fontsize=8)
    m = res["machine"]
    fig.suptitle(f"bulkhead {m['commit']} — {m['cpu']}, {m['cpus']} CPUs — {m['date']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def report(out, res):
    md = markdown(res)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(md + "\n")
    try:
        drew = plot(res, os.path.join(out, "results.svg"))
    except ImportError:
        log("matplotlib not found (apt install python3-matplotlib): no plot")
        drew = False
    print(md)
    if drew:
        log(f"plot: {os.path.join(out, 'results.svg')}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 trial, short runs")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--only", help="comma-separated sections: " + ",".join(SECTIONS))
    ap.add_argument("--testbed-io", default="af_packet,af_xdp",
                    help="kernel I/O paths of the testbed section (af_packet, af_xdp; where a path cannot run, "
                    "it is reported as not measured)")
    ap.add_argument("--out", help="results folder (default results/<date-time>)")
    ap.add_argument("--report", metavar="DIR", help="only redo the table and plot from DIR/results.json")
    ap.add_argument("--bulkhead", default=os.path.join(ROOT, "target", "release", "bulkhead"))
    ap.add_argument("--bench-data", default=os.path.join(ROOT, "target", "release", "examples", "bench_data"))
    ap.add_argument("--flows", type=int, default=1_000_000, help="flows of the conntrack forwarding scenario")
    ap.add_argument("--latency", default=os.path.join(ROOT, "target", "release", "examples", "latency"))
    args = ap.parse_args()
    if args.report:
        with open(os.path.join(args.report, "results.json")) as f:
            report(args.report, json.load(f))
        return 0
    if args.quick:
        args.trials, args.seconds = 1, 5
    only = args.only.split(",") if args.only else SECTIONS
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections: {', '.join(sorted(unknown))}")
    out = args.out or os.path.join(ROOT, "results", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    data = os.path.join(out, "data")
    if not os.path.exists(os.path.join(data, "policy.yaml")):
        subprocess.run([args.bench_data, data, "2048"], check=True, stdout=sys.stderr, stderr=sys.stderr)
    res = {"machine": machine(), "trials": args.trials, "seconds_per_trial": args.seconds}
    path = os.path.join(out, "results.json")
    for name in only:
        log(f"== {name}")
        try:
            res[name] = globals()[f"section_{name}"](args, out)
        except (subprocess.CalledProcessError, SystemExit, OSError) as e:
            res.setdefault("failed", {})[name] = str(e)[-2000:]
            log(f"{name} failed: {e}")
        with open(path, "w") as f:
            json.dump(res, f, indent=2)
    report(out, res)
    log(f"results: {out}")
    return 1 if res.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
