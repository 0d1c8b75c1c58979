//! ICMP and ICMPv6 message kinds, and the packet an ICMP error quotes.
//!
//! An ICMP error (destination unreachable, time exceeded, parameter problem; ICMPv6
//! also packet too big) carries, after its 8-byte header, the start of the datagram that
//! caused it: its IP header and at least the first 8 bytes of its L4 header (RFC 792,
//! RFC 4443). [`error_quote`] reads that quoted header in place so that connection
//! tracking can find the flow the error belongs to. Like [`super::parse`] it never
//! panics and never allocates: every read is a checked `get`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{array, proto, PacketMeta, ETHERNET_HEADER_LEN, L4, MAX_IPV6_EXT_HEADERS, VLAN_TAG_LEN};

/// ICMP echo reply.
pub const V4_ECHO_REPLY: u8 = 0;
/// ICMP destination unreachable.
pub const V4_DEST_UNREACHABLE: u8 = 3;
/// ICMP echo request.
pub const V4_ECHO_REQUEST: u8 = 8;
/// ICMP time exceeded.
pub const V4_TIME_EXCEEDED: u8 = 11;
/// ICMP parameter problem.
pub const V4_PARAMETER_PROBLEM: u8 = 12;
/// ICMPv6 destination unreachable.
pub const V6_DEST_UNREACHABLE: u8 = 1;
/// ICMPv6 packet too big.
pub const V6_PACKET_TOO_BIG: u8 = 2;
/// ICMPv6 time exceeded.
pub const V6_TIME_EXCEEDED: u8 = 3;
/// ICMPv6 parameter problem.
pub const V6_PARAMETER_PROBLEM: u8 = 4;
/// ICMPv6 echo request.
pub const V6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 echo reply.
pub const V6_ECHO_REPLY: u8 = 129;

/// Length of the ICMP header before an error's quoted datagram.
const ICMP_HEADER_LEN: usize = 8;

/// What an ICMP or ICMPv6 message is, as far as connection tracking cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Echo request (ICMP 8, ICMPv6 128): may start a pseudo-connection.
    EchoRequest,
    /// Echo reply (ICMP 0, ICMPv6 129): the reply of one.
    EchoReply,
    /// An error that quotes the datagram that caused it.
    Error,
    /// Anything else (neighbour discovery, router advertisements, timestamps, ...).
    Other,
}

/// The kind of an ICMP message of type `ty` carried in IP protocol `proto`
/// ([`proto::ICMP`] or [`proto::ICMPV6`]; any other protocol gives [`Kind::Other`]).
#[inline]
pub fn kind(proto: u8, ty: u8) -> Kind {
    match (proto, ty) {
        (proto::ICMP, V4_ECHO_REQUEST) | (proto::ICMPV6, V6_ECHO_REQUEST) => Kind::EchoRequest,
        (proto::ICMP, V4_ECHO_REPLY) | (proto::ICMPV6, V6_ECHO_REPLY) => Kind::EchoReply,
        (proto::ICMP, V4_DEST_UNREACHABLE | V4_TIME_EXCEEDED | V4_PARAMETER_PROBLEM)
        | (
            proto::ICMPV6,
            V6_DEST_UNREACHABLE | V6_PACKET_TOO_BIG | V6_TIME_EXCEEDED | V6_PARAMETER_PROBLEM,
        ) => Kind::Error,
        _ => Kind::Other,
    }
}

/// Whether type `ty` in protocol `proto` is an echo request or reply.
#[inline]
pub fn is_echo(proto: u8, ty: u8) -> bool {
    matches!(kind(proto, ty), Kind::EchoRequest | Kind::EchoReply)
}

/// The header of the datagram an ICMP error quotes. Its L4 is [`L4::Ports`] for TCP,
/// UDP and SCTP, [`L4::Icmp`] (with the echo identifier) for ICMP of the same IP
/// version, [`L4::None`] otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quote {
    /// Source address of the quoted datagram (the host the error is sent back to).
    pub src: IpAddr,
    /// Destination address of the quoted datagram.
    pub dst: IpAddr,
    /// IP protocol of the quoted datagram (after IPv6 extension headers).
    pub proto: u8,
    /// Its ports, or ICMP type, code and echo identifier.
    pub l4: L4,
}

