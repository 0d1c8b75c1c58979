//! `bulkhead learn`: turn what discover-mode segments observed into a policy to review.
//!
//! The management thread records, for every fresh decision in a discover-mode segment
//! pair, the observation (source segment, destination segment, protocol, destination
//! port or ICMP type). [`learned_policy`] writes a policy whose rules allow exactly those
//! observations and nothing else (`default: deny`), with the running policy's segments,
//! for an operator to review, `bulkhead check`, and load before switching the segments
//! to `mode: protect`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use dataplane::packet::{proto, PacketMeta, L4};
use dataplane::policy::{
    Action, Decision, Mode, Policy, PolicySpec, PortRange, ProtocolMatch, RuleSpec, SegmentId, SegmentMatch, Unmatched,
};

/// One kind of traffic seen between two segments.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Observation {
    /// Source segment name.
    pub src: String,
    /// Destination segment name.
    pub dst: String,
    /// IP protocol.
    pub protocol: u8,
    /// Destination port (TCP, UDP, SCTP) or ICMP type; `None` for other protocols.
    pub port_or_type: Option<u16>,
}

impl Observation {
    /// The observation of a decision in a discover-mode segment pair, if it is one.
    pub fn of(policy: &Policy, meta: &PacketMeta, d: &Decision) -> Option<Observation> {
        if d.mode != Mode::Discover {
            return None;
        }
        let name = |id: Option<SegmentId>| id.and_then(|i| policy.segment_name(i)).map(str::to_string);
        let port_or_type = match meta.l4 {
            L4::Ports { dst, .. } => Some(dst),
            L4::Icmp { ty, .. } => Some(u16::from(ty)),
            L4::None => None,
        };
        Some(Observation { src: name(d.src_segment)?, dst: name(d.dst_segment)?, protocol: meta.proto, port_or_type })
    }
}

/// The running policy with its rules replaced by one allow rule per observation.
pub fn learned_policy(running: &PolicySpec, observed: &BTreeSet<Observation>) -> PolicySpec {
    let id = |name: &str| running.segments.iter().position(|s| s.name == name).map(|i| i as SegmentId);
    let mut spec = running.clone();
    spec.default_action = Action::Deny;
    spec.rules = observed
        .iter()
        .filter_map(|o| {
            let (src, dst) = (id(&o.src)?, id(&o.dst)?);
            let icmp = matches!(o.protocol, proto::ICMP | proto::ICMPV6);
            let ports = matches!(o.protocol, proto::TCP | proto::UDP | proto::SCTP);
            let suffix = o.port_or_type.map_or(String::new(), |p| format!("-{p}"));
            Some(RuleSpec {
                name: format!("learned-{}-to-{}-{}{suffix}", o.src, o.dst, crate::events::protocol_name(o.protocol)),
                from: SegmentMatch::Segment(src),
                to: SegmentMatch::Segment(dst),
                protocol: ProtocolMatch::Number(o.protocol),
                dst_ports: match o.port_or_type {
                    Some(p) if ports => vec![PortRange { lo: p, hi: p }],
                    _ => vec![],
                },
                src_ports: vec![],
                icmp_types: match o.port_or_type {
                    Some(t) if icmp => vec![t as u8],
                    _ => vec![],
                },
                action: Action::Allow,
                log: false,
            })
        })
        .collect();
    spec
}

/// A policy as the YAML `bulkhead` loads (segments, rules, defaults, non-IP handling).
pub fn policy_yaml(spec: &PolicySpec) -> String {
    let mut y = String::from("segments:\n");
    for s in &spec.segments {
        let _ = write!(y, "  - name: {}\n    cidrs: [", s.name);
        let cidrs: Vec<String> = s.cidrs.iter().map(|c| format!("\"{c}\"")).collect();
        let _ = writeln!(y, "{}]", cidrs.join(", "));
        if !s.vlans.is_empty() {
            let _ = writeln!(y, "    vlans: {:?}", s.vlans);
        }
        match s.mode {
            Mode::Protect => {}
            Mode::Monitor => y.push_str("    mode: monitor\n"),
            Mode::Discover => y.push_str("    mode: discover\n"),
        }
    }
    let seg = |m: SegmentMatch| match m {
        SegmentMatch::Any => "any".to_string(),
        SegmentMatch::Segment(id) => spec.segments[usize::from(id)].name.clone(),
    };
    let ranges = |v: &[PortRange]| -> String {
        v.iter().map(|r| if r.lo == r.hi { r.lo.to_string() } else { format!("\"{}-{}\"", r.lo, r.hi) }).collect::<Vec<_>>().join(", ")
    };
    let action = |a: Action| if a == Action::Allow { "allow" } else { "deny" };
    if !spec.rules.is_empty() {
        y.push_str("rules:\n");
    }
    for r in &spec.rules {
        let _ = writeln!(y, "  - name: {}\n    from: {}\n    to: {}", r.name, seg(r.from), seg(r.to));
        match r.protocol {
            ProtocolMatch::Any => y.push_str("    protocol: any\n"),
            ProtocolMatch::Number(n) => {
                let _ = writeln!(y, "    protocol: {n}");
            }
        }
        if !r.dst_ports.is_empty() {
            let _ = writeln!(y, "    ports: [{}]", ranges(&r.dst_ports));
        }
        if !r.src_ports.is_empty() {
            let _ = writeln!(y, "    source_ports: [{}]", ranges(&r.src_ports));
        }
        if !r.icmp_types.is_empty() {
            let _ = writeln!(y, "    icmp_types: {:?}", r.icmp_types);
        }
        let _ = writeln!(y, "    action: {}", action(r.action));
        if r.log {
            y.push_str("    log: true\n");
        }
    }
    let _ = writeln!(y, "default: {}", action(spec.default_action));
    let _ = writeln!(y, "intra_segment: {}", action(spec.intra_segment_default));
    match spec.unmatched {
        Unmatched::Drop => y.push_str("unmatched: drop\n"),
        Unmatched::Segment(id) => {
            let _ = writeln!(y, "unmatched: {}", spec.segments[usize::from(id)].name);
        }
    }
    let n = &spec.non_ip;
    let _ = writeln!(
        y,
        "non_ip:\n  arp: {}\n  neighbor_discovery: {}\n  llc: {}\n  ethertypes: {:?}",
        if n.allow_arp { "allow" } else { "deny" },
        if n.allow_neighbor_discovery { "allow" } else { "deny" },
        if n.allow_llc { "allow" } else { "deny" },
        n.allowed_ethertypes
    );
    y
}

