//! Raw schema -> validated [`PolicySpec`] and [`ApplianceConfig`].
//!
//! Checks run in file order, so the error reported is the first one a reader would
//! meet; the first error stops validation (the file is refused whole anyway).

use std::collections::HashMap;
use std::net::IpAddr;

use dataplane::conntrack as ct;
use dataplane::packet::proto;
use dataplane::policy::spec::{
    Mode,
    Action, NonIpSpec, PolicySpec, PortRange, ProtocolMatch, RuleSpec, SegmentId, SegmentMatch,
    SegmentSpec, Unmatched,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::error::{FieldError, FieldResult};
use super::schema::{
    RawAppliance, RawConntrack, RawEvents, RawFile, RawManagement, RawNonIp, RawRule, RawSegment, Scalar,
};
use super::{
    ApplianceConfig, DescriptorConfig, Device, EventsConfig, ManagementConfig, MempoolConfig, PortConfig,
    MAX_RULES, MAX_SEGMENTS,
};

/// Names that cannot be segment names: `any` is the wildcard of `from`/`to`, `drop` the
/// other value of `unmatched`.
pub const RESERVED_SEGMENT_NAMES: [&str; 2] = ["any", "drop"];

/// Longest name accepted for segments, rules and ports.
pub const MAX_NAME_LEN: usize = 64;

pub(crate) fn validate(raw: RawFile) -> FieldResult<(PolicySpec, Option<ApplianceConfig>)> {
    let appliance = raw.appliance.map(appliance).transpose()?;
    let raw_segments = raw.segments.ok_or_else(|| {
        FieldError::new(
            "segments",
            "missing: a policy needs a `segments:` list (it may be empty: `segments: []`)",
        )
    })?;
    let segments = segments(raw_segments)?;
    let names: HashMap<&str, SegmentId> = segments
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i as SegmentId))
        .collect();
    let rules = rules(raw.rules.unwrap_or_default(), &names, &segments)?;
    let default_action = match raw.default {
        None => Action::Deny,
        Some(s) => action(&s, "default")?,
    };
    let intra_segment_default = match raw.intra_segment {
        None => Action::Deny,
        Some(s) => action(&s, "intra_segment")?,
    };
    let unmatched = match raw.unmatched {
        None => Unmatched::Drop,
        Some(Scalar::Str(s)) if s == "drop" => Unmatched::Drop,
        Some(s) => {
            let name = name_of(&s, "unmatched", "a segment name or drop")?;
            match names.get(name.as_str()) {
                Some(&id) => Unmatched::Segment(id),
                None => {
                    let choices = match name_list(&segments, false) {
                        l if l.is_empty() => "drop; no segment is defined".to_string(),
                        l => format!("drop or one of: {l}"),
                    };
                    return Err(FieldError::new(
                        "unmatched",
                        format!("segment `{name}` is not defined (expected {choices})"),
                    ));
                }
            }
        }
    };
    let non_ip = non_ip(raw.non_ip)?;
    let spec = PolicySpec {
        segments,
        rules,
        default_action,
        intra_segment_default,
        unmatched,
        non_ip,
    };
    Ok((spec, appliance))
}

// ---------------------------------------------------------------------------------
// Scalars

/// An integer in `lo..=hi`. Accepts YAML integers and strings holding a decimal or
/// `0x` hexadecimal integer (so `"0x88cc"` works as well as `0x88cc`).
fn int(s: &Scalar, path: &str, what: &str, lo: i128, hi: i128) -> FieldResult<i128> {
    let v = match s {
        Scalar::Int(i) => *i,
        Scalar::Str(t) => parse_int_str(t).ok_or_else(|| {
            FieldError::new(
                path,
                format!("expected {what} (an integer), found {}", s.describe()),
            )
        })?,
        other => {
            return Err(FieldError::new(
                path,
                format!("expected {what} (an integer), found {}", other.describe()),
            ))
        }
    };
    if v < lo || v > hi {
        return Err(FieldError::new(
            path,
            format!("{what} {v} is out of range {lo}-{hi}"),
        ));
    }
    Ok(v)
}

fn parse_int_str(t: &str) -> Option<i128> {
    let t = t.trim();
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i128::from_str_radix(hex, 16).ok()
    } else if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        // Digits only: also catches values too large for i128 (None).
        t.parse().ok()
    } else {
        None
    }
}

fn boolean(s: &Scalar, path: &str) -> FieldResult<bool> {
    match s {
        Scalar::Bool(b) => Ok(*b),
        other => Err(FieldError::new(
            path,
            format!("expected true or false, found {}", other.describe()),
        )),
    }
}

fn action(s: &Scalar, path: &str) -> FieldResult<Action> {
    match s {
        Scalar::Str(t) if t == "allow" => Ok(Action::Allow),
        Scalar::Str(t) if t == "deny" => Ok(Action::Deny),
        Scalar::Str(t) => Err(FieldError::new(
            path,
            format!("unknown action `{t}` (expected allow or deny)"),
        )),
        other => Err(FieldError::new(
            path,
            format!("expected allow or deny, found {}", other.describe()),
        )),
    }
}

/// A name as written: strings, and integers read as their digits.
fn name_of(s: &Scalar, path: &str, what: &str) -> FieldResult<String> {
    match s {
        Scalar::Str(t) => Ok(t.clone()),
        Scalar::Int(i) => Ok(i.to_string()),
        other => Err(FieldError::new(
            path,
            format!("expected {what}, found {}", other.describe()),
        )),
    }
}

/// A name for a segment, rule or port: 1-64 characters of letters, digits, `_`, `-`, `.`,
/// starting with a letter or digit. They appear in counters, metrics labels and events.
fn identifier(s: &Scalar, path: &str, what: &str) -> FieldResult<String> {
    let n = name_of(s, path, what)?;
    if n.is_empty() {
        return Err(FieldError::new(path, format!("{what} is empty")));
    }
    if n.len() > MAX_NAME_LEN {
        return Err(FieldError::new(
            path,
            format!(
                "{what} is {} characters long, at most {MAX_NAME_LEN} allowed",
                n.len()
            ),
        ));
    }
    let first_ok = n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let all_ok = n
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !first_ok || !all_ok {
        return Err(FieldError::new(
            path,
            format!(
                "{what} {n:?} is not allowed: use letters, digits, '_', '-' and '.', starting with a letter or digit"
            ),
        ));
    }
    Ok(n)
}

