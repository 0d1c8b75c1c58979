//! Runs one classifier variant in a loop over the benchmark traffic, for counting
//! instructions and cycles with `perf stat` (steadier than time on a shared machine):
//!
//! `valgrind --tool=callgrind target/release/examples/classify_loop classify 20`
//!
//! Variants: `lpm` (bare source and destination lookups), `classify`, `burst`, `none`
//! (set-up only, to subtract). Traffic: `all` (default), `v4` or `v6` as third argument.
//! A fourth argument sets the number of rules of the large policy (default 1,000; the
//! rule-scaling benchmark goes to 10,000).

use std::hint::black_box;

use dataplane::policy::{synth, Policy, Verdict};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map_or("classify", String::as_str);
    let rounds: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(1000);
    let family = args.get(3).map_or("all", String::as_str);
    let mut params = synth::Params::large();
    if let Some(rules) = args.get(4).and_then(|r| r.parse().ok()) {
        params.rules = rules;
    }
    let spec = synth::policy(1, &params);
    let policy = Policy::compile(&spec, 1).expect("large policy compiles");
    let pkts: Vec<_> = synth::traffic(&spec, 1, 4096, 0.9, 0.0)
        .into_iter()
        .filter(|p| match family {
            "v4" => p.addrs.is_some_and(|a| a.0.is_ipv4()),
            "v6" => p.addrs.is_some_and(|a| a.0.is_ipv6()),
            _ => true,
        })
        .collect();
    let mut acc = 0u64;
    for _ in 0..rounds {
        let pkts = black_box(&pkts[..]);
        match what {
            "lpm" => {
                for p in pkts {
                    if let Some((s, d)) = p.addrs {
                        let v = p.vlan();
                        acc += u64::from(policy.segment_of(s, v).unwrap_or(0));
                        acc += u64::from(policy.segment_of(d, v).unwrap_or(0));
                    }
                }
            }
            "classify" => {
                for p in pkts {
                    acc += u64::from(policy.classify(p).verdict == Verdict::Allow);
                }
            }
            "burst" => policy.classify_burst(pkts, |_, d| {
                acc += u64::from(d.verdict == Verdict::Allow);
            }),
            _ => {}
        }
    }
    println!("{what} {family}: {} packets x {rounds} rounds, acc {acc}", pkts.len());
}
