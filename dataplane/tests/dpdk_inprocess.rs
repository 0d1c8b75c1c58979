//! Ring 2: the real worker loop over real DPDK ports, in one process, without NIC or
//! hugepages. The EAL starts once for this test binary (DPDK allows one `rte_eal_init`
//! per process); each test builds its own ring-backed cables and mempool, so tests are
//! independent. Each cable is a pair of ring ports joined like a veth pair: the worker
//! owns end `a`, the test injects and collects on end `b`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dataplane::conntrack::{self, Conntrack};
use dataplane::counters::{ConntrackCounters, DropReason, WorkerCounters};
use dataplane::dpdk::{self, Eal, Mbuf, MbufBurst, Mempool, Port, PortSetup, VirtualCable};
use dataplane::policy::{
    Action, Mode, NonIpSpec, Policy, PolicySpec, PortRange, ProtocolMatch, RuleSpec, SegmentMatch, SegmentSpec, Unmatched,
};
use dataplane::worker::{drain_strays, ActivePolicy, Handoff, Path, SharedPolicy, Worker};

fn eal() -> &'static Mutex<Eal> {
    static EAL: OnceLock<Mutex<Eal>> = OnceLock::new();
    EAL.get_or_init(|| {
        let prefix = format!("bh-test-{}", std::process::id());
        // Two lcores mapped onto CPU 0, so the lcore test runs on a 1-core machine too.
        let args = [
            "--no-huge",
            "--no-pci",
            "--no-shconf",
            "-m",
            "512",
            "--lcores",
            "0@0,1@0",
            "--log-level",
            "error",
            "--file-prefix",
            &prefix,
        ];
        Mutex::new(Eal::init(&args).expect("EAL init"))
    })
}

/// A worker running on an lcore, stopped and waited for when dropped, so that a failing
/// test never leaves it polling ports that are being closed.
struct Running {
    stop: Arc<AtomicBool>,
    launched: Option<dpdk::lcore::Launched>,
}

impl Running {
    fn stop(mut self) -> i32 {
        self.stop.store(true, Ordering::Relaxed);
        self.launched.take().map_or(0, |l| l.wait())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(l) = self.launched.take() {
            let _ = l.wait();
        }
    }
}

/// The one worker lcore: tests that launch on it take turns.
fn worker_lcore() -> (std::sync::MutexGuard<'static, ()>, u32) {
    static LCORE: Mutex<()> = Mutex::new(());
    let guard = LCORE.lock().unwrap_or_else(|e| e.into_inner());
    let eal = eal().lock().unwrap_or_else(|e| e.into_inner());
    let lcore = *eal.lcores().iter().find(|&&l| l != eal.main_lcore()).expect("a worker lcore");
    (guard, lcore)
}

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Two cables (west, east), all four ends configured and started, and a mempool.
struct Bed {
    pool: Mempool,
    west: VirtualCable,
    east: VirtualCable,
}

impl Bed {
    fn new(ring_capacity: u32) -> Bed {
        let _eal = eal();
        let pool = Mempool::new(&unique("pool"), 4095, 0, Mempool::DEFAULT_DATA_ROOM, -1).expect("mempool");
        let mut west = VirtualCable::new(&unique("w"), ring_capacity).expect("cable");
        let mut east = VirtualCable::new(&unique("e"), ring_capacity).expect("cable");
        let setup = PortSetup { rx_descriptors: 512, tx_descriptors: 512, ..PortSetup::default() };
        for port in [&mut west.a, &mut west.b, &mut east.a, &mut east.b] {
            port.configure(setup, &pool).expect("configure");
            port.start().expect("start");
        }
        Bed { pool, west, east }
    }

    /// The worker: west.a <-> east.a, port indices 0 (west) and 1 (east).
    fn worker(&self, policy: Arc<SharedPolicy>, stop: Arc<AtomicBool>) -> (Worker, Arc<WorkerCounters>) {
        self.worker_with(policy, stop, None)
    }

    fn worker_with(
        &self,
        policy: Arc<SharedPolicy>,
        stop: Arc<AtomicBool>,
        conntrack: Option<Conntrack>,
    ) -> (Worker, Arc<WorkerCounters>) {
        self.worker_number(0, policy, stop, conntrack)
    }

