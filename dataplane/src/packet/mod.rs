//! Zero-copy parsing of an Ethernet frame into a [`PacketMeta`].
//!
//! [`parse`] reads the bytes in place, allocates nothing, never panics (every read is a
//! checked `get` of a fixed-size array whose fields are then read at constant indices;
//! every length sum is of `usize` values below 2^17, so it cannot overflow), and returns
//! a [`ParseError`] naming exactly what was wrong; each error is its own drop reason
//! ([`crate::counters::DropReason`]).
//!
//! What it reads, and the choices it makes where the standards leave room:
//!
//! - **Ethernet II**, then at most two VLAN tags. A tag is any of 802.1Q (`0x8100`),
//!   802.1ad (`0x88a8`) and the legacy pre-standard QinQ S-tag (`0x9100`), in any
//!   order; the first is [`PacketMeta::outer_vlan`], the second
//!   [`PacketMeta::inner_vlan`], a third is [`ParseError::TooManyVlanTags`]. Only the
//!   12-bit VID is kept (PCP and DEI are dropped). Ethertype values below `0x0600` are
//!   802.3 length fields (LLC/SNAP frames such as STP); they are reported as they are,
//!   like any other non-IP ethertype: `Ok`, no addresses, `proto` 0, [`L4::None`].
//! - **IPv4**: version, IHL (>= 5 and within the frame; options are skipped), total
//!   length (>= the header, <= the bytes present). The datagram ends at its total
//!   length, so Ethernet padding after it is ignored.
//! - **IPv6**: version, payload length (<= the bytes present; padding after it is
//!   ignored), then a bounded walk over at most [`MAX_IPV6_EXT_HEADERS`] extension
//!   headers: hop-by-hop (0), routing (43), fragment (44), destination options (60) and
//!   AH (51, length in 4-byte units plus 2), in whatever order they come (a hop-by-hop
//!   header that is not first is walked, not refused). Any other next header ends the
//!   walk and is the upper-layer protocol, including ESP (50), No Next Header (59,
//!   [`L4::None`]), Mobility (135), HIP (139) and Shim6 (140).
//! - **Jumbograms are not supported**: an IPv6 payload length of 0 with a hop-by-hop
//!   header next (RFC 2675) is [`ParseError::BadIpv6PayloadLength`]. A single-segment
//!   mbuf cannot hold one anyway. (Payload length 0 with any other next header is a
//!   valid empty payload.)
//! - **Layer 4**: TCP (ports, flags byte; data offset >= 5 and the whole header, options
//!   included, inside the datagram, else [`ParseError::BadTcpHeaderLength`]), UDP (8
//!   bytes), SCTP (12-byte common header), ICMP in IPv4 and ICMPv6 in IPv6 (type and
//!   code; the 4 bytes of type, code and checksum must be present; the echo identifier
//!   too, for echo requests and replies whose 8-byte header is there). ICMP (1) inside IPv6
//!   and ICMPv6 (58) inside IPv4 are not interpreted ([`L4::None`]). Everything else:
//!   [`L4::None`] with `proto` set. Only the header is required; the L4 payload may be
//!   empty.
//! - **Fragments** (IPv4 and IPv6 alike):
//!   - offset 0 and more-fragments set: [`Fragment::First`]; its L4 header must be
//!     complete, else [`ParseError::BadFragment`] rather than
//!     [`ParseError::TruncatedL4`] (tiny-fragment attack, RFC 1858; for IPv6 the first
//!     fragment must hold the whole header chain, RFC 7112). A bad TCP data offset in a
//!     first fragment is still [`ParseError::BadTcpHeaderLength`];
//!   - offset > 0: [`Fragment::Later`], `proto` from the header, [`L4::None`],
//!     `tcp_flags` 0;
//!   - a TCP fragment at offset 8 is [`ParseError::BadFragment`]: it can only overlap
//!     and rewrite the TCP flags of the first fragment (RFC 1858 section 4);
//!   - a fragment that would make the reassembled datagram longer than 65535 bytes
//!     (IPv4: header + offset + fragment data, the total length field; IPv6: the
//!     unfragmentable extension headers + offset + fragment data, the payload length
//!     field) is [`ParseError::BadFragment`] (ping of death; RFC 791, RFC 8200 4.5);
//!   - an IPv6 fragment header with offset 0 and more-fragments clear (an "atomic
//!     fragment", RFC 6946) is not a fragment: [`Fragment::None`];
//!   - a second fragment header in one IPv6 chain is [`ParseError::BadFragment`].
//!
//! `parse` sees one contiguous slice. For a multi-segment mbuf the caller passes the
//! first segment; headers that run past it are reported as truncated, never read across
//! segments.

use std::net::IpAddr;

pub mod icmp;
mod ip;
mod l4;
#[cfg(test)]
mod tests;

/// Ethertype of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Smallest ethertype: a smaller value in that field is an IEEE 802.3 length (LLC frame).
pub const ETHERTYPE_MIN: u16 = 0x0600;
/// Ethertype of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Ethertype of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Ethertype of an 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// Ethertype of an 802.1ad service tag (QinQ).
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
/// Ethertype of a legacy, pre-802.1ad QinQ service tag; accepted like [`ETHERTYPE_QINQ`].
pub const ETHERTYPE_QINQ_LEGACY: u16 = 0x9100;

