#!/usr/bin/env python3
"""Tests of the benchmark tools' own logic (run by scripts/test.sh):
  * nft_policy.flatten against a brute-force longest-prefix match on random nested
    prefixes, and the translated ruleset accepted by `nft -c` (where nft and root are);
  * bench_all's report (table and plot) rendered from the published run
    (docs/perf/results.json, the README's figures).
"""
import ipaddress
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import bench_all  # noqa: E402
import bench_testbed  # noqa: E402
import nft_policy  # noqa: E402


def lpm(prefixes, addr):
    best = None
    for net, v in prefixes:
        if int(net.network_address) <= addr <= int(net.broadcast_address):
            if best is None or net.prefixlen >= best[0].prefixlen:
                best = (net, v)
    return best[1] if best else None


class Flatten(unittest.TestCase):
    def test_matches_longest_prefix_on_random_nested_prefixes(self):
        rng = random.Random(7)
        for _ in range(200):
            prefixes, seen = [], set()
            for i in range(rng.randint(1, 12)):
                length = rng.randint(20, 32)
                # Half of them inside the previous prefix: nesting.
                if prefixes and rng.random() < 0.5:
                    base = int(prefixes[-1][0].network_address) | rng.getrandbits(8)
                else:
                    base = 0x0a000000 | rng.getrandbits(12) << 8
                net = ipaddress.ip_network((base & (0xffffffff << (32 - length)) & 0xffffffff, length))
                if net in seen:
                    continue
                seen.add(net)
                prefixes.append((net, i + 1))
            ranges = nft_policy.flatten(prefixes)
            # Disjoint and sorted.
            for (a, b, _), (c, _, _) in zip(ranges, ranges[1:]):
                self.assertLess(b, c)
            probes = {int(n.network_address) + d for n, _ in prefixes for d in (-1, 0, 1)}
            probes |= {int(n.broadcast_address) + d for n, _ in prefixes for d in (-1, 0, 1)}
            probes |= {rng.getrandbits(32) & 0x0a0fffff | 0x0a000000 for _ in range(50)}
            for addr in probes:
                got = next((v for a, b, v in ranges if a <= addr <= b), None)
                self.assertEqual(got, lpm(prefixes, addr), f"{ipaddress.IPv4Address(addr & 0xffffffff)} in {prefixes}")

    def test_fill_gaps_covers_the_whole_space(self):
        ranges = nft_policy.fill_gaps([(10, 20, 1), (30, 40, 2)], 99, 9)
        self.assertEqual(ranges, [(0, 9, 9), (10, 20, 1), (21, 29, 9), (30, 40, 2), (41, 99, 9)])
        self.assertEqual(nft_policy.fill_gaps([(10, 20, 1)], 99, None), [(10, 20, 1)])


POLICY = {
    "segments": [
        {"name": "web", "cidrs": ["10.1.0.0/16", "10.1.2.0/24", "fd00:1::/48"]},
        {"name": "api", "cidrs": ["10.1.2.128/25", "10.2.0.0/16"]},
        {"name": "db", "cidrs": ["10.3.0.0/16"]},
    ],
    "rules": [
        {"name": "r0", "from": "web", "to": "api", "protocol": "tcp", "ports": [80, "8000-8080"], "action": "allow"},
        {"name": "r1", "from": "any", "to": "any", "protocol": "icmp", "icmp_types": [8], "action": "allow"},
        {"name": "r2", "from": "api", "to": "db", "protocol": "tcp", "ports": [5432], "action": "allow"},
        {"name": "r3", "from": "web", "to": "any", "protocol": "udp", "ports": [53], "action": "deny"},
        {"name": "r4", "from": "any", "to": "db", "protocol": "any", "action": "deny"},
    ],
    "default": "deny",
    "intra_segment": "allow",
    "unmatched": "drop",
}


class Translate(unittest.TestCase):
    def test_structure(self):
        text = nft_policy.translate(POLICY, "t")
        # db's chain: r1 (a to-any block) then r2, r3's block, r4, then the intra default.
        chain = text.split("  chain to_3 {\n")[1].split("\n  }\n")[0]
        body = [l.strip() for l in chain.split("\n")]
        self.assertEqual(body, ["jump any_0_1", "meta mark 2 meta l4proto 6 th dport { 5432 } accept", "jump any_1_1",
                                "drop", "meta mark 3 accept"])

    @unittest.skipUnless(shutil.which("nft") and os.geteuid() == 0, "needs nft and root")
    def test_nft_accepts_the_ruleset(self):
        with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
            f.write(nft_policy.translate(POLICY, "bulkhead_test"))
            f.flush()
            r = subprocess.run(["nft", "-c", "-f", f.name], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)


