//! Conntrack tests: the table against a `HashMap` model, the process path, ICMP
//! errors, fragments, full tables and SYN floods, policy changes.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::packet::tcp_flags::{ACK, FIN, RST, SYN};
use crate::packet::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6};

const SA: u8 = SYN | ACK;

fn ip4(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
}

fn ip6(n: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, n))
}

fn pkt(src: IpAddr, sp: u16, dst: IpAddr, dp: u16, proto: u8, flags: u8) -> PacketMeta {
    PacketMeta {
        outer_vlan: None,
        inner_vlan: None,
        ethertype: if src.is_ipv6() { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 },
        addrs: Some((src, dst)),
        proto,
        l4: L4::Ports { src: sp, dst: dp },
        tcp_flags: flags,
        fragment: Fragment::None,
    }
}

fn tcp(src: IpAddr, sp: u16, dst: IpAddr, dp: u16, flags: u8) -> PacketMeta {
    pkt(src, sp, dst, dp, proto::TCP, flags)
}

fn udp(src: IpAddr, sp: u16, dst: IpAddr, dp: u16) -> PacketMeta {
    pkt(src, sp, dst, dp, proto::UDP, 0)
}

fn echo(src: IpAddr, dst: IpAddr, ty: u8, id: u16) -> PacketMeta {
    let mut m = pkt(src, 0, dst, 0, if src.is_ipv6() { proto::ICMPV6 } else { proto::ICMP }, 0);
    m.l4 = L4::Icmp { ty, code: 0, id };
    m
}

fn allow(rule: u32) -> Decision {
    Decision {
        verdict: Verdict::Allow,
        why: Why::Rule(rule),
        src_segment: Some(1),
        dst_segment: Some(2),
        log: rule & 1 == 0,
        mode: Mode::Protect,
        overridden: false,
    }
}

fn deny() -> Decision {
    Decision {
        verdict: Verdict::Deny(DropReason::PolicyDeny),
        why: Why::Default,
        src_segment: Some(2),
        dst_segment: Some(1),
        log: false,
        mode: Mode::Protect,
        overridden: false,
    }
}

/// The test policy: allowed when the destination port is below 1000 (rule = port), or
/// an echo request; everything else denied.
fn policy(m: &PacketMeta) -> Decision {
    match m.l4 {
        L4::Ports { dst, .. } if dst < 1000 => allow(u32::from(dst)),
        L4::Icmp { ty: 8 | 128, .. } => allow(7),
        L4::None => allow(9),
        _ => deny(),
    }
}

fn cfg(capacity: usize) -> Config {
    Config {
        capacity,
        fragment_capacity: 16,
        seed: Some(42),
        ..Config::default()
    }
}

fn ct(c: Config) -> Conntrack {
    Conntrack::new(c, Arc::new(ConntrackCounters::default()))
}

/// Runs `m` at `now` with policy version 1 and the test policy.
fn run(ct: &mut Conntrack, m: &PacketMeta, now: u32) -> Outcome {
    ct.process(&[], m, 1, now, policy)
}

fn allowed(o: &Outcome) -> bool {
    o.verdict.is_allow()
}

fn dropped(o: &Outcome) -> Option<DropReason> {
    match o.verdict {
        Verdict::Deny(r) => Some(r),
        Verdict::Allow => None,
    }
}

// ---------------------------------------------------------------------------------------
// The table against a HashMap model.

#[derive(Clone, Debug)]
enum Op {
    Insert(u16, u32),
    Remove(u16),
    Expire(u32, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u16..96, 1u32..50).prop_map(|(k, e)| Op::Insert(k, e)),
        2 => (0u16..96).prop_map(Op::Remove),
        1 => (0u32..60, 0usize..40).prop_map(|(n, b)| Op::Expire(n, b)),
    ]
}

fn test_key(k: u16) -> Key {
    key::make(key::words(ip4(k as u8)), k, key::words(ip4(200)), 80, proto::TCP, (k / 256) as u32).0
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Random inserts, removes and sweeps on a small table agree with a HashMap, and
    /// the Robin Hood invariants hold after every step.
    #[test]
    fn table_matches_model(cap in 1usize..64, seed in any::<u64>(), ops in prop::collection::vec(op(), 1..200)) {
        let hasher = Hasher64::new(Some(seed));
        let mut t = Table::new(cap);
        let mut model: HashMap<u16, u32> = HashMap::new();
        let mut cursor = 0usize;
        for op in ops {
            match op {
                Op::Insert(k, e) => {
                    let key = test_key(k);
                    let h = hasher.key(&key);
                    match t.find(&key, h) {
                        Some(i) => {
                            prop_assert_eq!(model.get(&k).copied(), Some(t.get(i).unwrap().expires));
                            t.get_mut(i).unwrap().expires = e;
                            model.insert(k, e);
                        }
                        None => {
                            prop_assert!(!model.contains_key(&k));
                            let mut f = table::tests_flow(key);
                            f.expires = e;
                            let r = t.insert(f, h);
                            if model.len() >= cap {
                                prop_assert!(r.is_err());
                            } else {
                                prop_assert!(r.is_ok());
                                model.insert(k, e);
                            }
                        }
                    }
                }
                Op::Remove(k) => {
                    let key = test_key(k);
                    if let Some(i) = t.find(&key, hasher.key(&key)) {
                        t.remove(i);
                    }
                    model.remove(&k);
                }
                Op::Expire(now, budget) => {
                    // The sweep, as Conntrack::expire does it.
                    let mut i = t.wrap(cursor);
                    for _ in 0..budget {
                        match t.get(i) {
                            Some(f) if now >= f.expires => t.remove(i),
                            _ => i = t.wrap(i + 1),
                        }
                    }
                    cursor = i;
                    // Only expired flows went.
                    let mut gone = Vec::new();
                    for (&k, &e) in model.iter() {
                        let key = test_key(k);
                        if t.find(&key, hasher.key(&key)).is_none() {
                            prop_assert!(now >= e);
                            gone.push(k);
                        }
                    }
                    for k in gone {
                        model.remove(&k);
                    }
                }
            }
            t.check(|k| hasher.key(k));
            prop_assert_eq!(t.len(), model.len());
            for k in 0..96u16 {
                let key = test_key(k);
                let got = t.find(&key, hasher.key(&key)).map(|i| t.get(i).unwrap().expires);
                prop_assert_eq!(got, model.get(&k).copied());
            }
        }
    }
}