    /// Worker number `index` (its slot in the policy's counters) on this bed.
    fn worker_number(
        &self,
        index: usize,
        policy: Arc<SharedPolicy>,
        stop: Arc<AtomicBool>,
        conntrack: Option<Conntrack>,
    ) -> (Worker, Arc<WorkerCounters>) {
        let counters = Arc::new(WorkerCounters::new(2));
        let paths = vec![
            Path { rx: self.west.a.rx_queue(0).unwrap(), tx: self.east.a.tx_queue(0).unwrap(), rx_port: 0, tx_port: 1 },
            Path { rx: self.east.a.rx_queue(0).unwrap(), tx: self.west.a.tx_queue(0).unwrap(), rx_port: 1, tx_port: 0 },
        ];
        (Worker::new(index, paths, policy, counters.clone(), stop, conntrack), counters)
    }
}

fn inject(port: &Port, pool: &Mempool, frames: &[Vec<u8>]) {
    let mut tx = port.tx_queue(0).unwrap();
    for chunk in frames.chunks(dpdk::BURST_SIZE) {
        let mut burst = MbufBurst::new();
        for f in chunk {
            burst.push(pool.alloc_with(f).expect("alloc"));
        }
        // The ring may be full for a moment while a worker on another lcore drains it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !burst.is_empty() {
            tx.tx_burst(&mut burst);
            assert!(Instant::now() < deadline || burst.is_empty(), "test injection ring stayed full");
            if !burst.is_empty() {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

fn collect(port: &Port) -> Vec<Vec<u8>> {
    let mut rx = port.rx_queue(0).unwrap();
    let mut out = Vec::new();
    loop {
        let mut burst = MbufBurst::new();
        if rx.rx_burst(&mut burst) == 0 {
            return out;
        }
        out.extend(burst.iter().map(|m: &Mbuf| m.data().to_vec()));
    }
}

/// An Ethernet + IPv4 + UDP frame of `payload` bytes (checksums are not checked).
fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    l4_frame(src, dst, 17, &[&sport.to_be_bytes()[..], &dport.to_be_bytes(), &((8 + payload) as u16).to_be_bytes(), &[0, 0]].concat(), payload)
}

/// An Ethernet + IPv4 + TCP SYN frame.
fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    l4_frame(src, dst, 6, &tcp, 0)
}

fn l4_frame(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8], payload: usize) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00];
    let total = (20 + l4.len() + payload) as u16;
    f.extend_from_slice(&[0x45, 0, total.to_be_bytes()[0], total.to_be_bytes()[1], 0, 1, 0, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(l4);
    f.extend((0..payload).map(|i| (i % 251) as u8));
    f
}

/// An IPv4 fragment (protocol UDP) of datagram `id`: `data` at byte offset `offset`
/// (a multiple of 8), more fragments following if `more`.
fn frag4(src: [u8; 4], dst: [u8; 4], id: u16, offset: u16, more: bool, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00];
    let total = (20 + data.len()) as u16;
    let flags_off = (u16::from(more) << 13) | (offset / 8);
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&flags_off.to_be_bytes());
    f.extend_from_slice(&[64, 17, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(data);
    f
}

/// A UDP header for a datagram of `len` payload bytes, then `first` payload bytes.
fn udp_head(sport: u16, dport: u16, len: usize, first: usize) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + len) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend((0..first).map(|i| i as u8));
    h
}

fn arp() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 1, 0, 1, 0, 0, 0, 0, 0, 0, 10, 2, 0, 1]);
    f
}

