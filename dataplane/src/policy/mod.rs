//! The segmentation policy: a validated specification ([`spec`]) compiled into an
//! immutable [`Policy`] that classifies packets.
//!
//! # Semantics (the user's contract)
//!
//! [`Policy::classify`] decides one packet, described by a [`PacketMeta`]:
//!
//! 1. **Non-IP frames** (`meta.addrs == None`): ARP (ethertype 0x0806) is allowed if
//!    `non_ip.allow_arp`; any ethertype in `non_ip.allowed_ethertypes` is allowed;
//!    everything else is denied with [`DropReason::EthertypeNotAllowed`]. No segments are
//!    involved ([`Why::NonIp`]).
//! 2. **Segments.** The segment of an address is, among the segments that apply to the
//!    packet's VLAN ([`PacketMeta::vlan`]), the one holding the longest prefix that
//!    contains it. A segment without VLANs applies to every packet, tagged or not; a
//!    segment with VLANs applies only to packets whose VLAN is in its list. Two segments
//!    holding the identical prefix in one VLAN view are refused at compile
//!    ([`CompileError::DuplicatePrefix`]). An address in no segment belongs to the
//!    `unmatched` segment if the spec names one ([`Unmatched::Segment`]); otherwise
//!    ([`Unmatched::Drop`]) the packet is denied with [`DropReason::UnknownAddress`],
//!    the source being checked first ([`Why::UnknownSource`], then
//!    [`Why::UnknownDestination`]).
//! 3. **ICMPv6 neighbour discovery** (protocol 58, ICMP type 133..=137) is allowed before
//!    any rule, and before an unknown address could drop it, if
//!    `non_ip.allow_neighbor_discovery` ([`Why::NeighborDiscovery`]).
//! 4. **Rules**, in order, first match wins. A rule matches when its `from` and `to`
//!    match the source and destination segments ([`SegmentMatch::Any`] matches every
//!    segment, the unmatched catch-all included), its protocol is `Any` or equal to
//!    `meta.proto`, and each non-empty constraint holds: `dst_ports` / `src_ports` need
//!    [`L4::Ports`] with the port in one of the ranges (a packet without ports never
//!    matches a rule with port constraints), `icmp_types` needs [`L4::Icmp`] with the type
//!    in the list. The rule's action and `log` flag decide ([`Why::Rule`]).
//! 5. **No rule matched**: `intra_segment_default` when the source and destination
//!    segments are the same ([`Why::IntraSegmentDefault`]), `default_action` otherwise
//!    ([`Why::Default`]).
//!
//! For every IP frame the [`Decision`] reports both segments as resolved (the unmatched
//! segment applied), `None` for an address in no segment.
//!
//! # Structure
//!
//! - [`lpm`]: longest-prefix match over the static prefix set, flattened into sorted
//!   disjoint intervals (the most specific prefix of each) searched with a static
//!   cache-line B+-tree. Each family has one base table for the segments without VLANs,
//!   and each VLAN that some segment names has a small overlay table with that VLAN's
//!   segments; a tagged packet looks up both and keeps the longer match (a policy
//!   without VLAN-restricted segments reads no overlay at all).
//! - `compile`: [`Policy::compile`] builds those tables and the rule index: rule lists
//!   per (source, destination) pair, per source (`to: Any`), per destination
//!   (`from: Any`) and one for `Any -> Any`, each in rule order (`rules`). Each list is
//!   cut by protocol class into blocks of 64 rules with a filter table (destination
//!   port / ICMP type intervals -> candidate bit mask), so classification finds the
//!   lowest matching rule id of a list with one short search. Memory is linear in the
//!   number of segments and rules.
//! - `classify`: the packet path. No allocation, no lock, no panic, no `unsafe`.
//! - [`reference`](mod@reference): a naive evaluator written straight from the contract above; the
//!   property tests hold `classify` to it.
//! - [`synth`]: synthetic policies and traffic for benchmarks.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::counters::DropReason;
use crate::packet::PacketMeta;
#[cfg(doc)]
use crate::packet::L4;

mod classify;
mod compile;
mod rules;
pub mod lpm;
pub mod reference;
pub mod spec;
#[doc(hidden)]
pub mod synth;
#[cfg(test)]
mod tests;

pub use spec::{
    Action, Mode, NonIpSpec, PolicySpec, PortRange, ProtocolMatch, RuleId, RuleSpec, SegmentId,
    SegmentMatch, SegmentSpec, Unmatched,
};

