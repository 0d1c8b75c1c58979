//! Unit tests for each rule of the contract, and property tests that hold the compiled
//! classifier to the naive [`reference`](mod@super::reference) evaluator.

use std::net::IpAddr;

use ipnet::IpNet;
use proptest::prelude::*;

use super::*;
use crate::packet::{proto, Fragment, ETHERTYPE_ARP, ETHERTYPE_IPV4, L4};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn seg(name: &str, cidrs: &[&str], vlans: &[u16]) -> SegmentSpec {
    SegmentSpec {
        name: name.into(),
        cidrs: cidrs.iter().map(|c| net(c)).collect(),
        vlans: vlans.to_vec(),
        mode: Mode::Protect,
    }
}

fn rule(name: &str, from: SegmentMatch, to: SegmentMatch, action: Action) -> RuleSpec {
    RuleSpec {
        name: name.into(),
        from,
        to,
        protocol: ProtocolMatch::Any,
        dst_ports: vec![],
        src_ports: vec![],
        icmp_types: vec![],
        action,
        log: false,
    }
}

fn spec(segments: Vec<SegmentSpec>, rules: Vec<RuleSpec>) -> PolicySpec {
    PolicySpec {
        segments,
        rules,
        default_action: Action::Deny,
        intra_segment_default: Action::Allow,
        unmatched: Unmatched::Drop,
        non_ip: NonIpSpec {
            allow_arp: true,
            allow_llc: false,
            allow_neighbor_discovery: true,
            allowed_ethertypes: vec![0x88cc],
        },
    }
}

fn tcp(src: &str, dst: &str, dport: u16) -> PacketMeta {
    PacketMeta {
        outer_vlan: None,
        inner_vlan: None,
        ethertype: ETHERTYPE_IPV4,
        addrs: Some((ip(src), ip(dst))),
        proto: proto::TCP,
        l4: L4::Ports {
            src: 40000,
            dst: dport,
        },
        tcp_flags: 0x02,
        fragment: Fragment::None,
    }
}

fn with_vlan(mut p: PacketMeta, v: u16) -> PacketMeta {
    p.outer_vlan = Some(v);
    p
}

/// Classifies with both implementations, checks they agree, returns the decision.
fn both(s: &PolicySpec, p: &PacketMeta) -> Decision {
    let policy = Policy::compile(s, 1).expect("compiles");
    let d = policy.classify(p);
    assert_eq!(
        d,
        reference::classify(s, p),
        "compiled vs reference for {p:?}"
    );
    d
}

use SegmentMatch::{Any, Segment as S};

fn two_segments() -> Vec<SegmentSpec> {
    vec![
        seg("web", &["10.1.0.0/16", "fd00:1::/64"], &[]),
        seg("db", &["10.2.0.0/16"], &[]),
    ]
}

#[test]
fn non_ip_frames() {
    let s = spec(two_segments(), vec![]);
    let mut p = tcp("10.1.0.1", "10.2.0.1", 80);
    p.addrs = None;
    p.proto = 0;
    p.l4 = L4::None;
    p.ethertype = ETHERTYPE_ARP;
    let d = both(&s, &p);
    assert_eq!(
        (d.verdict, d.why, d.src_segment),
        (Verdict::Allow, Why::NonIp, None)
    );
    p.ethertype = 0x88cc;
    assert_eq!(both(&s, &p).verdict, Verdict::Allow);
    p.ethertype = 0x8847;
    assert_eq!(
        both(&s, &p).verdict,
        Verdict::Deny(DropReason::EthertypeNotAllowed)
    );
    let mut s2 = s.clone();
    s2.non_ip.allow_arp = false;
    p.ethertype = ETHERTYPE_ARP;
    assert_eq!(
        both(&s2, &p).verdict,
        Verdict::Deny(DropReason::EthertypeNotAllowed)
    );
    // 802.3 (LLC) frames: a length in the ethertype field; off unless allowed.
    p.ethertype = 0x0026;
    assert_eq!(
        both(&s, &p).verdict,
        Verdict::Deny(DropReason::EthertypeNotAllowed)
    );
    s2.non_ip.allow_llc = true;
    assert_eq!(both(&s2, &p).verdict, Verdict::Allow);
    p.ethertype = 0x0600;
    assert_eq!(
        both(&s2, &p).verdict,
        Verdict::Deny(DropReason::EthertypeNotAllowed),
        "0x0600 is an ethertype, not a length"
    );
}