/// web 10.1.0.0/16, api 10.2.0.0/16, outside catches the rest; web may reach api on
/// udp 53 and tcp 8080; everything else between segments is denied.
fn segmented_policy() -> Policy {
    let net = |s: &str| s.parse().unwrap();
    let rule = |name: &str, proto: u8, port: u16| RuleSpec {
        name: name.into(),
        from: SegmentMatch::Segment(0),
        to: SegmentMatch::Segment(1),
        protocol: ProtocolMatch::Number(proto),
        dst_ports: vec![PortRange { lo: port, hi: port }],
        src_ports: vec![],
        icmp_types: vec![],
        action: Action::Allow,
        log: false,
    };
    let spec = PolicySpec {
        segments: vec![
            SegmentSpec { name: "web".into(), cidrs: vec![net("10.1.0.0/16")], vlans: vec![], mode: Mode::Protect },
            SegmentSpec { name: "api".into(), cidrs: vec![net("10.2.0.0/16")], vlans: vec![], mode: Mode::Protect },
            SegmentSpec { name: "outside".into(), cidrs: vec![], vlans: vec![], mode: Mode::Protect },
        ],
        rules: vec![rule("web-to-api-dns", 17, 53), rule("web-to-api-http", 6, 8080)],
        default_action: Action::Deny,
        intra_segment_default: Action::Allow,
        unmatched: Unmatched::Segment(2),
        non_ip: NonIpSpec { allow_arp: true, allow_neighbor_discovery: true, allow_llc: false, allowed_ethertypes: vec![] },
    };
    Policy::compile(&spec, 1).expect("compile")
}

fn allow_all_policy() -> Policy {
    let spec = PolicySpec {
        segments: vec![SegmentSpec { name: "all".into(), cidrs: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()], vlans: vec![], mode: Mode::Protect }],
        rules: vec![],
        default_action: Action::Allow,
        intra_segment_default: Action::Allow,
        unmatched: Unmatched::Drop,
        non_ip: NonIpSpec { allow_arp: true, allow_neighbor_discovery: true, allow_llc: false, allowed_ethertypes: vec![0x88cc] },
    };
    Policy::compile(&spec, 7).expect("compile")
}

fn shared(policy: Policy) -> Arc<SharedPolicy> {
    let shared = Arc::new(SharedPolicy::new());
    shared.publish(Arc::new(ActivePolicy::new(policy, 1)));
    shared
}

/// Polls until `want` packets have been received or a second has passed, then drains.
fn pump(worker: &mut Worker, counters: &WorkerCounters, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let received = || counters.ports.iter().map(|p| p.rx_packets.get()).sum::<u64>();
    while received() < want && Instant::now() < deadline {
        worker.poll_once();
    }
    worker.flush_all();
}

#[test]
fn forwards_byte_identical_both_ways_and_counts_exactly() {
    let bed = Bed::new(1024);
    let start = bed.pool.available();
    let (mut worker, counters) = bed.worker(shared(allow_all_policy()), Arc::new(AtomicBool::new(false)));

    let eastbound: Vec<Vec<u8>> = (0..300).map(|i| udp4([10, 1, 0, 1], [10, 2, 0, (i % 200) as u8], 1000 + i, 53, (i as usize * 5) % 1400)).collect();
    let mut westbound: Vec<Vec<u8>> = (0..100).map(|i| tcp4([10, 2, 0, 9], [10, 1, 0, 1], 8080, 2000 + i)).collect();
    westbound.push(arp());
    inject(&bed.west.b, &bed.pool, &eastbound);
    inject(&bed.east.b, &bed.pool, &westbound);
    pump(&mut worker, &counters, 401);

    assert_eq!(collect(&bed.east.b), eastbound, "east side must see exactly what entered west, in order");
    assert_eq!(collect(&bed.west.b), westbound);
    let bytes = |v: &[Vec<u8>]| v.iter().map(|f| f.len() as u64).sum::<u64>();
    let (w, e) = (&counters.ports[0], &counters.ports[1]);
    assert_eq!((w.rx_packets.get(), w.rx_bytes.get()), (300, bytes(&eastbound)));
    assert_eq!((e.tx_packets.get(), e.tx_bytes.get()), (300, bytes(&eastbound)));
    assert_eq!((e.rx_packets.get(), e.rx_bytes.get()), (101, bytes(&westbound)));
    assert_eq!((w.tx_packets.get(), w.tx_bytes.get()), (101, bytes(&westbound)));
    assert_eq!(counters.total_drops(), 0);
    assert_eq!(counters.policy_version.get(), 7);
    assert_eq!(bed.pool.available(), start, "every mbuf back in the pool");
}

