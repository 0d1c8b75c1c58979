//! Layer-4 headers: TCP, UDP, SCTP, ICMP and ICMPv6.

use super::{array, proto, ParseError, L4};

/// Length of a TCP header without options.
const TCP_MIN_HEADER_LEN: usize = 20;
/// Length of a UDP header.
const UDP_HEADER_LEN: usize = 8;
/// Length of the SCTP common header.
const SCTP_COMMON_HEADER_LEN: usize = 12;
/// Type, code and checksum: the part of an ICMP or ICMPv6 header every message has.
const ICMP_MIN_HEADER_LEN: usize = 4;

/// What the L4 header contributes to a `PacketMeta`.
#[derive(Clone, Copy, Debug)]
pub(super) struct L4Meta {
    pub(super) l4: L4,
    pub(super) tcp_flags: u8,
}

impl L4Meta {
    /// Nothing read.
    pub(super) const NONE: L4Meta = L4Meta {
        l4: L4::None,
        tcp_flags: 0,
    };
}

/// Reads the L4 header of protocol `proto` at the start of `data`, which ends where the
/// IP datagram ends. `icmp` is the ICMP protocol number of the IP version (1 for IPv4,
/// 58 for IPv6); other protocols without ports give [`L4::None`].
#[inline(always)]
pub(super) fn l4(proto: u8, icmp: u8, data: &[u8]) -> Result<L4Meta, ParseError> {
    match proto {
        proto::TCP => {
            let h: &[u8; TCP_MIN_HEADER_LEN] = array(data, 0).ok_or(ParseError::TruncatedL4)?;
            let header_len = usize::from(h[12] >> 4) * 4;
            if header_len < TCP_MIN_HEADER_LEN || header_len > data.len() {
                return Err(ParseError::BadTcpHeaderLength);
            }
            Ok(L4Meta {
                l4: ports(h[0], h[1], h[2], h[3]),
                tcp_flags: h[13],
            })
        }
        proto::UDP => {
            let h: &[u8; UDP_HEADER_LEN] = array(data, 0).ok_or(ParseError::TruncatedL4)?;
            Ok(L4Meta {
                l4: ports(h[0], h[1], h[2], h[3]),
                tcp_flags: 0,
            })
        }
        proto::SCTP => {
            let h: &[u8; SCTP_COMMON_HEADER_LEN] = array(data, 0).ok_or(ParseError::TruncatedL4)?;
            Ok(L4Meta {
                l4: ports(h[0], h[1], h[2], h[3]),
                tcp_flags: 0,
            })
        }
        p if p == icmp => {
            let h: &[u8; ICMP_MIN_HEADER_LEN] = array(data, 0).ok_or(ParseError::TruncatedL4)?;
            let id = if super::icmp::is_echo(proto, h[0]) {
                array::<2>(data, 4).map_or(0, |b| u16::from_be_bytes(*b))
            } else {
                0
            };
            Ok(L4Meta {
                l4: L4::Icmp {
                    ty: h[0],
                    code: h[1],
                    id,
                },
                tcp_flags: 0,
            })
        }
        _ => Ok(L4Meta::NONE),
    }
}

/// Source and destination port from their big-endian bytes.
#[inline(always)]
fn ports(s0: u8, s1: u8, d0: u8, d1: u8) -> L4 {
    L4::Ports {
        src: u16::from_be_bytes([s0, s1]),
        dst: u16::from_be_bytes([d0, d1]),
    }
}