/// Forward or drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Forward the packet to the paired port.
    Allow,
    /// Drop the packet, counted under this reason.
    Deny(DropReason),
}

impl Verdict {
    /// Whether the packet is forwarded.
    #[inline]
    pub fn is_allow(self) -> bool {
        matches!(self, Verdict::Allow)
    }

    fn from_action(action: Action) -> Verdict {
        match action {
            Action::Allow => Verdict::Allow,
            Action::Deny => Verdict::Deny(DropReason::PolicyDeny),
        }
    }
}

/// Why the policy decided as it did (what `bulkhead explain` prints).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Why {
    /// A non-IP frame, judged by the ethertype allow-list.
    NonIp,
    /// ICMPv6 neighbour discovery, allowed before rules.
    NeighborDiscovery,
    /// The source address is in no segment and unmatched addresses are dropped.
    UnknownSource,
    /// The destination address is in no segment and unmatched addresses are dropped.
    UnknownDestination,
    /// This rule matched first.
    Rule(RuleId),
    /// No rule matched; source and destination are in different segments.
    Default,
    /// No rule matched; source and destination are in the same segment.
    IntraSegmentDefault,
}

/// The outcome of [`Policy::classify`]. Small and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    /// Forward or drop.
    pub verdict: Verdict,
    /// Why.
    pub why: Why,
    /// Segment of the source address (unmatched segment applied); `None` for non-IP
    /// frames and for an address in no segment.
    pub src_segment: Option<SegmentId>,
    /// Segment of the destination address, as for `src_segment`.
    pub dst_segment: Option<SegmentId>,
    /// Whether the decision raises a security event (the matching rule's `log`).
    pub log: bool,
    /// How the packet is enforced: the strictest mode of its two segments (protect for
    /// non-IP frames and addresses in no segment).
    pub mode: Mode,
    /// The policy denied the packet, but its mode (monitor or discover) forwarded it.
    pub overridden: bool,
}

impl Decision {
    /// The rule that decided, if one did.
    #[inline]
    pub fn rule(&self) -> Option<RuleId> {
        match self.why {
            Why::Rule(id) => Some(id),
            _ => None,
        }
    }

    fn non_ip(verdict: Verdict) -> Decision {
        Decision {
            verdict,
            why: Why::NonIp,
            src_segment: None,
            dst_segment: None,
            log: false,
            mode: Mode::Protect,
            overridden: false,
        }
    }

    /// Applies the modes of the packet's segments (`mode_of` gives a segment's mode):
    /// under monitor or discover, a policy denial is forwarded and marked `overridden`.
    #[inline]
    pub(crate) fn with_modes(mut self, mode_of: impl Fn(SegmentId) -> Mode) -> Decision {
        let mode = match (self.src_segment, self.dst_segment) {
            (Some(s), Some(d)) => mode_of(s).max(mode_of(d)),
            _ => Mode::Protect,
        };
        self.mode = mode;
        if mode != Mode::Protect && self.verdict == Verdict::Deny(DropReason::PolicyDeny) {
            self.verdict = Verdict::Allow;
            self.overridden = true;
        }
        self
    }
}

/// Why a [`PolicySpec`] could not be compiled. The running policy stays in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompileError {
    /// More segments than a [`SegmentId`] can number.
    TooManySegments {
        /// Segments in the spec.
        count: usize,
        /// The most allowed.
        max: usize,
    },
    /// More rules than the index holds.
    TooManyRules {
        /// Rules in the spec.
        count: usize,
        /// The most allowed.
        max: usize,
    },
    /// A rule names a segment id that does not exist.
    UnknownSegmentInRule {
        /// The rule's name.
        rule: String,
        /// The missing segment id.
        segment: SegmentId,
    },
    /// `unmatched` names a segment id that does not exist.
    UnknownUnmatchedSegment {
        /// The missing segment id.
        segment: SegmentId,
    },
    /// A segment names a VLAN id outside 0..=4095.
    BadVlan {
        /// The segment's name.
        segment: String,
        /// The VLAN id.
        vlan: u16,
    },
    /// Two segments hold the identical prefix in one VLAN view.
    DuplicatePrefix {
        /// The prefix.
        prefix: IpNet,
        /// One segment's name.
        first: String,
        /// The other segment's name.
        second: String,
        /// The VLAN view where both apply; `None` when both apply to every packet.
        vlan: Option<u16>,
    },
    /// The lookup tables outgrew their index space.
    TableFull,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompileError::TooManySegments { count, max } => {
                write!(f, "{count} segments, at most {max} are supported")
            }
            CompileError::TooManyRules { count, max } => {
                write!(f, "{count} rules, at most {max} are supported")
            }
            CompileError::UnknownSegmentInRule { rule, segment } => {
                write!(
                    f,
                    "rule {rule:?} refers to segment id {segment}, which does not exist"
                )
            }
            CompileError::UnknownUnmatchedSegment { segment } => {
                write!(
                    f,
                    "unmatched refers to segment id {segment}, which does not exist"
                )
            }
            CompileError::BadVlan { segment, vlan } => {
                write!(f, "segment {segment:?} names VLAN {vlan}, outside 0..=4095")
            }
            CompileError::DuplicatePrefix {
                prefix,
                first,
                second,
                vlan,
            } => {
                write!(f, "segments {first:?} and {second:?} both hold {prefix}")?;
                match vlan {
                    Some(v) => write!(f, " on VLAN {v}"),
                    None => Ok(()),
                }
            }
            CompileError::TableFull => f.write_str("the prefix tables outgrew their index space"),
        }
    }
}