#[test]
fn neighbor_discovery_before_rules_and_unknown_addresses() {
    let s = spec(
        two_segments(),
        vec![rule("deny-all", Any, Any, Action::Deny)],
    );
    let mut p = tcp("fe80::1", "ff02::1:ff00:1", 0);
    p.proto = proto::ICMPV6;
    p.l4 = L4::Icmp { ty: 135, code: 0, id: 0 };
    let d = both(&s, &p);
    assert_eq!((d.verdict, d.why), (Verdict::Allow, Why::NeighborDiscovery));
    p.l4 = L4::Icmp { ty: 128, code: 0, id: 0 };
    assert_eq!(both(&s, &p).why, Why::UnknownSource);
    let mut s2 = s.clone();
    s2.non_ip.allow_neighbor_discovery = false;
    p.l4 = L4::Icmp { ty: 136, code: 0, id: 0 };
    assert_eq!(
        both(&s2, &p).verdict,
        Verdict::Deny(DropReason::UnknownAddress)
    );
    // Inside segments, ND still beats a deny rule.
    p.addrs = Some((ip("fd00:1::1"), ip("fd00:1::2")));
    assert_eq!(both(&s, &p).why, Why::NeighborDiscovery);
    assert_eq!(both(&s2, &p).why, Why::Rule(0));
}

#[test]
fn longest_prefix_wins() {
    let segs = vec![
        seg("outside", &["0.0.0.0/0", "::/0"], &[]),
        seg("net", &["10.0.0.0/8"], &[]),
        seg("sub", &["10.1.0.0/16"], &[]),
        seg("host", &["10.1.2.3/32", "fd00::1/128"], &[]),
    ];
    let s = spec(segs, vec![]);
    let p = Policy::compile(&s, 1).unwrap();
    assert_eq!(p.segment_of(ip("1.1.1.1"), None), Some(0));
    assert_eq!(p.segment_of(ip("10.9.9.9"), None), Some(1));
    assert_eq!(p.segment_of(ip("10.1.9.9"), None), Some(2));
    assert_eq!(p.segment_of(ip("10.1.2.3"), None), Some(3));
    assert_eq!(p.segment_of(ip("10.1.2.4"), None), Some(2));
    assert_eq!(p.segment_of(ip("fd00::1"), None), Some(3));
    assert_eq!(p.segment_of(ip("fd00::2"), None), Some(0));
    let d = both(&s, &tcp("10.1.2.3", "10.1.2.4", 80));
    assert_eq!(
        (d.src_segment, d.dst_segment, d.why),
        (Some(3), Some(2), Why::Default)
    );
}

#[test]
fn vlan_views() {
    let segs = vec![
        seg("base", &["10.0.0.0/8"], &[]),
        seg("v10", &["10.1.0.0/16"], &[10]),
        seg("v20", &["10.1.0.0/16", "10.0.0.0/7"], &[20, 30]),
        seg("v10b", &["10.1.0.0/24"], &[10]),
    ];
    let s = spec(segs, vec![]);
    let p = Policy::compile(&s, 1).unwrap();
    assert_eq!(p.segment_of(ip("10.1.0.1"), None), Some(0));
    assert_eq!(p.segment_of(ip("10.1.0.1"), Some(10)), Some(3));
    assert_eq!(p.segment_of(ip("10.1.1.1"), Some(10)), Some(1));
    assert_eq!(p.segment_of(ip("10.1.1.1"), Some(20)), Some(2));
    assert_eq!(p.segment_of(ip("10.2.1.1"), Some(20)), Some(0));
    assert_eq!(p.segment_of(ip("11.2.1.1"), Some(30)), Some(2));
    assert_eq!(p.segment_of(ip("11.2.1.1"), Some(40)), None);
    assert_eq!(p.segment_of(ip("10.1.1.1"), Some(4095)), Some(0));
    // The innermost tag decides.
    let mut pkt = tcp("10.1.0.1", "10.1.1.1", 80);
    pkt.outer_vlan = Some(20);
    pkt.inner_vlan = Some(10);
    let d = both(&s, &pkt);
    assert_eq!((d.src_segment, d.dst_segment), (Some(3), Some(1)));
    both(&s, &with_vlan(tcp("10.1.0.1", "11.0.0.1", 80), 30));
}

