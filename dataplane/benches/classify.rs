//! Classifier benchmark: `Policy::classify` per packet against the bare longest-prefix
//! lookups it starts with (source and destination), side by side in one run, on the
//! synthetic large policy (1,000 segments, 10,000 prefixes, 1,000 rules) and a traffic
//! mix where 90% of addresses lie inside a segment.
//!
//! Run: `cargo bench -p dataplane --bench classify -- --warm-up-time 1 --measurement-time 3`.
//! Criterion reports elements (packets) per second for each batch; a summary line with
//! ns/packet for both and their ratio is printed first.
//!
//! Measured on the shared 2-core development VM, 2026-11-30 01:30-01:45 UTC, load
//! average 3-5 (other builds running): wall-clock figures here vary 1.5-2x between runs,
//! so the comparison below is the minimum user time of 5 runs of
//! `target/release/examples/classify_loop VARIANT 3000 FAMILY` per figure, the old and the
//! new build alternated in one session (two sessions, ranges), ns/packet:
//!
//! | | multibit trie (before) | interval search tree (now) |
//! |---|---|---|
//! | bare LPM src+dst, all | 53-54 | 37-49 |
//! | classify, all | 111-113 | 83-84 |
//! | classify_burst, all | 86-90 | 65-69 |
//! | bare LPM, IPv4 only | 23 | 33-34 |
//! | classify, IPv4 only | 57-70 | 65-80 |
//! | bare LPM, IPv6 only | 96-123 | 43-53 |
//! | classify, IPv6 only | 123-166 | 80-91 |
//!
//! Instructions per packet (callgrind, same example): classify 539 -> 522, bare LPM
//! 289 -> 288 (IPv4 254 -> 280, IPv6 486 -> 333). Tables 18.7 MiB -> 0.45 MiB (IPv4
//! prefixes 190 KiB, IPv6 52 KiB), compile 13 ms -> 5-7 ms. This bench's run at 01:40
//! (load 3-5): bare LPM 81 ns/pkt, classify 128, classify_burst 93 (IPv4 only 37 / 93 /
//! 121, IPv6 only 52 / 58 / 50).
//!
//! The 50 ns/pkt target is not met. IPv4 on this bench is slower than with the trie: its
//! 4,096 packets touch few enough trie nodes to stay in L2, where the trie's one or two
//! loads beat the tree's four dependent loads (direct index, separator window, leaf,
//! entry) and twelve compares; the tree wins where the trie's 18.7 MiB cannot stay
//! cached (IPv6, more addresses, the worker loop's mbuf traffic). About 240 of the ~520
//! instructions per packet are in `decide` (rule lists, filter tables), unchanged.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::packet::PacketMeta;
use dataplane::policy::{synth, Policy, Verdict};

const BATCH: usize = 4096;

fn lpm_batch(policy: &Policy, pkts: &[PacketMeta]) -> u32 {
    let mut acc = 0u32;
    for p in pkts {
        if let Some((s, d)) = p.addrs {
            let v = p.vlan();
            acc = acc
                .wrapping_add(u32::from(policy.segment_of(s, v).unwrap_or(0)))
                .wrapping_add(u32::from(policy.segment_of(d, v).unwrap_or(0)));
        }
    }
    acc
}

fn classify_batch(policy: &Policy, pkts: &[PacketMeta]) -> u32 {
    let mut allowed = 0u32;
    for p in pkts {
        if policy.classify(p).verdict == Verdict::Allow {
            allowed += 1;
        }
    }
    allowed
}

fn burst_batch(policy: &Policy, pkts: &[PacketMeta]) -> u32 {
    let mut allowed = 0u32;
    policy.classify_burst(pkts, |_, d| {
        if d.verdict == Verdict::Allow {
            allowed += 1;
        }
    });
    allowed
}

/// Best of 5 runs of 40 rounds: the least disturbed by the neighbours on a shared box.
fn ns_per_packet(f: impl Fn() -> u32, packets: usize) -> f64 {
    let rounds = 40;
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..rounds {
                black_box(f());
            }
            t.elapsed().as_nanos() as f64 / (rounds * packets.max(1)) as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn bench(c: &mut Criterion) {
    let spec = synth::large_policy(1);
    let t = Instant::now();
    let policy = Policy::compile(&spec, 1).expect("large policy compiles");
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    let pkts = synth::traffic(&spec, 1, BATCH, 0.9, 0.0);

    let lpm_ns = ns_per_packet(|| lpm_batch(&policy, black_box(&pkts)), BATCH);
    let cls_ns = ns_per_packet(|| classify_batch(&policy, black_box(&pkts)), BATCH);
    let burst_ns = ns_per_packet(|| burst_batch(&policy, black_box(&pkts)), BATCH);
    println!(
        "large policy: compile {compile_ms:.0} ms, tables {:.1} MiB; bare LPM (src+dst) \
         {lpm_ns:.1} ns/pkt, classify {cls_ns:.1} ns/pkt (x{:.2}), classify_burst \
         {burst_ns:.1} ns/pkt (x{:.2})",
        policy.table_bytes() as f64 / (1 << 20) as f64,
        cls_ns / lpm_ns,
        burst_ns / lpm_ns,
    );

    for (what, subset) in [
        (
            "IPv4 only",
            pkts.iter()
                .copied()
                .filter(|p| p.addrs.is_some_and(|a| a.0.is_ipv4()))
                .collect::<Vec<_>>(),
        ),
        (
            "IPv6 only",
            pkts.iter()
                .copied()
                .filter(|p| p.addrs.is_some_and(|a| a.0.is_ipv6()))
                .collect(),
        ),
    ] {
        let lpm_ns = ns_per_packet(|| lpm_batch(&policy, black_box(&subset)), subset.len());
        let cls_ns = ns_per_packet(|| classify_batch(&policy, black_box(&subset)), subset.len());
        let burst_ns = ns_per_packet(|| burst_batch(&policy, black_box(&subset)), subset.len());
        println!(
            "  {what}: bare LPM {lpm_ns:.1} ns/pkt, classify {cls_ns:.1} ns/pkt, \
             classify_burst {burst_ns:.1} ns/pkt"
        );
    }

    let mut g = c.benchmark_group("policy");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("lpm_src_dst", |b| {
        b.iter(|| lpm_batch(&policy, black_box(&pkts)))
    });
    g.bench_function("classify", |b| {
        b.iter(|| classify_batch(&policy, black_box(&pkts)))
    });
    g.bench_function("classify_burst", |b| {
        b.iter(|| burst_batch(&policy, black_box(&pkts)))
    });
    g.finish();

    let mut g = c.benchmark_group("policy_compile");
    g.sample_size(10);
    g.bench_function("large", |b| b.iter(|| Policy::compile(black_box(&spec), 1)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
