//! Per-worker counters.
//!
//! Each worker owns one [`WorkerCounters`], cache-line aligned, and is its only writer:
//! it bumps a counter with a relaxed load and store (no locked read-modify-write), and
//! the management thread reads them with relaxed loads. No counter is shared between
//! two writers, so workers never contend on a cache line.
//!
//! Every drop reason is declared once, in `drop_reasons!`; that one list produces the
//! [`DropReason`] enum, its exported names and its descriptions.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::packet::ParseError;

/// A counter with a single writer.
#[derive(Debug, Default)]
#[repr(transparent)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Must only be called by the counter's one writer.
    #[inline(always)]
    pub fn add(&self, n: u64) {
        // Single writer: a plain load and store is exact and avoids a locked instruction.
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Adds one.
    #[inline(always)]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Overwrites the value (for gauges such as a heartbeat). One writer only.
    #[inline(always)]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, $desc:literal; )*) => {
        /// Why a packet was dropped. Exported as `bulkhead_drops_total{reason="<name>"}`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[$doc])* $variant, )*
        }

        impl DropReason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant),*];
            /// Number of reasons.
            pub const COUNT: usize = [$(DropReason::$variant),*].len();

            /// Stable snake_case name, used in metrics and events.
            pub const fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            /// One-line description for humans.
            pub const fn description(self) -> &'static str {
                match self { $(DropReason::$variant => $desc,)* }
            }
        }
    };
}

drop_reasons! {
    /// See [`ParseError::TruncatedEthernet`].
    TruncatedEthernet => "truncated_ethernet", "frame shorter than an Ethernet header";
    /// See [`ParseError::TruncatedVlan`].
    TruncatedVlan => "truncated_vlan", "VLAN tag cut short";
    /// See [`ParseError::TooManyVlanTags`].
    TooManyVlanTags => "too_many_vlan_tags", "more than two VLAN tags";
    /// See [`ParseError::TruncatedIpv4`].
    TruncatedIpv4 => "truncated_ipv4", "shorter than a minimal IPv4 header";
    /// See [`ParseError::BadIpv4Version`].
    BadIpv4Version => "bad_ipv4_version", "IPv4 ethertype with an IP version other than 4";
    /// See [`ParseError::BadIpv4HeaderLength`].
    BadIpv4HeaderLength => "bad_ipv4_header_length", "IPv4 IHL below 5 or beyond the frame";
    /// See [`ParseError::BadIpv4TotalLength`].
    BadIpv4TotalLength => "bad_ipv4_total_length", "IPv4 total length below the header or beyond the frame";
    /// See [`ParseError::TruncatedIpv6`].
    TruncatedIpv6 => "truncated_ipv6", "shorter than an IPv6 header";
    /// See [`ParseError::BadIpv6Version`].
    BadIpv6Version => "bad_ipv6_version", "IPv6 ethertype with an IP version other than 6";
    /// See [`ParseError::BadIpv6PayloadLength`].
    BadIpv6PayloadLength => "bad_ipv6_payload_length", "IPv6 payload length beyond the frame";
    /// See [`ParseError::TruncatedIpv6ExtHeader`].
    TruncatedIpv6ExtHeader => "truncated_ipv6_ext_header", "IPv6 extension header cut short";
    /// See [`ParseError::TooManyIpv6ExtHeaders`].
    TooManyIpv6ExtHeaders => "too_many_ipv6_ext_headers", "more IPv6 extension headers than the walk allows";
    /// See [`ParseError::TruncatedL4`].
    TruncatedL4 => "truncated_l4", "TCP, UDP, SCTP or ICMP header cut short";
    /// See [`ParseError::BadTcpHeaderLength`].
    BadTcpHeaderLength => "bad_tcp_header_length", "TCP data offset below 5 or beyond the datagram";
    /// See [`ParseError::BadFragment`].
    BadFragment => "bad_fragment", "fragment beyond 65535 bytes or first fragment without its L4 header";
    /// A rule, or the default, denied the packet.
    PolicyDeny => "policy_deny", "denied by the segmentation policy";
    /// An address in no segment while the policy says to drop such addresses.
    UnknownAddress => "unknown_address", "source or destination address in no segment";
    /// A non-IP ethertype that is not on the allow-list.
    EthertypeNotAllowed => "ethertype_not_allowed", "non-IP ethertype not on the allow-list";
    /// No policy is loaded yet: the appliance fails closed.
    NoPolicy => "no_policy", "no policy loaded yet (fail closed)";
    /// The paired port's tx queue did not take the packet.
    TxFull => "tx_full", "the paired port's transmit queue was full";
    /// Connection tracking: the packet belongs to no flow and may not start one (strict
    /// TCP: only a SYN without ACK starts a flow; an echo reply or an ICMP error that
    /// quotes no tracked flow).
    CtInvalid => "ct_invalid", "packet belongs to no flow and may not start one (strict TCP)";
    /// Connection tracking: the policy allowed a new flow but the flow table had no room.
    CtTableFull => "ct_table_full", "flow table full (fail closed)";
    /// Connection tracking: a flow admitted by an older policy was re-checked against the
    /// new one and denied; the flow was removed.
    CtRevoked => "ct_revoked", "flow revoked by a new policy";
    /// A non-first fragment whose first fragment was not seen (or has timed out).
    FragmentNoFlow => "fragment_no_flow", "non-first fragment with no first fragment seen";
    /// An ICMP error for another worker's table could not be handed on: the next
    /// worker's queue was full.
    HandoffFull => "handoff_full", "ICMP error not handed to the next worker: its queue was full";
}