#[test]
fn policy_verdicts_drops_and_counters_are_exact() {
    let bed = Bed::new(1024);
    let start = bed.pool.available();
    let policy = shared(segmented_policy());
    let (mut worker, counters) = bed.worker(policy.clone(), Arc::new(AtomicBool::new(false)));

    let web = [10, 1, 0, 5];
    let api = [10, 2, 0, 7];
    let allowed = vec![udp4(web, api, 4000, 53, 20), tcp4(web, api, 4001, 8080), udp4(web, [10, 1, 9, 9], 1, 2, 0), arp()];
    let denied = vec![udp4(web, api, 4000, 54, 20), tcp4(web, api, 4001, 22), tcp4(web, [8, 8, 8, 8], 1, 443)];
    let malformed = vec![vec![0u8; 10], {
        let mut f = tcp4(web, api, 1, 8080);
        f.truncate(14 + 12);
        f
    }];
    let mut all = allowed.clone();
    all.extend(denied.iter().cloned());
    all.extend(malformed.iter().cloned());
    inject(&bed.west.b, &bed.pool, &all);
    pump(&mut worker, &counters, all.len() as u64);

    assert_eq!(collect(&bed.east.b), allowed);
    assert_eq!(counters.drops[DropReason::PolicyDeny as usize].get(), 3);
    assert_eq!(counters.drops[DropReason::TruncatedEthernet as usize].get(), 1);
    assert_eq!(counters.drops[DropReason::TruncatedIpv4 as usize].get(), 1);
    assert_eq!(counters.total_drops(), 5);
    assert_eq!(counters.ports[1].tx_packets.get(), 4);

    let active = policy.current().unwrap();
    let pc = &active.counters()[0];
    assert_eq!(pc.rules[0].packets.get(), 1, "web-to-api-dns");
    assert_eq!(pc.rules[1].packets.get(), 1, "web-to-api-http");
    assert_eq!(pc.default_action.packets.get(), 3, "default deny: udp 54, tcp 22, web->outside");
    assert_eq!(pc.intra_segment_default.packets.get(), 1);
    let mut pairs: Vec<_> = pc.pairs.iter().map(|(s, d, c)| (s, d, c.allowed.packets.get(), c.denied.packets.get())).collect();
    pairs.sort();
    assert_eq!(pairs, vec![(Some(0), Some(0), 1, 0), (Some(0), Some(1), 2, 2), (Some(0), Some(2), 0, 1)]);
    assert_eq!(bed.pool.available(), start);
}

#[test]
fn fails_closed_without_a_policy() {
    let bed = Bed::new(1024);
    let start = bed.pool.available();
    let (mut worker, counters) = bed.worker(Arc::new(SharedPolicy::new()), Arc::new(AtomicBool::new(false)));
    inject(&bed.west.b, &bed.pool, &[udp4([10, 1, 0, 1], [10, 2, 0, 1], 1, 53, 0), arp()]);
    pump(&mut worker, &counters, 2);
    assert!(collect(&bed.east.b).is_empty());
    // ARP too: without a policy nothing is allowed, not even what a policy would let by.
    assert_eq!(counters.drops[DropReason::NoPolicy as usize].get(), 2);
    assert_eq!(counters.total_drops(), 2);
    assert_eq!(bed.pool.available(), start);
}

#[test]
fn full_tx_ring_is_a_counted_drop_without_leak() {
    // The east cable holds 64 packets; nobody reads it, so the rest are refused.
    let bed = Bed::new(64);
    let start = bed.pool.available();
    let (mut worker, counters) = bed.worker(shared(allow_all_policy()), Arc::new(AtomicBool::new(false)));
    let frames: Vec<_> = (0..60).map(|i| udp4([10, 1, 0, 1], [10, 2, 0, 1], i, 53, 0)).collect();
    for _ in 0..3 {
        inject(&bed.west.b, &bed.pool, &frames);
        pump(&mut worker, &counters, counters.ports[0].rx_packets.get() + 60);
    }
    let delivered = collect(&bed.east.b).len() as u64;
    let refused = counters.drops[DropReason::TxFull as usize].get();
    assert!(delivered <= 64, "ring capacity bounds what got through: {delivered}");
    assert_eq!(delivered + refused, 180, "every packet forwarded or counted as tx_full");
    assert_eq!(counters.ports[1].tx_packets.get(), delivered);
    assert_eq!(bed.pool.available(), start);
}