#[test]
fn duplicate_prefixes_refused_per_view() {
    let dup = |a: &[u16], b: &[u16]| {
        let s = spec(
            vec![seg("a", &["10.0.0.0/8"], a), seg("b", &["10.0.0.0/8"], b)],
            vec![],
        );
        Policy::compile(&s, 1).err()
    };
    assert!(matches!(
        dup(&[], &[]),
        Some(CompileError::DuplicatePrefix { vlan: None, .. })
    ));
    assert!(matches!(
        dup(&[], &[5]),
        Some(CompileError::DuplicatePrefix { vlan: Some(5), .. })
    ));
    assert!(matches!(
        dup(&[5, 6], &[6]),
        Some(CompileError::DuplicatePrefix { vlan: Some(6), .. })
    ));
    assert_eq!(dup(&[5], &[6]), None);
    // The same prefix twice in one segment is harmless.
    let s = spec(vec![seg("a", &["10.0.0.0/8", "10.0.0.0/8"], &[])], vec![]);
    assert!(Policy::compile(&s, 1).is_ok());
    let e = dup(&[], &[]).unwrap().to_string();
    assert!(
        e.contains("10.0.0.0/8") && e.contains("\"a\"") && e.contains("\"b\""),
        "{e}"
    );
}

#[test]
fn compile_errors() {
    let mut s = spec(two_segments(), vec![rule("r", S(0), S(7), Action::Allow)]);
    assert!(matches!(
        Policy::compile(&s, 1),
        Err(CompileError::UnknownSegmentInRule { segment: 7, .. })
    ));
    s.rules.clear();
    s.unmatched = Unmatched::Segment(2);
    assert_eq!(
        Policy::compile(&s, 1).err(),
        Some(CompileError::UnknownUnmatchedSegment { segment: 2 })
    );
    s.unmatched = Unmatched::Drop;
    s.segments[0].vlans = vec![4096];
    assert!(matches!(
        Policy::compile(&s, 1),
        Err(CompileError::BadVlan { vlan: 4096, .. })
    ));
}

#[test]
fn unknown_addresses() {
    let mut s = spec(two_segments(), vec![rule("any", Any, Any, Action::Allow)]);
    let d = both(&s, &tcp("1.1.1.1", "2.2.2.2", 80));
    assert_eq!(
        (d.verdict, d.why, d.src_segment, d.dst_segment),
        (
            Verdict::Deny(DropReason::UnknownAddress),
            Why::UnknownSource,
            None,
            None
        )
    );
    let d = both(&s, &tcp("10.1.0.1", "2.2.2.2", 80));
    assert_eq!((d.why, d.src_segment), (Why::UnknownDestination, Some(0)));
    // Mapped to a segment, `Any` rules match it.
    s.unmatched = Unmatched::Segment(1);
    let d = both(&s, &tcp("1.1.1.1", "2.2.2.2", 80));
    assert_eq!(
        (d.verdict, d.why, d.src_segment, d.dst_segment),
        (Verdict::Allow, Why::Rule(0), Some(1), Some(1))
    );
}

#[test]
fn first_rule_wins_across_lists() {
    let rules = vec![
        rule("r0", S(1), S(0), Action::Allow),
        rule("r1", Any, S(1), Action::Deny),
        rule("r2", S(0), Any, Action::Allow),
        rule("r3", S(0), S(1), Action::Allow),
        rule("r4", Any, Any, Action::Allow),
    ];
    let s = spec(two_segments(), rules);
    let d = both(&s, &tcp("10.1.0.1", "10.2.0.1", 80));
    assert_eq!(
        (d.why, d.verdict),
        (Why::Rule(1), Verdict::Deny(DropReason::PolicyDeny))
    );
    assert_eq!(d.rule(), Some(1));
    assert_eq!(both(&s, &tcp("10.2.0.1", "10.1.0.1", 80)).why, Why::Rule(0));
    assert_eq!(both(&s, &tcp("10.1.0.1", "10.1.0.2", 80)).why, Why::Rule(2));
    assert_eq!(both(&s, &tcp("10.2.0.1", "10.2.0.2", 80)).why, Why::Rule(1));
}

