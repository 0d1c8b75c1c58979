//! Per-worker counters.
//!
//! Each worker owns one [`WorkerCounters`], cache-line aligned, and is its only writer:
//! it bumps a counter with a relaxed load and store (no locked read-modify-write), and
//! the management thread reads them with relaxed loads. No counter is shared between
//! two writers, so workers never contend on a cache line.
//!
//! Every drop reason is declared once, in [`drop_reasons!`]; that one list produces the
//! [`DropReason`] enum, its exported names and its descriptions.

use std::sync::atomic::{AtomicU64, Ordering};

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
    fn counter_adds() {
        let c = Counter::default();
        c.inc();
        c.add(41);
        assert_eq!(c.get(), 42);
    }
}