#[test]
fn worker_runs_on_an_lcore_and_stops_on_request() {
    let bed = Bed::new(1024);
    let start = bed.pool.available();
    let stop = Arc::new(AtomicBool::new(false));
    let (mut worker, counters) = bed.worker(shared(allow_all_policy()), stop.clone());
    let (_lcore_guard, lcore) = worker_lcore();
    let running =
        Running { stop: stop.clone(), launched: Some(dpdk::lcore::launch(lcore, move || worker.run()).expect("launch")) };
    let frames: Vec<_> = (0..500).map(|i| udp4([10, 1, 0, 1], [10, 2, 0, 1], i, 53, 64)).collect();
    let mut got = Vec::new();
    for chunk in frames.chunks(100) {
        inject(&bed.west.b, &bed.pool, chunk);
        let deadline = Instant::now() + Duration::from_secs(5);
        let want = got.len() + chunk.len();
        while got.len() < want && Instant::now() < deadline {
            got.extend(collect(&bed.east.b));
            std::thread::yield_now();
        }
    }
    assert_eq!(running.stop(), 0);
    assert_eq!(got, frames);
    assert!(counters.polls.get() > 0 && counters.busy_polls.get() > 0);
    // Busy rounds took time: at least one timestamp-counter tick per busy round.
    assert!(counters.busy_cycles.get() >= counters.busy_polls.get(), "busy cycles not counted");
    assert_eq!(bed.pool.available(), start);
}

#[test]
fn addresses_in_test_frames_are_what_the_policy_sees() {
    // Guards the frame builder itself: if it produced garbage, the tests above could
    // pass for the wrong reason.
    let meta = dataplane::packet::parse(&udp4([10, 1, 0, 1], [10, 2, 0, 3], 5, 53, 10)).unwrap();
    assert_eq!(meta.addrs, Some((IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)), IpAddr::V4(Ipv4Addr::new(10, 2, 0, 3)))));
    assert_eq!(meta.l4, dataplane::packet::L4::Ports { src: 5, dst: 53 });
}

#[test]
fn conntrack_passes_replies_and_first_fragment_decides() {
    let bed = Bed::new(1024);
    let start = bed.pool.available();
    let ct_counters = Arc::new(ConntrackCounters::default());
    let ct = Conntrack::new(conntrack::Config { capacity: 1024, seed: Some(1), ..Default::default() }, ct_counters.clone());
    let (mut worker, counters) = bed.worker_with(shared(segmented_policy()), Arc::new(AtomicBool::new(false)), Some(ct));
    let (web, api) = ([10, 1, 0, 5], [10, 2, 0, 7]);
    let mut run = |west_in: &[Vec<u8>], east_in: &[Vec<u8>]| {
        let before = counters.ports.iter().map(|p| p.rx_packets.get()).sum::<u64>();
        inject(&bed.west.b, &bed.pool, west_in);
        inject(&bed.east.b, &bed.pool, east_in);
        pump(&mut worker, &counters, before + (west_in.len() + east_in.len()) as u64);
        (collect(&bed.east.b), collect(&bed.west.b))
    };

    // A UDP request opens a flow; its reply passes although no rule allows api -> web.
    let request = udp4(web, api, 4000, 53, 10);
    let (east, _) = run(&[request.clone()], &[]);
    assert_eq!(east, vec![request]);
    let reply = udp4(api, web, 53, 4000, 10);
    let other = udp4(api, web, 53, 4001, 10);
    let (_, west) = run(&[], &[reply.clone(), other]);
    assert_eq!(west, vec![reply], "the reply passes, a new flow from api does not");
    assert_eq!(counters.drops[DropReason::PolicyDeny as usize].get(), 1);

    // TCP: the SYN from web opens; a mid-stream packet of no flow is ct_invalid.
    let syn = tcp4(web, api, 5000, 8080);
    let (east, _) = run(&[syn.clone()], &[]);
    assert_eq!(east, vec![syn]);
    let mut stray_ack = tcp4(api, web, 9999, 1234);
    stray_ack[14 + 20 + 13] = 0x10;
    let (_, west) = run(&[], &[stray_ack]);
    assert!(west.is_empty());
    assert_eq!(counters.drops[DropReason::CtInvalid as usize].get(), 1);

    // Fragments: the first fragment (with the UDP header) decides for the rest.
    let allowed = [
        frag4(web, api, 7, 0, true, &udp_head(4002, 53, 1000, 504)),
        frag4(web, api, 7, 512, false, &[0xab; 496]),
    ];
    let denied = [
        frag4(web, api, 8, 0, true, &udp_head(4003, 54, 1000, 504)),
        frag4(web, api, 8, 512, false, &[0xab; 496]),
    ];
    let orphan = [frag4(web, api, 9, 512, false, &[0xcd; 496])];
    let (east, _) = run(&[allowed.to_vec(), denied.to_vec(), orphan.to_vec()].concat(), &[]);
    assert_eq!(east, allowed.to_vec(), "both fragments of the allowed datagram, nothing else");
    assert_eq!(counters.drops[DropReason::PolicyDeny as usize].get(), 3, "the denied datagram's two fragments");
    assert_eq!(counters.drops[DropReason::FragmentNoFlow as usize].get(), 1, "a later fragment with no first");
    assert!(ct_counters.inserts.get() >= 3 && ct_counters.hits.get() >= 1);
    assert_eq!(bed.pool.available(), start);
}

