//! IPv4 and IPv6 headers, IPv6 extension headers and fragments.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::l4::{l4, L4Meta};
use super::{array, proto, Fragment, PacketMeta, ParseError, L4, MAX_IPV6_EXT_HEADERS};

/// Length of an IPv4 header without options.
const IPV4_MIN_HEADER_LEN: usize = 20;
/// Length of the fixed IPv6 header.
const IPV6_HEADER_LEN: usize = 40;
/// Length of an IPv6 fragment header.
const IPV6_FRAGMENT_HEADER_LEN: usize = 8;
/// Largest IPv4 total length and IPv6 payload length a reassembled datagram may have.
const MAX_REASSEMBLED_LEN: usize = 65535;
/// The one fragment offset that lets a later TCP fragment rewrite the TCP flags of the
/// first one (RFC 1858 section 4: offset 1, in 8-byte units).
const TCP_FLAGS_OVERLAP_OFFSET: u16 = 8;

/// What the link layer found: copied into the `PacketMeta` of an IP packet.
#[derive(Clone, Copy, Debug)]
pub(super) struct Link {
    pub(super) outer_vlan: Option<u16>,
    pub(super) inner_vlan: Option<u16>,
    pub(super) ethertype: u16,
}

/// Parses an IPv4 datagram and its L4 header. `l3` runs from the IPv4 header to the end
/// of the frame (padding included).
#[inline]
pub(super) fn ipv4(link: Link, l3: &[u8]) -> Result<PacketMeta, ParseError> {
    let h: &[u8; IPV4_MIN_HEADER_LEN] = array(l3, 0).ok_or(ParseError::TruncatedIpv4)?;
    if h[0] >> 4 != 4 {
        return Err(ParseError::BadIpv4Version);
    }
    let header_len = usize::from(h[0] & 0x0f) * 4;
    if header_len < IPV4_MIN_HEADER_LEN || header_len > l3.len() {
        return Err(ParseError::BadIpv4HeaderLength);
    }
    let total_len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if total_len < header_len {
        return Err(ParseError::BadIpv4TotalLength);
    }
    let payload = l3
        .get(header_len..total_len)
        .ok_or(ParseError::BadIpv4TotalLength)?;

    let proto = h[9];
    let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
    let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
    let addrs = Some((IpAddr::V4(src), IpAddr::V4(dst)));

    let flags_offset = u16::from_be_bytes([h[6], h[7]]);
    let more_fragments = flags_offset & 0x2000 != 0;
    let offset = (flags_offset & 0x1fff) << 3;
    let id = u32::from(u16::from_be_bytes([h[4], h[5]]));

    let fragment = if offset != 0 {
        // The reassembled total length must fit its 16-bit field.
        if header_len + usize::from(offset) + payload.len() > MAX_REASSEMBLED_LEN {
            return Err(ParseError::BadFragment);
        }
        later_fragment(proto, id, offset)?
    } else if more_fragments {
        Fragment::First { id }
    } else {
        Fragment::None
    };
    upper(link, addrs, proto, proto::ICMP, payload, fragment)
}

