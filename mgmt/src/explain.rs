//! `bulkhead explain`: what the policy in a file does with one packet, and why.
//!
//! It builds the [`PacketMeta`] the parser would produce for the described packet (a
//! first TCP segment carries SYN) and asks the compiled policy, through the same
//! [`Policy::classify`] the workers use, so the answer is the dataplane's, not a
//! re-implementation's.
//!
//! Exit status: 0 the packet is allowed, 1 it is denied, 2 the file cannot be loaded
//! or the packet description is wrong.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use dataplane::packet::{proto, Fragment, PacketMeta, ETHERTYPE_IPV4, ETHERTYPE_IPV6, L4};
use dataplane::policy::spec::{
    Action, PolicySpec, ProtocolMatch, RuleSpec, SegmentId, SegmentMatch, Unmatched,
};
use dataplane::policy::{Decision, Mode, Policy, Verdict, Why};

use crate::lint::{load_and_compile, EXIT_INVALID};

/// Exit status of `explain` when the packet is allowed.
pub const EXIT_ALLOW: i32 = 0;
/// Exit status of `explain` when the packet is denied.
pub const EXIT_DENY: i32 = 1;

/// TCP SYN flag: `explain` describes the first packet of a flow.
const TCP_SYN: u8 = 0x02;

/// The packet to explain (also the clap arguments of `bulkhead explain`).
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct ExplainArgs {
    /// Policy file (YAML).
    pub file: PathBuf,
    /// Source IP address.
    #[arg(long)]
    pub src: IpAddr,
    /// Destination IP address (same family as --src).
    #[arg(long)]
    pub dst: IpAddr,
    /// IP protocol: tcp, udp, icmp, icmpv6, sctp or a number 0-255.
    #[arg(long)]
    pub proto: String,
    /// Source port (tcp, udp, sctp); 0 if not given.
    #[arg(long)]
    pub sport: Option<u16>,
    /// Destination port (tcp, udp, sctp; required for them).
    #[arg(long)]
    pub dport: Option<u16>,
    /// VLAN id of the packet (the innermost tag); untagged if not given.
    #[arg(long)]
    pub vlan: Option<u16>,
    /// ICMP type (icmp in IPv4) or ICMPv6 type (icmpv6 in IPv6); echo request (8 / 128)
    /// if not given.
    #[arg(long)]
    pub icmp_type: Option<u8>,
    /// ICMP or ICMPv6 code.
    #[arg(long, default_value_t = 0)]
    pub icmp_code: u8,
}

impl ExplainArgs {
    /// A description of a packet with no ports, VLAN or ICMP type given.
    pub fn new(file: impl Into<PathBuf>, src: IpAddr, dst: IpAddr, proto: &str) -> Self {
        Self {
            file: file.into(),
            src,
            dst,
            proto: proto.to_string(),
            sport: None,
            dport: None,
            vlan: None,
            icmp_type: None,
            icmp_code: 0,
        }
    }
}

/// The packet as the parser would describe it, plus notes on assumed values.
pub fn packet_meta(args: &ExplainArgs) -> Result<(PacketMeta, Vec<String>), String> {
    let mut notes = Vec::new();
    let ethertype = match (args.src, args.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => ETHERTYPE_IPV4,
        (IpAddr::V6(_), IpAddr::V6(_)) => ETHERTYPE_IPV6,
        _ => return Err("--src and --dst must both be IPv4 or both be IPv6".to_string()),
    };
    let p = match crate::config::parse_protocol(&args.proto) {
        Some(ProtocolMatch::Number(n)) => n,
        Some(ProtocolMatch::Any) => {
            return Err("--proto any: give the packet's protocol (tcp, udp, icmp, icmpv6, sctp or a number)".to_string())
        }
        None => {
            return Err(format!(
                "--proto {}: unknown protocol (expected tcp, udp, icmp, icmpv6, sctp or a number 0-255)",
                args.proto
            ))
        }
    };
    if let Some(v) = args.vlan {
        if !(1..=4094).contains(&v) {
            return Err(format!("--vlan {v}: VLAN ids are 1-4094"));
        }
    }
    let ported = matches!(p, proto::TCP | proto::UDP | proto::SCTP);
    // The parser reads an ICMP header for protocol 1 in IPv4 and 58 in IPv6 only: ICMPv6
    // in IPv4 (or ICMP in IPv6) is a protocol without ports or types, as on the wire.
    let (family, family_icmp) =
        if ethertype == ETHERTYPE_IPV4 { ("IPv4", proto::ICMP) } else { ("IPv6", proto::ICMPV6) };
    let icmp = p == family_icmp;
    let foreign_icmp = !icmp && matches!(p, proto::ICMP | proto::ICMPV6);
    let pname = crate::config::protocol_name(ProtocolMatch::Number(p));
    if !ported && (args.sport.is_some() || args.dport.is_some()) {
        return Err(format!("--sport/--dport: protocol {pname} has no ports"));
    }
    if foreign_icmp && args.icmp_type.is_some() {
        return Err(format!(
            "--icmp-type: protocol {pname} in {family} has no ICMP header the dataplane reads (icmp is IPv4's, icmpv6 IPv6's)"
        ));
    }
    if !icmp && args.icmp_type.is_some() {
        return Err("--icmp-type: only for protocol icmp (IPv4) or icmpv6 (IPv6)".to_string());
    }
    if foreign_icmp {
        notes.push(format!(
            "{pname} in {family}: no ICMP header is read (the dataplane reads one for icmp in IPv4 and icmpv6 in IPv6 only)"
        ));
    }
    let l4 = if ported {
        let dst = args
            .dport
            .ok_or_else(|| "--dport: required for tcp, udp and sctp".to_string())?;
        let src = args.sport.unwrap_or_else(|| {
            notes.push("source port not given: 0 assumed".to_string());
            0
        });
        L4::Ports { src, dst }
    } else if icmp {
        let ty = args.icmp_type.unwrap_or_else(|| {
            let echo = if ethertype == ETHERTYPE_IPV4 { 8 } else { 128 };
            notes.push(format!(
                "ICMP type not given: {echo} (echo request) assumed"
            ));
            echo
        });
        L4::Icmp {
            ty,
            code: args.icmp_code,
            id: 0,
        }
    } else {
        L4::None
    };
    let meta = PacketMeta {
        outer_vlan: args.vlan,
        inner_vlan: None,
        ethertype,
        addrs: Some((args.src, args.dst)),
        proto: p,
        l4,
        tcp_flags: if p == proto::TCP { TCP_SYN } else { 0 },
        fragment: Fragment::None,
    };
    Ok((meta, notes))
}