/// An ICMP port unreachable from `from` to `to` quoting `datagram` (an IPv4 frame):
/// its IP header and first 8 bytes of payload.
fn port_unreachable(from: [u8; 4], to: [u8; 4], datagram: &[u8]) -> Vec<u8> {
    let quote = &datagram[14..14 + 28];
    l4_frame(from, to, 1, &[&[3, 3, 0, 0, 0, 0, 0, 0][..], quote].concat(), 0)
}

#[test]
fn icmp_errors_go_round_the_workers_to_the_one_with_the_flow() {
    // Three stateful workers in one hand-off ring. Each has its own pair of cables here
    // (a hand-off names the port by its index, which all workers share, as on a NIC
    // whose queues they split), and the test polls them in turn.
    let beds = [Bed::new(1024), Bed::new(1024), Bed::new(1024)];
    let starts: Vec<u32> = beds.iter().map(|b| b.pool.available()).collect();
    let policy = Arc::new(SharedPolicy::new());
    policy.publish(Arc::new(ActivePolicy::new(segmented_policy(), 3)));
    let (ring, queues) = Handoff::ring(3);
    let mut workers = Vec::new();
    let mut tracked = Vec::new();
    for (i, (bed, handoff)) in beds.iter().zip(ring).enumerate() {
        let ct_counters = Arc::new(ConntrackCounters::default());
        let ct = Conntrack::new(conntrack::Config { capacity: 64, seed: Some(i as u64), ..Default::default() }, ct_counters.clone());
        let (w, c) = bed.worker_number(i, policy.clone(), Arc::new(AtomicBool::new(false)), Some(ct));
        workers.push((w.with_handoff(handoff), c));
        tracked.push(ct_counters);
    }
    let round = |workers: &mut Vec<(Worker, Arc<WorkerCounters>)>| {
        for (w, _) in workers.iter_mut() {
            w.poll_once();
            w.flush_all();
        }
    };
    let (web, api) = ([10, 1, 0, 5], [10, 2, 0, 7]);

    // Worker 2 sees web's request to a closed port: the flow is its alone.
    let request = udp4(web, api, 4000, 53, 10);
    inject(&beds[2].west.b, &beds[2].pool, std::slice::from_ref(&request));
    round(&mut workers);
    assert_eq!(collect(&beds[2].east.b), vec![request.clone()]);

    // The port unreachable comes back to worker 0 (no ports to hash by): 0 and 1 hand
    // it on, 2 finds the flow and sends it west. The policy alone would deny api -> web.
    let error = port_unreachable(api, web, &request);
    inject(&beds[0].east.b, &beds[0].pool, std::slice::from_ref(&error));
    for _ in 0..3 {
        round(&mut workers);
    }
    assert_eq!(collect(&beds[2].west.b), vec![error], "forwarded by the worker with the flow");
    assert!(collect(&beds[0].west.b).is_empty() && collect(&beds[1].west.b).is_empty());
    let handed = |workers: &Vec<(Worker, Arc<WorkerCounters>)>| workers.iter().map(|(_, c)| c.handed_off.get()).collect::<Vec<_>>();
    assert_eq!(handed(&workers), vec![1, 1, 0]);
    assert_eq!(tracked.iter().map(|c| c.related.get()).collect::<Vec<_>>(), vec![0, 0, 1]);
    assert!(workers.iter().all(|(_, c)| c.total_drops() == 0));

    // An error quoting a flow nobody tracks goes round once (1 -> 2 -> 0) and is dropped
    // by the last worker to look.
    let nobody = port_unreachable(api, web, &udp4(web, api, 4999, 53, 10));
    inject(&beds[1].east.b, &beds[1].pool, &[nobody]);
    for _ in 0..4 {
        round(&mut workers);
    }
    assert_eq!(handed(&workers), vec![1, 2, 1]);
    let invalid: Vec<u64> = workers.iter().map(|(_, c)| c.drops[DropReason::CtInvalid as usize].get()).collect();
    assert_eq!(invalid, vec![1, 0, 0]);
    assert!(beds.iter().all(|b| collect(&b.west.b).is_empty()));

    // Nothing left on the way, nothing lost.
    assert_eq!(drain_strays(&queues), 0);
    drop(workers);
    for (bed, start) in beds.iter().zip(starts) {
        assert_eq!(bed.pool.available(), start);
    }
}

