//! Zero-copy parsing of an Ethernet frame into a [`PacketMeta`].
//!
//! `parse` reads the bytes in place, allocates nothing, never panics, and returns a
//! [`ParseError`] naming exactly what was wrong; each error is its own drop reason.
//!
//! TODO(parser helper): implement `parse` and its tests.

use std::net::IpAddr;

/// Ethertype of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethertype of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Ethertype of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Ethertype of an 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// Ethertype of an 802.1ad service tag (QinQ).
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

/// IP protocol numbers used by the classifier.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// Layer-4 information the classifier uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// No layer-4 header could be read: not IP, a protocol without ports, or a non-first
    /// fragment.
    None,
    /// TCP, UDP or SCTP ports.
    Ports {
        /// Source port.
        src: u16,
        /// Destination port.
        dst: u16,
    },
    /// ICMP or ICMPv6 type and code.
    Icmp {
        /// ICMP type.
        ty: u8,
        /// ICMP code.
        code: u8,
    },
}

/// Fragmentation of the IP datagram this packet carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// Not a fragment.
    None,
    /// The first fragment (offset 0, more fragments follow): its L4 header is present.
    First {
        /// IPv4 identification (zero-extended) or IPv6 fragment identification.
        id: u32,
    },
    /// A later fragment: no L4 header.
    Later {
        /// IPv4 identification (zero-extended) or IPv6 fragment identification.
        id: u32,
        /// Offset of this fragment's data, in bytes.
        offset: u16,
    },
}

/// What the dataplane needs to know about one frame. Small and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    /// Outer VLAN id: the 802.1Q tag, or the 802.1ad S-tag of a QinQ frame.
    pub outer_vlan: Option<u16>,
    /// Inner VLAN id: the C-tag of a QinQ frame.
    pub inner_vlan: Option<u16>,
    /// Ethertype after all VLAN tags.
    pub ethertype: u16,
    /// Source and destination address, for IPv4 and IPv6 frames.
    pub addrs: Option<(IpAddr, IpAddr)>,
    /// IP protocol (after IPv6 extension headers); 0 for non-IP frames.
    pub proto: u8,
    /// Ports or ICMP type and code.
    pub l4: L4,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, ...); 0 otherwise.
    pub tcp_flags: u8,
    /// Fragment information.
    pub fragment: Fragment,
}

impl PacketMeta {
    /// The VLAN id segments are matched against: the innermost tag (the C-tag of a QinQ
    /// frame, or the only 802.1Q tag), if any.
    pub fn vlan(&self) -> Option<u16> {
        self.inner_vlan.or(self.outer_vlan)
    }
}

/// Why a frame could not be parsed. Each variant is its own drop reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than an Ethernet header.
    TruncatedEthernet,
    /// A VLAN tag cut short.
    TruncatedVlan,
    /// More than two VLAN tags.
    TooManyVlanTags,
    /// Shorter than a minimal IPv4 header.
    TruncatedIpv4,
    /// Ethertype IPv4 but the version field is not 4.
    BadIpv4Version,
    /// IHL below 5 or beyond the frame.
    BadIpv4HeaderLength,
    /// Total length below the header length or beyond the frame.
    BadIpv4TotalLength,
    /// Shorter than an IPv6 header.
    TruncatedIpv6,
    /// Ethertype IPv6 but the version field is not 6.
    BadIpv6Version,
    /// Payload length beyond the frame.
    BadIpv6PayloadLength,
    /// An IPv6 extension header cut short.
    TruncatedIpv6ExtHeader,
    /// More IPv6 extension headers than the bounded walk allows.
    TooManyIpv6ExtHeaders,
    /// A TCP, UDP, SCTP or ICMP header cut short (first fragment or unfragmented).
    TruncatedL4,
    /// TCP data offset below 5 or beyond the datagram.
    BadTcpHeaderLength,
    /// Fragment offset plus length beyond 65535 bytes, or a first fragment too short to
    /// hold its L4 header (tiny-fragment attack, RFC 1858).
    BadFragment,
}

/// Parses an Ethernet frame.
pub fn parse(_frame: &[u8]) -> Result<PacketMeta, ParseError> {
    todo!("parser helper")
}