/// The segment names an error offers (the first few); `any` first where it is valid
/// (`from`, `to`), not where it is not (`unmatched`).
fn name_list(segments: &[SegmentSpec], with_any: bool) -> String {
    const SHOWN: usize = 8;
    let mut names: Vec<&str> = segments
        .iter()
        .take(SHOWN)
        .map(|s| s.name.as_str())
        .collect();
    if segments.len() > SHOWN {
        names.push("...");
    }
    let mut l = if with_any { vec!["any"] } else { Vec::new() };
    l.extend(names);
    l.join(", ")
}

// ---------------------------------------------------------------------------------
// Segments

fn segments(raw: Vec<RawSegment>) -> FieldResult<Vec<SegmentSpec>> {
    if raw.len() > MAX_SEGMENTS {
        return Err(FieldError::new(
            "segments",
            format!(
                "{} segments, at most {MAX_SEGMENTS} are supported",
                raw.len()
            ),
        ));
    }
    let mut out: Vec<SegmentSpec> = Vec::with_capacity(raw.len());
    let mut by_name: HashMap<String, usize> = HashMap::new();
    // prefix -> (segment index, cidr index) of every earlier occurrence
    let mut by_prefix: HashMap<IpNet, Vec<(usize, usize)>> = HashMap::new();
    for (i, seg) in raw.into_iter().enumerate() {
        let base = format!("segments[{i}]");
        let name_path = format!("{base}.name");
        let name = identifier(&seg.name, &name_path, "segment name")?;
        if RESERVED_SEGMENT_NAMES.contains(&name.as_str()) {
            return Err(FieldError::new(
                name_path,
                format!(
                    "`{name}` is reserved and cannot name a segment (`any` matches every segment in rules, `drop` is a value of `unmatched`)"
                ),
            ));
        }
        if let Some(&j) = by_name.get(&name) {
            return Err(FieldError::new(
                name_path,
                format!("duplicate segment name `{name}` (also segments[{j}])"),
            ));
        }
        by_name.insert(name.clone(), i);

        let mut vlans: Vec<u16> = Vec::new();
        if let Some(raw_vlans) = seg.vlans {
            if raw_vlans.is_empty() {
                return Err(FieldError::new(
                    format!("{base}.vlans"),
                    "empty list: leave `vlans` out to apply the segment to every VLAN and to untagged frames",
                ));
            }
            for (k, v) in raw_vlans.iter().enumerate() {
                let p = format!("{base}.vlans[{k}]");
                let id = int(v, &p, "VLAN id", 1, 4094)? as u16;
                if let Some(first) = vlans.iter().position(|&x| x == id) {
                    return Err(FieldError::new(
                        p,
                        format!("VLAN {id} is listed twice (also {base}.vlans[{first}])"),
                    ));
                }
                vlans.push(id);
            }
        }

        let mut cidrs: Vec<IpNet> = Vec::new();
        for (k, c) in seg.cidrs.unwrap_or_default().iter().enumerate() {
            let p = format!("{base}.cidrs[{k}]");
            let net = cidr(c, &p)?;
            if let Some(first) = cidrs.iter().position(|&x| x == net) {
                return Err(FieldError::new(
                    p,
                    format!("{net} is listed twice in this segment (also {base}.cidrs[{first}])"),
                ));
            }
            if let Some(earlier) = by_prefix.get(&net) {
                for &(j, jk) in earlier {
                    let other: &SegmentSpec = &out[j];
                    if let Some(why) = vlan_overlap(&other.vlans, &vlans) {
                        return Err(FieldError::new(
                            p,
                            format!(
                                "{net} is already in segment `{}` (segments[{j}].cidrs[{jk}]) and {why}; a prefix may be in two segments only when their VLAN lists are disjoint",
                                other.name
                            ),
                        ));
                    }
                }
            }
            by_prefix.entry(net).or_default().push((i, k));
            cidrs.push(net);
        }
        let mode = match &seg.mode {
            None => Mode::Protect,
            Some(m) => {
                let p = format!("{base}.mode");
                match name_of(m, &p, "a mode")?.as_str() {
                    "protect" => Mode::Protect,
                    "monitor" => Mode::Monitor,
                    "discover" => Mode::Discover,
                    other => {
                        return Err(FieldError::new(p, format!("unknown mode `{other}` (expected protect, monitor or discover)")))
                    }
                }
            }
        };
        out.push(SegmentSpec { name, cidrs, vlans, mode });
    }
    Ok(out)
}

/// Why two VLAN restrictions overlap, or None when they are disjoint.
fn vlan_overlap(a: &[u16], b: &[u16]) -> Option<String> {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Some("both segments apply to every VLAN".to_string()),
        (true, false) | (false, true) => {
            Some("one of the two segments applies to every VLAN".to_string())
        }
        (false, false) => a
            .iter()
            .find(|v| b.contains(v))
            .map(|v| format!("both segments apply to VLAN {v}")),
    }
}