#[test]
fn sweep_removes_only_expired() {
    let mut c = ct(cfg(100));
    for i in 0..50u16 {
        let m = udp(ip4(1), 1000 + i, ip4(2), 53);
        assert_eq!(run(&mut c, &m, if i < 20 { 0 } else { 100 }).kind, Kind::New);
    }
    assert_eq!(c.len(), 50);
    // At 30 the first 20 (udp timeout 30) are expired, the others not.
    let mut removed = 0;
    for _ in 0..100 {
        removed += c.expire(30, 3);
        c.check();
    }
    assert_eq!(removed, 20);
    assert_eq!(c.len(), 30);
    assert_eq!(c.counters().expiries.get(), 20);
    assert_eq!(c.counters().entries.get(), 30);
    assert_eq!(c.expire(1000, 0), 0);
    let mut removed = 0;
    for _ in 0..100 {
        removed += c.expire(1000, 5);
    }
    assert_eq!(removed, 30);
    assert!(c.is_empty());
}

// ---------------------------------------------------------------------------------------
// The process path.

#[test]
fn tcp_flow_both_directions_and_close() {
    for (a, b) in [(ip4(1), ip4(2)), (ip4(2), ip4(1)), (ip6(1), ip6(2))] {
        let mut c = ct(cfg(100));
        let o = run(&mut c, &tcp(a, 40000, b, 80, SYN), 0);
        assert_eq!((o.kind, o.fresh, o.decision), (Kind::New, true, Some(allow(80))));
        let o = run(&mut c, &tcp(b, 80, a, 40000, SA), 1);
        assert_eq!(o.kind, Kind::Tracked { direction: Direction::Reply, state: State::SynRecv });
        assert_eq!((o.fresh, o.decision), (false, Some(allow(80))));
        let o = run(&mut c, &tcp(a, 40000, b, 80, ACK), 2);
        assert_eq!(o.kind, Kind::Tracked { direction: Direction::Original, state: State::Established });
        let info = c.flow(&tcp(b, 80, a, 40000, ACK), 2).unwrap();
        assert_eq!((info.state, info.expires, info.direction), (State::Established, 2 + 7440, Direction::Reply));
        let o = run(&mut c, &tcp(b, 80, a, 40000, FIN | ACK), 3);
        assert_eq!(o.kind, Kind::Tracked { direction: Direction::Reply, state: State::FinWait });
        let o = run(&mut c, &tcp(a, 40000, b, 80, FIN | ACK), 4);
        assert_eq!(o.kind, Kind::Tracked { direction: Direction::Original, state: State::TimeWait });
        assert_eq!(c.flow(&tcp(a, 40000, b, 80, 0), 4).unwrap().expires, 4 + 120);
        // Expired after tcp_fin.
        assert_eq!(dropped(&run(&mut c, &tcp(a, 40000, b, 80, ACK), 124)), Some(DropReason::CtInvalid));
        assert!(c.is_empty());
        c.check();
    }
}

#[test]
fn rst_closes_with_short_timeout() {
    let (a, b) = (ip4(1), ip4(2));
    let mut c = ct(cfg(10));
    run(&mut c, &tcp(a, 1, b, 22, SYN), 0);
    let o = run(&mut c, &tcp(b, 22, a, 1, RST | ACK), 5);
    assert_eq!(o.kind, Kind::Tracked { direction: Direction::Reply, state: State::Close });
    assert_eq!(c.flow(&tcp(a, 1, b, 22, 0), 5).unwrap().expires, 15);
    assert!(c.flow(&tcp(a, 1, b, 22, 0), 15).is_none());
    // A new SYN before the timeout reopens it.
    let o = run(&mut c, &tcp(a, 1, b, 22, SYN), 14);
    assert_eq!(o.kind, Kind::Tracked { direction: Direction::Original, state: State::SynSent });
}

#[test]
fn timeouts_per_state_expire_flows() {
    let t = Timeouts::default();
    let (a, b) = (ip4(1), ip4(2));
    // (packets, class timeout after the last one)
    let cases: Vec<(Vec<PacketMeta>, u32)> = vec![
        (vec![tcp(a, 1, b, 80, SYN)], t.tcp_syn),
        (vec![tcp(a, 1, b, 80, SYN), tcp(b, 80, a, 1, SA)], t.tcp_syn),
        (vec![tcp(a, 1, b, 80, SYN), tcp(b, 80, a, 1, SA), tcp(a, 1, b, 80, ACK)], t.tcp_established),
        (vec![tcp(a, 1, b, 80, SYN), tcp(b, 80, a, 1, SA), tcp(a, 1, b, 80, FIN | ACK)], t.tcp_fin),
        (vec![tcp(a, 1, b, 80, SYN), tcp(a, 1, b, 80, RST)], t.tcp_closed),
        (vec![udp(a, 1, b, 53)], t.udp),
        (vec![udp(a, 1, b, 53), udp(b, 53, a, 1)], t.udp_stream),
        (vec![echo(a, b, 8, 7)], t.icmp),
        (vec![echo(a, b, 8, 7), echo(b, a, 0, 7)], t.icmp),
        (vec![pkt(a, 0, b, 0, 47, 0)], t.other),
    ];
    for (pkts, timeout) in cases {
        let mut c = ct(cfg(10));
        for (i, p) in pkts.iter().enumerate() {
            let mut p = *p;
            if p.proto == 47 {
                p.l4 = L4::None;
            }
            assert!(allowed(&run(&mut c, &p, i as u32)), "{p:?}");
        }
        let last = pkts.len() as u32 - 1;
        let mut probe = pkts[0];
        if probe.proto == 47 {
            probe.l4 = L4::None;
        }
        assert!(c.flow(&probe, last + timeout - 1).is_some(), "{pkts:?}");
        assert!(c.flow(&probe, last + timeout).is_none(), "{pkts:?}");
    }
}