impl From<ParseError> for DropReason {
    fn from(e: ParseError) -> Self {
        match e {
            ParseError::TruncatedEthernet => DropReason::TruncatedEthernet,
            ParseError::TruncatedVlan => DropReason::TruncatedVlan,
            ParseError::TooManyVlanTags => DropReason::TooManyVlanTags,
            ParseError::TruncatedIpv4 => DropReason::TruncatedIpv4,
            ParseError::BadIpv4Version => DropReason::BadIpv4Version,
            ParseError::BadIpv4HeaderLength => DropReason::BadIpv4HeaderLength,
            ParseError::BadIpv4TotalLength => DropReason::BadIpv4TotalLength,
            ParseError::TruncatedIpv6 => DropReason::TruncatedIpv6,
            ParseError::BadIpv6Version => DropReason::BadIpv6Version,
            ParseError::BadIpv6PayloadLength => DropReason::BadIpv6PayloadLength,
            ParseError::TruncatedIpv6ExtHeader => DropReason::TruncatedIpv6ExtHeader,
            ParseError::TooManyIpv6ExtHeaders => DropReason::TooManyIpv6ExtHeaders,
            ParseError::TruncatedL4 => DropReason::TruncatedL4,
            ParseError::BadTcpHeaderLength => DropReason::BadTcpHeaderLength,
            ParseError::BadFragment => DropReason::BadFragment,
        }
    }
}

/// Packets and bytes.
#[derive(Debug, Default)]
pub struct PacketsBytes {
    /// Packets.
    pub packets: Counter,
    /// Bytes (whole frames, all segments).
    pub bytes: Counter,
}

impl PacketsBytes {
    /// Counts one packet of `len` bytes.
    #[inline(always)]
    pub fn add(&self, len: u64) {
        self.packets.inc();
        self.bytes.add(len);
    }
}

/// One worker's traffic on one port.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Packets received on this port by this worker.
    pub rx_packets: Counter,
    /// Bytes received.
    pub rx_bytes: Counter,
    /// Packets this worker transmitted on this port (accepted by the NIC).
    pub tx_packets: Counter,
    /// Bytes transmitted.
    pub tx_bytes: Counter,
}

/// Everything one worker counts that does not depend on the policy's numbering.
/// Cache-line aligned so that two workers' counters never share a line.
#[derive(Debug)]
#[repr(align(64))]
pub struct WorkerCounters {
    /// Drops by reason, indexed by `DropReason as usize`.
    pub drops: [Counter; DropReason::COUNT],
    /// Per port, indexed by the port's position in the appliance's port list.
    pub ports: Box<[PortCounters]>,
    /// Loop rounds.
    pub polls: Counter,
    /// Loop rounds that received at least one packet (busy ratio = busy_polls / polls).
    pub busy_polls: Counter,
    /// Timestamp-counter cycles spent in rounds that received packets (the whole round:
    /// judging, sending, that round's expiry sweep and drain): the worker's cost of its
    /// traffic (cycles per packet = busy_cycles / the worker's received packets), with
    /// the idle polling of a poll-mode core left out.
    pub busy_cycles: Counter,
    /// Timestamp counter at the start of the latest round (the worker's heartbeat).
    pub heartbeat_tsc: Counter,
    /// Version of the policy the worker used in its latest round (0: none).
    pub policy_version: Counter,
    /// Security events handed to the management thread.
    pub events_sent: Counter,
    /// Security events lost because the channel to the management thread was full.
    pub events_dropped: Counter,
    /// ICMP errors this worker handed to the next worker because it tracks no flow they
    /// quote (see `worker::Handoff`); an error that goes round several workers is counted
    /// by each that hands it on.
    pub handed_off: Counter,
}

