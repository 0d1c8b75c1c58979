//! A naive evaluator written straight from the contract in the [module
//! documentation](super): linear scans over every CIDR and every rule, no index, no
//! cleverness. Slow; for tests (the property tests hold [`super::Policy::classify`] to it)
//! and for tools that want a second opinion.

use std::net::IpAddr;

use super::spec::{
    Action, PolicySpec, ProtocolMatch, RuleSpec, SegmentId, SegmentMatch, Unmatched,
};
use super::{Decision, Mode, Verdict, Why};
use crate::counters::DropReason;
use crate::packet::{proto, PacketMeta, ETHERTYPE_ARP, L4};

/// Decides `meta` under `spec` the slow, obvious way.
pub fn classify(spec: &PolicySpec, meta: &PacketMeta) -> Decision {
    let verdict_of = |a: Action| match a {
        Action::Allow => Verdict::Allow,
        Action::Deny => Verdict::Deny(DropReason::PolicyDeny),
    };

    // 1. Non-IP frames.
    let Some((src, dst)) = meta.addrs else {
        let allowed = (meta.ethertype == ETHERTYPE_ARP && spec.non_ip.allow_arp)
            || (meta.ethertype < 0x0600 && spec.non_ip.allow_llc)
            || spec.non_ip.allowed_ethertypes.contains(&meta.ethertype);
        return Decision {
            verdict: if allowed {
                Verdict::Allow
            } else {
                Verdict::Deny(DropReason::EthertypeNotAllowed)
            },
            why: Why::NonIp,
            src_segment: None,
            dst_segment: None,
            log: false,
            mode: Mode::Protect,
            overridden: false,
        };
    };

    // 2. Segments.
    let vlan = meta.vlan();
    let src_segment = resolve(spec, src, vlan);
    let dst_segment = resolve(spec, dst, vlan);
    // 6. Modes: the strictest of the two segments'; soft modes forward policy denials.
    let mode_of = |s: Option<SegmentId>| s.and_then(|s| spec.segments.get(usize::from(s))).map(|x| x.mode);
    let mode = match (mode_of(src_segment), mode_of(dst_segment)) {
        (Some(Mode::Protect), _) | (_, Some(Mode::Protect)) | (None, _) | (_, None) => Mode::Protect,
        (Some(Mode::Monitor), _) | (_, Some(Mode::Monitor)) => Mode::Monitor,
        _ => Mode::Discover,
    };
    let decision = |verdict: Verdict, why, log| {
        let overridden = mode != Mode::Protect && verdict == Verdict::Deny(DropReason::PolicyDeny);
        let verdict = if overridden { Verdict::Allow } else { verdict };
        Decision { verdict, why, src_segment, dst_segment, log, mode, overridden }
    };

    // 3. Neighbour discovery.
    if spec.non_ip.allow_neighbor_discovery && meta.proto == proto::ICMPV6 {
        if let L4::Icmp { ty, .. } = meta.l4 {
            if (133..=137).contains(&ty) {
                return decision(Verdict::Allow, Why::NeighborDiscovery, false);
            }
        }
    }

    let Some(s) = src_segment else {
        return decision(
            Verdict::Deny(DropReason::UnknownAddress),
            Why::UnknownSource,
            false,
        );
    };
    let Some(d) = dst_segment else {
        return decision(
            Verdict::Deny(DropReason::UnknownAddress),
            Why::UnknownDestination,
            false,
        );
    };

    // 4. Rules, first match wins.
    for (id, rule) in spec.rules.iter().enumerate() {
        if rule_matches(rule, s, d, meta) {
            return decision(verdict_of(rule.action), Why::Rule(id as u32), rule.log);
        }
    }

    // 5. Defaults.
    if s == d {
        decision(
            verdict_of(spec.intra_segment_default),
            Why::IntraSegmentDefault,
            false,
        )
    } else {
        decision(verdict_of(spec.default_action), Why::Default, false)
    }
}

/// The segment holding the longest prefix that contains `addr`, among the segments that
/// apply to `vlan`, before the unmatched rule applies.
pub fn segment_of(spec: &PolicySpec, addr: IpAddr, vlan: Option<u16>) -> Option<SegmentId> {
    let mut best: Option<(u8, SegmentId)> = None;
    for (id, seg) in spec.segments.iter().enumerate() {
        let applies = seg.vlans.is_empty() || vlan.is_some_and(|v| seg.vlans.contains(&v));
        if !applies {
            continue;
        }
        for net in &seg.cidrs {
            if net.contains(&addr) && !matches!(best, Some((len, _)) if len >= net.prefix_len()) {
                best = Some((net.prefix_len(), id as SegmentId));
            }
        }
    }
    best.map(|(_, id)| id)
}

fn resolve(spec: &PolicySpec, addr: IpAddr, vlan: Option<u16>) -> Option<SegmentId> {
    segment_of(spec, addr, vlan).or(match spec.unmatched {
        Unmatched::Segment(s) => Some(s),
        Unmatched::Drop => None,
    })
}

fn rule_matches(rule: &RuleSpec, s: SegmentId, d: SegmentId, meta: &PacketMeta) -> bool {
    let seg_ok = |m: SegmentMatch, x: SegmentId| match m {
        SegmentMatch::Any => true,
        SegmentMatch::Segment(y) => x == y,
    };
    if !seg_ok(rule.from, s) || !seg_ok(rule.to, d) {
        return false;
    }
    if let ProtocolMatch::Number(p) = rule.protocol {
        if p != meta.proto {
            return false;
        }
    }
    let in_any = |port: u16, ranges: &[super::spec::PortRange]| {
        ranges.iter().any(|r| r.lo <= port && port <= r.hi)
    };
    if !rule.dst_ports.is_empty() || !rule.src_ports.is_empty() {
        let L4::Ports { src, dst } = meta.l4 else {
            return false;
        };
        if !rule.dst_ports.is_empty() && !in_any(dst, &rule.dst_ports) {
            return false;
        }
        if !rule.src_ports.is_empty() && !in_any(src, &rule.src_ports) {
            return false;
        }
    }
    if !rule.icmp_types.is_empty() {
        let L4::Icmp { ty, .. } = meta.l4 else {
            return false;
        };
        if !rule.icmp_types.contains(&ty) {
            return false;
        }
    }
    true
}
