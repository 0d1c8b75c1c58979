#!/usr/bin/env python3
"""Translate a bulkhead policy (YAML) into an nftables ruleset for the kernel's forward
path, so that bulkhead and nftables can be measured enforcing the same policy
(scripts/bench_testbed.py).

The translation, written the way an nftables user would:
  * segments -> interval maps: source address -> segment number (set as the packet
    mark), destination address -> `jump to_<segment>` (a verdict map). Nested prefixes
    are flattened into disjoint ranges where the most specific prefix wins, as in
    bulkhead; addresses in no segment get the `unmatched` segment, or are dropped.
  * rules, in order, first match wins: each destination segment has a chain holding the
    rules whose `to` is that segment (`from` is a mark match, protocol `meta l4proto`,
    ports `th dport`/`th sport` anonymous sets, ICMP types `icmp(v6) type`); the rules
    whose `to` is `any` sit in shared block chains, jumped to at their place in the
    order (a range of them decomposes into O(log n) aligned blocks).
  * the intra-segment default, then the default, end the path.
  * `ct state established,related accept` first (bulkhead's connection tracking).
Not translated: VLAN-scoped segments and the monitor/discover modes (enforced as
protect), non-IP traffic (a router does not forward it).

Usage: nft_policy.py POLICY.yaml [--table NAME] > ruleset.nft; nft -f ruleset.nft
"""
import argparse
import ipaddress
import sys

import yaml

PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132}


def flatten(prefixes):
    """Disjoint (first, last, value) ranges from (network, value) pairs, most specific wins."""
    items = sorted(((int(n.network_address), int(n.broadcast_address), v) for n, v in prefixes),
                   key=lambda t: (t[0], -t[1]))
    out, stack, cur = [], [], 0

    def emit(a, b, v):
        if a > b:
            return
        if out and out[-1][1] + 1 == a and out[-1][2] == v:
            out[-1] = (out[-1][0], b, v)
        else:
            out.append((a, b, v))

    for s, e, v in items:
        while stack and stack[-1][1] < s:
            top = stack.pop()
            emit(cur, top[1], top[2])
            cur = top[1] + 1
        if stack:
            emit(cur, s - 1, stack[-1][2])
        stack.append((s, e, v))
        cur = s
    while stack:
        top = stack.pop()
        emit(cur, top[1], top[2])
        cur = top[1] + 1
    return out


def fill_gaps(ranges, top, value):
    """`ranges` with every gap in [0, top] given `value` (None: left as a gap)."""
    if value is None:
        return ranges
    out, cur = [], 0
    for a, b, v in ranges:
        if a > cur:
            out.append((cur, a - 1, value))
        out.append((a, b, v))
        cur = b + 1
    if cur <= top:
        out.append((cur, top, value))
    return out


def addr(family, n):
    return str(ipaddress.IPv4Address(n) if family == 4 else ipaddress.IPv6Address(n))


def elements(family, ranges, fmt):
    return ", ".join(
        (addr(family, a) if a == b else f"{addr(family, a)}-{addr(family, b)}") + f" : {fmt(v)}"
        for a, b, v in ranges)


def proto_number(p):
    if p is None or p == "any":
        return None
    if isinstance(p, int):
        return p
    return PROTOCOLS[str(p)] if str(p) in PROTOCOLS else int(p)


def port_set(ports):
    return "{ " + ", ".join(str(p) for p in ports) + " }"


def rule_line(rule, seg_id):
    """The nft statement of one bulkhead rule (the `to` side is the chain it sits in)."""
    parts = []
    if rule.get("from", "any") != "any":
        parts.append(f"meta mark {seg_id[rule['from']]}")
    proto = proto_number(rule.get("protocol"))
    types = rule.get("icmp_types") or []
    if proto is not None:
        if types and proto in (1, 58):
            parts.append(f"{'icmp' if proto == 1 else 'icmpv6'} type {port_set(types)}")
        else:
            parts.append(f"meta l4proto {proto}")
    if rule.get("source_ports"):
        parts.append(f"th sport {port_set(rule['source_ports'])}")
    if rule.get("ports"):
        parts.append(f"th dport {port_set(rule['ports'])}")
    parts.append("accept" if rule.get("action", "allow") == "allow" else "drop")
    return " ".join(parts)


