//! Latency through the real worker loop at a fraction of its capacity (scripts/bench.sh).
//!
//! In one process, without NIC or hugepages: two ring-backed cables (west, east), the
//! worker on lcore 1 between them with the given policy (and optionally connection
//! tracking), the generator and receiver on the main lcore. Frames come from a pcap
//! (mgmt/examples/bench_data.rs writes one with the full policy's address mix); only
//! those the policy forwards are sent, each stamped with the timestamp counter in an
//! 8-byte trailer (after the IP packet, where Ethernet padding goes: the parser ignores
//! it). Latency = receive TSC - stamp, so it includes the generator's own ring hop and
//! the receiver's polling, not only the worker.
//!
//! 1. Capacity: send as fast as the generator can for --seconds / 2; the worker's
//!    capacity is the TSC rate over its busy cycles per packet (cycles of rounds that
//!    received packets), capped by what the generator delivered.
//! 2. Paced: send at --load x capacity in bursts of --burst frames for --seconds, and
//!    record every packet's latency.
//!
//! Prints one JSON object: capacity, offered rate, p50/p90/p99/p99.9/max in µs, counts.
//!
//! Usage: latency POLICY.yaml TRAFFIC.pcap [--load 0.5] [--seconds 4] [--burst 4] [--conntrack]
//! (root; the EAL runs with --no-huge).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::conntrack::{self, Conntrack};
use dataplane::counters::{ConntrackCounters, WorkerCounters};
use dataplane::dpdk::{self, Eal, MbufBurst, Mempool, PortSetup, VirtualCable};
use dataplane::packet;
use dataplane::policy::Policy;
use dataplane::worker::{ActivePolicy, Path, SharedPolicy, Worker};

struct Args {
    policy: String,
    pcap: String,
    load: f64,
    seconds: f64,
    burst: usize,
    conntrack: bool,
}

fn args() -> Args {
    let v: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: latency POLICY.yaml TRAFFIC.pcap [--load F] [--seconds S] [--burst N] [--conntrack]";
    let mut a = Args { policy: String::new(), pcap: String::new(), load: 0.5, seconds: 4.0, burst: 4, conntrack: false };
    let mut pos = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let val = || v.get(i + 1).unwrap_or_else(|| panic!("{usage}")).clone();
        match v[i].as_str() {
            "--load" => a.load = val().parse().expect("--load"),
            "--seconds" => a.seconds = val().parse().expect("--seconds"),
            "--burst" => a.burst = val().parse().expect("--burst"),
            "--conntrack" => {
                a.conntrack = true;
                i -= 1;
            }
            other => {
                pos.push(other.to_string());
                i -= 1;
            }
        }
        i += 2;
    }
    assert!(pos.len() == 2, "{usage}");
    assert!(a.burst >= 1 && a.burst <= dpdk::BURST_SIZE, "--burst 1..={}", dpdk::BURST_SIZE);
    a.policy = pos[0].clone();
    a.pcap = pos[1].clone();
    a
}

/// The frames of a classic little-endian pcap file.
fn read_pcap(path: &str) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(b.len() >= 24 && b[0..4] == [0xd4, 0xc3, 0xb2, 0xa1], "{path}: not a little-endian pcap");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= b.len() {
        let incl = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16;
        if at + incl > b.len() {
            break;
        }
        out.push(b[at..at + incl].to_vec());
        at += incl;
    }
    out
}