/// The datagram quoted by the ICMP error in `frame`, whose parse is `meta`.
///
/// `None` when `meta` is not an ICMP error ([`Kind::Error`]) of an unfragmented or
/// first-fragment datagram, or when the quote is too short or malformed: an IP header
/// of the outer packet's version (IPv4: version, IHL; IPv6: the fixed header and at
/// most [`MAX_IPV6_EXT_HEADERS`] extension headers), not a later fragment, and the
/// first 4 bytes of its L4 header (6 for an ICMP echo, to reach the identifier). The
/// quoted total length is not checked: quotes are truncated by design.
///
/// Never panics and never allocates.
pub fn error_quote(frame: &[u8], meta: &PacketMeta) -> Option<Quote> {
    let L4::Icmp { ty, .. } = meta.l4 else {
        return None;
    };
    if kind(meta.proto, ty) != Kind::Error || matches!(meta.fragment, super::Fragment::Later { .. }) {
        return None;
    }
    let tags = usize::from(meta.outer_vlan.is_some()) + usize::from(meta.inner_vlan.is_some());
    let l3 = frame.get(ETHERNET_HEADER_LEN + tags * VLAN_TAG_LEN..)?;
    let icmp_msg = match meta.addrs? {
        (IpAddr::V4(_), _) => {
            let h: &[u8; 20] = array(l3, 0)?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            l3.get(ihl..total)?
        }
        (IpAddr::V6(_), _) => {
            let h: &[u8; 40] = array(l3, 0)?;
            let payload_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
            let payload = l3.get(40..40 + payload_len)?;
            let (_, off) = walk_ipv6(h[6], payload)?;
            payload.get(off..)?
        }
    };
    let quoted = icmp_msg.get(ICMP_HEADER_LEN..)?;
    match meta.addrs? {
        (IpAddr::V4(_), _) => quote_v4(quoted),
        (IpAddr::V6(_), _) => quote_v6(quoted),
    }
}

/// The quoted IPv4 header and the start of its L4 header.
fn quote_v4(q: &[u8]) -> Option<Quote> {
    let h: &[u8; 20] = array(q, 0)?;
    if h[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    if u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
        return None; // a later fragment quotes no L4 header
    }
    let proto = h[9];
    let src = IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19]));
    let l4 = quoted_l4(proto, proto::ICMP, q.get(ihl..)?)?;
    Some(Quote { src, dst, proto, l4 })
}

/// The quoted IPv6 header, its extension headers and the start of its L4 header.
fn quote_v6(q: &[u8]) -> Option<Quote> {
    let h: &[u8; 40] = array(q, 0)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let src: &[u8; 16] = array(q, 8)?;
    let dst: &[u8; 16] = array(q, 24)?;
    let rest = q.get(40..)?;
    let (proto, off) = walk_ipv6(h[6], rest)?;
    let l4 = quoted_l4(proto, proto::ICMPV6, rest.get(off..)?)?;
    Some(Quote {
        src: IpAddr::V6(Ipv6Addr::from(*src)),
        dst: IpAddr::V6(Ipv6Addr::from(*dst)),
        proto,
        l4,
    })
}

/// Walks at most [`MAX_IPV6_EXT_HEADERS`] extension headers starting with `next` at the
/// start of `payload`: the upper-layer protocol and its offset. `None` for a truncated
/// chain, too many headers, or a fragment header of a later fragment.
fn walk_ipv6(mut next: u8, payload: &[u8]) -> Option<(u8, usize)> {
    let mut off = 0usize;
    for _ in 0..=MAX_IPV6_EXT_HEADERS {
        let len = match next {
            proto::IPV6_HOP_BY_HOP | proto::IPV6_ROUTING | proto::IPV6_DEST_OPTS => {
                let nl: &[u8; 2] = array(payload, off)?;
                (usize::from(nl[1]) + 1) * 8
            }
            proto::AH => {
                let nl: &[u8; 2] = array(payload, off)?;
                (usize::from(nl[1]) + 2) * 4
            }
            proto::IPV6_FRAGMENT => {
                let f: &[u8; 4] = array(payload, off)?;
                if u16::from_be_bytes([f[2], f[3]]) & 0xfff8 != 0 {
                    return None;
                }
                8
            }
            _ => return Some((next, off)),
        };
        next = *payload.get(off)?;
        off += len;
    }
    None
}

/// The start of a quoted L4 header: 4 bytes of ports, or an ICMP header of the same IP
/// version (6 bytes for an echo, to reach the identifier).
fn quoted_l4(proto: u8, icmp: u8, data: &[u8]) -> Option<L4> {
    match proto {
        proto::TCP | proto::UDP | proto::SCTP => {
            let p: &[u8; 4] = array(data, 0)?;
            Some(L4::Ports {
                src: u16::from_be_bytes([p[0], p[1]]),
                dst: u16::from_be_bytes([p[2], p[3]]),
            })
        }
        p if p == icmp => {
            let h: &[u8; 2] = array(data, 0)?;
            let id = if is_echo(p, h[0]) {
                let b: &[u8; 2] = array(data, 4)?;
                u16::from_be_bytes(*b)
            } else {
                0
            };
            Some(L4::Icmp { ty: h[0], code: h[1], id })
        }
        _ => Some(L4::None),
    }
}