impl WorkerCounters {
    /// Counters for a worker that serves `ports` ports.
    pub fn new(ports: usize) -> Self {
        WorkerCounters {
            drops: std::array::from_fn(|_| Counter::default()),
            ports: (0..ports).map(|_| PortCounters::default()).collect(),
            polls: Counter::default(),
            busy_polls: Counter::default(),
            busy_cycles: Counter::default(),
            heartbeat_tsc: Counter::default(),
            policy_version: Counter::default(),
            events_sent: Counter::default(),
            events_dropped: Counter::default(),
            handed_off: Counter::default(),
        }
    }

    /// Counts one drop for `reason`.
    #[inline(always)]
    pub fn drop(&self, reason: DropReason) {
        self.drops[reason as usize].inc();
    }

    /// Counts `n` drops for `reason`.
    #[inline(always)]
    pub fn drop_n(&self, reason: DropReason, n: u64) {
        self.drops[reason as usize].add(n);
    }

    /// Drops by reason as (reason, count).
    pub fn drops_by_reason(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(move |&r| (r, self.drops[r as usize].get()))
    }

    /// Total drops, all reasons.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }
}

/// One worker's connection-tracking counters (see [`crate::conntrack`]). The worker is
/// the only writer; the management thread reads them. Drops caused by conntrack are
/// counted in [`WorkerCounters::drops`] under their own reasons (`ct_*`,
/// `fragment_no_flow`); these count what the table does.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct ConntrackCounters {
    /// Flows in the table now (a gauge).
    pub entries: Counter,
    /// Flows inserted.
    pub inserts: Counter,
    /// Flows removed because they timed out (lazily on lookup or by the sweep), or
    /// because, closed, they gave way to a new flow on their tuple.
    pub expiries: Counter,
    /// Embryonic flows evicted to make room for a new one.
    pub evictions: Counter,
    /// New flows the policy allowed that found no room (dropped as `ct_table_full`).
    pub table_full: Counter,
    /// Flows removed because a new policy denied them on re-check.
    pub revoked: Counter,
    /// Flows re-checked against a new policy and kept.
    pub rechecked: Counter,
    /// Packets that hit a tracked flow (either direction).
    pub hits: Counter,
    /// ICMP errors passed as related to a tracked flow.
    pub related: Counter,
    /// First fragments recorded in the fragment table.
    pub fragments_tracked: Counter,
    /// Fragment-table entries overwritten before they expired (the table is small and
    /// soft: the oldest entry of a set gives way).
    pub fragment_overwrites: Counter,
}

/// Slots in a worker's (source segment, destination segment) table.
pub const PAIR_TABLE_SLOTS: usize = 8192;
/// Slots probed before a pair is counted as overflow.
const PAIR_TABLE_PROBES: usize = 16;
/// Stands for "no segment" in a pair key. Segment ids stop below it (the policy
/// compiler refuses more segments), so that a key fits in 32 bits and [`EMPTY_PAIR`],
/// whose source half no pair has, can mark a free slot.
pub const NO_SEGMENT: u16 = 0xfffe;
const EMPTY_PAIR: u32 = u32::MAX;

/// Traffic between one source and one destination segment, by verdict.
#[derive(Debug)]
pub struct PairSlot {
    /// Packets and bytes allowed.
    pub allowed: PacketsBytes,
    /// Packets and bytes denied.
    pub denied: PacketsBytes,
}

/// A bounded open-addressing table of per-segment-pair counters. Only the pairs that
/// carry traffic take a slot, so 1,000 segments cost no million-cell matrix; pairs that
/// find no free slot are counted in `overflow` (and still in the per-rule counters).
#[derive(Debug)]
pub struct PairTable {
    /// The pair of each slot ([`EMPTY_PAIR`] if free), apart from the counters: a probe
    /// reads 4 bytes a slot (the 32 KiB stay in L1/L2) and touches one slot's counters.
    /// With many segment pairs the table is full and every packet of an overflowing pair
    /// probes all [`PAIR_TABLE_PROBES`] slots: at 1,000,000 flows over 1,000 segments
    /// that was about a tenth of the worker's time with keys and counters interleaved.
    keys: Box<[AtomicU32]>,
    slots: Box<[PairSlot]>,
    /// Packets whose pair found no slot.
    pub overflow: Counter,
}

impl Default for PairTable {
    fn default() -> Self {
        PairTable {
            keys: (0..PAIR_TABLE_SLOTS).map(|_| AtomicU32::new(EMPTY_PAIR)).collect(),
            slots: (0..PAIR_TABLE_SLOTS)
                .map(|_| PairSlot {
                    allowed: PacketsBytes::default(),
                    denied: PacketsBytes::default(),
                })
                .collect(),
            overflow: Counter::default(),
        }
    }
}