impl std::error::Error for CompileError {}

/// The compiled, immutable segmentation policy. `Send + Sync`; share it as
/// `Arc<Policy>` and swap it whole.
#[derive(Debug)]
pub struct Policy {
    version: u64,
    spec: PolicySpec,
    lpm: compile::Lpm,
    rules: rules::RuleIndex,
    non_ip: compile::NonIp,
    default_action: Action,
    intra_segment_default: Action,
    unmatched: Unmatched,
    /// Mode per segment id.
    modes: Box<[Mode]>,
    /// Whether every segment is in protect mode (decisions need no mode pass).
    all_protect: bool,
}

impl Policy {
    /// Compiles a validated spec; `version` tags the result (flows remember the version
    /// that admitted them).
    pub fn compile(spec: &PolicySpec, version: u64) -> Result<Policy, CompileError> {
        compile::compile(spec, version)
    }

    /// The version given to [`Policy::compile`].
    #[inline]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The spec this policy was compiled from (names, CIDRs and rules, for `explain` and
    /// export).
    pub fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.spec.segments.len()
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.spec.rules.len()
    }

    /// A segment's name.
    pub fn segment_name(&self, id: SegmentId) -> Option<&str> {
        self.spec
            .segments
            .get(usize::from(id))
            .map(|s| s.name.as_str())
    }

    /// A rule's name.
    pub fn rule_name(&self, id: RuleId) -> Option<&str> {
        let idx = usize::try_from(id).ok()?;
        self.spec.rules.get(idx).map(|r| r.name.as_str())
    }

    /// The segment whose prefix is the longest match for `addr` in the view of `vlan`,
    /// before the unmatched rule applies: the bare longest-prefix match.
    #[inline]
    pub fn segment_of(&self, addr: IpAddr, vlan: Option<u16>) -> Option<SegmentId> {
        self.lpm.lookup(addr, vlan).value()
    }

    /// Approximate heap bytes held by the lookup tables and the rule index.
    pub fn table_bytes(&self) -> usize {
        self.lpm.heap_bytes() + self.rules.heap_bytes()
    }

    /// Decides one packet; see the module documentation for the semantics. No allocation,
    /// no lock, no panic.
    #[inline]
    pub fn classify(&self, meta: &PacketMeta) -> Decision {
        self.apply_modes(classify::classify(self, meta))
    }

    /// The segment modes applied to a decision (nothing to do when every segment
    /// protects, the common case).
    #[inline(always)]
    fn apply_modes(&self, d: Decision) -> Decision {
        if self.all_protect {
            return d;
        }
        d.with_modes(|s| self.modes.get(usize::from(s)).copied().unwrap_or_default())
    }

    /// A segment's mode.
    pub fn segment_mode(&self, id: SegmentId) -> Option<Mode> {
        self.modes.get(usize::from(id)).copied()
    }

    /// Decides a burst: `f(i, decision)` for each `metas[i]`, in order. Same decisions
    /// as [`Policy::classify`], faster per packet: the address lookups of up to 32
    /// packets run back to back, so their memory accesses overlap. No allocation.
    #[inline]
    pub fn classify_burst(&self, metas: &[PacketMeta], mut f: impl FnMut(usize, Decision)) {
        classify::classify_burst(self, metas, |i, d| f(i, self.apply_modes(d)))
    }
}

#[cfg(test)]
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Policy>();
};