/// A CIDR: `10.1.0.0/24`, `fd00:1::/64`, or a bare address (a /32 or /128 host).
fn cidr(s: &Scalar, path: &str) -> FieldResult<IpNet> {
    let t = match s {
        Scalar::Str(t) => t.trim(),
        other => {
            return Err(FieldError::new(
                path,
                format!(
                    "expected a CIDR such as 10.1.0.0/24 or \"fd00:1::/64\", found {}",
                    other.describe()
                ),
            ))
        }
    };
    let (addr_s, len_s) = match t.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (t, None),
    };
    let addr: IpAddr = addr_s.parse().map_err(|_| {
        FieldError::new(
            path,
            format!("`{t}` is not a CIDR: `{addr_s}` is not an IPv4 or IPv6 address"),
        )
    })?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
    let len: u8 = match len_s {
        None => max,
        Some(l) => {
            let n: u32 = l
                .parse()
                .ok()
                .filter(|_| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    FieldError::new(
                        path,
                        format!("`{t}` is not a CIDR: prefix length `/{l}` is not a number"),
                    )
                })?;
            if n > u32::from(max) {
                return Err(FieldError::new(
                    path,
                    format!("`{t}`: prefix length /{n} is too long for {family} (at most /{max})"),
                ));
            }
            n as u8
        }
    };
    let net = match addr {
        IpAddr::V4(a) => IpNet::V4(Ipv4Net::new(a, len).map_err(|_| prefix_err(path, t))?),
        IpAddr::V6(a) => IpNet::V6(Ipv6Net::new(a, len).map_err(|_| prefix_err(path, t))?),
    };
    let trunc = net.trunc();
    if trunc.addr() != addr {
        let host_bits = match (addr, net.hostmask()) {
            (IpAddr::V4(a), IpAddr::V4(m)) => IpAddr::V4((u32::from(a) & u32::from(m)).into()),
            (IpAddr::V6(a), IpAddr::V6(m)) => IpAddr::V6((u128::from(a) & u128::from(m)).into()),
            _ => addr,
        };
        return Err(FieldError::new(
            path,
            format!(
                "`{t}` has host bits set ({host_bits} beyond the /{len} prefix); the network is {trunc}"
            ),
        ));
    }
    Ok(trunc)
}

fn prefix_err(path: &str, t: &str) -> FieldError {
    FieldError::new(path, format!("`{t}` is not a CIDR: bad prefix length"))
}

// ---------------------------------------------------------------------------------
// Rules