class Report(unittest.TestCase):
    def test_renders_table_and_plot(self):
        with open(os.path.join(HERE, "..", "..", "docs", "perf", "results.json")) as f:
            res = json.load(f)
        md = bench_all.markdown(res)
        headings = {"forwarding": "Forwarding, one worker core", "rules": "Rule scaling", "classify": "Classifier",
                    "testbed": "bulkhead vs nftables", "latency": "Latency", "workers": "Worker scaling"}
        self.assertIn("forwarding", res)
        for section, heading in headings.items():
            if res.get(section):
                self.assertIn(heading, md)
        if res.get("rules"):
            self.assertIn("| rules | 1 | 10 | 100 | 1,000 | 10,000 |", md)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            self.skipTest("no matplotlib")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "r.svg")
            self.assertTrue(bench_all.plot(res, path))
            with open(path) as f:
                self.assertIn("<svg", f.read(2000))


class TestbedTable(unittest.TestCase):
    @staticmethod
    def result(ios):
        summary, ratios = {"nftables": {"udp64_delivered_pps": 2e5, "udp64_cost_ns_per_packet": 2000.0,
                                        "udp64_pps_per_core": 5e5, "tcp_bits_per_second": 3e9}}, {}
        for io in ios:
            b, t = bench_testbed.forwarder("bulkhead", io), bench_testbed.forwarder("testpmd", io)
            summary[b] = {"udp64_delivered_pps": 4e5, "udp64_cost_ns_per_packet": 1000.0, "udp64_pps_per_core": 1e6,
                          "tcp_bits_per_second": 2e9}
            summary[t] = {"udp64_delivered_pps": 5e5, "tcp_bits_per_second": 2.5e9}
            suffix = "" if io == "af_packet" else "_" + io
            ratios.update({"per_core_udp64" + suffix: 2.0, "delivered_udp64" + suffix: 2.0, "tcp" + suffix: 0.67})
        return {"summary": summary, "ratios_bulkhead_over_nftables": ratios}

    def test_one_row_per_forwarder_and_a_ratio_per_io_path(self):
        rows = bench_testbed.markdown_table(self.result(["af_packet", "af_xdp"]))
        self.assertEqual(len(rows), 2 + 5 + 2)
        self.assertIn("| bulkhead, af_xdp ports | 400 kpps | 1000 ns | 1.00 Mpps | 2.00 Gbit/s |", rows)
        self.assertIn("| bulkhead/nftables, af_xdp | 2.00 | | 2.00 (goal 3) | 0.67 |", rows)

    def test_reports_from_before_af_xdp_still_render(self):
        # The testbed section of the 02:39 report (docs/perf/results.json at 5b48bae),
        # as that code wrote it: af_packet only, no "failed".
        old = {"summary": {
            "nftables": {"udp64_delivered_pps": 220933.0, "udp64_cost_ns_per_packet": 2215.1,
                         "udp64_pps_per_core": 451445.8, "tcp_bits_per_second": 3061142358.4},
            "bulkhead": {"udp64_delivered_pps": 383783.8, "udp64_cost_ns_per_packet": 2843.7,
                         "udp64_pps_per_core": 351656.5, "tcp_bits_per_second": 1941315930.8},
            "testpmd": {"udp64_delivered_pps": 396660.5, "tcp_bits_per_second": 1956530296.5},
            "baseline_pps": 433014.5},
            "ratios_bulkhead_over_nftables": {"per_core_udp64": 0.779, "delivered_udp64": 1.737, "tcp": 0.634,
                                              "delivered_udp64_bulkhead_over_testpmd": 0.968}}
        rows = bench_testbed.markdown_table(old)
        self.assertEqual(len(rows), 2 + 3 + 1)
        self.assertIn("| bulkhead, af_packet ports | 384 kpps | 2844 ns | 0.35 Mpps | 1.94 Gbit/s |", rows)
        self.assertFalse(any("af_xdp" in r for r in rows))
        machine = {"date": "2026-11-30 02:39 UTC", "cpu": "x", "cpus": 2, "kernel": "6", "commit": "4144866",
                   "load_average": [1.5]}
        md = bench_all.markdown({"machine": machine, "testbed": old})
        self.assertIn("| bulkhead/nftables, af_packet | 1.74 | | 0.78 (goal 3) | 0.63 |", md)

    def test_a_path_that_could_not_run_is_said_so(self):
        r = self.result(["af_packet"])
        r["failed"] = {"af_xdp": "bulkhead on af_xdp ports did not start: no XDP sockets\nmore"}
        rows = bench_testbed.markdown_table(r)
        self.assertIn("| af_xdp: not measured | bulkhead on af_xdp ports did not start: no XDP sockets | | | |", rows)


if __name__ == "__main__":
    unittest.main()
