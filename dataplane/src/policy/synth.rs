//! Synthetic policies and traffic, deterministic from a seed: for benchmarks (here and
//! in the worker) and for the property tests. Not part of the stable API.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::spec::{
    Action, Mode, NonIpSpec, PolicySpec, PortRange, ProtocolMatch, RuleSpec, SegmentMatch, SegmentSpec,
    Unmatched,
};
use crate::packet::{
    proto, Fragment, PacketMeta, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, L4,
};

/// A small, fast, deterministic generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Next 128 random bits.
    pub fn next_u128(&mut self) -> u128 {
        (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())
    }

    /// Uniform in `0..n` (0 when `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u32, hi: u32) -> u32 {
        let (lo, hi) = (lo.min(hi), lo.max(hi));
        lo + (self.next_u64() % (u64::from(hi - lo) + 1)) as u32
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, v: &[T], fallback: T) -> T {
        v.get(self.below(v.len())).copied().unwrap_or(fallback)
    }
}

/// The shape of a synthetic policy.
#[derive(Clone, Debug)]
pub struct Params {
    /// Number of segments.
    pub segments: usize,
    /// IPv4 prefixes, spread over the segments.
    pub v4_cidrs: usize,
    /// IPv6 prefixes, spread over the segments.
    pub v6_cidrs: usize,
    /// Shortest and longest IPv4 prefix length.
    pub v4_len: (u8, u8),
    /// Shortest and longest IPv6 prefix length.
    pub v6_len: (u8, u8),
    /// Probability that a prefix is carved out of an existing one (nesting).
    pub nest: f64,
    /// Probability that a segment is restricted to VLANs.
    pub vlan_segment: f64,
    /// VLAN ids segments are restricted to.
    pub vlans: Vec<u16>,
    /// Number of rules.
    pub rules: usize,
    /// Probability that a rule side is `Any`.
    pub any_side: f64,
    /// Drop unmatched addresses instead of mapping them to segment 0.
    pub unmatched_drop: bool,
    /// Probability that a segment is in monitor or discover mode instead of protect.
    pub soft_mode: f64,
}

impl Params {
    /// The benchmark shape: 1,000 segments, 9,000 IPv4 prefixes (/16 to /32) and 1,000
    /// IPv6 prefixes (/48 to /128), 1,000 rules.
    pub fn large() -> Params {
        Params {
            segments: 1000,
            v4_cidrs: 9000,
            v6_cidrs: 1000,
            v4_len: (16, 32),
            v6_len: (48, 128),
            nest: 0.3,
            vlan_segment: 0.04,
            vlans: vec![10, 20, 30, 40, 50],
            rules: 1000,
            any_side: 0.08,
            unmatched_drop: false,
            soft_mode: 0.0,
        }
    }
}

/// The benchmark policy: [`Params::large`] from `seed`.
pub fn large_policy(seed: u64) -> PolicySpec {
    policy(seed, &Params::large())
}

const COMMON_PORTS: &[u16] = &[22, 53, 80, 123, 443, 5432, 6379, 8080, 8443, 9090];

fn random_net(rng: &mut Rng, v6: bool, lens: (u8, u8), existing: &[IpNet], nest: f64) -> IpNet {
    let (lo, hi) = (lens.0.min(lens.1), lens.0.max(lens.1));
    if rng.chance(nest) {
        let parents: Vec<&IpNet> = existing
            .iter()
            .filter(|n| matches!(n, IpNet::V6(_)) == v6 && n.prefix_len() < hi)
            .collect();
        if let Some(&&parent) = parents.get(rng.below(parents.len())) {
            let len = rng.range(u32::from(parent.prefix_len()) + 1, u32::from(hi)) as u8;
            return match parent {
                IpNet::V4(p) => {
                    let a =
                        u32::from(p.network()) | (rng.next_u64() as u32 & !mask32(p.prefix_len()));
                    net4(a, len)
                }
                IpNet::V6(p) => {
                    let a = u128::from(p.network()) | (rng.next_u128() & !mask128(p.prefix_len()));
                    net6(a, len)
                }
            };
        }
    }
    let len = rng.range(u32::from(lo), u32::from(hi)) as u8;
    if v6 {
        let mut a = rng.next_u128();
        if rng.chance(0.9) {
            // Mostly in fd00::/8, so prefixes meet.
            a = (a & !(0xffu128 << 120)) | (0xfdu128 << 120);
        }
        net6(a, len)
    } else {
        let mut a = rng.next_u64() as u32;
        if rng.chance(0.9) {
            a = (a & 0x00ff_ffff) | (10 << 24);
        }
        net4(a, len)
    }
}

fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

fn net4(a: u32, len: u8) -> IpNet {
    Ipv4Net::new(Ipv4Addr::from(a), len.min(32))
        .map(|n| IpNet::V4(n.trunc()))
        .unwrap_or_default()
}