#[test]
fn strict_tcp_refuses_mid_stream_and_loose_accepts() {
    let (a, b) = (ip4(1), ip4(2));
    let mut c = ct(cfg(10));
    for f in [ACK, SA, FIN | ACK, RST, SYN | FIN, 0] {
        let o = run(&mut c, &tcp(a, 1, b, 80, f), 0);
        assert_eq!((o.kind, dropped(&o)), (Kind::Dropped, Some(DropReason::CtInvalid)), "{f:#x}");
        assert!(!o.fresh);
    }
    assert!(c.is_empty());
    let mut c = ct(Config { tcp_mode: TcpMode::Loose, ..cfg(10) });
    let o = run(&mut c, &tcp(a, 1, b, 80, ACK), 0);
    assert_eq!(o.kind, Kind::New);
    // Picked up, embryonic on the SYN timeout until the responder answers.
    let info = c.flow(&tcp(a, 1, b, 80, 0), 0).unwrap();
    assert_eq!((info.state, info.expires), (State::Unreplied, 120));
    run(&mut c, &tcp(b, 80, a, 1, ACK), 1);
    let info = c.flow(&tcp(a, 1, b, 80, 0), 1).unwrap();
    assert_eq!((info.state, info.expires), (State::Established, 1 + 7440));
    assert_eq!(dropped(&run(&mut c, &tcp(a, 2, b, 80, RST), 0)), Some(DropReason::CtInvalid));
}

#[test]
fn loose_pick_ups_nobody_answers_are_evicted_for_new_flows() {
    let (a, b) = (ip4(1), ip4(2));
    let mut c = ct(Config { tcp_mode: TcpMode::Loose, ..cfg(4) });
    for p in 0..4 {
        assert_eq!(run(&mut c, &tcp(a, p, b, 80, ACK), 0).kind, Kind::New);
    }
    // The table is full of unanswered pick-ups: a SYN still gets in, one of them goes.
    assert_eq!(run(&mut c, &tcp(a, 9, b, 80, SYN), 1).kind, Kind::New);
    assert_eq!(c.counters().evictions.get(), 1);
    assert_eq!(c.len(), 4);
}

#[test]
fn echo_flows_pass_only_requests_out_and_replies_back() {
    for (a, b, req, rep) in [(ip4(1), ip4(2), 8, 0), (ip6(1), ip6(2), 128, 129)] {
        let mut c = ct(cfg(10));
        // The policy lets a ping b, not b ping a.
        let only_a = |m: &PacketMeta| if m.addrs.map(|x| x.0) == Some(a) { policy(m) } else { deny() };
        assert_eq!(c.process(&[], &echo(a, b, req, 3), 1, 0, only_a).kind, Kind::New);
        let o = c.process(&[], &echo(b, a, rep, 3), 1, 0, only_a);
        assert_eq!(o.kind, Kind::Tracked { direction: Direction::Reply, state: State::Replied });
        // b's own request on the same id is not the flow's traffic: the policy denies it.
        let o = c.process(&[], &echo(b, a, req, 3), 1, 1, only_a);
        assert_eq!((o.kind, dropped(&o)), (Kind::Untracked, Some(DropReason::PolicyDeny)));
        // Nor is a reply from a: judged as the request it answers (b -> a), denied.
        let o = c.process(&[], &echo(a, b, rep, 3), 1, 1, only_a);
        assert_eq!((o.kind, dropped(&o)), (Kind::Untracked, Some(DropReason::PolicyDeny)));
        // Where the policy allows b -> a, both pass, untracked; the flow is untouched.
        let o = c.process(&[], &echo(b, a, req, 3), 1, 2, policy);
        assert_eq!((o.kind, o.verdict), (Kind::Untracked, Verdict::Allow));
        let o = c.process(&[], &echo(a, b, rep, 3), 1, 2, policy);
        assert_eq!((o.kind, o.verdict), (Kind::Untracked, Verdict::Allow));
        let info = c.flow(&echo(a, b, req, 3), 2).unwrap();
        assert_eq!((info.direction, info.expires), (Direction::Original, 30));
    }
}

