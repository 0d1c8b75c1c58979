//! Parser tests. Packets are built with smoltcp's `wire` module (an independent
//! implementation) where it has the header, and by hand, commented, where it has not
//! (VLAN tags, IPv6 extension headers, SCTP).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet, Icmpv6Message,
    Icmpv6Packet, IpProtocol, Ipv4Address, Ipv4Packet, Ipv6Address, Ipv6Packet, TcpPacket,
    UdpPacket,
};

use super::*;

// ---------------------------------------------------------------------------------------
// Builders.

const SRC4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);
const DST4: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 7);
const SRC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 5);
const DST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 7);

const SYN_ACK: u8 = 0x12;

/// An Ethernet frame: header, the given VLAN tags (TPID, VID), ethertype, payload.
fn eth_tagged(tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 14];
    let mut frame = EthernetFrame::new_unchecked(&mut v[..]);
    frame.set_dst_addr(EthernetAddress([0x02, 0, 0, 0, 0, 2]));
    frame.set_src_addr(EthernetAddress([0x02, 0, 0, 0, 0, 1]));
    let first = tags.first().map_or(ethertype, |t| t.0);
    frame.set_ethertype(EthernetProtocol::from(first));
    for (i, &(_, vid)) in tags.iter().enumerate() {
        // TCI: PCP 5 and DEI 1 set, to check that they are masked off; then the VID.
        v.extend_from_slice(&(0xb000 | vid).to_be_bytes());
        let next = tags.get(i + 1).map_or(ethertype, |t| t.0);
        v.extend_from_slice(&next.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    eth_tagged(&[], ethertype, payload)
}

/// A TCP segment with `options` bytes of options (a multiple of 4) and `data`.
fn tcp(src: u16, dst: u16, flags: u8, options: usize, data: &[u8]) -> Vec<u8> {
    let hlen = 20 + options;
    let mut v = vec![0u8; hlen + data.len()];
    let mut p = TcpPacket::new_unchecked(&mut v[..]);
    p.set_src_port(src);
    p.set_dst_port(dst);
    p.set_header_len(hlen as u8);
    p.set_fin(flags & 0x01 != 0);
    p.set_syn(flags & 0x02 != 0);
    p.set_rst(flags & 0x04 != 0);
    p.set_psh(flags & 0x08 != 0);
    p.set_ack(flags & 0x10 != 0);
    p.set_urg(flags & 0x20 != 0);
    p.set_ece(flags & 0x40 != 0);
    p.set_cwr(flags & 0x80 != 0);
    p.set_window_len(65535);
    // Options: NOPs.
    for b in v.iter_mut().take(hlen).skip(20) {
        *b = 1;
    }
    v[hlen..].copy_from_slice(data);
    v
}

fn udp(src: u16, dst: u16, data: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 8 + data.len()];
    let mut p = UdpPacket::new_unchecked(&mut v[..]);
    p.set_src_port(src);
    p.set_dst_port(dst);
    p.set_len((8 + data.len()) as u16);
    v[8..].copy_from_slice(data);
    v
}

/// SCTP common header (by hand): src port, dst port, verification tag, checksum.
fn sctp(src: u16, dst: u16) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&src.to_be_bytes());
    v.extend_from_slice(&dst.to_be_bytes());
    v.extend_from_slice(&0x1234_5678u32.to_be_bytes()); // verification tag
    v.extend_from_slice(&0u32.to_be_bytes()); // checksum
    v
}

fn icmpv4(ty: u8, code: u8) -> Vec<u8> {
    let mut v = vec![0u8; 8];
    let mut p = Icmpv4Packet::new_unchecked(&mut v[..]);
    p.set_msg_type(Icmpv4Message::from(ty));
    p.set_msg_code(code);
    p.set_echo_ident(0x4242);
    p.set_echo_seq_no(1);
    v
}

fn icmpv6(ty: u8, code: u8) -> Vec<u8> {
    let mut v = vec![0u8; 8];
    let mut p = Icmpv6Packet::new_unchecked(&mut v[..]);
    p.set_msg_type(Icmpv6Message::from(ty));
    p.set_msg_code(code);
    v
}

/// IPv4 header fields the tests vary.
#[derive(Clone, Copy)]
struct V4 {
    proto: u8,
    options: usize,
    id: u16,
    more_frags: bool,
    frag_offset: u16,
}

impl V4 {
    fn new(proto: u8) -> V4 {
        V4 {
            proto,
            options: 0,
            id: 0xbeef,
            more_frags: false,
            frag_offset: 0,
        }
    }
}

/// An IPv4 datagram around `payload`.
fn ipv4_with(h: V4, payload: &[u8]) -> Vec<u8> {
    let hlen = 20 + h.options;
    let mut v = vec![0u8; hlen + payload.len()];
    let mut p = Ipv4Packet::new_unchecked(&mut v[..]);
    p.set_version(4);
    p.set_header_len(hlen as u8);
    p.set_total_len((hlen + payload.len()) as u16);
    p.set_ident(h.id);
    p.set_more_frags(h.more_frags);
    p.set_frag_offset(h.frag_offset);
    p.set_hop_limit(64);
    p.set_next_header(IpProtocol::from(h.proto));
    p.set_src_addr(Ipv4Address::from_bytes(&SRC4.octets()));
    p.set_dst_addr(Ipv4Address::from_bytes(&DST4.octets()));
    p.fill_checksum();
    // Options: a record-route-like filler of NOPs, then end-of-options.
    for b in v.iter_mut().take(hlen).skip(20) {
        *b = 1;
    }
    if h.options > 0 {
        v[hlen - 1] = 0;
    }
    v[hlen..].copy_from_slice(payload);
    v
}

fn ipv4(proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_with(V4::new(proto), payload)
}

/// An IPv6 packet around `payload` (which starts with `next`).
fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 40 + payload.len()];
    let mut p = Ipv6Packet::new_unchecked(&mut v[..]);
    p.set_version(6);
    p.set_payload_len(payload.len() as u16);
    p.set_next_header(IpProtocol::from(next));
    p.set_hop_limit(64);
    p.set_src_addr(Ipv6Address::from_bytes(&SRC6.octets()));
    p.set_dst_addr(Ipv6Address::from_bytes(&DST6.octets()));
    v[40..].copy_from_slice(payload);
    v
}

