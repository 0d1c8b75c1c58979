//! The validated policy specification: what the management plane hands to
//! [`super::Policy::compile`] after it has parsed and checked the user's YAML.
//!
//! Every value here is already valid in isolation (CIDRs have no host bits, port ranges
//! are ordered, names are unique, segment references resolve); `compile` only checks
//! what needs the whole picture (capacity).

use ipnet::IpNet;

/// Index of a segment in [`PolicySpec::segments`].
pub type SegmentId = u16;
/// Index of a rule in [`PolicySpec::rules`].
pub type RuleId = u32;

/// What happens to a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Forward it to the paired port.
    Allow,
    /// Drop it (counted).
    Deny,
}

/// How a segment's traffic is enforced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// Record what is observed and forward everything the policy would deny (for
    /// `bulkhead learn`).
    Discover,
    /// Forward what the policy would deny, and report it as a security event.
    Monitor,
    /// Enforce: drop what the policy denies (the default).
    #[default]
    Protect,
}

/// One segment: a named group of container subnets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSpec {
    /// Unique name, used in counters, events and `explain`.
    pub name: String,
    /// IPv4 and IPv6 prefixes, host bits clear. An address belongs to the segment of its
    /// most specific prefix among the segments that apply to the packet's VLAN.
    pub cidrs: Vec<IpNet>,
    /// VLAN ids this segment is restricted to; empty means any VLAN and untagged.
    pub vlans: Vec<u16>,
    /// How its traffic is enforced.
    pub mode: Mode,
}

/// The `from` or `to` side of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentMatch {
    /// Any segment, including the catch-all for unmatched addresses.
    Any,
    /// Exactly this segment.
    Segment(SegmentId),
}

/// Which IP protocol a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProtocolMatch {
    /// Any IP protocol.
    Any,
    /// This IP protocol number (6 tcp, 17 udp, 1 icmp, 58 icmpv6, 132 sctp, ...).
    Number(u8),
}

/// An inclusive port range; `lo <= hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port in the range.
    pub lo: u16,
    /// Last port in the range (inclusive).
    pub hi: u16,
}

/// One rule. Rules are evaluated in order; the first that matches decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    /// Unique name, used in counters, events and `explain`.
    pub name: String,
    /// Source segment.
    pub from: SegmentMatch,
    /// Destination segment.
    pub to: SegmentMatch,
    /// IP protocol.
    pub protocol: ProtocolMatch,
    /// Destination port ranges (TCP, UDP, SCTP); empty means any port.
    pub dst_ports: Vec<PortRange>,
    /// Source port ranges (TCP, UDP, SCTP); empty means any port.
    pub src_ports: Vec<PortRange>,
    /// ICMP / ICMPv6 types; empty means any type. Only meaningful with protocol icmp or
    /// icmpv6.
    pub icmp_types: Vec<u8>,
    /// What a match does.
    pub action: Action,
    /// Whether a match raises a security event.
    pub log: bool,
}

/// What happens to an IP address that lies in no segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmatched {
    /// Treat it as a member of this segment (typically one called `outside`).
    Segment(SegmentId),
    /// Drop the packet, counted as `unknown_address`.
    Drop,
}

/// Non-IP traffic handling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonIpSpec {
    /// Forward ARP (ethertype 0x0806).
    pub allow_arp: bool,
    /// Forward ICMPv6 neighbour discovery (router/neighbour solicitation and
    /// advertisement, redirect: types 133-137) regardless of rules.
    pub allow_neighbor_discovery: bool,
    /// Forward IEEE 802.3 frames that carry a length (below 0x0600) where Ethernet II
    /// carries an ethertype: LLC/SNAP traffic such as spanning-tree BPDUs and CDP.
    pub allow_llc: bool,
    /// Further ethertypes that are forwarded (e.g. 0x88cc LLDP); all others are dropped.
    pub allowed_ethertypes: Vec<u16>,
}

/// A whole policy, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySpec {
    /// Segments; their index is their [`SegmentId`].
    pub segments: Vec<SegmentSpec>,
    /// Rules in evaluation order; their index is their [`RuleId`].
    pub rules: Vec<RuleSpec>,
    /// Action when no rule matches a packet between two different segments.
    pub default_action: Action,
    /// Action when no rule matches a packet whose source and destination are in the same
    /// segment.
    pub intra_segment_default: Action,
    /// What an address in no segment is.
    pub unmatched: Unmatched,
    /// Non-IP traffic.
    pub non_ip: NonIpSpec,
}