#[test]
fn defaults() {
    let s = spec(two_segments(), vec![]);
    let d = both(&s, &tcp("10.1.0.1", "10.1.0.2", 80));
    assert_eq!(
        (d.verdict, d.why, d.rule()),
        (Verdict::Allow, Why::IntraSegmentDefault, None)
    );
    let d = both(&s, &tcp("10.1.0.1", "10.2.0.2", 80));
    assert_eq!(
        (d.verdict, d.why),
        (Verdict::Deny(DropReason::PolicyDeny), Why::Default)
    );
    let mut s2 = s.clone();
    s2.default_action = Action::Allow;
    s2.intra_segment_default = Action::Deny;
    assert_eq!(
        both(&s2, &tcp("10.1.0.1", "10.2.0.2", 80)).verdict,
        Verdict::Allow
    );
    assert!(!both(&s2, &tcp("10.1.0.1", "10.1.0.2", 80))
        .verdict
        .is_allow());
}

#[test]
fn protocol_ports_and_icmp() {
    let mut r = rule("web", S(0), S(1), Action::Allow);
    r.protocol = ProtocolMatch::Number(proto::TCP);
    r.dst_ports = vec![
        PortRange { lo: 8080, hi: 8080 },
        PortRange { lo: 9000, hi: 9100 },
    ];
    r.log = true;
    let mut src = rule("src", S(0), S(1), Action::Allow);
    src.src_ports = vec![PortRange { lo: 53, hi: 53 }];
    let mut ping = rule("ping", S(0), S(1), Action::Allow);
    ping.protocol = ProtocolMatch::Number(proto::ICMP);
    ping.icmp_types = vec![8];
    let s = spec(two_segments(), vec![r, src, ping]);
    let d = both(&s, &tcp("10.1.0.1", "10.2.0.1", 8080));
    assert_eq!((d.why, d.log), (Why::Rule(0), true));
    assert_eq!(
        both(&s, &tcp("10.1.0.1", "10.2.0.1", 9000)).why,
        Why::Rule(0)
    );
    assert_eq!(
        both(&s, &tcp("10.1.0.1", "10.2.0.1", 9100)).why,
        Why::Rule(0)
    );
    assert_eq!(
        both(&s, &tcp("10.1.0.1", "10.2.0.1", 9101)).why,
        Why::Default
    );
    assert_eq!(
        both(&s, &tcp("10.1.0.1", "10.2.0.1", 8999)).why,
        Why::Default
    );
    let mut udp = tcp("10.1.0.1", "10.2.0.1", 8080);
    udp.proto = proto::UDP;
    assert_eq!(both(&s, &udp).why, Why::Default);
    udp.l4 = L4::Ports { src: 53, dst: 1 };
    assert_eq!(both(&s, &udp).why, Why::Rule(1));
    // No ports: a rule with port constraints never matches, even protocol Any.
    udp.l4 = L4::None;
    assert_eq!(both(&s, &udp).why, Why::Default);
    let mut icmp = tcp("10.1.0.1", "10.2.0.1", 0);
    icmp.proto = proto::ICMP;
    icmp.l4 = L4::Icmp { ty: 8, code: 0, id: 0 };
    let d = both(&s, &icmp);
    assert_eq!((d.why, d.log), (Why::Rule(2), false));
    icmp.l4 = L4::Icmp { ty: 0, code: 0, id: 0 };
    assert_eq!(both(&s, &icmp).why, Why::Default);
    icmp.l4 = L4::None;
    assert_eq!(both(&s, &icmp).why, Why::Default);
}