def verdict(action):
    return "accept" if action == "allow" else "drop"


def translate(policy, table):
    segments = policy["segments"]
    seg_id = {s["name"]: i + 1 for i, s in enumerate(segments)}
    unmatched = policy.get("unmatched", "drop")
    unmatched_id = seg_id.get(unmatched)  # None: drop
    rules = policy.get("rules", [])
    out = [f"table inet {table}", f"delete table inet {table}", f"table inet {table} {{"]

    for family in (4, 6):
        prefixes = []
        for s in segments:
            for c in s.get("cidrs", []):
                n = ipaddress.ip_network(c, strict=False)
                if n.version == family:
                    prefixes.append((n, seg_id[s["name"]]))
        top = (1 << (32 if family == 4 else 128)) - 1
        ranges = flatten(prefixes)
        typ = "ipv4_addr" if family == 4 else "ipv6_addr"
        src = fill_gaps(ranges, top, unmatched_id)
        dst = fill_gaps(ranges, top, unmatched_id if unmatched_id else "drop")
        out.append(f"  map src{family} {{ type {typ} : mark; flags interval;")
        if src:
            out.append(f"    elements = {{ {elements(family, src, str)} }}")
        out.append("  }")
        out.append(f"  map dst{family} {{ type {typ} : verdict; flags interval;")
        if dst:
            out.append("    elements = { " + elements(
                family, dst, lambda v: "drop" if v == "drop" else f"jump to_{v}") + " }")
        out.append("  }")

    # Rules whose `to` is any: aligned power-of-two blocks, each its own chain.
    any_rules = [r for r in rules if r.get("to", "any") == "any"]
    # For each rule: how many to-any rules come before it in the policy.
    any_before, n = [], 0
    for r in rules:
        any_before.append(n)
        n += r.get("to", "any") == "any"
    by_target = {}
    for i, r in enumerate(rules):
        if r.get("to", "any") != "any":
            by_target.setdefault(r["to"], []).append(i)
    blocks = {}

    def block_chain(lo, size):
        name = f"any_{lo}_{size}"
        if name not in blocks:
            if size == 1:
                body = [rule_line(any_rules[lo], seg_id)]
            else:
                half = size // 2
                body = [f"jump {block_chain(lo, half)}"]
                if lo + half < len(any_rules):
                    body.append(f"jump {block_chain(lo + half, half)}")
            blocks[name] = body
        return name

    def jumps(lo, hi):
        """Jumps covering any_rules[lo:hi] in order."""
        lines = []
        while lo < hi:
            size = 1
            while lo % (size * 2) == 0 and lo + size * 2 <= hi:
                size *= 2
            lines.append(f"jump {block_chain(lo, size)}")
            lo += size
        return lines

    for s in segments:
        j = seg_id[s["name"]]
        body, pending = [], 0
        for i in by_target.get(s["name"], []):
            # The to-any rules before this one in the policy, not yet placed.
            body += jumps(pending, any_before[i])
            pending = any_before[i]
            body.append(rule_line(rules[i], seg_id))
        body += jumps(pending, len(any_rules))
        body.append(f"meta mark {j} {verdict(policy.get('intra_segment', 'deny'))}")
        out.append(f"  chain to_{j} {{")
        out += [f"    {b}" for b in body]
        out.append("  }")
    for name, body in blocks.items():
        out.append(f"  chain {name} {{")
        out += [f"    {b}" for b in body]
        out.append("  }")

    out += [
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        "    ct state established,related accept",
        "    ct state invalid drop",
        "    meta nfproto ipv4 meta mark set ip saddr map @src4",
        "    meta nfproto ipv6 meta mark set ip6 saddr map @src6",
    ]
    if unmatched_id is None:
        out.append("    meta mark 0 drop")
    out += [
        "    meta nfproto ipv4 ip daddr vmap @dst4",
        "    meta nfproto ipv6 ip6 daddr vmap @dst6",
        f"    {verdict(policy.get('default', 'deny'))}",
        "  }",
        "}",
    ]
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("policy")
    ap.add_argument("--table", default="bulkhead_bench")
    args = ap.parse_args()
    with open(args.policy) as f:
        policy = yaml.safe_load(f)
    sys.stdout.write(translate(policy, args.table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
