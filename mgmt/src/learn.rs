//! `bulkhead learn`: turn what discover-mode segments observed into a policy to review.
//!
//! The management thread records, for every fresh decision in a discover-mode segment
//! pair, the observation (source segment, destination segment, protocol, destination
//! port or ICMP type). [`learned_policy`] writes a policy whose rules allow exactly those
//! observations and nothing else (`default: deny`), with the running policy's segments,
//! for an operator to review, `bulkhead check`, and load before switching the segments
//! to `mode: protect`.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

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

/// The name of a learned rule: `learned-SRC-to-DST-TAIL` (`TAIL`: protocol and port or
/// ICMP type, e.g. `tcp-8080`). A name longer than rule names may be
/// ([`MAX_NAME_LEN`](crate::config::MAX_NAME_LEN)) keeps `learned-`, `-to-` and the tail
/// whole, shortens the two segment names to fit, and ends in 8 hex digits of the
/// SHA-256 of the full name, so it stays readable and stable between runs.
fn rule_name(src: &str, dst: &str, tail: &str) -> String {
    const MAX: usize = crate::config::MAX_NAME_LEN;
    let full = format!("learned-{src}-to-{dst}-{tail}");
    if full.len() <= MAX {
        return full;
    }
    let hash: String = Sha256::digest(full.as_bytes()).iter().take(4).map(|b| format!("{b:02x}")).collect();
    let fixed = "learned-".len() + "-to-".len() + 1 + tail.len() + 1 + hash.len();
    let budget = MAX.saturating_sub(fixed);
    // A short name is kept whole and leaves the rest of the budget to the other one.
    let src_len = src.len().min((budget / 2).max(budget.saturating_sub(dst.len())));
    let dst_len = dst.len().min(budget - src_len);
    // Names are ASCII (validated identifiers): any byte is a character boundary. A cut
    // name does not end in a separator, which would read as `--`.
    let cut = |n: &str, len: usize| n[..len].trim_end_matches(['-', '.', '_']).to_string();
    format!("learned-{}-to-{}-{tail}-{hash}", cut(src, src_len), cut(dst, dst_len))
}

/// The running policy with its rules replaced by one allow rule per observation.
///
/// Rule names are unique and at most [`MAX_NAME_LEN`](crate::config::MAX_NAME_LEN)
/// characters, so the policy loads: see [`rule_name`]. Segment names may contain `-` and
/// `to`, so two observations can give the same name (`a-to-b` -> `c` and `a` -> `b-to-c`):
/// the later one (in observation order) gets `-2`, `-3`, ... after its tail.
pub fn learned_policy(running: &PolicySpec, observed: &BTreeSet<Observation>) -> PolicySpec {
    let id = |name: &str| running.segments.iter().position(|s| s.name == name).map(|i| i as SegmentId);
    let mut spec = running.clone();
    spec.default_action = Action::Deny;
    let mut used = HashSet::new();
    spec.rules = observed
        .iter()
        .filter_map(|o| {
            let (src, dst) = (id(&o.src)?, id(&o.dst)?);
            let icmp = matches!(o.protocol, proto::ICMP | proto::ICMPV6);
            let ports = matches!(o.protocol, proto::TCP | proto::UDP | proto::SCTP);
            let suffix = o.port_or_type.map_or(String::new(), |p| format!("-{p}"));
            let tail = format!("{}{suffix}", crate::events::protocol_name(o.protocol));
            let mut name = rule_name(&o.src, &o.dst, &tail);
            let mut n = 2;
            while !used.insert(name.clone()) {
                name = rule_name(&o.src, &o.dst, &format!("{tail}-{n}"));
                n += 1;
            }
            Some(RuleSpec {
                name,
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


#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, MAX_NAME_LEN};

    fn obs(src: &str, dst: &str, protocol: u8, port_or_type: Option<u16>) -> Observation {
        Observation { src: src.into(), dst: dst.into(), protocol, port_or_type }
    }

    /// Long segment names and names that read alike give rule names the real loader
    /// accepts: at most 64 characters, unique, readable.
    #[test]
    fn learned_rule_names_always_load() {
        let long = "s".repeat(MAX_NAME_LEN - 1);
        let running = Config::from_yaml_str(
            "running.yaml",
            &format!(
                "segments:\n  - {{name: checkout-frontend-prod, cidrs: [10.1.0.0/24], mode: discover}}\n\
                 \x20 - {{name: inventory-service-prod, cidrs: [10.2.0.0/24], mode: discover}}\n\
                 \x20 - {{name: a-to-b, cidrs: [10.3.0.0/24]}}\n  - {{name: c, cidrs: [10.4.0.0/24]}}\n\
                 \x20 - {{name: a, cidrs: [10.5.0.0/24]}}\n  - {{name: b-to-c, cidrs: [10.6.0.0/24]}}\n\
                 \x20 - {{name: {long}, cidrs: [10.7.0.0/24]}}\n  - {{name: {long}x, cidrs: [10.8.0.0/24]}}\n"
            ),
        )
        .expect("the running policy loads")
        .policy;
        let observed: BTreeSet<Observation> = [
            obs("checkout-frontend-prod", "inventory-service-prod", proto::TCP, Some(8080)),
            obs("a-to-b", "c", proto::TCP, Some(80)),
            obs("a", "b-to-c", proto::TCP, Some(80)),
            obs(&long, &format!("{long}x"), proto::TCP, Some(443)),
            obs(&long, &format!("{long}x"), proto::TCP, Some(444)),
            obs(&format!("{long}x"), &long, proto::ICMPV6, Some(128)),
            obs(&long, "c", 47, None),
        ]
        .into_iter()
        .collect();
        let spec = learned_policy(&running, &observed);
        assert_eq!(spec.rules.len(), observed.len());
        let loaded = Config::from_yaml_str("learned.yaml", &policy_yaml(&spec)).expect("the learned policy loads");
        let names: Vec<&str> = loaded.policy.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names.iter().collect::<HashSet<_>>().len(), names.len(), "unique: {names:?}");
        assert!(names.iter().all(|n| n.len() <= MAX_NAME_LEN), "{names:?}");
        // 65 characters written out: shortened, with the protocol and port whole.
        let checkout = names.iter().find(|n| n.starts_with("learned-checkout-")).expect("the checkout rule");
        assert!(checkout.contains("-to-inventory-") && checkout.contains("-tcp-8080-"), "{checkout}");
        assert!(names.contains(&"learned-a-to-b-to-c-tcp-80") && names.contains(&"learned-a-to-b-to-c-tcp-80-2"), "{names:?}");
        assert!(names.iter().any(|n| n.contains("-tcp-443-")) && names.iter().any(|n| n.contains("-tcp-444-")), "{names:?}");
        // Short names are left as they were; long ones are the same on every run.
        assert_eq!(rule_name("web", "api", "tcp-8080"), "learned-web-to-api-tcp-8080");
        assert_eq!(spec, learned_policy(&running, &observed));
    }
}