/// A generic IPv6 extension header (hop-by-hop, routing, destination options), by hand:
/// next header, length in 8-byte units beyond the first 8, then padding (PadN).
fn ext(next: u8, units: u8) -> Vec<u8> {
    let len = (usize::from(units) + 1) * 8;
    let mut v = vec![0u8; len];
    v[0] = next;
    v[1] = units;
    v[2] = 1; // PadN option
    v[3] = (len - 4) as u8; // its length
    v
}

/// An IPsec AH header, by hand: next header, length in 4-byte units minus 2, reserved,
/// SPI, sequence number, then `icv` bytes of integrity check value.
fn ah(next: u8, icv: usize) -> Vec<u8> {
    let len = 12 + icv;
    assert_eq!(len % 4, 0);
    let mut v = vec![0u8; len];
    v[0] = next;
    v[1] = (len / 4 - 2) as u8;
    v[4..8].copy_from_slice(&0x100u32.to_be_bytes()); // SPI
    v[8..12].copy_from_slice(&7u32.to_be_bytes()); // sequence number
    v
}

/// An IPv6 fragment header, by hand: next header, reserved, offset (13 bits, 8-byte
/// units) << 3 | M, identification.
fn frag6(next: u8, offset_bytes: u16, more: bool, id: u32) -> Vec<u8> {
    let mut v = vec![next, 0];
    v.extend_from_slice(&(offset_bytes & 0xfff8 | u16::from(more)).to_be_bytes());
    v.extend_from_slice(&id.to_be_bytes());
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn tcp4_frame() -> Vec<u8> {
    eth(
        ETHERTYPE_IPV4,
        &ipv4(proto::TCP, &tcp(40000, 443, SYN_ACK, 0, b"hello")),
    )
}

fn tcp6_frame() -> Vec<u8> {
    eth(
        ETHERTYPE_IPV6,
        &ipv6(proto::TCP, &tcp(40000, 443, SYN_ACK, 0, b"hello")),
    )
}

fn addrs4() -> Option<(IpAddr, IpAddr)> {
    Some((SRC4.into(), DST4.into()))
}

fn addrs6() -> Option<(IpAddr, IpAddr)> {
    Some((SRC6.into(), DST6.into()))
}

fn ports(src: u16, dst: u16) -> L4 {
    L4::Ports { src, dst }
}

/// Offset of the IP header in an untagged frame.
const L3: usize = 14;

// ---------------------------------------------------------------------------------------
// IPv4.

#[test]
fn ipv4_tcp() {
    assert_eq!(
        parse(&tcp4_frame()),
        Ok(PacketMeta {
            outer_vlan: None,
            inner_vlan: None,
            ethertype: ETHERTYPE_IPV4,
            addrs: addrs4(),
            proto: proto::TCP,
            l4: ports(40000, 443),
            tcp_flags: SYN_ACK,
            fragment: Fragment::None,
        })
    );
}

#[test]
fn ipv4_tcp_all_flags_and_options() {
    let f = eth(ETHERTYPE_IPV4, &ipv4(proto::TCP, &tcp(1, 2, 0xff, 40, b"")));
    let m = parse(&f).unwrap();
    assert_eq!(m.tcp_flags, 0xff);
    assert_eq!(m.l4, ports(1, 2));
}

#[test]
fn ipv4_udp() {
    let m = parse(&eth(
        ETHERTYPE_IPV4,
        &ipv4(proto::UDP, &udp(5353, 53, b"q")),
    ))
    .unwrap();
    assert_eq!(m.addrs, addrs4());
    assert_eq!(m.proto, proto::UDP);
    assert_eq!(m.l4, ports(5353, 53));
    assert_eq!(m.tcp_flags, 0);
    assert_eq!(m.fragment, Fragment::None);
}

#[test]
fn ipv4_udp_empty_payload() {
    let m = parse(&eth(ETHERTYPE_IPV4, &ipv4(proto::UDP, &udp(1, 2, b"")))).unwrap();
    assert_eq!(m.l4, ports(1, 2));
}

#[test]
fn ipv4_icmp() {
    let m = parse(&eth(ETHERTYPE_IPV4, &ipv4(proto::ICMP, &icmpv4(8, 0)))).unwrap();
    assert_eq!(m.proto, proto::ICMP);
    assert_eq!(m.l4, L4::Icmp { ty: 8, code: 0, id: 0x4242 });
    let m = parse(&eth(ETHERTYPE_IPV4, &ipv4(proto::ICMP, &icmpv4(3, 4)))).unwrap();
    assert_eq!(m.l4, L4::Icmp { ty: 3, code: 4, id: 0 });
}

#[test]
fn ipv4_sctp() {
    let m = parse(&eth(ETHERTYPE_IPV4, &ipv4(proto::SCTP, &sctp(2905, 3868)))).unwrap();
    assert_eq!(m.proto, proto::SCTP);
    assert_eq!(m.l4, ports(2905, 3868));
}

#[test]
fn ipv4_other_protocols_have_no_l4() {
    // GRE, ESP, and ICMPv6's number inside IPv4: proto set, nothing read.
    for p in [47u8, proto::ESP, proto::ICMPV6, 0, 255] {
        let m = parse(&eth(ETHERTYPE_IPV4, &ipv4(p, &[0xff; 3]))).unwrap();
        assert_eq!((m.proto, m.l4, m.tcp_flags), (p, L4::None, 0), "proto {p}");
    }
}

#[test]
fn ipv4_options_are_skipped() {
    for options in [4, 8, 20, 40] {
        let mut h = V4::new(proto::UDP);
        h.options = options;
        let m = parse(&eth(ETHERTYPE_IPV4, &ipv4_with(h, &udp(7, 9, b"x")))).unwrap();
        assert_eq!(m.l4, ports(7, 9), "options {options}");
        assert_eq!(m.addrs, addrs4());
    }
}

#[test]
fn ipv4_padding_after_datagram_is_ignored() {
    // A 1-byte UDP datagram (29 bytes of IP) padded to the 60-byte Ethernet minimum.
    let mut f = eth(ETHERTYPE_IPV4, &ipv4(proto::UDP, &udp(1000, 2000, b"x")));
    f.resize(60, 0xaa);
    let m = parse(&f).unwrap();
    assert_eq!(m.l4, ports(1000, 2000));

    // The datagram ends at its total length, not at the end of the frame: a TCP header
    // whose options run into the padding is bad, even though the bytes are there.
    let mut seg = tcp(1, 2, 0x10, 0, b"");
    seg[12] = 6 << 4; // data offset 6: 24 bytes, 4 of them past the datagram
    let mut f = eth(ETHERTYPE_IPV4, &ipv4(proto::TCP, &seg));
    f.extend_from_slice(&[0; 10]);
    assert_eq!(parse(&f), Err(ParseError::BadTcpHeaderLength));

    // Same for a UDP header cut by the total length with padding behind it.
    let mut f = eth(ETHERTYPE_IPV4, &ipv4(proto::UDP, &udp(1, 2, b"")[..4]));
    f.resize(60, 0);
    assert_eq!(parse(&f), Err(ParseError::TruncatedL4));
}

#[test]
fn ipv4_errors() {
    let good = tcp4_frame();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = good.clone();
        f(&mut v);
        parse(&v)
    };
    assert_eq!(with(&|v| v[L3] = 0x65), Err(ParseError::BadIpv4Version));
    assert_eq!(with(&|v| v[L3] = 0x05), Err(ParseError::BadIpv4Version));
    assert_eq!(
        with(&|v| v[L3] = 0x44),
        Err(ParseError::BadIpv4HeaderLength)
    );
    assert_eq!(
        with(&|v| v[L3] = 0x40),
        Err(ParseError::BadIpv4HeaderLength)
    );
    // IHL 15 (60 bytes) beyond this 45-byte datagram... and frame.
    assert_eq!(
        with(&|v| v[L3] = 0x4f),
        Err(ParseError::BadIpv4HeaderLength)
    );
    // Total length below the header, and beyond the frame.
    assert_eq!(
        with(&|v| v[L3 + 2..L3 + 4].copy_from_slice(&19u16.to_be_bytes())),
        Err(ParseError::BadIpv4TotalLength)
    );
    assert_eq!(
        with(&|v| v[L3 + 2..L3 + 4].copy_from_slice(&0u16.to_be_bytes())),
        Err(ParseError::BadIpv4TotalLength)
    );
    let total = (good.len() - L3) as u16;
    assert_eq!(
        with(&|v| v[L3 + 2..L3 + 4].copy_from_slice(&(total + 1).to_be_bytes())),
        Err(ParseError::BadIpv4TotalLength)
    );
    // Total length exactly the header: no room for TCP.
    assert_eq!(
        with(&|v| v[L3 + 2..L3 + 4].copy_from_slice(&20u16.to_be_bytes())),
        Err(ParseError::TruncatedL4)
    );
    // TCP data offset below 5, and beyond the datagram.
    assert_eq!(
        with(&|v| v[L3 + 20 + 12] = 4 << 4),
        Err(ParseError::BadTcpHeaderLength)
    );
    assert_eq!(
        with(&|v| v[L3 + 20 + 12] = 0),
        Err(ParseError::BadTcpHeaderLength)
    );
    assert_eq!(
        with(&|v| v[L3 + 20 + 12] = 0xf0),
        Err(ParseError::BadTcpHeaderLength)
    );
    // Data offset 6 fits in the 25 TCP bytes (20 + "hello").
    assert!(with(&|v| v[L3 + 20 + 12] = 6 << 4).is_ok());
}