#[test]
fn accessors() {
    let s = spec(two_segments(), vec![rule("r", Any, Any, Action::Allow)]);
    let p = Policy::compile(&s, 42).unwrap();
    assert_eq!(p.version(), 42);
    assert_eq!(p.segment_name(1), Some("db"));
    assert_eq!(p.segment_name(2), None);
    assert_eq!(p.rule_name(0), Some("r"));
    assert_eq!(p.rule_name(1), None);
    assert_eq!((p.segment_count(), p.rule_count()), (2, 1));
    assert_eq!(p.spec(), &s);
    assert!(std::mem::size_of::<Decision>() <= 24);
}

#[test]
fn empty_policy_fails_closed() {
    let s = spec(vec![], vec![]);
    let d = both(&s, &tcp("10.1.0.1", "10.2.0.1", 80));
    assert_eq!(d.verdict, Verdict::Deny(DropReason::UnknownAddress));
}

#[test]
fn large_policy_compiles_and_agrees() {
    let s = synth::large_policy(7);
    let n: usize = s.segments.iter().map(|x| x.cidrs.len()).sum();
    assert_eq!((s.segments.len(), n, s.rules.len()), (1000, 10_000, 1000));
    let p = Policy::compile(&s, 1).unwrap();
    for pkt in synth::traffic(&s, 7, 300, 0.9, 0.02) {
        assert_eq!(p.classify(&pkt), reference::classify(&s, &pkt), "{pkt:?}");
    }
}

fn params() -> impl Strategy<Value = synth::Params> {
    (
        1usize..40,
        0usize..600,
        0usize..200,
        (0u8..=32, 0u8..=32),
        (0u8..=128, 0u8..=128),
        0.0f64..0.8,
        0.0f64..0.5,
        0usize..60,
        0.0f64..0.5,
        any::<bool>(),
    )
        .prop_map(
            |(segments, v4, v6, l4, l6, nest, vlan, rules, any_side, drop)| synth::Params {
                segments,
                v4_cidrs: v4,
                v6_cidrs: v6,
                v4_len: l4,
                v6_len: l6,
                nest,
                vlan_segment: vlan,
                vlans: vec![10, 20, 30],
                rules,
                any_side,
                unmatched_drop: drop,
                soft_mode: 0.2,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn compiled_matches_reference(seed in any::<u64>(), p in params(), inside in 0.5f64..1.0) {
        let s = synth::policy(seed, &p);
        let policy = Policy::compile(&s, seed).expect("synthetic policies compile");
        let pkts = synth::traffic(&s, seed, 300, inside, 0.05);
        let mut burst = Vec::new();
        policy.classify_burst(&pkts, |i, d| burst.push((i, d)));
        let single: Vec<_> = pkts.iter().enumerate().map(|(i, p)| (i, policy.classify(p))).collect();
        prop_assert_eq!(burst, single);
        for pkt in pkts {
            prop_assert_eq!(policy.classify(&pkt), reference::classify(&s, &pkt), "{:?}", pkt);
            if let Some((a, _)) = pkt.addrs {
                prop_assert_eq!(
                    policy.segment_of(a, pkt.vlan()),
                    reference::segment_of(&s, a, pkt.vlan())
                );
            }
        }
    }

    #[test]
    fn many_prefixes_lpm_matches_reference(seed in any::<u64>(), nest in 0.0f64..0.9) {
        let p = synth::Params {
            segments: 200,
            v4_cidrs: 3000,
            v6_cidrs: 1000,
            v4_len: (0, 32),
            v6_len: (0, 128),
            nest,
            vlan_segment: 0.2,
            vlans: vec![1, 2],
            rules: 0,
            any_side: 0.0,
            unmatched_drop: true,
            soft_mode: 0.0,
        };
        let s = synth::policy(seed, &p);
        let policy = Policy::compile(&s, 0).expect("compiles");
        for pkt in synth::traffic(&s, seed, 100, 0.9, 0.0) {
            if let Some((a, b)) = pkt.addrs {
                for x in [a, b] {
                    prop_assert_eq!(
                        policy.segment_of(x, pkt.vlan()),
                        reference::segment_of(&s, x, pkt.vlan())
                    );
                }
            }
        }
    }
}