/// `bulkhead explain FILE --src IP --dst IP --proto P [...]`: writes a few lines to
/// `out` (the packet, the source and destination segments with the prefixes that put
/// the addresses there, the rule or default that decided, the verdict) and returns
/// [`EXIT_ALLOW`] (0), [`EXIT_DENY`] (1), or [`EXIT_INVALID`] (2) with one error line
/// when the file cannot be loaded or the packet description is wrong.
pub fn explain_command(args: &ExplainArgs, out: &mut dyn Write) -> i32 {
    let (meta, notes) = match packet_meta(args) {
        Ok(x) => x,
        Err(e) => {
            let _ = writeln!(out, "explain: {e}");
            return EXIT_INVALID;
        }
    };
    let (_cfg, policy) = match load_and_compile(&args.file) {
        Ok(x) => x,
        Err(e) => {
            let _ = writeln!(out, "{e}");
            return EXIT_INVALID;
        }
    };
    let decision = policy.classify(&meta);
    for line in explanation(&policy, &meta, &decision, &notes) {
        let _ = writeln!(out, "{line}");
    }
    if decision.verdict.is_allow() {
        EXIT_ALLOW
    } else {
        EXIT_DENY
    }
}

/// The lines `explain` prints for one decision.
pub fn explanation(
    policy: &Policy,
    meta: &PacketMeta,
    d: &Decision,
    notes: &[String],
) -> Vec<String> {
    let spec = policy.spec();
    let mut lines = Vec::new();
    lines.push(format!("packet:      {}", describe_packet(meta)));
    for n in notes {
        lines.push(format!("             ({n})"));
    }
    if let Some((src, dst)) = meta.addrs {
        lines.push(format!(
            "source:      {}",
            describe_address(policy, src, meta.vlan(), d.src_segment)
        ));
        lines.push(format!(
            "destination: {}",
            describe_address(policy, dst, meta.vlan(), d.dst_segment)
        ));
    }
    lines.push(format!("decided by:  {}", describe_why(spec, d)));
    let verdict = match (d.verdict, d.overridden, d.mode) {
        (Verdict::Allow, true, Mode::Monitor) => {
            "ALLOW (monitor mode: the policy denies it; forwarded and reported as a monitor_violation event)".to_string()
        }
        (Verdict::Allow, true, _) => {
            "ALLOW (discover mode: the policy denies it; forwarded and recorded for `bulkhead learn`)".to_string()
        }
        (Verdict::Allow, false, Mode::Discover) => "ALLOW (forwarded; discover mode records it)".to_string(),
        (Verdict::Allow, ..) => "ALLOW (forwarded)".to_string(),
        (Verdict::Deny(reason), ..) => format!("DENY (dropped, counted as {})", reason.name()),
    };
    lines.push(format!(
        "verdict:     {verdict}{}",
        if d.log {
            ", logged as a security event"
        } else {
            ""
        }
    ));
    lines
}