fn net6(a: u128, len: u8) -> IpNet {
    Ipv6Net::new(Ipv6Addr::from(a), len.min(128))
        .map(|n| IpNet::V6(n.trunc()))
        .unwrap_or_default()
}

/// A random policy of the given shape. Prefixes are unique across all segments, so the
/// result always compiles.
pub fn policy(seed: u64, p: &Params) -> PolicySpec {
    let mut rng = Rng::new(seed);
    let nseg = p.segments.clamp(1, usize::from(u16::MAX));
    let mut segments: Vec<SegmentSpec> = (0..nseg)
        .map(|i| SegmentSpec {
            name: format!("seg{i}"),
            cidrs: Vec::new(),
            vlans: Vec::new(),
            mode: Mode::Protect,
        })
        .collect();
    for seg in segments.iter_mut() {
        if rng.chance(p.soft_mode) {
            seg.mode = if rng.chance(0.5) { Mode::Monitor } else { Mode::Discover };
        }
    }
    for seg in segments.iter_mut().skip(1) {
        if !p.vlans.is_empty() && rng.chance(p.vlan_segment) {
            seg.vlans.push(rng.pick(&p.vlans, 1));
            if rng.chance(0.3) {
                seg.vlans.push(rng.pick(&p.vlans, 1));
            }
        }
    }
    let mut seen: HashSet<IpNet> = HashSet::new();
    let mut all: Vec<IpNet> = Vec::new();
    let total = p.v4_cidrs + p.v6_cidrs;
    let mut attempts = 0;
    while all.len() < total && attempts < total * 4 + 16 {
        attempts += 1;
        let v6 = all.len() >= p.v4_cidrs;
        let lens = if v6 { p.v6_len } else { p.v4_len };
        let net = random_net(&mut rng, v6, lens, &all, p.nest);
        if seen.insert(net) {
            all.push(net);
            let s = rng.below(nseg);
            if let Some(seg) = segments.get_mut(s) {
                seg.cidrs.push(net);
            }
        }
    }

    let seg_match = |rng: &mut Rng| {
        if rng.chance(p.any_side) {
            SegmentMatch::Any
        } else {
            SegmentMatch::Segment(rng.below(nseg) as u16)
        }
    };
    let ports = |rng: &mut Rng| -> Vec<PortRange> {
        (0..rng.range(1, 3))
            .map(|_| {
                if rng.chance(0.7) {
                    let x = rng.pick(COMMON_PORTS, 80);
                    PortRange { lo: x, hi: x }
                } else {
                    let lo = rng.range(1, 65000) as u16;
                    PortRange {
                        lo,
                        hi: lo.saturating_add(rng.range(0, 2000) as u16),
                    }
                }
            })
            .collect()
    };
    let rules = (0..p.rules)
        .map(|i| {
            let from = seg_match(&mut rng);
            let to = seg_match(&mut rng);
            let protocol = match rng.below(10) {
                0 | 1 => ProtocolMatch::Any,
                2..=5 => ProtocolMatch::Number(proto::TCP),
                6 | 7 => ProtocolMatch::Number(proto::UDP),
                8 => ProtocolMatch::Number(proto::ICMP),
                _ => ProtocolMatch::Number(proto::ICMPV6),
            };
            let l4_ports = matches!(protocol, ProtocolMatch::Number(6 | 17))
                || (protocol == ProtocolMatch::Any && rng.chance(0.2));
            let icmp = matches!(protocol, ProtocolMatch::Number(1 | 58))
                || (protocol == ProtocolMatch::Any && rng.chance(0.1));
            RuleSpec {
                name: format!("rule{i}"),
                from,
                to,
                protocol,
                dst_ports: if l4_ports && rng.chance(0.7) {
                    ports(&mut rng)
                } else {
                    Vec::new()
                },
                src_ports: if l4_ports && rng.chance(0.1) {
                    ports(&mut rng)
                } else {
                    Vec::new()
                },
                icmp_types: if icmp && rng.chance(0.5) {
                    (0..rng.range(1, 3))
                        .map(|_| rng.pick(&[0, 3, 8, 11, 128, 129, 135], 8))
                        .collect()
                } else {
                    Vec::new()
                },
                action: if rng.chance(0.7) {
                    Action::Allow
                } else {
                    Action::Deny
                },
                log: rng.chance(0.2),
            }
        })
        .collect();

    PolicySpec {
        segments,
        rules,
        default_action: if rng.chance(0.8) {
            Action::Deny
        } else {
            Action::Allow
        },
        intra_segment_default: if rng.chance(0.7) {
            Action::Allow
        } else {
            Action::Deny
        },
        unmatched: if p.unmatched_drop {
            Unmatched::Drop
        } else {
            Unmatched::Segment(0)
        },
        non_ip: NonIpSpec {
            allow_arp: rng.chance(0.8),
            allow_llc: rng.chance(0.3),
            allow_neighbor_discovery: rng.chance(0.8),
            allowed_ethertypes: if rng.chance(0.5) {
                vec![0x88cc]
            } else {
                Vec::new()
            },
        },
    }
}