/// web -> api UDP, allowed on the given destination ports, everything else denied.
fn udp_ports_policy(ports: &[u16], version: u64) -> Policy {
    let net = |s: &str| s.parse().unwrap();
    let spec = PolicySpec {
        segments: vec![
            SegmentSpec { name: "web".into(), cidrs: vec![net("10.1.0.0/16")], vlans: vec![], mode: Mode::Protect },
            SegmentSpec { name: "api".into(), cidrs: vec![net("10.2.0.0/16")], vlans: vec![], mode: Mode::Protect },
        ],
        rules: ports
            .iter()
            .map(|&p| RuleSpec {
                name: format!("udp-{p}"),
                from: SegmentMatch::Segment(0),
                to: SegmentMatch::Segment(1),
                protocol: ProtocolMatch::Number(17),
                dst_ports: vec![PortRange { lo: p, hi: p }],
                src_ports: vec![],
                icmp_types: vec![],
                action: Action::Allow,
                log: false,
            })
            .collect(),
        default_action: Action::Deny,
        intra_segment_default: Action::Deny,
        unmatched: Unmatched::Drop,
        non_ip: NonIpSpec { allow_arp: true, allow_neighbor_discovery: true, allow_llc: false, allowed_ethertypes: vec![] },
    };
    Policy::compile(&spec, version).expect("compile")
}