fn describe_packet(m: &PacketMeta) -> String {
    let p = crate::config::protocol_name(ProtocolMatch::Number(m.proto));
    let (src, dst) = match m.addrs {
        Some(a) => a,
        None => return format!("non-IP frame, ethertype {:#06x}", m.ethertype),
    };
    let mut s = match m.l4 {
        L4::Ports { src: sp, dst: dp } => {
            format!("{p} {} -> {}", sock(src, sp), sock(dst, dp))
        }
        L4::Icmp { ty, code, .. } => format!("{p} type {ty} code {code}, {src} -> {dst}"),
        L4::None => format!("protocol {p}, {src} -> {dst}"),
    };
    match m.vlan() {
        Some(v) => s.push_str(&format!(", VLAN {v}")),
        None => s.push_str(", untagged"),
    }
    s
}

fn sock(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(_) => format!("{a}:{port}"),
        IpAddr::V6(_) => format!("[{a}]:{port}"),
    }
}

fn seg_name(spec: &PolicySpec, id: SegmentId) -> String {
    spec.segments
        .get(usize::from(id))
        .map_or_else(|| format!("#{id}"), |s| s.name.clone())
}

fn describe_address(
    policy: &Policy,
    addr: IpAddr,
    vlan: Option<u16>,
    resolved: Option<SegmentId>,
) -> String {
    let spec = policy.spec();
    match policy.segment_of(addr, vlan) {
        Some(id) => {
            let seg = &spec.segments[usize::from(id)];
            // The segment's longest prefix holding the address is the one the lookup chose.
            let prefix = seg
                .cidrs
                .iter()
                .filter(|c| c.contains(&addr))
                .max_by_key(|c| c.prefix_len());
            let via = prefix.map_or_else(String::new, |p| format!(" (prefix {p}"));
            let vlans = if seg.vlans.is_empty() {
                String::new()
            } else {
                format!(", segment restricted to VLANs {:?}", seg.vlans)
            };
            let close = if via.is_empty() { "" } else { ")" };
            format!("{addr} is in segment `{}`{via}{vlans}{close}", seg.name)
        }
        None => match (spec.unmatched, resolved) {
            (Unmatched::Segment(u), _) => format!(
                "{addr} is in no segment's prefixes; `unmatched: {}` puts it in segment `{}`",
                seg_name(spec, u),
                seg_name(spec, u)
            ),
            (Unmatched::Drop, _) => {
                format!("{addr} is in no segment, and `unmatched: drop` drops such packets")
            }
        },
    }
}

fn describe_rule(spec: &PolicySpec, r: &RuleSpec) -> String {
    let side = |m: SegmentMatch| match m {
        SegmentMatch::Any => "any".to_string(),
        SegmentMatch::Segment(id) => seg_name(spec, id),
    };
    let mut s = format!(
        "from {} to {}, protocol {}",
        side(r.from),
        side(r.to),
        crate::config::protocol_name(r.protocol)
    );
    let ranges = |v: &[dataplane::policy::spec::PortRange]| {
        v.iter()
            .map(|p| {
                if p.lo == p.hi {
                    p.lo.to_string()
                } else {
                    format!("{}-{}", p.lo, p.hi)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !r.dst_ports.is_empty() {
        s.push_str(&format!(", ports {}", ranges(&r.dst_ports)));
    }
    if !r.src_ports.is_empty() {
        s.push_str(&format!(", source ports {}", ranges(&r.src_ports)));
    }
    if !r.icmp_types.is_empty() {
        let t: Vec<String> = r.icmp_types.iter().map(u8::to_string).collect();
        s.push_str(&format!(", ICMP types {}", t.join(", ")));
    }
    s
}

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Deny => "deny",
    }
}

fn describe_why(spec: &PolicySpec, d: &Decision) -> String {
    match d.why {
        Why::Rule(id) => match spec.rules.get(id as usize) {
            Some(r) => format!(
                "rule `{}` (rules[{id}]: {}; action {}), the first rule that matches",
                r.name,
                describe_rule(spec, r),
                action_word(r.action)
            ),
            None => format!("rule #{id}"),
        },
        Why::Default => format!(
            "no rule matched; source and destination are in different segments, so `default: {}` applies",
            action_word(spec.default_action)
        ),
        Why::IntraSegmentDefault => format!(
            "no rule matched; source and destination are in the same segment, so `intra_segment: {}` applies",
            action_word(spec.intra_segment_default)
        ),
        Why::UnknownSource => {
            "the source address is in no segment and `unmatched: drop` (checked before rules)".to_string()
        }
        Why::UnknownDestination => {
            "the destination address is in no segment and `unmatched: drop` (checked before rules)".to_string()
        }
        Why::NeighborDiscovery => {
            "ICMPv6 neighbour discovery (types 133-137) passes before any rule (`non_ip.neighbor_discovery: allow`)".to_string()
        }
        Why::NonIp => "a non-IP frame, judged by `non_ip`".to_string(),
    }
}