#[test]
fn a_syn_from_the_responder_is_not_passed_on_the_flow() {
    let (a, b) = (ip4(1), ip4(2));
    let mut c = ct(cfg(10));
    let open = |c: &mut Conntrack, sp: u16| {
        for m in [tcp(a, sp, b, 80, SYN), tcp(b, 80, a, sp, SA), tcp(a, sp, b, 80, ACK)] {
            assert!(allowed(&run(c, &m, 0)));
        }
    };
    // The test policy allows destination ports below 1000: b may not open to a:40000.
    open(&mut c, 40000);
    let o = run(&mut c, &tcp(b, 80, a, 40000, SYN), 1);
    assert_eq!((o.kind, dropped(&o)), (Kind::Dropped, Some(DropReason::CtInvalid)));
    for m in [tcp(a, 40000, b, 80, FIN | ACK), tcp(b, 80, a, 40000, FIN | ACK)] {
        run(&mut c, &m, 1);
    }
    assert_eq!(c.flow(&tcp(a, 40000, b, 80, 0), 1).unwrap().state, State::TimeWait);
    // SYN with FIN or RST: invalid on any flow, and tears nothing down.
    for (m, state) in [(tcp(b, 80, a, 40000, SYN | FIN), State::TimeWait), (tcp(a, 40000, b, 80, SYN | RST), State::TimeWait)] {
        assert_eq!(dropped(&run(&mut c, &m, 1)), Some(DropReason::CtInvalid));
        assert_eq!(c.flow(&tcp(a, 40000, b, 80, 0), 1).unwrap().state, state);
    }
    // Closed: the responder's SYN is a new flow the other way, and the policy denies it.
    let o = run(&mut c, &tcp(b, 80, a, 40000, SYN), 2);
    assert_eq!((o.kind, dropped(&o)), (Kind::Classified, Some(DropReason::PolicyDeny)));
    assert!(c.flow(&tcp(a, 40000, b, 80, 0), 2).is_none());
    // One the policy allows (b -> a:700) replaces the closed flow, b its originator.
    open(&mut c, 700);
    run(&mut c, &tcp(a, 700, b, 80, RST), 3);
    assert_eq!(run(&mut c, &tcp(b, 80, a, 700, SYN), 4).kind, Kind::New);
    assert_eq!(c.flow(&tcp(b, 80, a, 700, 0), 4).unwrap().direction, Direction::Original);
    // A simultaneous open still works: a SYN from the responder in SYN-SENT.
    run(&mut c, &tcp(a, 900, b, 80, SYN), 5);
    let o = run(&mut c, &tcp(b, 80, a, 900, SYN), 5);
    assert_eq!(o.kind, Kind::Tracked { direction: Direction::Reply, state: State::SynRecv });
    // Loose mode picks a flow up from its SYN-ACK (the server is then its originator):
    // the client's retransmitted SYN still passes.
    let mut l = ct(Config { tcp_mode: TcpMode::Loose, ..cfg(10) });
    assert_eq!(run(&mut l, &tcp(b, 80, a, 600, SA), 0).kind, Kind::New);
    let o = run(&mut l, &tcp(a, 600, b, 80, SYN), 0);
    assert_eq!(o.kind, Kind::Tracked { direction: Direction::Reply, state: State::Unreplied });
    let counters = c.counters();
    assert_eq!(counters.inserts.get() - counters.expiries.get() - counters.evictions.get(), c.len() as u64);
}

#[test]
fn replies_of_denied_flows_do_not_pass() {
    let (a, b) = (ip4(1), ip4(2));
    let mut c = ct(cfg(10));
    // Denied by the policy (port 5000): nothing tracked.
    let o = run(&mut c, &udp(a, 1, b, 5000), 0);
    assert_eq!((o.kind, dropped(&o)), (Kind::Classified, Some(DropReason::PolicyDeny)));
    assert!(c.is_empty());
    // The "reply" is a new flow, classified in its own direction: port 1 < 1000, allowed.
    // But a TCP SYN-ACK answer to a denied SYN is invalid.
    run(&mut c, &tcp(a, 1, b, 5000, SYN), 0);
    assert_eq!(dropped(&run(&mut c, &tcp(b, 5000, a, 1, SA), 0)), Some(DropReason::CtInvalid));
    // An echo reply with no request is invalid.
    assert_eq!(dropped(&run(&mut c, &echo(b, a, 0, 3), 0)), Some(DropReason::CtInvalid));
    // Replies of an allowed echo pass, with another id they do not.
    assert_eq!(run(&mut c, &echo(a, b, 8, 3), 0).kind, Kind::New);
    let o = run(&mut c, &echo(b, a, 0, 3), 0);
    assert_eq!(o.kind, Kind::Tracked { direction: Direction::Reply, state: State::Replied });
    assert_eq!(dropped(&run(&mut c, &echo(b, a, 0, 4), 0)), Some(DropReason::CtInvalid));
}

#[test]
fn vlans_and_families_are_separate_flows() {
    let mut c = ct(cfg(10));
    let m = udp(ip4(1), 1, ip4(2), 53);
    run(&mut c, &m, 0);
    let mut tagged = m;
    tagged.outer_vlan = Some(10);
    assert!(c.flow(&tagged, 0).is_none());
    let mapped = udp(
        IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()),
        1,
        IpAddr::V6(Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped()),
        53,
    );
    assert!(c.flow(&mapped, 0).is_none());
    assert!(c.flow(&udp(ip4(2), 53, ip4(1), 1), 0).is_some());
}

#[test]
fn non_ip_and_icmp_info_are_untracked() {
    let mut c = ct(cfg(10));
    let mut arp = udp(ip4(1), 1, ip4(2), 2);
    arp.addrs = None;
    arp.l4 = L4::None;
    let o = c.process(&[], &arp, 1, 0, |_| allow(1));
    assert_eq!((o.kind, o.fresh), (Kind::Untracked, true));
    let mut ns = echo(ip6(1), ip6(2), 135, 0);
    ns.l4 = L4::Icmp { ty: 135, code: 0, id: 0 };
    assert_eq!(c.process(&[], &ns, 1, 0, |_| allow(1)).kind, Kind::Untracked);
    assert!(c.is_empty());
}

// ---------------------------------------------------------------------------------------
// Policy change.