fn main() {
    let a = args();
    let cfg = mgmt::config::Config::load(std::path::Path::new(&a.policy)).unwrap_or_else(|e| panic!("{e}"));
    let policy = Policy::compile(&cfg.policy, 1).unwrap_or_else(|e| panic!("{}: {e}", a.policy));
    // What the policy forwards, each frame with room for the 8-byte stamp.
    let frames: Vec<Vec<u8>> = read_pcap(&a.pcap)
        .into_iter()
        .filter_map(|f| {
            let meta = packet::parse(&f).ok()?;
            if !policy.classify(&meta).verdict.is_allow() {
                return None;
            }
            let mut stamped = f.clone();
            stamped.extend_from_slice(&[0; 8]);
            (packet::parse(&stamped).ok()? == meta).then_some(stamped)
        })
        .collect();
    assert!(!frames.is_empty(), "{}: no frame the policy forwards", a.pcap);

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let lcores = if cpus >= 2 { "0@0,1@1" } else { "0@0,1@0" };
    let prefix = format!("bh-latency-{}", std::process::id());
    // $BULKHEAD_BENCH_EAL: extra EAL arguments (scripts/bench_forwarding.py has the same).
    let mut eal_args: Vec<String> = std::env::var("BULKHEAD_BENCH_EAL").unwrap_or_default().split_whitespace().map(String::from).collect();
    eal_args.extend(
        ["--no-huge", "--no-pci", "--no-shconf", "-m", "1024", "--lcores", lcores, "--log-level", "error", "--file-prefix", &prefix]
            .map(String::from),
    );
    let eal = Eal::init(&eal_args).unwrap_or_else(|e| panic!("EAL: {e}"));
    let worker_lcore = *eal.lcores().iter().find(|&&l| l != eal.main_lcore()).expect("a worker lcore");
    let pool = Mempool::new("latency", 16383, 256, Mempool::DEFAULT_DATA_ROOM, -1).expect("mempool");
    let mut west = VirtualCable::new("lw", 4096).expect("cable");
    let mut east = VirtualCable::new("le", 4096).expect("cable");
    let setup = PortSetup { rx_descriptors: 1024, tx_descriptors: 1024, ..PortSetup::default() };
    for port in [&mut west.a, &mut west.b, &mut east.a, &mut east.b] {
        port.configure(setup, &pool).expect("configure");
        port.start().expect("start");
    }

    let shared = Arc::new(SharedPolicy::new());
    shared.publish(Arc::new(ActivePolicy::new(policy, 1)));
    let conntrack = a.conntrack.then(|| {
        let cfg = conntrack::Config { capacity: 1 << 20, tcp_mode: conntrack::TcpMode::Loose, ..Default::default() };
        Conntrack::new(cfg, Arc::new(ConntrackCounters::default()))
    });
    let paths = vec![
        Path { rx: west.a.rx_queue(0).unwrap(), tx: east.a.tx_queue(0).unwrap(), rx_port: 0, tx_port: 1 },
        Path { rx: east.a.rx_queue(0).unwrap(), tx: west.a.tx_queue(0).unwrap(), rx_port: 1, tx_port: 0 },
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(WorkerCounters::new(2));
    let mut worker = Worker::new(0, paths, shared, counters.clone(), stop.clone(), conntrack);
    let launched = dpdk::lcore::launch(worker_lcore, move || worker.run()).expect("launch");

    let mut tx = west.b.tx_queue(0).unwrap();
    let mut rx = east.b.rx_queue(0).unwrap();
    let hz = dpdk::tsc_hz() as f64;
    let mut next_frame = 0usize;
    let mut lat_cycles: Vec<u64> = Vec::with_capacity(1 << 24);
    // One round: send up to `burst` stamped frames, receive what is there (recording the
    // latencies if `record`). Returns (sent, received).
    let mut round = |burst: usize, record: bool, lat: &mut Vec<u64>| -> (usize, usize) {
        let mut out = MbufBurst::new();
        let now = dpdk::tsc();
        for _ in 0..burst {
            let f = &frames[next_frame % frames.len()];
            next_frame += 1;
            let Ok(mut m) = pool.alloc_with(f) else { break };
            let d = m.data_mut();
            let n = d.len();
            d[n - 8..].copy_from_slice(&now.to_le_bytes());
            out.push(m);
        }
        let sent = tx.tx_burst(&mut out);
        dpdk::free_bulk(&mut out);
        let mut got = MbufBurst::new();
        let n = rx.rx_burst(&mut got);
        let t = dpdk::tsc();
        if record {
            for m in got.iter() {
                let d = m.data();
                let stamp = u64::from_le_bytes(d[d.len() - 8..].try_into().unwrap());
                lat.push(t.wrapping_sub(stamp));
            }
        }
        dpdk::free_bulk(&mut got);
        (sent, n)
    };

    // 1. Capacity.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(300) {
        round(dpdk::BURST_SIZE, false, &mut lat_cycles);
    }
    let worker_cost = || {
        let rx: u64 = counters.ports.iter().map(|p| p.rx_packets.get()).sum();
        (counters.busy_cycles.get(), rx)
    };
    let cost0 = worker_cost();
    let t0 = Instant::now();
    let (mut cap_sent, mut cap_got) = (0usize, 0usize);
    while t0.elapsed().as_secs_f64() < a.seconds / 2.0 {
        let (s, g) = round(dpdk::BURST_SIZE, false, &mut lat_cycles);
        cap_sent += s;
        cap_got += g;
    }
    let delivered = cap_got as f64 / t0.elapsed().as_secs_f64();
    let cost1 = worker_cost();
    // The worker's capacity from its cycles per packet under this load; the generator may
    // not reach it (then the paced phase runs at a share of what it does reach).
    let cycles_per_packet = (cost1.0 - cost0.0) as f64 / (cost1.1 - cost0.1).max(1) as f64;
    let worker_capacity = hz / cycles_per_packet.max(1.0);
    let capacity = worker_capacity.min(delivered);
    // Let the queues empty.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_millis(200) {
        round(0, false, &mut lat_cycles);
    }

    // 2. Paced at the target load.
    let rate = capacity * a.load;
    let interval = (a.burst as f64 / rate * hz) as u64;
    let start = dpdk::tsc();
    let end = start + (a.seconds * hz) as u64;
    let mut next = start;
    let (mut sent, mut got) = (0usize, 0usize);
    loop {
        let now = dpdk::tsc();
        if now >= end {
            break;
        }
        let burst = if now >= next {
            next += interval;
            a.burst
        } else {
            0
        };
        let (s, g) = round(burst, true, &mut lat_cycles);
        sent += s;
        got += g;
    }
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_millis(100) {
        got += round(0, true, &mut lat_cycles).1;
    }
    let elapsed = (dpdk::tsc() - start) as f64 / hz;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    launched.wait();

    lat_cycles.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat_cycles.is_empty() {
            return 0.0;
        }
        let i = ((lat_cycles.len() as f64 - 1.0) * p).round() as usize;
        lat_cycles[i] as f64 / hz * 1e6
    };
    println!(
        "{{\"capacity_pps\": {capacity:.0}, \"worker_capacity_pps\": {worker_capacity:.0}, \
         \"generator_delivered_pps\": {delivered:.0}, \"capacity_sent_pps\": {:.0}, \"load\": {}, \"offered_pps\": {:.0}, \
         \"sent\": {sent}, \"received\": {got}, \"elapsed_s\": {elapsed:.3}, \"burst\": {}, \"conntrack\": {}, \
         \"p50_us\": {:.2}, \"p90_us\": {:.2}, \"p99_us\": {:.2}, \"p999_us\": {:.2}, \"max_us\": {:.2}, \
         \"worker_cycles_per_packet_at_capacity\": {:.1}, \"frames\": {}}}",
        cap_sent as f64 / (a.seconds / 2.0),
        a.load,
        sent as f64 / elapsed,
        a.burst,
        a.conntrack,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
        pct(1.0),
        cycles_per_packet,
        frames.len(),
    );
}
