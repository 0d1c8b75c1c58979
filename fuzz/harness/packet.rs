//! The packet harness: shared by the `packet` fuzz target and by
//! `dataplane/tests/fuzz_regressions.rs`, which replays committed inputs.
//!
//! Input: one control byte, then frames, each a big-endian `u16` length and that many
//! bytes (the last frame takes what is left if the length runs past the end).
//! Control bits: 0 connection tracking on (a fresh table of 64 flows per input); 1 loose
//! TCP mode; 2 alternate two policies frame by frame (flows are re-checked against the
//! other policy's version); 3 a full table drops instead of evicting; bits 4-7 how many
//! seconds pass between frames (so flows and fragments time out and the sweep runs).
//!
//! Per frame it checks what must hold for any bytes: nothing panics; the compiled
//! classifier agrees with the reference evaluator; a frame the parser refuses is
//! dropped for the parser's reason; without connection tracking the worker's judgement
//! is the classifier's decision.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use dataplane::conntrack::{self, Conntrack, FullPolicy, TcpMode};
use dataplane::counters::{ConntrackCounters, DropReason};
use dataplane::packet;
use dataplane::policy::{
    reference, Action, Mode, NonIpSpec, Policy, PolicySpec, PortRange, ProtocolMatch, RuleSpec, SegmentMatch, SegmentSpec,
    Unmatched,
};
use dataplane::worker::{judge, ActivePolicy, Judgement};

fn spec(variant: u8) -> PolicySpec {
    let net = |s: &str| s.parse().unwrap();
    let rule = |name: &str, from: u16, to: u16, proto: u8, ports: &[(u16, u16)], icmp: &[u8], action| RuleSpec {
        name: name.into(),
        from: if from == u16::MAX { SegmentMatch::Any } else { SegmentMatch::Segment(from) },
        to: if to == u16::MAX { SegmentMatch::Any } else { SegmentMatch::Segment(to) },
        protocol: if proto == 0 { ProtocolMatch::Any } else { ProtocolMatch::Number(proto) },
        dst_ports: ports.iter().map(|&(lo, hi)| PortRange { lo, hi }).collect(),
        src_ports: vec![],
        icmp_types: icmp.to_vec(),
        action,
        log: name.ends_with("log"),
    };
    let mut rules = vec![
        rule("web-api-http", 0, 1, 6, &[(80, 80), (8000, 8999)], &[], Action::Allow),
        rule("web-api-dns", 0, 1, 17, &[(53, 53)], &[], Action::Allow),
        rule("ping", u16::MAX, u16::MAX, 1, &[], &[8], Action::Allow),
        rule("ping6", u16::MAX, u16::MAX, 58, &[], &[128], Action::Allow),
        rule("sctp-any", u16::MAX, 2, 132, &[], &[], Action::Allow),
        rule("deny-ssh-log", u16::MAX, u16::MAX, 6, &[(22, 22)], &[], Action::Deny),
        rule("vlan-any", 3, u16::MAX, 0, &[], &[], Action::Allow),
    ];
    if variant == 1 {
        // The second policy revokes web -> api http and allows api -> web.
        rules.remove(0);
        rules.push(rule("api-web", 1, 0, 0, &[], &[], Action::Allow));
    }
    PolicySpec {
        segments: vec![
            SegmentSpec { name: "web".into(), cidrs: vec![net("10.1.0.0/16"), net("fd00:1::/64")], vlans: vec![], mode: Mode::Protect },
            SegmentSpec { name: "api".into(), cidrs: vec![net("10.2.0.0/16"), net("fd00:2::/64"), net("10.2.3.0/24")], vlans: vec![], mode: Mode::Protect },
            SegmentSpec { name: "outside".into(), cidrs: vec![net("0.0.0.0/0"), net("::/0")], vlans: vec![], mode: Mode::Protect },
            SegmentSpec { name: "vlan7".into(), cidrs: vec![net("10.0.0.0/8")], vlans: vec![7], mode: Mode::Monitor },
        ],
        rules,
        default_action: Action::Deny,
        intra_segment_default: if variant == 1 { Action::Deny } else { Action::Allow },
        unmatched: if variant == 1 { Unmatched::Drop } else { Unmatched::Segment(2) },
        non_ip: NonIpSpec { allow_arp: true, allow_neighbor_discovery: true, allow_llc: variant == 0, allowed_ethertypes: vec![0x88cc] },
    }
}

fn policies() -> &'static [(PolicySpec, ActivePolicy); 2] {
    static P: OnceLock<[(PolicySpec, ActivePolicy); 2]> = OnceLock::new();
    P.get_or_init(|| {
        [0u8, 1].map(|v| {
            let s = spec(v);
            let p = Policy::compile(&s, u64::from(v) + 1).expect("the harness's policy compiles");
            (s, ActivePolicy::new(p, 1))
        })
    })
}

/// Splits `data` after the control byte into frames (see the module doc).
fn frames(mut rest: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if rest.len() < 2 {
            let f = rest;
            rest = &[];
            return Some(f);
        }
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let body = &rest[2..];
        let (f, tail) = body.split_at(n.min(body.len()));
        rest = tail;
        Some(f)
    })
}

/// Runs one input; panics if an invariant breaks.
pub fn run(data: &[u8]) {
    let Some((&ctl, rest)) = data.split_first() else { return };
    let policies = policies();
    let mut ct = (ctl & 1 != 0).then(|| {
        let cfg = conntrack::Config {
            capacity: 64,
            fragment_capacity: 8,
            tcp_mode: if ctl & 2 != 0 { TcpMode::Loose } else { TcpMode::Strict },
            on_full: if ctl & 8 != 0 { FullPolicy::Drop } else { FullPolicy::EvictEmbryonic },
            seed: Some(0x5eed),
            ..Default::default()
        };
        Conntrack::new(cfg, Arc::new(ConntrackCounters::default()))
    });
    let step = u32::from(ctl >> 4);
    let mut now = 1_000u32;
    for (i, frame) in frames(rest).enumerate().take(256) {
        let (spec, active) = &policies[usize::from(ctl & 4 != 0 && i % 2 == 1)];
        let parsed = packet::parse(frame);
        if let Ok(meta) = &parsed {
            // Addresses the parser reports must come from the frame, of one family.
            if let Some((s, d)) = meta.addrs {
                assert_eq!(matches!(s, IpAddr::V4(_)), matches!(d, IpAddr::V4(_)), "mixed address families");
            }
            let fast = active.policy().classify(meta);
            let slow = reference::classify(spec, meta);
            assert_eq!(fast, slow, "classifier vs reference on {meta:?}");
        }
        let judged = judge(frame, Some(active), ct.as_mut(), now);
        match (&parsed, ct.is_some()) {
            (Err(e), _) => assert_eq!(judged, Judgement::Drop(DropReason::from(*e)), "parse error must be the drop reason"),
            (Ok(meta), false) => assert_eq!(judged, Judgement::Decided { decision: active.policy().classify(meta), fresh: true }),
            (Ok(_), true) => {}
        }
        now = now.wrapping_add(step);
        if let Some(ct) = ct.as_mut() {
            ct.expire(now, 16);
            assert!(ct.len() <= ct.capacity(), "flow table over capacity");
        }
    }
}