#[test]
fn recheck_keeps_allowed_and_revokes_denied_flows() {
    let (a, b) = (ip4(1), ip4(2));
    let mut c = ct(cfg(10));
    run(&mut c, &tcp(a, 1, b, 80, SYN), 0);
    run(&mut c, &tcp(a, 2, b, 443, SYN), 0);
    run(&mut c, &echo(a, b, 8, 9), 0);
    // Version 2 allows port 80 and echo (as requests), denies 443.
    let mut seen = Vec::new();
    let mut v2 = |m: &PacketMeta| {
        seen.push(*m);
        match m.l4 {
            L4::Ports { dst: 80, .. } => allow(100),
            L4::Icmp { ty: 8, .. } => allow(101),
            _ => deny(),
        }
    };
    // A reply is re-checked in the original direction.
    let o = c.process(&[], &tcp(b, 80, a, 1, SA), 2, 1, &mut v2);
    assert_eq!(o.kind, Kind::Rechecked { direction: Direction::Reply, state: State::SynRecv });
    assert_eq!((o.decision, o.fresh), (Some(allow(100)), true));
    let o = c.process(&[], &echo(b, a, 0, 9), 2, 1, &mut v2);
    assert!(matches!(o.kind, Kind::Rechecked { .. }));
    let o = c.process(&[], &tcp(b, 443, a, 2, SA), 2, 1, &mut v2);
    assert_eq!((o.kind, dropped(&o)), (Kind::Dropped, Some(DropReason::CtRevoked)));
    assert_eq!(seen[0].addrs, Some((a, b)));
    assert_eq!(seen[0].l4, L4::Ports { src: 1, dst: 80 });
    assert_eq!(seen[1].l4, L4::Icmp { ty: 8, code: 0, id: 9 });
    // Once re-checked, the flow is not classified again.
    let o = c.process(&[], &tcp(a, 1, b, 80, ACK), 2, 2, |_| panic!("classified"));
    assert_eq!(o.kind, Kind::Tracked { direction: Direction::Original, state: State::Established });
    assert_eq!(o.decision, Some(allow(100)));
    assert_eq!(c.len(), 2);
    assert_eq!(c.counters().revoked.get(), 1);
    assert_eq!(c.counters().rechecked.get(), 2);
    // Keep: never re-checked.
    let mut c = ct(Config { on_policy_change: PolicyChange::Keep, ..cfg(10) });
    run(&mut c, &tcp(a, 2, b, 443, SYN), 0);
    let o = c.process(&[], &tcp(b, 443, a, 2, SA), 9, 1, |_| panic!("classified"));
    assert!(matches!(o.kind, Kind::Tracked { .. }));
}

// ---------------------------------------------------------------------------------------
// Full tables and SYN floods.

#[test]
fn full_table_drops_or_evicts_embryonic() {
    let (a, b) = (ip4(1), ip4(2));
    let mut c = ct(Config { on_full: FullPolicy::Drop, ..cfg(4) });
    for p in 0..4 {
        assert_eq!(run(&mut c, &tcp(a, p, b, 80, SYN), 0).kind, Kind::New);
    }
    let o = run(&mut c, &tcp(a, 9, b, 80, SYN), 0);
    assert_eq!(dropped(&o), Some(DropReason::CtTableFull));
    assert_eq!((o.fresh, o.decision), (true, Some(allow(80))));
    assert_eq!(c.counters().table_full.get(), 1);
    // Expired flows are reclaimed even with Drop.
    assert_eq!(run(&mut c, &tcp(a, 9, b, 80, SYN), 120).kind, Kind::New);
    // Evict: embryonic ones go, the one nearest expiry first.
    let mut c = ct(cfg(4));
    run(&mut c, &tcp(a, 0, b, 80, SYN), 5);
    run(&mut c, &tcp(a, 1, b, 80, SYN), 1);
    run(&mut c, &tcp(a, 2, b, 80, SYN), 3);
    run(&mut c, &udp(a, 3, b, 53), 3);
    run(&mut c, &udp(b, 53, a, 3), 3); // replied: not embryonic
    assert_eq!(run(&mut c, &tcp(a, 9, b, 80, SYN), 6).kind, Kind::New);
    assert!(c.flow(&tcp(a, 1, b, 80, 0), 6).is_none());
    assert_eq!(c.counters().evictions.get(), 1);
}