#[test]
fn policy_flips_under_traffic_lose_nothing_both_versions_forward() {
    let bed = Bed::new(4096);
    let start = bed.pool.available();
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(SharedPolicy::new());
    shared.publish(Arc::new(ActivePolicy::new(udp_ports_policy(&[53, 54], 1), 1)));
    let (mut worker, counters) = bed.worker(shared.clone(), stop.clone());
    let (_lcore_guard, lcore) = worker_lcore();
    let running =
        Running { stop: stop.clone(), launched: Some(dpdk::lcore::launch(lcore, move || worker.run()).expect("launch")) };
    // Version A forwards 53 and 54, version B forwards 53 and 55; neither forwards 56.
    let flipper = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            for v in 2..=101u64 {
                let ports: &[u16] = if v % 2 == 0 { &[53, 55] } else { &[53, 54] };
                shared.publish(Arc::new(ActivePolicy::new(udp_ports_policy(ports, v), 1)));
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };
    let mut sent = [0u64; 4];
    let mut got = [0u64; 4];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut batch = 0u16;
    while !flipper.is_finished() || batch < 20 {
        assert!(Instant::now() < deadline, "traffic loop overran");
        let frames: Vec<Vec<u8>> = (0..64u16).map(|i| udp4([10, 1, 0, 1], [10, 2, 0, 1], batch.wrapping_mul(64).wrapping_add(i), 53 + (i % 4), 16)).collect();
        inject(&bed.west.b, &bed.pool, &frames);
        for i in 0..64 {
            sent[i % 4] += 1;
        }
        batch = batch.wrapping_add(1);
        std::thread::sleep(Duration::from_micros(200));
        for f in collect(&bed.east.b) {
            let dport = u16::from_be_bytes([f[36], f[37]]);
            got[usize::from(dport - 53)] += 1;
        }
    }
    flipper.join().unwrap();
    // Let the worker drain what is in flight, then stop it.
    let total: u64 = sent.iter().sum();
    let settled = Instant::now() + Duration::from_secs(5);
    while counters.ports[0].rx_packets.get() < total && Instant::now() < settled {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(running.stop(), 0);
    for f in collect(&bed.east.b) {
        got[usize::from(u16::from_be_bytes([f[36], f[37]]) - 53)] += 1;
    }
    assert_eq!(counters.ports[0].rx_packets.get(), total, "every injected packet was received");
    assert_eq!(got[0], sent[0], "port 53, forwarded by both versions: nothing lost");
    assert_eq!(got[3], 0, "port 56, forwarded by neither version: nothing through");
    assert!(got[1] <= sent[1] && got[2] <= sent[2]);
    assert!(got[1] > 0 && got[2] > 0, "both versions were in force at some point: {got:?} of {sent:?}");
    let denied = counters.drops[DropReason::PolicyDeny as usize].get();
    assert_eq!(got.iter().sum::<u64>() + denied, total, "each packet forwarded or denied by one of the versions");
    assert_eq!(counters.total_drops(), denied, "no other drop reason");
    assert_eq!(counters.policy_version.get(), 101, "the last version is in force");
    assert_eq!(bed.pool.available(), start);
}

#[test]
fn a_full_event_channel_is_counted_never_waited_for() {
    let bed = Bed::new(1024);
    let start = bed.pool.available();
    let (tx, rx) = crossbeam_channel::bounded(2);
    let (worker, counters) = bed.worker(shared(segmented_policy()), Arc::new(AtomicBool::new(false)));
    let mut worker = worker.with_events(tx);
    // Ten denied flows (web -> api on port 22), one at a time and slower than the
    // worker's event pace: ten events for a channel of two.
    for i in 0..10 {
        inject(&bed.west.b, &bed.pool, &[tcp4([10, 1, 0, 5], [10, 2, 0, 7], 3000 + i, 22)]);
        pump(&mut worker, &counters, u64::from(i) + 1);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(counters.drops[DropReason::PolicyDeny as usize].get(), 10, "every packet decided and dropped");
    assert_eq!((counters.events_sent.get(), counters.events_dropped.get()), (2, 8));
    let events: Vec<_> = rx.try_iter().collect();
    assert_eq!(events.len(), 2);
    // A burst of 10 denials in one round: what the channel (2 free) takes is sent, the
    // rest counted; nothing waits.
    let burst: Vec<_> = (0..10).map(|i| tcp4([10, 1, 0, 5], [10, 2, 0, 7], 4000 + i, 22)).collect();
    inject(&bed.west.b, &bed.pool, &burst);
    pump(&mut worker, &counters, 20);
    assert_eq!(counters.events_sent.get() + counters.events_dropped.get(), 20, "every event sent or counted");
    assert_eq!(rx.try_iter().count() as u64, counters.events_sent.get() - 2);
    assert!(counters.events_sent.get() <= 4);
    assert_eq!(events[0].decision.verdict, dataplane::policy::Verdict::Deny(DropReason::PolicyDeny));
    assert_eq!(bed.pool.available(), start);
}