fn rules(
    raw: Vec<RawRule>,
    names: &HashMap<&str, SegmentId>,
    segments: &[SegmentSpec],
) -> FieldResult<Vec<RuleSpec>> {
    if raw.len() > MAX_RULES {
        return Err(FieldError::new(
            "rules",
            format!("{} rules, at most {MAX_RULES} are supported", raw.len()),
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut by_name: HashMap<String, usize> = HashMap::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let base = format!("rules[{i}]");
        let name_path = format!("{base}.name");
        let name = identifier(&r.name, &name_path, "rule name")?;
        if let Some(&j) = by_name.get(&name) {
            return Err(FieldError::new(
                name_path,
                format!("duplicate rule name `{name}` (also rules[{j}])"),
            ));
        }
        by_name.insert(name.clone(), i);
        let from = segment_ref(&r.from, &format!("{base}.from"), names, segments)?;
        let to = segment_ref(&r.to, &format!("{base}.to"), names, segments)?;
        let protocol = match &r.protocol {
            None => ProtocolMatch::Any,
            Some(p) => protocol(p, &format!("{base}.protocol"))?,
        };
        let dst_ports = port_list(r.ports.as_deref(), &base, "ports", protocol)?;
        let src_ports = port_list(r.source_ports.as_deref(), &base, "source_ports", protocol)?;
        let icmp_types = match r.icmp_types.as_deref() {
            None => Vec::new(),
            Some(list) => {
                let p = format!("{base}.icmp_types");
                if !matches!(
                    protocol,
                    ProtocolMatch::Number(proto::ICMP) | ProtocolMatch::Number(proto::ICMPV6)
                ) {
                    return Err(FieldError::new(
                        p,
                        format!(
                            "icmp_types need protocol icmp or icmpv6, and this rule's protocol is {}",
                            protocol_name(protocol)
                        ),
                    ));
                }
                if list.is_empty() {
                    return Err(FieldError::new(
                        p,
                        "empty list matches nothing: leave `icmp_types` out to match every type",
                    ));
                }
                let mut v: Vec<u8> = Vec::with_capacity(list.len());
                for (k, t) in list.iter().enumerate() {
                    let tp = format!("{p}[{k}]");
                    let ty = int(t, &tp, "ICMP type", 0, 255)? as u8;
                    if let Some(first) = v.iter().position(|&x| x == ty) {
                        return Err(FieldError::new(
                            tp,
                            format!("ICMP type {ty} is listed twice (also {p}[{first}])"),
                        ));
                    }
                    v.push(ty);
                }
                v
            }
        };
        let action = action(&r.action, &format!("{base}.action"))?;
        let log = match &r.log {
            None => false,
            Some(l) => boolean(l, &format!("{base}.log"))?,
        };
        out.push(RuleSpec {
            name,
            from,
            to,
            protocol,
            dst_ports,
            src_ports,
            icmp_types,
            action,
            log,
        });
    }
    Ok(out)
}

fn segment_ref(
    s: &Scalar,
    path: &str,
    names: &HashMap<&str, SegmentId>,
    segments: &[SegmentSpec],
) -> FieldResult<SegmentMatch> {
    let n = name_of(s, path, "a segment name or any")?;
    if n == "any" {
        return Ok(SegmentMatch::Any);
    }
    names
        .get(n.as_str())
        .map(|&id| SegmentMatch::Segment(id))
        .ok_or_else(|| {
            FieldError::new(
                path,
                format!(
                    "segment `{n}` is not defined (expected one of: {})",
                    name_list(segments, true)
                ),
            )
        })
}

/// Protocol names and their numbers.
pub const PROTOCOL_NAMES: [(&str, u8); 5] = [
    ("tcp", proto::TCP),
    ("udp", proto::UDP),
    ("icmp", proto::ICMP),
    ("icmpv6", proto::ICMPV6),
    ("sctp", proto::SCTP),
];

/// `tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, `any`, or a number 0-255.
pub fn parse_protocol(t: &str) -> Option<ProtocolMatch> {
    if t == "any" {
        return Some(ProtocolMatch::Any);
    }
    if let Some(&(_, n)) = PROTOCOL_NAMES.iter().find(|(name, _)| *name == t) {
        return Some(ProtocolMatch::Number(n));
    }
    parse_int_str(t)
        .and_then(|n| u8::try_from(n).ok())
        .map(ProtocolMatch::Number)
}

/// How a protocol reads in messages: its name, or its number.
pub fn protocol_name(p: ProtocolMatch) -> String {
    match p {
        ProtocolMatch::Any => "any".to_string(),
        ProtocolMatch::Number(n) => PROTOCOL_NAMES
            .iter()
            .find(|(_, x)| *x == n)
            .map_or_else(|| n.to_string(), |(name, _)| name.to_string()),
    }
}

fn protocol(s: &Scalar, path: &str) -> FieldResult<ProtocolMatch> {
    match s {
        Scalar::Int(_) => Ok(ProtocolMatch::Number(int(s, path, "protocol number", 0, 255)? as u8)),
        Scalar::Str(t) => parse_protocol(t).ok_or_else(|| {
            if parse_int_str(t).is_some() {
                FieldError::new(path, format!("protocol number {t} is out of range 0-255"))
            } else {
                FieldError::new(
                    path,
                    format!(
                        "unknown protocol `{t}` (expected tcp, udp, icmp, icmpv6, sctp, any or a number 0-255)"
                    ),
                )
            }
        }),
        other => Err(FieldError::new(
            path,
            format!(
                "expected a protocol (tcp, udp, icmp, icmpv6, sctp, any or a number 0-255), found {}",
                other.describe()
            ),
        )),
    }
}

/// Whether packets of this protocol carry ports the dataplane reads.
pub fn has_ports(p: ProtocolMatch) -> bool {
    matches!(
        p,
        ProtocolMatch::Number(proto::TCP | proto::UDP | proto::SCTP)
    )
}

fn port_list(
    list: Option<&[Scalar]>,
    base: &str,
    key: &str,
    protocol: ProtocolMatch,
) -> FieldResult<Vec<PortRange>> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let p = format!("{base}.{key}");
    if !has_ports(protocol) {
        return Err(FieldError::new(
            p,
            format!(
                "{key} need protocol tcp, udp or sctp, and this rule's protocol is {}{}",
                protocol_name(protocol),
                if protocol == ProtocolMatch::Any {
                    " (say which protocol the ports are for)"
                } else {
                    ", which has no ports"
                }
            ),
        ));
    }
    if list.is_empty() {
        return Err(FieldError::new(
            p,
            format!("empty list matches nothing: leave `{key}` out to match every port"),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(k, s)| port_range(s, &format!("{p}[{k}]")))
        .collect()
}

/// `8080`, `"8080"` or `"9000-9100"`.
fn port_range(s: &Scalar, path: &str) -> FieldResult<PortRange> {
    const MAX: i128 = 65535;
    let bad = || {
        FieldError::new(
            path,
            format!(
                "expected a port (0-65535) or a range such as \"9000-9100\", found {}",
                s.describe()
            ),
        )
    };
    let one = |v: i128| -> FieldResult<u16> {
        if (0..=MAX).contains(&v) {
            Ok(v as u16)
        } else {
            Err(FieldError::new(
                path,
                format!("port {v} is out of range 0-65535"),
            ))
        }
    };
    match s {
        Scalar::Int(v) => {
            let p = one(*v)?;
            Ok(PortRange { lo: p, hi: p })
        }
        Scalar::Str(t) => {
            let t = t.trim();
            let (lo_s, hi_s) = t.split_once('-').unwrap_or((t, t));
            let digits = |x: &str| {
                let x = x.trim();
                if !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()) {
                    // More digits than fit are out of range all the same.
                    Some(x.parse::<i128>().unwrap_or(i128::MAX))
                } else {
                    None
                }
            };
            let (lo, hi) = match (digits(lo_s), digits(hi_s)) {
                (Some(lo), Some(hi)) => (one(lo)?, one(hi)?),
                _ => return Err(bad()),
            };
            if lo > hi {
                return Err(FieldError::new(
                    path,
                    format!("port range {lo}-{hi} is inverted (the first port is above the last)"),
                ));
            }
            Ok(PortRange { lo, hi })
        }
        _ => Err(bad()),
    }
}

// ---------------------------------------------------------------------------------
// Non-IP

/// Ethertypes that cannot be listed in `non_ip.ethertypes`, and why.
const RESERVED_ETHERTYPES: [(u16, &str); 5] = [
    (0x0800, "IPv4, which the policy always classifies"),
    (0x86dd, "IPv6, which the policy always classifies"),
    (0x0806, "ARP: use `non_ip.arp`"),
    (0x8100, "an 802.1Q VLAN tag, which the parser reads through"),
    (
        0x88a8,
        "an 802.1ad QinQ tag, which the parser reads through",
    ),
];

fn non_ip(raw: Option<RawNonIp>) -> FieldResult<NonIpSpec> {
    let Some(raw) = raw else {
        return Ok(NonIpSpec {
            allow_arp: true,
            allow_neighbor_discovery: true,
            allow_llc: false,
            allowed_ethertypes: Vec::new(),
        });
    };
    let allow = |s: &Option<Scalar>, path: &str| -> FieldResult<bool> {
        match s {
            None => Ok(true),
            Some(s) => Ok(action(s, path)? == Action::Allow),
        }
    };
    let allow_arp = allow(&raw.arp, "non_ip.arp")?;
    let allow_neighbor_discovery = allow(&raw.neighbor_discovery, "non_ip.neighbor_discovery")?;
    // 802.3 frames are off unless asked for: they are rare on container networks.
    let allow_llc = match &raw.llc {
        None => false,
        Some(s) => action(s, "non_ip.llc")? == Action::Allow,
    };
    let mut allowed_ethertypes: Vec<u16> = Vec::new();
    for (k, e) in raw.ethertypes.unwrap_or_default().iter().enumerate() {
        let p = format!("non_ip.ethertypes[{k}]");
        let v = int(e, &p, "ethertype", 0, 0xffff).map_err(|mut err| {
            if err.message.contains("out of range") {
                err.message = format!("{} (0x0600-0xffff)", err.message);
            }
            err
        })? as u16;
        if v < 0x0600 {
            return Err(FieldError::new(
                p,
                format!(
                    "{v:#06x} is an 802.3 length, not an ethertype (ethertypes are 0x0600-0xffff)"
                ),
            ));
        }
        if let Some((_, why)) = RESERVED_ETHERTYPES.iter().find(|(x, _)| *x == v) {
            return Err(FieldError::new(
                p,
                format!("ethertype {v:#06x} is {why}; it cannot be listed here"),
            ));
        }
        if let Some(first) = allowed_ethertypes.iter().position(|&x| x == v) {
            return Err(FieldError::new(
                p,
                format!("ethertype {v:#06x} is listed twice (also non_ip.ethertypes[{first}])"),
            ));
        }
        allowed_ethertypes.push(v);
    }
    Ok(NonIpSpec {
        allow_arp,
        allow_neighbor_discovery,
        allow_llc,
        allowed_ethertypes,
    })
}

// ---------------------------------------------------------------------------------
// Appliance

/// Highest lcore id accepted (DPDK's RTE_MAX_LCORE is 128 by default; builds may raise it).
const MAX_LCORE: i128 = 1023;
/// DPDK's RTE_MEMPOOL_CACHE_MAX_SIZE.
const MEMPOOL_CACHE_MAX: u32 = 512;

fn appliance(raw: RawAppliance) -> FieldResult<ApplianceConfig> {
    let raw_ports = raw.ports.unwrap_or_default();
    if raw_ports.is_empty() {
        return Err(FieldError::new(
            "appliance.ports",
            "missing or empty: the appliance needs at least two ports, joined in a pair",
        ));
    }
    let mut ports: Vec<PortConfig> = Vec::with_capacity(raw_ports.len());
    for (i, p) in raw_ports.iter().enumerate() {
        let base = format!("appliance.ports[{i}]");
        let name = identifier(&p.name, &format!("{base}.name"), "port name")?;
        if let Some(j) = ports.iter().position(|x| x.name == name) {
            return Err(FieldError::new(
                format!("{base}.name"),
                format!("duplicate port name `{name}` (also appliance.ports[{j}])"),
            ));
        }
        let device = device(&p.device, &format!("{base}.device"))?;
        if let Some(j) = ports.iter().position(|x| x.device == device) {
            return Err(FieldError::new(
                format!("{base}.device"),
                format!(
                    "device `{}` is already port `{}` (appliance.ports[{j}])",
                    device.as_str(),
                    ports[j].name
                ),
            ));
        }
        ports.push(PortConfig { name, device });
    }

    let mut pairs: Vec<[usize; 2]> = Vec::new();
    // port index -> pair index
    let mut paired: HashMap<usize, usize> = HashMap::new();
    for (i, pair) in raw.pairs.unwrap_or_default().iter().enumerate() {
        let base = format!("appliance.pairs[{i}]");
        if pair.len() != 2 {
            return Err(FieldError::new(
                base,
                format!(
                    "a pair names exactly two ports, this one names {}",
                    pair.len()
                ),
            ));
        }
        let mut idx = [0usize; 2];
        for (k, s) in pair.iter().enumerate() {
            let p = format!("{base}[{k}]");
            let n = name_of(s, &p, "a port name")?;
            let Some(pi) = ports.iter().position(|x| x.name == n) else {
                let known: Vec<&str> = ports.iter().map(|x| x.name.as_str()).collect();
                return Err(FieldError::new(
                    p,
                    format!(
                        "port `{n}` is not defined in appliance.ports (ports: {})",
                        known.join(", ")
                    ),
                ));
            };
            if let Some(&other) = paired.get(&pi) {
                return Err(FieldError::new(
                    p,
                    format!(
                        "port `{n}` is already in appliance.pairs[{other}]; a port is in one pair"
                    ),
                ));
            }
            if k == 1 && idx[0] == pi {
                return Err(FieldError::new(
                    p,
                    format!("port `{n}` is paired with itself"),
                ));
            }
            idx[k] = pi;
        }
        paired.insert(idx[0], i);
        paired.insert(idx[1], i);
        pairs.push(idx);
    }
    if let Some((i, p)) = ports
        .iter()
        .enumerate()
        .find(|(i, _)| !paired.contains_key(i))
    {
        return Err(FieldError::new(
            format!("appliance.ports[{i}]"),
            format!(
                "port `{}` is in no pair; every port must be in one of appliance.pairs",
                p.name
            ),
        ));
    }

    let raw_workers = raw.workers.unwrap_or_default();
    if raw_workers.is_empty() {
        return Err(FieldError::new(
            "appliance.workers",
            "missing or empty: list the lcore ids that run workers, e.g. [1]",
        ));
    }
    let mut workers: Vec<u32> = Vec::with_capacity(raw_workers.len());
    for (i, w) in raw_workers.iter().enumerate() {
        let p = format!("appliance.workers[{i}]");
        let core = int(w, &p, "lcore id", 0, MAX_LCORE)? as u32;
        if let Some(j) = workers.iter().position(|&x| x == core) {
            return Err(FieldError::new(
                p,
                format!("lcore {core} is listed twice (also appliance.workers[{j}])"),
            ));
        }
        workers.push(core);
    }
    let management_core = match &raw.management_core {
        None => None,
        Some(s) => {
            let p = "appliance.management_core";
            let core = int(s, p, "lcore id", 0, MAX_LCORE)? as u32;
            if let Some(j) = workers.iter().position(|&x| x == core) {
                return Err(FieldError::new(
                    p,
                    format!(
                        "core {core} is also a worker (appliance.workers[{j}]); workers poll without pause and must have their core to themselves"
                    ),
                ));
            }
            Some(core)
        }
    };

    let (mbufs, cache) = match &raw.mempool {
        None => (8191, 256),
        Some(m) => (
            match &m.mbufs {
                None => 8191,
                Some(s) => int(
                    s,
                    "appliance.mempool.mbufs",
                    "mbuf count",
                    0,
                    i128::from(u32::MAX),
                )? as u32,
            },
            match &m.cache {
                None => 256,
                Some(s) => int(
                    s,
                    "appliance.mempool.cache",
                    "mempool cache size",
                    0,
                    i128::from(MEMPOOL_CACHE_MAX),
                )? as u32,
            },
        ),
    };
    if mbufs == 0 {
        return Err(FieldError::new(
            "appliance.mempool.mbufs",
            "a mempool of 0 mbufs cannot receive anything (default 8191)",
        ));
    }
    if u64::from(cache) * 3 / 2 > u64::from(mbufs) {
        return Err(FieldError::new(
            "appliance.mempool.cache",
            format!(
                "cache {cache} is too large for {mbufs} mbufs (DPDK needs cache * 1.5 <= mbufs)"
            ),
        ));
    }

    let ring = |s: &Option<Scalar>, path: &str| -> FieldResult<u16> {
        match s {
            None => Ok(1024),
            Some(s) => {
                let v = int(s, path, "descriptor count", 1, 32768)?;
                if v.count_ones() != 1 {
                    return Err(FieldError::new(
                        path,
                        format!(
                            "descriptor count {v} is not a power of two (e.g. 512, 1024, 2048)"
                        ),
                    ));
                }
                Ok(v as u16)
            }
        }
    };
    let descriptors = match &raw.descriptors {
        None => DescriptorConfig { rx: 1024, tx: 1024 },
        Some(d) => DescriptorConfig {
            rx: ring(&d.rx, "appliance.descriptors.rx")?,
            tx: ring(&d.tx, "appliance.descriptors.tx")?,
        },
    };
    let hugepages = match &raw.hugepages {
        None => true,
        Some(s) => boolean(s, "appliance.hugepages")?,
    };
    let memory_mb = match &raw.memory_mb {
        None => 0,
        Some(s) => int(s, "appliance.memory_mb", "memory in MiB", 0, 1 << 24)? as u32,
    };
    let mut eal_args = Vec::new();
    for (i, a) in raw.eal_args.unwrap_or_default().iter().enumerate() {
        let p = format!("appliance.eal_args[{i}]");
        eal_args.push(match a {
            Scalar::Str(t) => t.clone(),
            Scalar::Int(n) => n.to_string(),
            other => {
                return Err(FieldError::new(
                    p,
                    format!(
                        "expected an EAL argument (a string), found {}",
                        other.describe()
                    ),
                ))
            }
        });
    }
    let conntrack = conntrack(raw.conntrack)?;
    let management = management(raw.management)?;
    let events = events(raw.events)?;
    Ok(ApplianceConfig {
        ports,
        pairs,
        workers,
        management_core,
        mempool: MempoolConfig { mbufs, cache },
        descriptors,
        hugepages,
        memory_mb,
        eal_args,
        conntrack,
        management,
        events,
    })
}

/// A string value, or `off`.
fn string_or_off(s: &Scalar, path: &str, what: &str) -> FieldResult<Option<String>> {
    let t = name_of(s, path, what)?;
    Ok(if t == "off" { None } else { Some(t) })
}

fn management(raw: Option<RawManagement>) -> FieldResult<ManagementConfig> {
    let mut m = ManagementConfig {
        metrics: crate::export::http::parse_addr(crate::export::http::DEFAULT_ADDR).ok(),
        control_socket: Some(crate::control::default_socket_path()),
        watch: true,
    };
    let Some(raw) = raw else { return Ok(m) };
    if let Some(s) = &raw.metrics {
        let p = "appliance.management.metrics";
        m.metrics = match string_or_off(s, p, "an address such as 127.0.0.1:9464, or off")? {
            None => None,
            Some(t) => Some(t.parse().map_err(|_| {
                FieldError::new(p, format!("`{t}` is not an address:port such as 127.0.0.1:9464 (or off)"))
            })?),
        };
    }
    if let Some(s) = &raw.control_socket {
        let p = "appliance.management.control_socket";
        m.control_socket = string_or_off(s, p, "a socket path, or off")?.map(std::path::PathBuf::from);
    }
    if let Some(s) = &raw.watch {
        m.watch = boolean(s, "appliance.management.watch")?;
    }
    Ok(m)
}

fn events(raw: Option<RawEvents>) -> FieldResult<EventsConfig> {
    use crate::events::{AggregatorConfig, Facility, Format, SinkConfig, SyslogMessage, SyslogOptions, Target};
    let mut aggregator = AggregatorConfig::default();
    let Some(raw) = raw else { return Ok(EventsConfig { sinks: Vec::new(), aggregator }) };
    if let Some(s) = &raw.rate_per_sec {
        aggregator.rate_per_sec = int(s, "appliance.events.rate_per_sec", "events per second", 1, 1_000_000)? as f64;
    }
    if let Some(s) = &raw.burst {
        aggregator.burst = int(s, "appliance.events.burst", "burst size", 1, 1_000_000)? as u32;
    }
    if let Some(s) = &raw.window_ms {
        let ms = int(s, "appliance.events.window_ms", "window in milliseconds", 10, 3_600_000)?;
        aggregator.window = std::time::Duration::from_millis(ms as u64);
    }
    let mut sinks = Vec::new();
    for (i, r) in raw.sinks.unwrap_or_default().iter().enumerate() {
        let base = format!("appliance.events.sinks[{i}]");
        let kind = name_of(&r.kind, &format!("{base}.type"), "a sink type")?;
        // Strict loading: a key another sink type takes is refused, not ignored.
        let applies: &[&str] = match kind.as_str() {
            "stdout" => &["type", "format"],
            "file" => &["type", "path", "format"],
            "syslog" => &["type", "address", "transport", "format", "facility"],
            _ => &["type", "path", "address", "transport", "format", "facility"],
        };
        let given = [("path", &r.path), ("transport", &r.transport), ("address", &r.address), ("facility", &r.facility)];
        if let Some((key, _)) = given.iter().find(|(k, v)| v.is_some() && !applies.contains(k)) {
            return Err(FieldError::new(
                format!("{base}.{key}"),
                format!("`{key}` does not apply to a {kind} sink (its keys: {})", applies.join(", ")),
            ));
        }
        let word = |s: &Option<Scalar>, key: &str, default: &str| -> FieldResult<String> {
            match s {
                None => Ok(default.to_string()),
                Some(s) => name_of(s, &format!("{base}.{key}"), "a word"),
            }
        };
        let (target, format) = match kind.as_str() {
            "stdout" | "file" => {
                let target = if kind == "stdout" {
                    Target::Stdout
                } else {
                    let path = r.path.as_ref().ok_or_else(|| FieldError::new(format!("{base}.path"), "a file sink needs `path`"))?;
                    Target::File(name_of(path, &format!("{base}.path"), "a file path")?.into())
                };
                let format = match word(&r.format, "format", "json")?.as_str() {
                    "json" => Format::Json,
                    "cef" => Format::Cef,
                    other => return Err(FieldError::new(format!("{base}.format"), format!("unknown format `{other}` (expected json or cef)"))),
                };
                (target, format)
            }
            "syslog" => {
                let addr_s = r.address.as_ref().ok_or_else(|| FieldError::new(format!("{base}.address"), "a syslog sink needs `address`, an IP:PORT (e.g. 127.0.0.1:514)"))?;
                let a = name_of(addr_s, &format!("{base}.address"), "an address")?;
                let addr: std::net::SocketAddr = a.parse().map_err(|_| FieldError::new(format!("{base}.address"), format!("`{a}` is not an IP:PORT address such as 192.0.2.10:514 or [2001:db8::10]:514 (host names are not resolved)")))?;
                let target = match word(&r.transport, "transport", "udp")?.as_str() {
                    "udp" => Target::SyslogUdp(addr),
                    "tcp" => Target::SyslogTcp(addr),
                    other => return Err(FieldError::new(format!("{base}.transport"), format!("unknown transport `{other}` (expected udp or tcp)"))),
                };
                let message = match word(&r.format, "format", "cef")?.as_str() {
                    "cef" => SyslogMessage::Cef,
                    "text" => SyslogMessage::Text,
                    other => return Err(FieldError::new(format!("{base}.format"), format!("unknown syslog message format `{other}` (expected cef or text)"))),
                };
                let mut opts = SyslogOptions { message, ..SyslogOptions::default() };
                if let Some(f) = &r.facility {
                    let f = name_of(f, &format!("{base}.facility"), "a facility")?;
                    opts.facility = Facility::from_name(&f).map_err(|e| FieldError::new(format!("{base}.facility"), e))?;
                }
                (target, Format::Syslog(opts))
            }
            other => {
                return Err(FieldError::new(format!("{base}.type"), format!("unknown sink type `{other}` (expected stdout, file or syslog)")))
            }
        };
        sinks.push(SinkConfig { target, format, capacity: 4096 });
    }
    Ok(EventsConfig { sinks, aggregator })
}

/// Most flows per worker the config accepts (about 74 bytes each).
const MAX_FLOWS: i128 = 1 << 28;

/// `appliance.conntrack`: `None` when disabled (stateless: every packet classified).
fn conntrack(raw: Option<RawConntrack>) -> FieldResult<Option<ct::Config>> {
    let mut cfg = ct::Config::default();
    let Some(raw) = raw else { return Ok(Some(cfg)) };
    if let Some(s) = &raw.enabled {
        if !boolean(s, "appliance.conntrack.enabled")? {
            return Ok(None);
        }
    }
    if let Some(s) = &raw.capacity {
        cfg.capacity = int(s, "appliance.conntrack.capacity", "flow count", 16, MAX_FLOWS)? as usize;
    }
    if let Some(s) = &raw.fragments {
        cfg.fragment_capacity = int(s, "appliance.conntrack.fragments", "fragment-table size", 16, 1 << 20)? as usize;
    }
    let word = |s: &Option<Scalar>, path: &str, choices: &[&str]| -> FieldResult<Option<usize>> {
        let Some(s) = s else { return Ok(None) };
        let t = name_of(s, path, "a word")?;
        match choices.iter().position(|c| *c == t) {
            Some(i) => Ok(Some(i)),
            None => Err(FieldError::new(path, format!("unknown value `{t}` (expected one of: {})", choices.join(", ")))),
        }
    };
    if let Some(i) = word(&raw.tcp, "appliance.conntrack.tcp", &["strict", "loose"])? {
        cfg.tcp_mode = [ct::TcpMode::Strict, ct::TcpMode::Loose][i];
    }
    if let Some(i) = word(&raw.on_full, "appliance.conntrack.on_full", &["drop", "evict_embryonic"])? {
        cfg.on_full = [ct::FullPolicy::Drop, ct::FullPolicy::EvictEmbryonic][i];
    }
    if let Some(i) = word(&raw.on_policy_change, "appliance.conntrack.on_policy_change", &["recheck", "keep"])? {
        cfg.on_policy_change = [ct::PolicyChange::Recheck, ct::PolicyChange::Keep][i];
    }
    if let Some(t) = &raw.timeouts {
        let to = &mut cfg.timeouts;
        for (value, slot, key) in [
            (&t.tcp_syn, &mut to.tcp_syn, "tcp_syn"),
            (&t.tcp_established, &mut to.tcp_established, "tcp_established"),
            (&t.tcp_fin, &mut to.tcp_fin, "tcp_fin"),
            (&t.tcp_closed, &mut to.tcp_closed, "tcp_closed"),
            (&t.udp, &mut to.udp, "udp"),
            (&t.udp_stream, &mut to.udp_stream, "udp_stream"),
            (&t.icmp, &mut to.icmp, "icmp"),
            (&t.other, &mut to.other, "other"),
            (&t.fragment, &mut to.fragment, "fragment"),
        ] {
            if let Some(s) = value {
                *slot = int(s, &format!("appliance.conntrack.timeouts.{key}"), "timeout in seconds", 1, 30 * 86_400)? as u32;
            }
        }
    }
    Ok(Some(cfg))
}

/// `0000:03:00.0` or `03:00.0` (PCI), or `net_xxx0[,args]` (a DPDK virtual device).
fn device(s: &Scalar, path: &str) -> FieldResult<Device> {
    let t = match s {
        Scalar::Str(t) => t.trim(),
        other => {
            return Err(FieldError::new(
                path,
                format!(
                    "expected a device (a PCI address such as 0000:03:00.0 or a DPDK vdev such as \"net_tap0,iface=bh0\"), found {}",
                    other.describe()
                ),
            ))
        }
    };
    if let Some(pci) = parse_pci(t) {
        return Ok(Device::Pci(pci));
    }
    let driver = t.split(',').next().unwrap_or("");
    let driver_ok = !driver.is_empty()
        && driver
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
        && driver
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        && driver.contains('_');
    if driver_ok && !t.chars().any(char::is_whitespace) {
        return Ok(Device::Vdev(t.to_string()));
    }
    Err(FieldError::new(
        path,
        format!(
            "`{t}` is neither a PCI address (0000:03:00.0) nor a DPDK virtual device (net_af_packet0,iface=eth1; net_tap0; ...)"
        ),
    ))
}

/// Normalises a PCI address to `DDDD:BB:DD.F`.
fn parse_pci(t: &str) -> Option<String> {
    let parts: Vec<&str> = t.split(':').collect();
    let (domain, bus, devfn) = match parts.as_slice() {
        [d, b, df] => (*d, *b, *df),
        [b, df] => ("0000", *b, *df),
        _ => return None,
    };
    let (dev, func) = devfn.split_once('.')?;
    let hex = |x: &str, max_len: usize| {
        !x.is_empty() && x.len() <= max_len && x.bytes().all(|b| b.is_ascii_hexdigit())
    };
    if !(hex(domain, 8) && hex(bus, 2) && hex(dev, 2) && func.len() == 1 && hex(func, 1)) {
        return None;
    }
    let d = u32::from_str_radix(domain, 16).ok()?;
    let b = u8::from_str_radix(bus, 16).ok()?;
    let v = u8::from_str_radix(dev, 16).ok()?;
    let f = u8::from_str_radix(func, 16).ok()?;
    if v > 0x1f || f > 7 {
        return None;
    }
    Some(format!("{d:04x}:{b:02x}:{v:02x}.{f:x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> Scalar {
        Scalar::Str(t.to_string())
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            cidr(&s("10.1.0.0/24"), "p").unwrap().to_string(),
            "10.1.0.0/24"
        );
        assert_eq!(
            cidr(&s("10.1.2.3"), "p").unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            cidr(&s("fd00:1::/64"), "p").unwrap().to_string(),
            "fd00:1::/64"
        );
        let e = cidr(&s("10.1.0.5/24"), "p").unwrap_err();
        assert!(
            e.message.contains("host bits set (0.0.0.5"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("the network is 10.1.0.0/24"),
            "{}",
            e.message
        );
        let e = cidr(&s("10.0.0.0/33"), "p").unwrap_err();
        assert!(
            e.message.contains("/33 is too long for IPv4"),
            "{}",
            e.message
        );
        assert!(cidr(&s("fd00::/129"), "p").is_err());
        assert!(cidr(&s("10.0.0/8"), "p").is_err());
        assert!(cidr(&s("10.0.0.0/"), "p").is_err());
        assert!(cidr(&s("10.0.0.0/-1"), "p").is_err());
        assert!(cidr(&Scalar::Int(10), "p").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(
            port_range(&Scalar::Int(80), "p").unwrap(),
            PortRange { lo: 80, hi: 80 }
        );
        assert_eq!(
            port_range(&s("9000-9100"), "p").unwrap(),
            PortRange { lo: 9000, hi: 9100 }
        );
        assert_eq!(
            port_range(&s(" 53 "), "p").unwrap(),
            PortRange { lo: 53, hi: 53 }
        );
        assert!(port_range(&s("9100-9000"), "p")
            .unwrap_err()
            .message
            .contains("inverted"));
        assert!(port_range(&Scalar::Int(70000), "p")
            .unwrap_err()
            .message
            .contains("port 70000 is out of range 0-65535"));
        assert!(port_range(&s("1-99999999999999999999999999999999999999999"), "p").is_err());
        assert!(port_range(&s("http"), "p").is_err());
        assert!(port_range(&Scalar::Float(80.5), "p").is_err());
        assert!(port_range(&s("-5"), "p").is_err());
    }

    #[test]
    fn protocols() {
        assert_eq!(parse_protocol("tcp"), Some(ProtocolMatch::Number(6)));
        assert_eq!(parse_protocol("47"), Some(ProtocolMatch::Number(47)));
        assert_eq!(parse_protocol("any"), Some(ProtocolMatch::Any));
        assert_eq!(parse_protocol("TCP"), None);
        assert_eq!(parse_protocol("256"), None);
        assert_eq!(protocol_name(ProtocolMatch::Number(58)), "icmpv6");
        assert_eq!(protocol_name(ProtocolMatch::Number(47)), "47");
    }

    #[test]
    fn pci_addresses() {
        assert_eq!(parse_pci("0000:03:00.0").as_deref(), Some("0000:03:00.0"));
        assert_eq!(parse_pci("3:0.1").as_deref(), Some("0000:03:00.1"));
        assert_eq!(parse_pci("0000:03:00.8"), None);
        assert_eq!(parse_pci("net_tap0"), None);
        assert!(matches!(
            device(&s("net_af_packet0,iface=bh-west"), "p"),
            Ok(Device::Vdev(_))
        ));
        assert!(device(&s("eth0"), "p").is_err());
        assert!(device(&s(""), "p").is_err());
    }

    #[test]
    fn integers() {
        assert_eq!(int(&s("0x88cc"), "p", "x", 0, 0xffff).unwrap(), 0x88cc);
        assert!(int(&Scalar::Float(1.5), "p", "x", 0, 10).is_err());
        assert!(int(&Scalar::Bool(true), "p", "x", 0, 10).is_err());
        assert!(int(&s("12abc"), "p", "x", 0, 100).is_err());
    }
}