/// Sends the handshake of flow `p` (established).
fn establish(c: &mut Conntrack, p: u16, now: u32) {
    let (a, b) = (ip4(1), ip4(2));
    assert_eq!(run(c, &tcp(a, p, b, 80, SYN), now).kind, Kind::New);
    run(c, &tcp(b, 80, a, p, SA), now);
    run(c, &tcp(a, p, b, 80, ACK), now);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A SYN flood against a small table never pushes out an established flow: new SYNs
    /// are dropped as table-full or evict only embryonic flows.
    #[test]
    fn syn_flood_never_evicts_established(
        cap in 4usize..40,
        established in 0usize..40,
        syns in prop::collection::vec((any::<u8>(), any::<u16>()), 1..300),
        policy_kind in prop::bool::ANY,
    ) {
        let on_full = if policy_kind { FullPolicy::EvictEmbryonic } else { FullPolicy::Drop };
        let mut c = ct(Config { on_full, ..cfg(cap) });
        let established = established.min(cap);
        for p in 0..established as u16 {
            establish(&mut c, p, 0);
        }
        let mut embryonic: HashSet<(u8, u16)> = HashSet::new();
        for (n, (host, port)) in syns.into_iter().enumerate() {
            let src = IpAddr::V4(Ipv4Addr::new(192, 168, 0, host));
            let before = c.counters().evictions.get();
            let o = run(&mut c, &tcp(src, port, ip4(2), 80, SYN), 1 + n as u32 / 100);
            match o.kind {
                Kind::New => { embryonic.insert((host, port)); }
                Kind::Tracked { .. } => {}
                Kind::Dropped => prop_assert_eq!(dropped(&o), Some(DropReason::CtTableFull)),
                k => prop_assert!(false, "{:?}", k),
            }
            if on_full == FullPolicy::Drop {
                prop_assert_eq!(c.counters().evictions.get(), before);
            }
            prop_assert!(c.len() <= cap);
            for p in 0..established as u16 {
                let f = c.flow(&tcp(ip4(1), p, ip4(2), 80, 0), 1);
                prop_assert_eq!(f.map(|f| f.state), Some(State::Established));
            }
        }
        // Every flow still there is an established one or a SYN of the flood.
        prop_assert_eq!(
            c.counters().inserts.get() - c.counters().evictions.get() - c.counters().expiries.get(),
            c.len() as u64
        );
        c.check();
    }

    /// Over random traffic between a few hosts, a packet passes only as a new flow the
    /// policy allowed, or as part of a flow admitted earlier (either direction).
    #[test]
    fn only_admitted_flows_pass(
        pkts in prop::collection::vec((0u8..4, 0u8..4, prop::sample::select(vec![22u16, 80, 5000, 6000]), 0u8..3, prop::sample::select(vec![SYN, SA, ACK, FIN | ACK, RST])), 1..200),
    ) {
        let mut c = ct(cfg(64));
        let mut admitted: HashSet<(IpAddr, u16, IpAddr, u16, u8)> = HashSet::new();
        for (s, d, port, kind, flags) in pkts {
            let (a, b) = (ip4(s), ip4(d));
            // Client port 40000 + s, server port `port`; kind: 0 client->server TCP,
            // 1 server->client TCP, 2 UDP client->server.
            let m = match kind {
                0 => tcp(a, 40000, b, port, flags),
                1 => tcp(b, port, a, 40000, flags),
                _ => udp(a, 40000, b, port),
            };
            let (src, dst) = m.addrs.unwrap();
            let L4::Ports { src: sp, dst: dp } = m.l4 else { unreachable!() };
            let fwd = (src, sp, dst, dp, m.proto);
            let rev = (dst, dp, src, sp, m.proto);
            let before = c.flow(&m, 0);
            let o = run(&mut c, &m, 0);
            // A SYN from the responder of a closed flow replaces it, allowed or not.
            if matches!(o.kind, Kind::New | Kind::Classified)
                && before.is_some_and(|f| matches!(f.state, State::TimeWait | State::Close))
            {
                admitted.remove(&rev);
            }
            match o.kind {
                Kind::New => {
                    prop_assert!(policy(&m).verdict.is_allow());
                    prop_assert!(m.proto != proto::TCP || flags == SYN);
                    admitted.insert(fwd);
                }
                Kind::Tracked { .. } => prop_assert!(admitted.contains(&fwd) || admitted.contains(&rev)),
                Kind::Classified => prop_assert!(!policy(&m).verdict.is_allow()),
                Kind::Dropped => {
                    prop_assert_eq!(dropped(&o), Some(DropReason::CtInvalid));
                    // Only a SYN from the responder of an established flow is invalid on
                    // an admitted flow.
                    let responder_syn = flags == SYN && admitted.contains(&rev);
                    prop_assert!(responder_syn || (!admitted.contains(&fwd) && !admitted.contains(&rev)));
                }
                k => prop_assert!(false, "{:?}", k),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// ICMP errors (real frames, parsed) and fragments.

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn ipv4_hdr(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, payload_len: usize, frag: u16, id: u16) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&((20 + payload_len) as u16).to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h
}

fn ipv6_hdr(next: u8, src: Ipv6Addr, dst: Ipv6Addr, payload_len: usize) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload_len as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h
}

/// An ICMP(v6) error of type `ty` from `router` to `to`, quoting a `proto` datagram
/// from `qsrc:qsp` to `qdst:qdp` (`l4` = its first 8 bytes).
fn icmp_error(v6: bool, ty: u8, router: IpAddr, to: IpAddr, quoted_ip: Vec<u8>, l4: [u8; 8]) -> Vec<u8> {
    let mut body = vec![ty, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&quoted_ip);
    body.extend_from_slice(&l4);
    match (v6, router, to) {
        (false, IpAddr::V4(r), IpAddr::V4(t)) => {
            let mut p = ipv4_hdr(proto::ICMP, r, t, body.len(), 0, 1);
            p.extend_from_slice(&body);
            eth(ETHERTYPE_IPV4, &p)
        }
        (true, IpAddr::V6(r), IpAddr::V6(t)) => {
            let mut p = ipv6_hdr(proto::ICMPV6, r, t, body.len());
            p.extend_from_slice(&body);
            eth(ETHERTYPE_IPV6, &p)
        }
        _ => unreachable!(),
    }
}

fn ports8(sp: u16, dp: u16) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..2].copy_from_slice(&sp.to_be_bytes());
    b[2..4].copy_from_slice(&dp.to_be_bytes());
    b
}