impl PairTable {
    #[inline(always)]
    fn key(src: Option<u16>, dst: Option<u16>) -> u32 {
        // A segment id at or above NO_SEGMENT (impossible from the compiler) counts as
        // none, so that no key is EMPTY_PAIR.
        let part = |v: Option<u16>| u32::from(v.map_or(NO_SEGMENT, |v| v.min(NO_SEGMENT)));
        (part(src) << 16) | part(dst)
    }

    /// The slot for (src, dst), claimed if new; `None` when the probe sequence is full.
    /// One writer only (the worker).
    #[inline]
    pub fn slot(&self, src: Option<u16>, dst: Option<u16>) -> Option<&PairSlot> {
        let key = Self::key(src, dst);
        let mask = self.keys.len() - 1;
        let mut i = (u64::from(key).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize & mask;
        for _ in 0..PAIR_TABLE_PROBES {
            let slot_key = &self.keys[i];
            let k = slot_key.load(Ordering::Relaxed);
            if k == key {
                return self.slots.get(i);
            }
            if k == EMPTY_PAIR {
                slot_key.store(key, Ordering::Release);
                return self.slots.get(i);
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Every pair that has a slot: (source, destination, slot); `None` is "no segment".
    pub fn iter(&self) -> impl Iterator<Item = (Option<u16>, Option<u16>, &PairSlot)> + '_ {
        self.keys.iter().zip(self.slots.iter()).filter_map(|(key, slot)| {
            let k = key.load(Ordering::Acquire);
            if k == EMPTY_PAIR {
                return None;
            }
            let part = |v: u32| if v == u32::from(NO_SEGMENT) { None } else { Some(v as u16) };
            Some((part(k >> 16), part(k & 0xFFFF), slot))
        })
    }
}

/// The counters whose meaning depends on one policy's numbering (rule ids, segment
/// ids). One set per worker, created with the policy and published with it, so a reload
/// never renumbers a counter under a worker.
#[derive(Debug)]
pub struct PolicyCounters {
    /// Per rule, indexed by rule id: packets and bytes the rule decided.
    pub rules: Box<[PacketsBytes]>,
    /// Packets decided by `default` (between different segments), by verdict.
    pub default_action: PacketsBytes,
    /// Packets decided by the intra-segment default.
    pub intra_segment_default: PacketsBytes,
    /// Per (source segment, destination segment, verdict).
    pub pairs: PairTable,
}

impl PolicyCounters {
    /// Counters for a policy of `rules` rules.
    pub fn new(rules: usize) -> Self {
        PolicyCounters {
            rules: (0..rules).map(|_| PacketsBytes::default()).collect(),
            default_action: PacketsBytes::default(),
            intra_segment_default: PacketsBytes::default(),
            pairs: PairTable::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reason_names_are_unique_snake_case() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        assert!(names.iter().all(|n| n
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }

    #[test]
    fn pair_table_counts_pairs_and_overflows() {
        let t = PairTable::default();
        t.slot(Some(1), Some(2)).unwrap().allowed.add(100);
        t.slot(Some(1), Some(2)).unwrap().allowed.add(50);
        t.slot(None, Some(2)).unwrap().denied.add(60);
        let mut seen: Vec<_> = t.iter().map(|(s, d, slot)| (s, d, slot.allowed.packets.get(), slot.denied.bytes.get())).collect();
        seen.sort();
        assert_eq!(seen, vec![(None, Some(2), 0, 60), (Some(1), Some(2), 2, 0)]);
        // Fill the table: every slot taken, then a new pair overflows.
        let mut claimed = 2;
        'outer: for s in 0..u16::MAX {
            for d in 0..4u16 {
                if claimed == PAIR_TABLE_SLOTS {
                    break 'outer;
                }
                if t.slot(Some(s + 10), Some(d)).is_some() {
                    claimed = t.iter().count();
                }
            }
        }
        assert_eq!(t.iter().count(), PAIR_TABLE_SLOTS);
        assert!(t.slot(Some(9), Some(9)).is_none());
    }

    #[test]
    fn pair_keys_at_the_edges_decode_back() {
        let t = PairTable::default();
        let top = Some(NO_SEGMENT - 1);
        let mut pairs = vec![(None, None), (Some(0), None), (None, Some(0)), (top, top), (top, None), (Some(0), Some(0))];
        for &(s, d) in &pairs {
            t.slot(s, d).unwrap().allowed.add(1);
        }
        let mut seen: Vec<_> = t.iter().map(|(s, d, slot)| (s, d, slot.allowed.packets.get())).collect();
        seen.sort();
        pairs.sort();
        assert_eq!(seen, pairs.into_iter().map(|(s, d)| (s, d, 1)).collect::<Vec<_>>());
    }

    #[test]
    fn counter_adds() {
        let c = Counter::default();
        c.inc();
        c.add(41);
        assert_eq!(c.get(), 42);
    }
}