/// An address inside `net`: random host bits, sometimes the first or last address.
fn addr_in(rng: &mut Rng, net: &IpNet) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let host = match rng.below(10) {
                0 => 0,
                1 => u32::MAX,
                _ => rng.next_u64() as u32,
            };
            let m = mask32(n.prefix_len());
            IpAddr::V4(Ipv4Addr::from((u32::from(n.network()) & m) | (host & !m)))
        }
        IpNet::V6(n) => {
            let host = match rng.below(10) {
                0 => 0,
                1 => u128::MAX,
                _ => rng.next_u128(),
            };
            let m = mask128(n.prefix_len());
            IpAddr::V6(Ipv6Addr::from((u128::from(n.network()) & m) | (host & !m)))
        }
    }
}

/// `n` packets aimed at `spec`: most addresses inside a random prefix of the policy
/// (`inside` is the probability for each address), the rest anywhere; mostly TCP and
/// UDP to common ports, some ICMP, neighbour discovery, other protocols, and a
/// `non_ip` fraction of ARP, LLDP and other frames; VLANs from the policy's and others.
pub fn traffic(
    spec: &PolicySpec,
    seed: u64,
    n: usize,
    inside: f64,
    non_ip: f64,
) -> Vec<PacketMeta> {
    let mut rng = Rng::new(seed ^ 0xabcd);
    let nets: Vec<IpNet> = spec
        .segments
        .iter()
        .flat_map(|s| s.cidrs.iter().copied())
        .collect();
    let v4: Vec<IpNet> = nets
        .iter()
        .copied()
        .filter(|n| matches!(n, IpNet::V4(_)))
        .collect();
    let v6: Vec<IpNet> = nets
        .iter()
        .copied()
        .filter(|n| matches!(n, IpNet::V6(_)))
        .collect();
    let mut vlans: Vec<u16> = spec
        .segments
        .iter()
        .flat_map(|s| s.vlans.iter().copied())
        .collect();
    vlans.push(4000);
    (0..n)
        .map(|_| {
            let vlan = if rng.chance(0.6) {
                None
            } else {
                Some(rng.pick(&vlans, 1))
            };
            let (outer_vlan, inner_vlan) = match (vlan, rng.below(4)) {
                (Some(v), 0) => (Some(7), Some(v)),
                (v, _) => (v, None),
            };
            if rng.chance(non_ip) {
                let ethertype = rng.pick(&[ETHERTYPE_ARP, 0x88cc, 0x8847, 0x0806], ETHERTYPE_ARP);
                return PacketMeta::non_ip(outer_vlan, inner_vlan, ethertype);
            }
            let is_v6 = if v6.is_empty() {
                false
            } else if v4.is_empty() {
                true
            } else {
                rng.chance(0.15)
            };
            let pool = if is_v6 { &v6 } else { &v4 };
            let addr = |rng: &mut Rng| -> IpAddr {
                match pool.get(rng.below(pool.len())) {
                    Some(net) if rng.chance(inside) => addr_in(rng, net),
                    _ if is_v6 => IpAddr::V6(Ipv6Addr::from(rng.next_u128())),
                    _ => IpAddr::V4(Ipv4Addr::from(rng.next_u64() as u32)),
                }
            };
            let src = addr(&mut rng);
            let dst = addr(&mut rng);
            let icmp_proto = if is_v6 { proto::ICMPV6 } else { proto::ICMP };
            let (p, l4) = match rng.below(20) {
                0..=10 => (
                    proto::TCP,
                    L4::Ports {
                        src: rng.range(1024, 65535) as u16,
                        dst: port(&mut rng),
                    },
                ),
                11..=15 => (
                    proto::UDP,
                    L4::Ports {
                        src: port(&mut rng),
                        dst: port(&mut rng),
                    },
                ),
                16 | 17 => (
                    icmp_proto,
                    L4::Icmp {
                        ty: rng.pick(&[0, 3, 8, 11, 128, 129, 133, 135, 136, 137, 138], 8),
                        code: 0,
                        id: 0,
                    },
                ),
                18 => (proto::TCP, L4::None),
                _ => (rng.pick(&[47, 50, proto::SCTP], 47), L4::None),
            };
            PacketMeta {
                outer_vlan,
                inner_vlan,
                ethertype: if is_v6 {
                    ETHERTYPE_IPV6
                } else {
                    ETHERTYPE_IPV4
                },
                addrs: Some((src, dst)),
                proto: p,
                l4,
                tcp_flags: if p == proto::TCP { 0x02 } else { 0 },
                fragment: Fragment::None,
            }
        })
        .collect()
}

fn port(rng: &mut Rng) -> u16 {
    if rng.chance(0.7) {
        rng.pick(COMMON_PORTS, 80)
    } else {
        rng.range(0, 65535) as u16
    }
}