#[test]
fn icmp_errors_quoting_a_flow_are_related_v4_and_v6() {
    let (a4, b4, r4) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 9, 9, 9));
    let (a6, b6, r6) = (Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1), Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2), Ipv6Addr::new(0xfd00, 9, 0, 0, 0, 0, 0, 9));
    let mut c = ct(cfg(10));
    run(&mut c, &udp(a4.into(), 1234, b4.into(), 53), 0);
    run(&mut c, &tcp(a6.into(), 1234, b6.into(), 80, SYN), 0);
    let v4_quote = |src: Ipv4Addr, dst: Ipv4Addr, proto: u8| ipv4_hdr(proto, src, dst, 8, 0, 7);
    let v6_quote = |src: Ipv6Addr, dst: Ipv6Addr, next: u8| ipv6_hdr(next, src, dst, 8);
    let cases = [
        // (frame, related?)
        (icmp_error(false, 3, b4.into(), a4.into(), v4_quote(a4, b4, proto::UDP), ports8(1234, 53)), true),
        (icmp_error(false, 11, r4.into(), a4.into(), v4_quote(a4, b4, proto::UDP), ports8(1234, 53)), true),
        // Port unreachable back from the other side for a packet it never sent.
        (icmp_error(false, 3, a4.into(), b4.into(), v4_quote(a4, b4, proto::UDP), ports8(1234, 53)), false),
        (icmp_error(false, 3, b4.into(), a4.into(), v4_quote(a4, b4, proto::UDP), ports8(1234, 54)), false),
        (icmp_error(false, 3, b4.into(), a4.into(), v4_quote(a4, b4, proto::TCP), ports8(1234, 53)), false),
        (icmp_error(true, 1, b6.into(), a6.into(), v6_quote(a6, b6, proto::TCP), ports8(1234, 80)), true),
        (icmp_error(true, 2, r6.into(), a6.into(), v6_quote(a6, b6, proto::TCP), ports8(1234, 80)), true),
        (icmp_error(true, 3, r6.into(), a6.into(), v6_quote(a6, b6, proto::TCP), ports8(1234, 80)), true),
        (icmp_error(true, 3, r6.into(), a6.into(), v6_quote(a6, b6, proto::TCP), ports8(1234, 81)), false),
    ];
    for (i, (frame, related)) in cases.iter().enumerate() {
        let meta = packet::parse(frame).unwrap();
        let o = c.process(frame, &meta, 1, 1, |_| panic!("classified"));
        if *related {
            assert_eq!((o.kind, o.verdict), (Kind::Related, Verdict::Allow), "case {i}");
        } else {
            assert_eq!(dropped(&o), Some(DropReason::CtInvalid), "case {i}");
        }
    }
    assert_eq!(c.counters().related.get(), 5);
    // Truncated quotes are not related, and never panic.
    let frame = &cases[0].0;
    for cut in 0..frame.len() {
        let mut f = frame[..cut].to_vec();
        // Keep the outer IPv4 total length honest so the frame parses.
        if f.len() >= 14 + 20 + 8 {
            let total = (f.len() - 14) as u16;
            f[16..18].copy_from_slice(&total.to_be_bytes());
            let meta = packet::parse(&f).unwrap();
            let q = packet::icmp::error_quote(&f, &meta);
            assert_eq!(q.is_some(), f.len() >= 14 + 20 + 8 + 20 + 4, "cut {cut}");
        }
    }
}

#[test]
fn another_tables_flow_relates_an_unrelated_error() {
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let frame = icmp_error(false, 3, b.into(), a.into(), ipv4_hdr(proto::UDP, a, b, 8, 0, 7), ports8(1234, 53));
    let meta = packet::parse(&frame).unwrap();
    // Worker 0 tracks nothing; worker 1 tracks the flow the error quotes.
    let (mut w0, mut w1) = (ct(cfg(10)), ct(cfg(10)));
    run(&mut w1, &udp(a.into(), 1234, b.into(), 53), 0);
    let o = w0.process(&frame, &meta, 1, 1, |_| panic!("classified"));
    assert_eq!((o.kind, dropped(&o)), (Kind::Unrelated, Some(DropReason::CtInvalid)));
    assert_eq!(w0.relate(&frame, &meta, 1, 1), None);
    assert_eq!(w1.relate(&frame, &meta, 1, 1), Some(allow(53)));
    assert_eq!((w0.counters().related.get(), w1.counters().related.get()), (0, 1));
    // Only ICMP errors are related; by the same rules (version, expiry) as `process`.
    assert_eq!(w1.relate(&[], &udp(b.into(), 53, a.into(), 1234), 1, 1), None);
    assert_eq!(w1.relate(&frame, &meta, 2, 1), None);
    assert_eq!(w1.relate(&frame, &meta, 1, 31), None);
    // Loose mode judges an unrelated error by the policy instead.
    let mut loose = ct(Config { tcp_mode: TcpMode::Loose, ..cfg(10) });
    assert_eq!(loose.process(&frame, &meta, 1, 1, |_| deny()).kind, Kind::Untracked);
    // An error that quotes what no table could hold (sent by another host than the
    // error's destination) is dropped here: nobody else needs to look.
    let forged = icmp_error(false, 3, a.into(), b.into(), ipv4_hdr(proto::UDP, a, b, 8, 0, 7), ports8(1234, 53));
    let o = w0.process(&forged, &packet::parse(&forged).unwrap(), 1, 1, |_| panic!("classified"));
    assert_eq!((o.kind, dropped(&o)), (Kind::Dropped, Some(DropReason::CtInvalid)));
}

#[test]
fn icmp_errors_need_a_flow_admitted_by_the_policy_in_force() {
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let frame = icmp_error(false, 3, b.into(), a.into(), ipv4_hdr(proto::UDP, a, b, 8, 0, 7), ports8(1234, 53));
    let meta = packet::parse(&frame).unwrap();
    for (change, related_after_reload) in [(PolicyChange::Recheck, false), (PolicyChange::Keep, true)] {
        let mut c = ct(Config { on_policy_change: change, ..cfg(10) });
        run(&mut c, &udp(a.into(), 1234, b.into(), 53), 0);
        assert_eq!(c.process(&frame, &meta, 1, 1, policy).kind, Kind::Related);
        // Policy version 2 (which may have revoked the flow): with recheck the idle flow
        // vouches for nothing until its own next packet is checked again.
        let o = c.process(&frame, &meta, 2, 1, policy);
        assert_eq!(o.kind == Kind::Related, related_after_reload, "{change:?}");
        assert!(allowed(&c.process(&[], &udp(a.into(), 1234, b.into(), 53), 2, 2, policy)));
        assert_eq!(c.process(&frame, &meta, 2, 2, policy).kind, Kind::Related, "{change:?}");
    }
}