/// Parses an IPv6 packet, its extension headers and its L4 header. `l3` runs from the
/// IPv6 header to the end of the frame (padding included).
#[inline]
pub(super) fn ipv6(link: Link, l3: &[u8]) -> Result<PacketMeta, ParseError> {
    let h: &[u8; IPV6_HEADER_LEN] = array(l3, 0).ok_or(ParseError::TruncatedIpv6)?;
    if h[0] >> 4 != 6 {
        return Err(ParseError::BadIpv6Version);
    }
    let payload_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    let mut next = h[6];
    if payload_len == 0 && next == proto::IPV6_HOP_BY_HOP {
        // Possibly a jumbogram (RFC 2675): not supported.
        return Err(ParseError::BadIpv6PayloadLength);
    }
    let payload = l3
        .get(IPV6_HEADER_LEN..IPV6_HEADER_LEN + payload_len)
        .ok_or(ParseError::BadIpv6PayloadLength)?;

    // Both are inside the 40 bytes just checked; the compiler folds these checks.
    let src: &[u8; 16] = array(l3, 8).ok_or(ParseError::TruncatedIpv6)?;
    let dst: &[u8; 16] = array(l3, 24).ok_or(ParseError::TruncatedIpv6)?;
    let addrs = Some((
        IpAddr::V6(Ipv6Addr::from(*src)),
        IpAddr::V6(Ipv6Addr::from(*dst)),
    ));

    // Offset of the current header within `payload`. Bounded by the payload length
    // (<= 65535), and each step adds at most 2048, so it cannot overflow.
    let mut off = 0usize;
    let mut fragment = Fragment::None;
    let mut seen_fragment_header = false;
    let mut headers = 0usize;
    loop {
        let (following, len) = match next {
            proto::IPV6_HOP_BY_HOP | proto::IPV6_ROUTING | proto::IPV6_DEST_OPTS => {
                let nl: &[u8; 2] = ext_header(payload, off, &mut headers)?;
                (nl[0], (usize::from(nl[1]) + 1) * 8)
            }
            proto::AH => {
                let nl: &[u8; 2] = ext_header(payload, off, &mut headers)?;
                (nl[0], (usize::from(nl[1]) + 2) * 4)
            }
            proto::IPV6_FRAGMENT => {
                let f: &[u8; IPV6_FRAGMENT_HEADER_LEN] = ext_header(payload, off, &mut headers)?;
                if seen_fragment_header {
                    return Err(ParseError::BadFragment);
                }
                seen_fragment_header = true;
                let offset_m = u16::from_be_bytes([f[2], f[3]]);
                let offset = offset_m & 0xfff8;
                let more_fragments = offset_m & 1 != 0;
                let id = u32::from_be_bytes([f[4], f[5], f[6], f[7]]);
                let data_len = payload.len().saturating_sub(off + IPV6_FRAGMENT_HEADER_LEN);
                // Reassembled payload length: the unfragmentable headers before this
                // one, then the fragmentable part up to the end of this fragment.
                if off + usize::from(offset) + data_len > MAX_REASSEMBLED_LEN {
                    return Err(ParseError::BadFragment);
                }
                if offset != 0 {
                    // A later fragment: what follows is not a header.
                    return Ok(PacketMeta {
                        outer_vlan: link.outer_vlan,
                        inner_vlan: link.inner_vlan,
                        ethertype: link.ethertype,
                        addrs,
                        proto: f[0],
                        l4: L4::None,
                        tcp_flags: 0,
                        fragment: later_fragment(f[0], id, offset)?,
                    });
                }
                if more_fragments {
                    fragment = Fragment::First { id };
                }
                // else an atomic fragment (RFC 6946): processed as unfragmented.
                (f[0], IPV6_FRAGMENT_HEADER_LEN)
            }
            _ => break,
        };
        if off + len > payload.len() {
            return Err(ParseError::TruncatedIpv6ExtHeader);
        }
        next = following;
        off += len;
    }
    let upper_layer = payload.get(off..).unwrap_or_default();
    upper(link, addrs, next, proto::ICMPV6, upper_layer, fragment)
}

/// Counts one more extension header and reads its first `N` bytes at `off`.
#[inline(always)]
fn ext_header<'a, const N: usize>(
    payload: &'a [u8],
    off: usize,
    headers: &mut usize,
) -> Result<&'a [u8; N], ParseError> {
    *headers += 1;
    if *headers > MAX_IPV6_EXT_HEADERS {
        return Err(ParseError::TooManyIpv6ExtHeaders);
    }
    array(payload, off).ok_or(ParseError::TruncatedIpv6ExtHeader)
}

/// The [`Fragment`] of a fragment at a non-zero `offset`, or [`ParseError::BadFragment`]
/// for a TCP fragment that can only overlap the first fragment's flags.
#[inline(always)]
fn later_fragment(proto: u8, id: u32, offset: u16) -> Result<Fragment, ParseError> {
    if proto == proto::TCP && offset == TCP_FLAGS_OVERLAP_OFFSET {
        return Err(ParseError::BadFragment);
    }
    Ok(Fragment::Later { id, offset })
}

/// Finishes an IP packet: a later fragment has no L4 header; otherwise the L4 header is
/// read from `data`, and a first fragment too short for it is a tiny fragment.
#[inline(always)]
fn upper(
    link: Link,
    addrs: Option<(IpAddr, IpAddr)>,
    proto: u8,
    icmp: u8,
    data: &[u8],
    fragment: Fragment,
) -> Result<PacketMeta, ParseError> {
    let L4Meta { l4, tcp_flags } = match fragment {
        Fragment::Later { .. } => L4Meta::NONE,
        Fragment::None => l4(proto, icmp, data)?,
        Fragment::First { .. } => l4(proto, icmp, data).map_err(|e| match e {
            ParseError::TruncatedL4 => ParseError::BadFragment,
            other => other,
        })?,
    };
    Ok(PacketMeta {
        outer_vlan: link.outer_vlan,
        inner_vlan: link.inner_vlan,
        ethertype: link.ethertype,
        addrs,
        proto,
        l4,
        tcp_flags,
        fragment,
    })
}
