//! Conntrack benchmark: a table of 1,000,000 flows; lookup hits (packets of tracked
//! flows, both directions, random order) in ns/packet under criterion; the summary line
//! also gives inserts (filling the table from empty to 1,000,000) in ns/flow.
//!
//! Run: `cargo bench -p dataplane --bench conntrack -- --warm-up-time 1 --measurement-time 3`.
//! A summary line (ns/packet, ns/flow, bytes per flow) is printed first.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::conntrack::{Config, Conntrack};
use dataplane::counters::ConntrackCounters;
use dataplane::packet::{proto, tcp_flags, Fragment, PacketMeta, L4, ETHERTYPE_IPV4};
use dataplane::policy::{Decision, Mode, Verdict, Why};

const FLOWS: usize = 1_000_000;
const BATCH: usize = 4096;

fn syn(i: u32, reply: bool) -> PacketMeta {
    let a = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i >> 8)));
    let b = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 | (i & 0xff)));
    let (sp, dp) = (1024 + (i % 50_000) as u16, 80);
    let (addrs, l4, flags) = if reply {
        ((b, a), L4::Ports { src: dp, dst: sp }, tcp_flags::ACK)
    } else {
        ((a, b), L4::Ports { src: sp, dst: dp }, tcp_flags::SYN)
    };
    PacketMeta {
        outer_vlan: None,
        inner_vlan: None,
        ethertype: ETHERTYPE_IPV4,
        addrs: Some(addrs),
        proto: proto::TCP,
        l4,
        tcp_flags: flags,
        fragment: Fragment::None,
    }
}

fn allow(_: &PacketMeta) -> Decision {
    Decision { verdict: Verdict::Allow, why: Why::Rule(1), src_segment: Some(1), dst_segment: Some(2), log: false, mode: Mode::Protect, overridden: false }
}

fn table() -> Conntrack {
    Conntrack::new(Config { capacity: FLOWS, seed: Some(1), ..Config::default() }, Arc::new(ConntrackCounters::default()))
}

/// A cheap permutation of 0..FLOWS (multiplicative, FLOWS not a multiple of 7919).
fn order(n: usize) -> Vec<u32> {
    (0..n).map(|i| ((i as u64 * 7919) % FLOWS as u64) as u32).collect()
}

fn bench(c: &mut Criterion) {
    let mut ct = table();
    let t = Instant::now();
    for i in 0..FLOWS as u32 {
        ct.process(&[], &syn(i, false), 1, 0, allow);
    }
    let insert_ns = t.elapsed().as_nanos() as f64 / FLOWS as f64;
    assert_eq!(ct.len(), FLOWS);
    let pkts: Vec<PacketMeta> = order(FLOWS).iter().enumerate().map(|(n, &i)| syn(i, n % 2 == 1)).collect();
    let t = Instant::now();
    let mut hits = 0u64;
    for p in &pkts {
        hits += u64::from(ct.process(&[], p, 1, 1, allow).verdict.is_allow());
    }
    let hit_ns = t.elapsed().as_nanos() as f64 / pkts.len() as f64;
    assert_eq!(hits, FLOWS as u64);
    println!(
        "conntrack: {FLOWS} flows, lookup hit {hit_ns:.1} ns/packet, insert {insert_ns:.1} ns/flow, {:.1} bytes/flow ({} MiB)",
        ct.memory_bytes() as f64 / FLOWS as f64,
        ct.memory_bytes() >> 20
    );

    let mut g = c.benchmark_group("conntrack");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut off = 0usize;
    g.bench_function("lookup_hit_1M", |b| {
        b.iter(|| {
            let mut n = 0u32;
            for p in &pkts[off..off + BATCH] {
                n += u32::from(ct.process(&[], black_box(p), 1, 1, allow).verdict.is_allow());
            }
            off = (off + BATCH) % (FLOWS - BATCH);
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