#[test]
fn ipv4_truncated_l4_per_protocol() {
    for (p, l4) in [
        (proto::TCP, tcp(1, 2, 0, 0, b"")),
        (proto::UDP, udp(1, 2, b"")),
        (proto::SCTP, sctp(1, 2)),
        (proto::ICMP, icmpv4(0, 0)[..4].to_vec()),
    ] {
        assert!(parse(&eth(ETHERTYPE_IPV4, &ipv4(p, &l4))).is_ok());
        let short = &l4[..l4.len() - 1];
        assert_eq!(
            parse(&eth(ETHERTYPE_IPV4, &ipv4(p, short))),
            Err(ParseError::TruncatedL4),
            "proto {p}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// IPv4 fragments.

fn frag4(proto: u8, more: bool, offset: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = V4::new(proto);
    h.id = 0x1234;
    h.more_frags = more;
    h.frag_offset = offset;
    eth(ETHERTYPE_IPV4, &ipv4_with(h, payload))
}

#[test]
fn ipv4_first_fragment() {
    let m = parse(&frag4(
        proto::TCP,
        true,
        0,
        &tcp(80, 8080, 0x18, 0, &[0; 12]),
    ))
    .unwrap();
    assert_eq!(m.fragment, Fragment::First { id: 0x1234 });
    assert_eq!(m.l4, ports(80, 8080));
    assert_eq!(m.tcp_flags, 0x18);
}

#[test]
fn ipv4_later_fragments() {
    // Middle fragment (MF set) and last fragment (MF clear): no L4, even if the bytes
    // look like one.
    for more in [true, false] {
        let m = parse(&frag4(proto::TCP, more, 1480, &tcp(80, 8080, 0x02, 0, b""))).unwrap();
        assert_eq!(
            m.fragment,
            Fragment::Later {
                id: 0x1234,
                offset: 1480
            }
        );
        assert_eq!((m.proto, m.l4, m.tcp_flags), (proto::TCP, L4::None, 0));
        assert_eq!(m.addrs, addrs4());
    }
    // A later fragment may be shorter than any L4 header.
    let m = parse(&frag4(proto::UDP, false, 8, &[1, 2, 3])).unwrap();
    assert_eq!(
        m.fragment,
        Fragment::Later {
            id: 0x1234,
            offset: 8
        }
    );
    assert_eq!(m.l4, L4::None);
}

#[test]
fn ipv4_tiny_first_fragment_is_bad() {
    // 8 bytes of TCP in a first fragment: the flags are in the next one (RFC 1858).
    let seg = tcp(80, 8080, 0x02, 0, b"");
    assert_eq!(
        parse(&frag4(proto::TCP, true, 0, &seg[..8])),
        Err(ParseError::BadFragment)
    );
    // Unfragmented, the same bytes are merely truncated.
    assert_eq!(
        parse(&frag4(proto::TCP, false, 0, &seg[..8])),
        Err(ParseError::TruncatedL4)
    );
    assert_eq!(
        parse(&frag4(proto::UDP, true, 0, &udp(1, 2, b"")[..6])),
        Err(ParseError::BadFragment)
    );
    // A bad data offset stays a bad data offset.
    let mut seg = tcp(80, 8080, 0x02, 0, b"");
    seg[12] = 0x30;
    assert_eq!(
        parse(&frag4(proto::TCP, true, 0, &seg)),
        Err(ParseError::BadTcpHeaderLength)
    );
}

#[test]
fn ipv4_tcp_fragment_at_offset_8_is_bad() {
    assert_eq!(
        parse(&frag4(proto::TCP, true, 8, &[0; 16])),
        Err(ParseError::BadFragment)
    );
    // Other protocols may have it; TCP may have offset 16.
    assert!(parse(&frag4(proto::UDP, true, 8, &[0; 16])).is_ok());
    assert!(parse(&frag4(proto::TCP, true, 16, &[0; 16])).is_ok());
}

#[test]
fn ipv4_fragment_beyond_65535_is_bad() {
    // Ping of death: the last possible offset with more data than fits.
    assert_eq!(
        parse(&frag4(proto::ICMP, false, 65528, &[0; 16])),
        Err(ParseError::BadFragment)
    );
    // 20 + 65504 + 11 = 65535: fits exactly; one more byte does not.
    assert!(parse(&frag4(proto::ICMP, false, 65504, &[0; 11])).is_ok());
    assert_eq!(
        parse(&frag4(proto::ICMP, false, 65504, &[0; 12])),
        Err(ParseError::BadFragment)
    );
}

#[test]
fn ipv4_df_and_reserved_flags_do_not_make_a_fragment() {
    let mut f = tcp4_frame();
    f[L3 + 6] = 0xc0; // evil bit and DF, offset 0
    let m = parse(&f).unwrap();
    assert_eq!(m.fragment, Fragment::None);
    assert_eq!(m.l4, ports(40000, 443));
}

// ---------------------------------------------------------------------------------------
// IPv6.

#[test]
fn ipv6_tcp() {
    assert_eq!(
        parse(&tcp6_frame()),
        Ok(PacketMeta {
            outer_vlan: None,
            inner_vlan: None,
            ethertype: ETHERTYPE_IPV6,
            addrs: addrs6(),
            proto: proto::TCP,
            l4: ports(40000, 443),
            tcp_flags: SYN_ACK,
            fragment: Fragment::None,
        })
    );
}

#[test]
fn ipv6_udp_sctp_icmpv6() {
    let m = parse(&eth(
        ETHERTYPE_IPV6,
        &ipv6(proto::UDP, &udp(546, 547, b"dhcp")),
    ))
    .unwrap();
    assert_eq!((m.proto, m.l4), (proto::UDP, ports(546, 547)));
    assert_eq!(m.addrs, addrs6());
    let m = parse(&eth(ETHERTYPE_IPV6, &ipv6(proto::SCTP, &sctp(9, 10)))).unwrap();
    assert_eq!((m.proto, m.l4), (proto::SCTP, ports(9, 10)));
    // Neighbour solicitation.
    let m = parse(&eth(ETHERTYPE_IPV6, &ipv6(proto::ICMPV6, &icmpv6(135, 0)))).unwrap();
    assert_eq!(
        (m.proto, m.l4),
        (proto::ICMPV6, L4::Icmp { ty: 135, code: 0, id: 0 })
    );
    // ICMP's IPv4 number inside IPv6 is not interpreted.
    let m = parse(&eth(ETHERTYPE_IPV6, &ipv6(proto::ICMP, &icmpv4(8, 0)))).unwrap();
    assert_eq!((m.proto, m.l4), (proto::ICMP, L4::None));
}

#[test]
fn ipv6_padding_after_payload_is_ignored() {
    let mut f = eth(ETHERTYPE_IPV6, &ipv6(proto::UDP, &udp(1, 2, b"")));
    f.extend_from_slice(&[0xee; 20]);
    assert_eq!(parse(&f).unwrap().l4, ports(1, 2));
    // ...and is not read as part of the payload.
    let mut f = eth(ETHERTYPE_IPV6, &ipv6(proto::UDP, &udp(1, 2, b"")[..7]));
    f.extend_from_slice(&[0xee; 20]);
    assert_eq!(parse(&f), Err(ParseError::TruncatedL4));
}

#[test]
fn ipv6_extension_header_chain() {
    let id = 0xdead_beef;
    let payload = cat(&[
        &ext(proto::IPV6_DEST_OPTS, 0),  // hop-by-hop, 8 bytes
        &ext(proto::IPV6_ROUTING, 1),    // destination options, 16 bytes
        &ext(proto::IPV6_FRAGMENT, 0),   // routing, 8 bytes
        &frag6(proto::AH, 0, true, id),  // fragment: first
        &ah(proto::IPV6_DEST_OPTS, 12),  // AH, 24 bytes
        &ext(proto::TCP, 2),             // destination options, 24 bytes
        &tcp(22, 50000, 0x10, 12, b"x"), // TCP with options
    ]);
    let m = parse(&eth(
        ETHERTYPE_IPV6,
        &ipv6(proto::IPV6_HOP_BY_HOP, &payload),
    ))
    .unwrap();
    assert_eq!(m.proto, proto::TCP);
    assert_eq!(m.l4, ports(22, 50000));
    assert_eq!(m.tcp_flags, 0x10);
    assert_eq!(m.fragment, Fragment::First { id });
}

#[test]
fn ipv6_ah_then_udp() {
    let payload = cat(&[&ah(proto::UDP, 4), &udp(500, 4500, b"ike")]);
    let m = parse(&eth(ETHERTYPE_IPV6, &ipv6(proto::AH, &payload))).unwrap();
    assert_eq!((m.proto, m.l4), (proto::UDP, ports(500, 4500)));
}

#[test]
fn ipv6_no_next_header_and_esp() {
    let payload = ext(proto::IPV6_NO_NEXT_HEADER, 0);
    let m = parse(&eth(ETHERTYPE_IPV6, &ipv6(proto::IPV6_DEST_OPTS, &payload))).unwrap();
    assert_eq!((m.proto, m.l4), (proto::IPV6_NO_NEXT_HEADER, L4::None));
    let m = parse(&eth(ETHERTYPE_IPV6, &ipv6(proto::IPV6_NO_NEXT_HEADER, &[]))).unwrap();
    assert_eq!((m.proto, m.l4), (proto::IPV6_NO_NEXT_HEADER, L4::None));
    // ESP is opaque.
    let m = parse(&eth(ETHERTYPE_IPV6, &ipv6(proto::ESP, &[0; 16]))).unwrap();
    assert_eq!((m.proto, m.l4), (proto::ESP, L4::None));
}

/// A chain of `n` destination-options headers ending in UDP.
fn dest_opts_chain(n: usize) -> Vec<u8> {
    let mut payload = Vec::new();
    for i in 0..n {
        let next = if i + 1 == n {
            proto::UDP
        } else {
            proto::IPV6_DEST_OPTS
        };
        payload.extend_from_slice(&ext(next, 0));
    }
    payload.extend_from_slice(&udp(1, 2, b""));
    eth(ETHERTYPE_IPV6, &ipv6(proto::IPV6_DEST_OPTS, &payload))
}

#[test]
fn ipv6_too_many_extension_headers() {
    assert_eq!(MAX_IPV6_EXT_HEADERS, 8);
    let m = parse(&dest_opts_chain(8)).unwrap();
    assert_eq!(m.l4, ports(1, 2));
    assert_eq!(
        parse(&dest_opts_chain(9)),
        Err(ParseError::TooManyIpv6ExtHeaders)
    );
    assert_eq!(
        parse(&dest_opts_chain(100)),
        Err(ParseError::TooManyIpv6ExtHeaders)
    );
}

#[test]
fn ipv6_errors() {
    let good = tcp6_frame();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = good.clone();
        f(&mut v);
        parse(&v)
    };
    assert_eq!(with(&|v| v[L3] = 0x40), Err(ParseError::BadIpv6Version));
    assert_eq!(
        with(&|v| v[L3 + 4..L3 + 6].copy_from_slice(&26u16.to_be_bytes())),
        Err(ParseError::BadIpv6PayloadLength)
    );
    assert_eq!(
        with(&|v| v[L3 + 4..L3 + 6].copy_from_slice(&19u16.to_be_bytes())),
        Err(ParseError::TruncatedL4)
    );
    assert_eq!(
        with(&|v| v[L3 + 40 + 12] = 0x10),
        Err(ParseError::BadTcpHeaderLength)
    );
    assert_eq!(parse(&good[..L3 + 39]), Err(ParseError::TruncatedIpv6));
}

#[test]
fn ipv6_truncated_extension_headers() {
    // Payload ends inside the first two bytes of a hop-by-hop header.
    let f = eth(ETHERTYPE_IPV6, &ipv6(proto::IPV6_HOP_BY_HOP, &[proto::TCP]));
    assert_eq!(parse(&f), Err(ParseError::TruncatedIpv6ExtHeader));
    // A 16-byte destination options header with 8 bytes present.
    let f = eth(
        ETHERTYPE_IPV6,
        &ipv6(proto::IPV6_DEST_OPTS, &ext(proto::TCP, 1)[..8]),
    );
    assert_eq!(parse(&f), Err(ParseError::TruncatedIpv6ExtHeader));
    // A fragment header cut short.
    let f = eth(
        ETHERTYPE_IPV6,
        &ipv6(proto::IPV6_FRAGMENT, &frag6(proto::UDP, 0, true, 1)[..7]),
    );
    assert_eq!(parse(&f), Err(ParseError::TruncatedIpv6ExtHeader));
    // AH claiming more than there is.
    let mut h = ah(proto::UDP, 4);
    h[1] = 10;
    let f = eth(
        ETHERTYPE_IPV6,
        &ipv6(proto::AH, &cat(&[&h, &udp(1, 2, b"")])),
    );
    assert_eq!(parse(&f), Err(ParseError::TruncatedIpv6ExtHeader));
}

#[test]
fn ipv6_jumbogram_is_refused_but_empty_payload_is_fine() {
    // Payload length 0 and a hop-by-hop header: a jumbogram (RFC 2675), not supported.
    let mut hbh = ext(proto::UDP, 0);
    hbh[2] = 0xc2; // Jumbo Payload option
    hbh[3] = 4;
    let mut f = eth(
        ETHERTYPE_IPV6,
        &ipv6(proto::IPV6_HOP_BY_HOP, &cat(&[&hbh, &udp(1, 2, b"")])),
    );
    f[L3 + 4] = 0;
    f[L3 + 5] = 0;
    assert_eq!(parse(&f), Err(ParseError::BadIpv6PayloadLength));
    // Payload length 0 otherwise: an empty payload.
    let m = parse(&eth(ETHERTYPE_IPV6, &ipv6(proto::IPV6_NO_NEXT_HEADER, &[]))).unwrap();
    assert_eq!(m.l4, L4::None);
    assert_eq!(
        parse(&eth(ETHERTYPE_IPV6, &ipv6(proto::UDP, &[]))),
        Err(ParseError::TruncatedL4)
    );
}

// ---------------------------------------------------------------------------------------
// IPv6 fragments.

fn frag6_frame(before: &[u8], first_next: u8, frag: &[u8], after: &[u8]) -> Vec<u8> {
    eth(
        ETHERTYPE_IPV6,
        &ipv6(first_next, &cat(&[before, frag, after])),
    )
}

#[test]
fn ipv6_first_and_later_fragments() {
    let id = 0x8000_0001;
    let seg = tcp(443, 40000, 0x11, 0, &[0; 20]);
    let f = frag6_frame(
        &[],
        proto::IPV6_FRAGMENT,
        &frag6(proto::TCP, 0, true, id),
        &seg,
    );
    let m = parse(&f).unwrap();
    assert_eq!(m.fragment, Fragment::First { id });
    assert_eq!(
        (m.proto, m.l4, m.tcp_flags),
        (proto::TCP, ports(443, 40000), 0x11)
    );

    for more in [true, false] {
        let f = frag6_frame(
            &ext(proto::IPV6_FRAGMENT, 0),
            proto::IPV6_HOP_BY_HOP,
            &frag6(proto::TCP, 1232, more, id),
            &seg,
        );
        let m = parse(&f).unwrap();
        assert_eq!(m.fragment, Fragment::Later { id, offset: 1232 });
        assert_eq!((m.proto, m.l4, m.tcp_flags), (proto::TCP, L4::None, 0));
        assert_eq!(m.addrs, addrs6());
    }
    // A later fragment's next header may name an extension header; it is not walked.
    let f = frag6_frame(
        &[],
        proto::IPV6_FRAGMENT,
        &frag6(proto::IPV6_DEST_OPTS, 16, false, id),
        &[1],
    );
    let m = parse(&f).unwrap();
    assert_eq!((m.proto, m.l4), (proto::IPV6_DEST_OPTS, L4::None));
}

#[test]
fn ipv6_atomic_fragment_is_not_a_fragment() {
    let f = frag6_frame(
        &[],
        proto::IPV6_FRAGMENT,
        &frag6(proto::UDP, 0, false, 9),
        &udp(1, 2, b""),
    );
    let m = parse(&f).unwrap();
    assert_eq!(m.fragment, Fragment::None);
    assert_eq!(m.l4, ports(1, 2));
}

#[test]
fn ipv6_bad_fragments() {
    // Tiny first fragment.
    let seg = tcp(1, 2, 0x02, 0, b"");
    let f = frag6_frame(
        &[],
        proto::IPV6_FRAGMENT,
        &frag6(proto::TCP, 0, true, 1),
        &seg[..8],
    );
    assert_eq!(parse(&f), Err(ParseError::BadFragment));
    // TCP at offset 8.
    let f = frag6_frame(
        &[],
        proto::IPV6_FRAGMENT,
        &frag6(proto::TCP, 8, true, 1),
        &[0; 16],
    );
    assert_eq!(parse(&f), Err(ParseError::BadFragment));
    // Two fragment headers.
    let f = frag6_frame(
        &frag6(proto::IPV6_FRAGMENT, 0, true, 1),
        proto::IPV6_FRAGMENT,
        &frag6(proto::UDP, 0, true, 2),
        &udp(1, 2, b""),
    );
    assert_eq!(parse(&f), Err(ParseError::BadFragment));
    // Beyond 65535: 8 (hop-by-hop) + 65512 + 16 = 65536.
    let f = frag6_frame(
        &ext(proto::IPV6_FRAGMENT, 0),
        proto::IPV6_HOP_BY_HOP,
        &frag6(proto::UDP, 65512, false, 1),
        &[0; 16],
    );
    assert_eq!(parse(&f), Err(ParseError::BadFragment));
    // ...and one byte less fits.
    let f = frag6_frame(
        &ext(proto::IPV6_FRAGMENT, 0),
        proto::IPV6_HOP_BY_HOP,
        &frag6(proto::UDP, 65512, false, 1),
        &[0; 15],
    );
    assert!(parse(&f).is_ok());
}

// ---------------------------------------------------------------------------------------
// Ethernet and VLANs.

#[test]
fn vlan_8021q() {
    let ip = ipv4(proto::UDP, &udp(1, 2, b""));
    let m = parse(&eth_tagged(&[(ETHERTYPE_VLAN, 100)], ETHERTYPE_IPV4, &ip)).unwrap();
    assert_eq!(
        (m.outer_vlan, m.inner_vlan, m.vlan()),
        (Some(100), None, Some(100))
    );
    assert_eq!(m.ethertype, ETHERTYPE_IPV4);
    assert_eq!(m.l4, ports(1, 2));
    // VID 4095 and 0 (priority tag).
    let m = parse(&eth_tagged(&[(ETHERTYPE_VLAN, 4095)], ETHERTYPE_IPV4, &ip)).unwrap();
    assert_eq!(m.outer_vlan, Some(4095));
    let m = parse(&eth_tagged(&[(ETHERTYPE_VLAN, 0)], ETHERTYPE_IPV4, &ip)).unwrap();
    assert_eq!(m.outer_vlan, Some(0));
}

#[test]
fn vlan_qinq() {
    let ip = ipv6(proto::TCP, &tcp(1, 2, 0x02, 0, b""));
    for s_tag in [ETHERTYPE_QINQ, ETHERTYPE_QINQ_LEGACY, ETHERTYPE_VLAN] {
        let f = eth_tagged(&[(s_tag, 300), (ETHERTYPE_VLAN, 42)], ETHERTYPE_IPV6, &ip);
        let m = parse(&f).unwrap();
        assert_eq!(
            (m.outer_vlan, m.inner_vlan, m.vlan()),
            (Some(300), Some(42), Some(42))
        );
        assert_eq!(m.ethertype, ETHERTYPE_IPV6);
        assert_eq!((m.proto, m.l4), (proto::TCP, ports(1, 2)));
    }
    // A lone S-tag.
    let f = eth_tagged(&[(ETHERTYPE_QINQ, 7)], ETHERTYPE_IPV6, &ip);
    assert_eq!(parse(&f).unwrap().outer_vlan, Some(7));
}

#[test]
fn vlan_triple_tag_and_truncated_tags() {
    let ip = ipv4(proto::UDP, &udp(1, 2, b""));
    let f = eth_tagged(
        &[
            (ETHERTYPE_QINQ, 1),
            (ETHERTYPE_VLAN, 2),
            (ETHERTYPE_VLAN, 3),
        ],
        ETHERTYPE_IPV4,
        &ip,
    );
    assert_eq!(parse(&f), Err(ParseError::TooManyVlanTags));
    // Two tags announcing a third, with nothing after them.
    let f = eth_tagged(
        &[(ETHERTYPE_QINQ, 1), (ETHERTYPE_VLAN, 2)],
        ETHERTYPE_VLAN,
        &[],
    );
    assert_eq!(parse(&f), Err(ParseError::TooManyVlanTags));
    // Ethertype says VLAN, but the tag is cut short: first and second tag.
    let f = eth(ETHERTYPE_VLAN, &[0, 5, 0x08]);
    assert_eq!(parse(&f), Err(ParseError::TruncatedVlan));
    let f = eth_tagged(&[(ETHERTYPE_QINQ, 1)], ETHERTYPE_VLAN, &[0, 5]);
    assert_eq!(parse(&f), Err(ParseError::TruncatedVlan));
    // A complete tag followed by nothing: what is missing is the IPv4 header.
    let f = eth_tagged(&[(ETHERTYPE_VLAN, 9)], ETHERTYPE_IPV4, &[]);
    assert_eq!(parse(&f), Err(ParseError::TruncatedIpv4));
}

#[test]
fn truncated_ethernet() {
    for len in 0..14 {
        assert_eq!(
            parse(&tcp4_frame()[..len]),
            Err(ParseError::TruncatedEthernet)
        );
    }
}

#[test]
fn arp_and_other_non_ip() {
    // ARP request, by hand: htype 1, ptype IPv4, hlen 6, plen 4, op 1, addresses.
    let arp = [
        0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 1, 0, 5, 0, 0, 0, 0, 0, 0, 10, 2, 0, 7,
    ];
    let expect = |ethertype, outer_vlan| PacketMeta {
        outer_vlan,
        inner_vlan: None,
        ethertype,
        addrs: None,
        proto: 0,
        l4: L4::None,
        tcp_flags: 0,
        fragment: Fragment::None,
    };
    assert_eq!(
        parse(&eth(ETHERTYPE_ARP, &arp)),
        Ok(expect(ETHERTYPE_ARP, None))
    );
    let f = eth_tagged(&[(ETHERTYPE_VLAN, 10)], ETHERTYPE_ARP, &arp);
    assert_eq!(parse(&f), Ok(expect(ETHERTYPE_ARP, Some(10))));
    // A bare Ethernet header, LLDP, and an 802.3 length field (STP over LLC).
    assert_eq!(parse(&eth(0x88cc, &[])), Ok(expect(0x88cc, None)));
    assert_eq!(
        parse(&eth(0x0026, &[0x42, 0x42, 3])),
        Ok(expect(0x0026, None))
    );
}

// ---------------------------------------------------------------------------------------
// Every error variant, and truncation at every length.

/// Index of a variant, by an exhaustive match: adding a variant breaks this until a
/// frame producing it is added to `every_error_variant_is_produced`.
fn variant_index(e: ParseError) -> usize {
    match e {
        ParseError::TruncatedEthernet => 0,
        ParseError::TruncatedVlan => 1,
        ParseError::TooManyVlanTags => 2,
        ParseError::TruncatedIpv4 => 3,
        ParseError::BadIpv4Version => 4,
        ParseError::BadIpv4HeaderLength => 5,
        ParseError::BadIpv4TotalLength => 6,
        ParseError::TruncatedIpv6 => 7,
        ParseError::BadIpv6Version => 8,
        ParseError::BadIpv6PayloadLength => 9,
        ParseError::TruncatedIpv6ExtHeader => 10,
        ParseError::TooManyIpv6ExtHeaders => 11,
        ParseError::TruncatedL4 => 12,
        ParseError::BadTcpHeaderLength => 13,
        ParseError::BadFragment => 14,
    }
}
const VARIANTS: usize = 15;

/// Valid frames of many shapes, for truncation and mutation.
fn valid_frames() -> Vec<Vec<u8>> {
    let hbh_chain = cat(&[
        &ext(proto::IPV6_FRAGMENT, 0),
        &frag6(proto::AH, 0, true, 77),
        &ah(proto::IPV6_DEST_OPTS, 4),
        &ext(proto::UDP, 1),
        &udp(1, 2, b"z"),
    ]);
    let mut opts = V4::new(proto::TCP);
    opts.options = 12;
    vec![
        tcp4_frame(),
        tcp6_frame(),
        eth(ETHERTYPE_IPV4, &ipv4_with(opts, &tcp(5, 6, 0x02, 8, b"ab"))),
        eth(ETHERTYPE_IPV4, &ipv4(proto::UDP, &udp(1, 2, b"x"))),
        eth(ETHERTYPE_IPV4, &ipv4(proto::ICMP, &icmpv4(8, 0))),
        eth(ETHERTYPE_IPV4, &ipv4(proto::SCTP, &sctp(1, 2))),
        frag4(proto::TCP, true, 0, &tcp(1, 2, 0x02, 0, &[0; 4])),
        frag4(proto::UDP, false, 64, &[0; 9]),
        eth(ETHERTYPE_IPV6, &ipv6(proto::IPV6_HOP_BY_HOP, &hbh_chain)),
        eth(ETHERTYPE_IPV6, &ipv6(proto::ICMPV6, &icmpv6(128, 0))),
        frag6_frame(
            &[],
            proto::IPV6_FRAGMENT,
            &frag6(proto::UDP, 1280, true, 5),
            &[0; 8],
        ),
        eth_tagged(
            &[(ETHERTYPE_QINQ, 10), (ETHERTYPE_VLAN, 20)],
            ETHERTYPE_IPV4,
            &ipv4(proto::UDP, &udp(1, 2, b"")),
        ),
        eth_tagged(
            &[(ETHERTYPE_VLAN, 20)],
            ETHERTYPE_IPV6,
            &ipv6(proto::UDP, &udp(1, 2, b"")),
        ),
        eth(ETHERTYPE_ARP, &[0; 28]),
    ]
}

#[test]
fn every_error_variant_is_produced() {
    let mut seen = [false; VARIANTS];
    let mut bad_total = tcp4_frame();
    bad_total[L3 + 3] = 0xff;
    let mut bad_hl = tcp4_frame();
    bad_hl[L3] = 0x43;
    let mut bad_v4 = tcp4_frame();
    bad_v4[L3] = 0x75;
    let mut bad_v6 = tcp6_frame();
    bad_v6[L3] = 0x45;
    let mut bad_plen = tcp6_frame();
    bad_plen[L3 + 4] = 0x10;
    let mut bad_doff = tcp4_frame();
    bad_doff[L3 + 20 + 12] = 0x20;
    let cases: Vec<(Vec<u8>, ParseError)> = vec![
        (tcp4_frame()[..13].to_vec(), ParseError::TruncatedEthernet),
        (eth(ETHERTYPE_VLAN, &[0, 1]), ParseError::TruncatedVlan),
        (
            eth_tagged(
                &[(ETHERTYPE_VLAN, 1), (ETHERTYPE_VLAN, 2)],
                ETHERTYPE_QINQ,
                &[0; 40],
            ),
            ParseError::TooManyVlanTags,
        ),
        (tcp4_frame()[..L3 + 19].to_vec(), ParseError::TruncatedIpv4),
        (bad_v4, ParseError::BadIpv4Version),
        (bad_hl, ParseError::BadIpv4HeaderLength),
        (bad_total, ParseError::BadIpv4TotalLength),
        (tcp6_frame()[..L3 + 39].to_vec(), ParseError::TruncatedIpv6),
        (bad_v6, ParseError::BadIpv6Version),
        (bad_plen, ParseError::BadIpv6PayloadLength),
        (
            eth(
                ETHERTYPE_IPV6,
                &ipv6(proto::IPV6_ROUTING, &[6, 1, 0, 0, 0, 0, 0, 0]),
            ),
            ParseError::TruncatedIpv6ExtHeader,
        ),
        (dest_opts_chain(9), ParseError::TooManyIpv6ExtHeaders),
        (
            eth(ETHERTYPE_IPV4, &ipv4(proto::UDP, &[0; 7])),
            ParseError::TruncatedL4,
        ),
        (bad_doff, ParseError::BadTcpHeaderLength),
        (
            frag4(proto::ICMP, false, 65528, &[0; 8]),
            ParseError::BadFragment,
        ),
    ];
    for (frame, want) in &cases {
        assert_eq!(parse(frame), Err(*want));
        seen[variant_index(*want)] = true;
    }
    assert!(seen.iter().all(|&s| s), "untested variants: {seen:?}");
}

#[test]
fn truncation_at_every_length_never_panics() {
    for frame in valid_frames() {
        let full = parse(&frame);
        assert!(full.is_ok(), "{frame:02x?}: {full:?}");
        let is_ip = matches!(full.unwrap().ethertype, ETHERTYPE_IPV4 | ETHERTYPE_IPV6);
        for len in 0..frame.len() {
            let r = parse(&frame[..len]);
            // Every strict prefix of an IP frame without padding lies about a length.
            if is_ip {
                assert!(r.is_err(), "len {len} of {frame:02x?}: {r:?}");
            }
            if len < 14 {
                assert_eq!(r, Err(ParseError::TruncatedEthernet));
            }
        }
    }
}

#[test]
fn every_single_byte_change_never_panics() {
    for frame in valid_frames() {
        for i in 0..frame.len() {
            for b in [
                0u8, 1, 0x05, 0x0f, 0x3f, 0x40, 0x45, 0x4f, 0x60, 0x7f, 0x80, 0xfe, 0xff,
            ] {
                let mut f = frame.clone();
                f[i] = b;
                let _ = parse(&f);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Real captures nobody here wrote: tcpdump's test suite, many deliberately malformed.

/// Frames of a classic pcap file with an Ethernet link type; `None` for anything else
/// (pcapng, other link types).
fn pcap_ethernet_frames(data: &[u8]) -> Option<Vec<&[u8]>> {
    let magic = data.get(..4)?;
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return None,
    };
    let u32_at = |off: usize| -> Option<u32> {
        let b: [u8; 4] = data.get(off..off + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    if u32_at(20)? & 0xffff != 1 {
        return None;
    }
    let mut frames = Vec::new();
    let mut off = 24;
    while let Some(caplen) = u32_at(off + 8) {
        let start = off + 16;
        let Some(frame) = data.get(start..start + caplen as usize) else {
            break;
        };
        frames.push(frame);
        off = start + caplen as usize;
    }
    Some(frames)
}

#[test]
fn tcpdump_corpus_never_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus/pcap/tcpdump-tests");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("skipped: no corpus at {}", dir.display());
        return;
    };
    let (mut files, mut ok, mut err) = (0, 0, 0);
    for entry in entries.flatten() {
        let Ok(data) = std::fs::read(entry.path()) else {
            continue;
        };
        let Some(frames) = pcap_ethernet_frames(&data) else {
            continue;
        };
        files += 1;
        for frame in frames {
            match parse(frame) {
                Ok(_) => ok += 1,
                Err(_) => err += 1,
            }
        }
    }
    eprintln!("tcpdump corpus: {files} Ethernet pcaps, {ok} frames parsed, {err} refused");
    assert!(files > 0 && ok > 0);
}

// ---------------------------------------------------------------------------------------
// Properties.

/// A random valid frame and what `parse` must say about it.
fn arb_frame() -> impl Strategy<Value = (Vec<u8>, PacketMeta)> {
    (
        prop::option::of(0u16..4096),
        prop::option::of(0u16..4096),
        any::<bool>(),
        prop_oneof![
            Just(proto::TCP),
            Just(proto::UDP),
            Just(proto::ICMP),
            Just(47u8)
        ],
        any::<(u16, u16, u8)>(),
        (0usize..=10).prop_map(|n| n * 4),
        prop::collection::vec(any::<u8>(), 0..64),
        0usize..20,
    )
        .prop_map(
            |(outer, inner, v6, proto, (sp, dp, flags), opts, data, pad)| {
                let inner = outer.and(inner);
                let (l4_bytes, l4) = match proto {
                    proto::TCP => (tcp(sp, dp, flags, opts, &data), ports(sp, dp)),
                    proto::UDP => (udp(sp, dp, &data), ports(sp, dp)),
                    proto::ICMP if v6 => (
                        cat(&[&icmpv6(sp as u8, dp as u8), &data]),
                        L4::Icmp {
                            ty: sp as u8,
                            code: dp as u8,
                            id: 0,
                        },
                    ),
                    proto::ICMP => (
                        cat(&[&icmpv4(sp as u8, dp as u8), &data]),
                        L4::Icmp {
                            ty: sp as u8,
                            code: dp as u8,
                            id: if matches!(sp as u8, 0 | 8) { 0x4242 } else { 0 },
                        },
                    ),
                    _ => (data.clone(), L4::None),
                };
                let proto = if v6 && proto == proto::ICMP {
                    proto::ICMPV6
                } else {
                    proto
                };
                let (ethertype, ip, addrs) = if v6 {
                    (ETHERTYPE_IPV6, ipv6(proto, &l4_bytes), addrs6())
                } else {
                    let mut h = V4::new(proto);
                    h.options = opts;
                    (ETHERTYPE_IPV4, ipv4_with(h, &l4_bytes), addrs4())
                };
                let mut tags = Vec::new();
                if let Some(o) = outer {
                    tags.push((
                        if inner.is_some() {
                            ETHERTYPE_QINQ
                        } else {
                            ETHERTYPE_VLAN
                        },
                        o,
                    ));
                }
                if let Some(i) = inner {
                    tags.push((ETHERTYPE_VLAN, i));
                }
                let mut frame = eth_tagged(&tags, ethertype, &ip);
                frame.resize(frame.len() + pad, 0x5a);
                let meta = PacketMeta {
                    outer_vlan: outer,
                    inner_vlan: inner,
                    ethertype,
                    addrs,
                    proto,
                    l4,
                    tcp_flags: if proto == proto::TCP { flags } else { 0 },
                    fragment: Fragment::None,
                };
                (frame, meta)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_ip_headers_never_panic(
        ethertype in prop_oneof![
            Just(ETHERTYPE_IPV4), Just(ETHERTYPE_IPV6), Just(ETHERTYPE_VLAN),
            Just(ETHERTYPE_QINQ), Just(ETHERTYPE_QINQ_LEGACY), any::<u16>()
        ],
        first in prop_oneof![Just(0x45u8), Just(0x4fu8), Just(0x60u8), any::<u8>()],
        rest in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let f = eth(ethertype, &cat(&[&[first], &rest]));
        let _ = parse(&f);
    }

    #[test]
    fn valid_frames_parse_to_what_was_built((frame, meta) in arb_frame()) {
        prop_assert_eq!(parse(&frame), Ok(meta));
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        (frame, _) in arb_frame(),
        which in 0usize..14,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        for mut f in [frame, valid_frames().swap_remove(which)] {
            for (i, b) in &edits {
                let i = i.index(f.len());
                f[i] = *b;
            }
            if do_cut {
                f.truncate(cut.index(f.len() + 1));
            }
            let _ = parse(&f);
        }
    }
}
