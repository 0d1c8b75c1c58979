//! The packet path: [`Policy::classify`]. No allocation, no lock, no panic, no `unsafe`:
//! every index goes through `get`, and a miss (impossible by construction) reads as an
//! empty list or "no match", which ends in the default action or a deny.

use super::lpm::Entry;
use super::spec::{Mode, SegmentId, Unmatched};
use super::{Decision, Policy, Verdict, Why};
use crate::counters::DropReason;
use crate::packet::proto;
use crate::packet::{PacketMeta, ETHERTYPE_ARP, ETHERTYPE_MIN, L4};

/// ICMPv6 types of neighbour discovery: router solicitation (133) to redirect (137).
const ND_TYPES: std::ops::RangeInclusive<u8> = 133..=137;

pub(super) fn classify(p: &Policy, meta: &PacketMeta) -> Decision {
    let (src, dst) = match meta.addrs {
        Some(addrs) => p.lpm.lookup_pair(addrs, meta.vlan()),
        None => (Entry::NONE, Entry::NONE),
    };
    decide(p, meta, src, dst)
}

/// Packets per stage of [`classify_burst`]: a DPDK burst.
const CHUNK: usize = 32;

pub(super) fn classify_burst(p: &Policy, metas: &[PacketMeta], mut f: impl FnMut(usize, Decision)) {
    for (c, chunk) in metas.chunks(CHUNK).enumerate() {
        // Stage 1: every lookup of the chunk, back to back, so their memory accesses
        // overlap. Stage 2: the decisions.
        let mut found = [(Entry::NONE, Entry::NONE); CHUNK];
        for (meta, e) in chunk.iter().zip(found.iter_mut()) {
            if let Some(addrs) = meta.addrs {
                *e = p.lpm.lookup_pair(addrs, meta.vlan());
            }
        }
        for (i, (meta, (s, d))) in chunk.iter().zip(found).enumerate() {
            f(c * CHUNK + i, decide(p, meta, s, d));
        }
    }
}

/// The decision for `meta`, given the longest matches of its source and destination.
#[inline(always)]
fn decide(p: &Policy, meta: &PacketMeta, src: Entry, dst: Entry) -> Decision {
    if meta.addrs.is_none() {
        let allowed = (meta.ethertype == ETHERTYPE_ARP && p.non_ip.allow_arp)
            || (meta.ethertype < ETHERTYPE_MIN && p.non_ip.allow_llc)
            || p.non_ip.ethertypes.binary_search(&meta.ethertype).is_ok();
        return Decision::non_ip(if allowed {
            Verdict::Allow
        } else {
            Verdict::Deny(DropReason::EthertypeNotAllowed)
        });
    }

    let src_segment = resolve(p, src);
    let dst_segment = resolve(p, dst);
    let mut d = Decision {
        verdict: Verdict::Allow,
        why: Why::NeighborDiscovery,
        src_segment,
        dst_segment,
        log: false,
        mode: Mode::Protect,
        overridden: false,
    };

    if p.non_ip.allow_nd && meta.proto == proto::ICMPV6 {
        if let L4::Icmp { ty, .. } = meta.l4 {
            if ND_TYPES.contains(&ty) {
                return d;
            }
        }
    }

    let (Some(s), Some(t)) = (src_segment, dst_segment) else {
        d.verdict = Verdict::Deny(DropReason::UnknownAddress);
        d.why = if src_segment.is_none() {
            Why::UnknownSource
        } else {
            Why::UnknownDestination
        };
        return d;
    };

    match p
        .rules
        .first_match(s, t, meta)
        .and_then(|id| Some((id, p.rules.rule(id)?)))
    {
        Some((id, rule)) => {
            d.verdict = Verdict::from_action(rule.action);
            d.why = Why::Rule(id);
            d.log = rule.log;
        }
        None if s == t => {
            d.verdict = Verdict::from_action(p.intra_segment_default);
            d.why = Why::IntraSegmentDefault;
        }
        None => {
            d.verdict = Verdict::from_action(p.default_action);
            d.why = Why::Default;
        }
    }
    d
}

/// The segment of `addr`, the unmatched segment applied.
#[inline(always)]
fn resolve(p: &Policy, found: Entry) -> Option<SegmentId> {
    match found.value() {
        Some(s) => Some(s),
        None => match p.unmatched {
            Unmatched::Segment(s) => Some(s),
            Unmatched::Drop => None,
        },
    }
}