#[test]
fn ipv6_later_fragments_follow_a_first_with_extension_headers() {
    let (a, b) = (ip6(1), ip6(2));
    let mut c = ct(cfg(10));
    // The first fragment's chain: fragment header, destination options, TCP: the parser
    // reports TCP. Later fragments name the destination options (60), as RFC 8200 has
    // every fragment carry the first header of the fragmentable part.
    let mut first = tcp(a, 1, b, 80, SYN);
    first.fragment = Fragment::First { id: 9 };
    let mut later = tcp(a, 0, b, 0, 0);
    later.proto = proto::IPV6_DEST_OPTS;
    later.l4 = L4::None;
    later.fragment = Fragment::Later { id: 9, offset: 32 };
    assert_eq!(run(&mut c, &first, 0).kind, Kind::New);
    let o = run(&mut c, &later, 0);
    assert_eq!((o.kind, o.verdict), (Kind::Fragment, Verdict::Allow));
    // IPv4 keeps the protocol in the key (RFC 791).
    let mut first4 = udp(ip4(1), 1, ip4(2), 53);
    first4.fragment = Fragment::First { id: 9 };
    let mut later4 = udp(ip4(1), 0, ip4(2), 0);
    later4.l4 = L4::None;
    later4.fragment = Fragment::Later { id: 9, offset: 1480 };
    run(&mut c, &first4, 0);
    assert_eq!(run(&mut c, &later4, 0).kind, Kind::Fragment);
    later4.proto = proto::TCP;
    assert_eq!(dropped(&run(&mut c, &later4, 0)), Some(DropReason::FragmentNoFlow));
}

#[test]
fn error_quote_reads_echo_ids_and_extension_headers() {
    let (a, b) = (Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1), Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));
    // A quoted IPv6 echo request behind a destination-options header.
    let mut quoted = ipv6_hdr(proto::IPV6_DEST_OPTS, a, b, 16);
    quoted.extend_from_slice(&[proto::ICMPV6, 0, 1, 4, 0, 0, 0, 0]);
    let frame = icmp_error(true, 1, b.into(), a.into(), quoted, [128, 0, 0, 0, 0x12, 0x34, 0, 1]);
    let meta = packet::parse(&frame).unwrap();
    let q = packet::icmp::error_quote(&frame, &meta).unwrap();
    assert_eq!((q.src, q.dst, q.proto), (IpAddr::V6(a), IpAddr::V6(b), proto::ICMPV6));
    assert_eq!(q.l4, L4::Icmp { ty: 128, code: 0, id: 0x1234 });
    let mut c = ct(cfg(4));
    run(&mut c, &echo(a.into(), b.into(), 128, 0x1234), 0);
    assert_eq!(c.process(&frame, &meta, 1, 0, policy).kind, Kind::Related);
    // Not an error: no quote.
    let req = eth(ETHERTYPE_IPV6, &{
        let mut p = ipv6_hdr(proto::ICMPV6, a, b, 8);
        p.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
        p
    });
    let m = packet::parse(&req).unwrap();
    assert_eq!(m.l4, L4::Icmp { ty: 128, code: 0, id: 1 });
    assert_eq!(packet::icmp::error_quote(&req, &m), None);
}

proptest! {
    /// `error_quote` never panics, whatever follows a valid outer ICMP error header.
    #[test]
    fn error_quote_never_panics(v6 in any::<bool>(), ty in 0u8..5, junk in prop::collection::vec(any::<u8>(), 0..120)) {
        let (a, b) = if v6 { (ip6(1), ip6(2)) } else { (ip4(1), ip4(2)) };
        let ty = if v6 { ty } else { [3, 11, 12, 3, 3][ty as usize] };
        let frame = icmp_error(v6, ty, a, b, junk, [0; 8]);
        if let Ok(meta) = packet::parse(&frame) {
            let _ = packet::icmp::error_quote(&frame, &meta);
            let mut c = ct(cfg(4));
            let _ = c.process(&frame, &meta, 1, 0, policy);
        }
    }
}

#[test]
fn later_fragments_follow_the_first() {
    let (a, b) = (ip4(1), ip4(2));
    let mut c = ct(cfg(10));
    let first = |dp, id| {
        let mut m = udp(a, 1, b, dp);
        m.fragment = Fragment::First { id };
        m
    };
    let later = |id| {
        let mut m = udp(a, 0, b, 0);
        m.l4 = L4::None;
        m.fragment = Fragment::Later { id, offset: 1480 };
        m
    };
    // Before its first fragment: dropped.
    let o = run(&mut c, &later(5), 0);
    assert_eq!((o.kind, dropped(&o)), (Kind::Dropped, Some(DropReason::FragmentNoFlow)));
    assert_eq!(run(&mut c, &first(53, 5), 0).kind, Kind::New);
    let o = run(&mut c, &later(5), 1);
    assert_eq!((o.kind, o.verdict), (Kind::Fragment, Verdict::Allow));
    // Another datagram id, another direction: not followed.
    assert_eq!(dropped(&run(&mut c, &later(6), 1)), Some(DropReason::FragmentNoFlow));
    let mut rev = later(5);
    rev.addrs = Some((b, a));
    assert_eq!(dropped(&run(&mut c, &rev, 1)), Some(DropReason::FragmentNoFlow));
    // A denied first fragment: its later fragments are denied for the same reason.
    assert_eq!(dropped(&run(&mut c, &first(5000, 7), 1)), Some(DropReason::PolicyDeny));
    assert_eq!(dropped(&run(&mut c, &later(7), 1)), Some(DropReason::PolicyDeny));
    // Timeout.
    assert_eq!(dropped(&run(&mut c, &later(5), 30)), Some(DropReason::FragmentNoFlow));
    // The table is bounded: many datagrams overwrite old records, never fail.
    for id in 100..200 {
        run(&mut c, &first(53, id), 31);
    }
    assert!(c.counters().fragment_overwrites.get() > 0);
    assert_eq!(run(&mut c, &later(199), 31).kind, Kind::Fragment);
}

#[test]
fn memory_per_flow() {
    assert_eq!(std::mem::size_of::<Flow>(), 64);
    let c = ct(Config { fragment_capacity: 0, ..cfg(1_000_000) });
    let per_flow = (c.memory_bytes() as f64) / 1_000_000.0;
    assert!(per_flow < 76.0, "{per_flow}");
}