/// Length of an Ethernet II header (two MAC addresses and the ethertype).
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of one VLAN tag (TCI and the next ethertype).
pub const VLAN_TAG_LEN: usize = 4;
/// Most IPv6 extension headers the parser walks before giving up with
/// [`ParseError::TooManyIpv6ExtHeaders`].
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

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
    /// IPv6 hop-by-hop options header.
    pub const IPV6_HOP_BY_HOP: u8 = 0;
    /// IPv6 routing header.
    pub const IPV6_ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const IPV6_FRAGMENT: u8 = 44;
    /// IPsec Encapsulating Security Payload (not walked: its contents are encrypted).
    pub const ESP: u8 = 50;
    /// IPsec Authentication Header.
    pub const AH: u8 = 51;
    /// IPv6 No Next Header.
    pub const IPV6_NO_NEXT_HEADER: u8 = 59;
    /// IPv6 destination options header.
    pub const IPV6_DEST_OPTS: u8 = 60;
}

/// TCP flag bits of [`PacketMeta::tcp_flags`].
pub mod tcp_flags {
    /// FIN: no more data from the sender.
    pub const FIN: u8 = 0x01;
    /// SYN: synchronise sequence numbers (opens a connection).
    pub const SYN: u8 = 0x02;
    /// RST: reset the connection.
    pub const RST: u8 = 0x04;
    /// PSH: push.
    pub const PSH: u8 = 0x08;
    /// ACK: the acknowledgement field is significant.
    pub const ACK: u8 = 0x10;
    /// URG: the urgent pointer is significant.
    pub const URG: u8 = 0x20;
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
        /// The echo identifier (bytes 4-5) of an echo request or reply (ICMP types 8
        /// and 0, ICMPv6 128 and 129) whose 8-byte header is present; 0 for every other
        /// message. Connection tracking keys ICMP echo on it instead of ports.
        id: u16,
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
    /// A frame that is not IP (ARP, LLDP, an 802.3 length, ...): no addresses, no L4.
    pub fn non_ip(outer_vlan: Option<u16>, inner_vlan: Option<u16>, ethertype: u16) -> PacketMeta {
        PacketMeta {
            outer_vlan,
            inner_vlan,
            ethertype,
            addrs: None,
            proto: 0,
            l4: L4::None,
            tcp_flags: 0,
            fragment: Fragment::None,
        }
    }

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
    /// Fragment offset plus length beyond 65535 bytes, a first fragment too short to
    /// hold its L4 header (tiny-fragment attack, RFC 1858), a TCP fragment at offset 8
    /// (overlapping the TCP flags, RFC 1858), or two IPv6 fragment headers.
    BadFragment,
}

/// Parses an Ethernet frame (see the [module documentation](self) for what is read and
/// the choices made).
///
/// Never panics and never allocates, whatever the bytes. `frame` is the frame as
/// received, without the FCS; bytes after the IP datagram (Ethernet padding) are ignored.
///
/// # Errors
///
/// A [`ParseError`] naming the first header found truncated or lying about a length;
/// see each variant, and the module documentation for fragments and jumbograms.
#[inline]
pub fn parse(frame: &[u8]) -> Result<PacketMeta, ParseError> {
    let eth: &[u8; ETHERNET_HEADER_LEN] = array(frame, 0).ok_or(ParseError::TruncatedEthernet)?;
    let mut ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    let mut off = ETHERNET_HEADER_LEN;
    let mut outer_vlan = None;
    let mut inner_vlan = None;
    if is_vlan_tag(ethertype) {
        let (vid, next) = vlan_tag(frame, off)?;
        outer_vlan = Some(vid);
        ethertype = next;
        off += VLAN_TAG_LEN;
        if is_vlan_tag(ethertype) {
            let (vid, next) = vlan_tag(frame, off)?;
            inner_vlan = Some(vid);
            ethertype = next;
            off += VLAN_TAG_LEN;
            if is_vlan_tag(ethertype) {
                return Err(ParseError::TooManyVlanTags);
            }
        }
    }
    let link = ip::Link {
        outer_vlan,
        inner_vlan,
        ethertype,
    };
    // `off` is at most 22 and every byte before it was read, so this never fails.
    let l3 = frame.get(off..).unwrap_or_default();
    match ethertype {
        ETHERTYPE_IPV4 => ip::ipv4(link, l3),
        ETHERTYPE_IPV6 => ip::ipv6(link, l3),
        _ => Ok(PacketMeta::non_ip(outer_vlan, inner_vlan, ethertype)),
    }
}

/// Whether `ethertype` introduces a VLAN tag (802.1Q, 802.1ad or legacy QinQ).
#[inline(always)]
fn is_vlan_tag(ethertype: u16) -> bool {
    matches!(
        ethertype,
        ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_LEGACY
    )
}

/// Reads the VLAN tag at `off`: its 12-bit VID and the ethertype that follows it.
#[inline(always)]
fn vlan_tag(frame: &[u8], off: usize) -> Result<(u16, u16), ParseError> {
    let tag: &[u8; VLAN_TAG_LEN] = array(frame, off).ok_or(ParseError::TruncatedVlan)?;
    Ok((
        u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff,
        u16::from_be_bytes([tag[2], tag[3]]),
    ))
}

/// The `N` bytes of `bytes` at `off`, as an array reference, if they are all there.
///
/// Fixed-size arrays let the callers read fields with constant indices that the
/// compiler checks, after this one bounds check.
#[inline(always)]
fn array<const N: usize>(bytes: &[u8], off: usize) -> Option<&[u8; N]> {
    bytes.get(off..off.checked_add(N)?)?.try_into().ok()
}
