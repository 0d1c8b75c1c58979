//! Ring 2: hostile packets through the real dataplane. Every capture of tcpdump's own
//! test suite (`../shared/corpus/pcap/tcpdump-tests`, many deliberately malformed) is
//! replayed through DPDK's `net_pcap` driver, hot-plugged per file with
//! [`Port::attach_vdev`], into the real [`Worker`], which forwards what it allows onto a
//! ring cable that the test drains.
//!
//! Each run (one policy, with or without connection tracking) asserts for every file:
//! - no crash and no hang: each file is polled until its rx has been idle for
//!   [`IDLE_ROUNDS`] rounds, within [`FILE_DEADLINE`]; a watchdog aborts the whole
//!   process if a run exceeds [`RUN_DEADLINE`] (a loop stuck inside the worker);
//! - every record of the file was received (count and bytes, from the pcap file itself),
//!   and the driver agrees (no rx errors, no mbuf allocation failure);
//! - received = forwarded + the sum of drops by reason, exactly, from the worker's own
//!   counters; forwarded is also what came out of the far end of the cable;
//! - the mempool's free count is back to its start (no mbuf leaked, multi-segment
//!   frames of jumbo records included).
//!
//! Captures whose link type is not Ethernet are skipped, counted and printed. Run with
//! `-- --nocapture` to see the summary (files, packets, drops by reason).
//!
//! The EAL starts once for this test binary; the runs share it and take turns.

use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use dataplane::conntrack::{self, Conntrack};
use dataplane::counters::{ConntrackCounters, DropReason, WorkerCounters};
use dataplane::dpdk::{Eal, MbufBurst, Mempool, Port, PortSetup, VirtualCable};
use dataplane::policy::{
    Action, Mode, NonIpSpec, Policy, PolicySpec, PortRange, ProtocolMatch, RuleSpec, SegmentMatch, SegmentSpec, Unmatched,
};
use dataplane::worker::{ActivePolicy, Path, SharedPolicy, Worker};

/// The corpus, at the same place relative to the repository in CI.
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/pcap/tcpdump-tests");
/// Rounds without a packet after which a file counts as fully read.
const IDLE_ROUNDS: u32 = 16;
/// Longest one file may take before the test calls it a hang.
const FILE_DEADLINE: Duration = Duration::from_secs(20);
/// Longest one run (all files) may take before the watchdog aborts the process.
const RUN_DEADLINE: Duration = Duration::from_secs(300);
/// pcap link type of Ethernet (`LINKTYPE_ETHERNET`).
const LINKTYPE_ETHERNET: u32 = 1;

fn eal() -> MutexGuard<'static, Eal> {
    static EAL: OnceLock<Mutex<Eal>> = OnceLock::new();
    EAL.get_or_init(|| {
        let prefix = format!("bh-pcap-{}", std::process::id());
        let args = [
            "--no-huge",
            "--no-pci",
            "--no-shconf",
            "-m",
            "512",
            "--lcores",
            "0@0",
            "--log-level",
            "error",
            "--file-prefix",
            &prefix,
        ];
        Mutex::new(Eal::init(&args).expect("EAL init"))
    })
    // A failed run poisons the lock; the EAL itself is still usable by the next one.
    .lock()
    .unwrap_or_else(|e| e.into_inner())
}

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}{}", N.fetch_add(1, Ordering::Relaxed))
}

/// What the test itself reads from a capture file: its link type and its records.
struct Capture {
    linktype: u32,
    records: u64,
    bytes: u64,
    /// Records longer than one mbuf's data room: `net_pcap` chains several mbufs.
    jumbo: u64,
}

/// Reads the classic pcap header and walks the records (as libpcap does: a record cut
/// short by the end of the file ends the capture). `Err` says why the file is not one.
fn read_capture(path: &FsPath) -> Result<Capture, String> {
    let data = std::fs::read(path).map_err(|e| format!("unreadable: {e}"))?;
    if data.len() < 24 {
        return Err(format!("{} bytes, shorter than a pcap header", data.len()));
    }
    let magic = [data[0], data[1], data[2], data[3]];
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return Err(format!("not a classic pcap file (magic {:02x?}; pcapng is not walked here)", magic)),
    };
    let u32_at = |off: usize| {
        let b = [data[off], data[off + 1], data[off + 2], data[off + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let linktype = u32_at(20) & 0x0fff_ffff;
    // libpcap (sf-pcap.c) keeps at most the header's snapshot length of each record,
    // reading and discarding the rest; a snapshot of 0 or above i32::MAX means the
    // link type's maximum; a record longer than both ends the capture (an error).
    const MAX_SNAPLEN_ETHERNET: usize = 262_144;
    let snaplen = u32_at(16);
    let snapshot = if snaplen == 0 || snaplen > i32::MAX as u32 { MAX_SNAPLEN_ETHERNET } else { snaplen as usize };
    let (mut records, mut bytes, mut jumbo, mut off) = (0, 0, 0, 24);
    while off + 16 <= data.len() {
        let caplen = u32_at(off + 8) as usize;
        if (caplen > MAX_SNAPLEN_ETHERNET && caplen > snapshot) || off + 16 + caplen > data.len() {
            break;
        }
        let kept = caplen.min(snapshot);
        records += 1;
        bytes += kept as u64;
        jumbo += u64::from(kept > usize::from(Mempool::DEFAULT_DATA_ROOM) - 128);
        off += 16 + caplen;
    }
    Ok(Capture { linktype, records, bytes, jumbo })
}

/// web 192.168.0.0/16, db 10.0.0.0/8, mgmt 172.16.0.0/12 and fd00::/8, link-local
/// 169.254.0.0/16 and fe80::/10, outside 0.0.0.0/1 and 2000::/3; every other address is
/// in no segment (unknown_address). web may reach db on tcp 5432, anyone may reach
/// anyone on udp 53 and tcp 80; default deny, and within a segment deny too; ARP and
/// neighbour discovery pass, no other ethertype.
fn strict_policy() -> Policy {
    let net = |s: &str| s.parse().unwrap();
    let rule = |name: &str, from, to, proto: u8, port: u16| RuleSpec {
        name: name.into(),
        from,
        to,
        protocol: ProtocolMatch::Number(proto),
        dst_ports: vec![PortRange { lo: port, hi: port }],
        src_ports: vec![],
        icmp_types: vec![],
        action: Action::Allow,
        log: false,
    };
    let spec = PolicySpec {
        segments: vec![
            SegmentSpec { name: "web".into(), cidrs: vec![net("192.168.0.0/16")], vlans: vec![], mode: Mode::Protect },
            SegmentSpec { name: "db".into(), cidrs: vec![net("10.0.0.0/8")], vlans: vec![], mode: Mode::Protect },
            SegmentSpec { name: "mgmt".into(), cidrs: vec![net("172.16.0.0/12"), net("fd00::/8")], vlans: vec![], mode: Mode::Protect },
            SegmentSpec { name: "link".into(), cidrs: vec![net("169.254.0.0/16"), net("fe80::/10")], vlans: vec![], mode: Mode::Protect },
            SegmentSpec { name: "outside".into(), cidrs: vec![net("0.0.0.0/1"), net("2000::/3")], vlans: vec![], mode: Mode::Protect },
        ],
        rules: vec![
            rule("web-to-db", SegmentMatch::Segment(0), SegmentMatch::Segment(1), 6, 5432),
            rule("dns", SegmentMatch::Any, SegmentMatch::Any, 17, 53),
            rule("http", SegmentMatch::Any, SegmentMatch::Any, 6, 80),
        ],
        default_action: Action::Deny,
        intra_segment_default: Action::Deny,
        unmatched: Unmatched::Drop,
        non_ip: NonIpSpec { allow_arp: true, allow_neighbor_discovery: true, allow_llc: false, allowed_ethertypes: vec![] },
    };
    Policy::compile(&spec, 2).expect("compile strict policy")
}

/// One segment holding every address, everything allowed, every ethertype seen in the
/// corpus that the parser does not know as IP allowed too (LLC included).
fn allow_all_policy() -> Policy {
    let spec = PolicySpec {
        segments: vec![SegmentSpec {
            name: "all".into(),
            cidrs: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
            vlans: vec![],
            mode: Mode::Protect,
        }],
        rules: vec![],
        default_action: Action::Allow,
        intra_segment_default: Action::Allow,
        unmatched: Unmatched::Drop,
        non_ip: NonIpSpec {
            allow_arp: true,
            allow_neighbor_discovery: true,
            allow_llc: true,
            allowed_ethertypes: (0x0600..=0xffff).filter(|t| ![0x0800, 0x86dd, 0x8100, 0x88a8].contains(t)).collect(),
        },
    };
    Policy::compile(&spec, 1).expect("compile allow-all policy")
}

/// Totals of one run over the corpus.
#[derive(Default)]
struct Summary {
    files: usize,
    skipped: Vec<(String, String)>,
    packets: u64,
    bytes: u64,
    forwarded: u64,
    multi_segment: u64,
    drops: [u64; DropReason::COUNT],
    ct_inserts: u64,
    ct_hits: u64,
    ct_related: u64,
}

impl Summary {
    fn print(&self, name: &str, took: Duration) {
        println!(
            "pcap replay [{name}]: {} files ({} skipped), {} packets, {} bytes, {} forwarded ({} multi-segment), {} dropped, {:.1} s",
            self.files,
            self.skipped.len(),
            self.packets,
            self.bytes,
            self.forwarded,
            self.multi_segment,
            self.drops.iter().sum::<u64>(),
            took.as_secs_f64()
        );
        for (file, why) in &self.skipped {
            println!("  skipped {file}: {why}");
        }
        for reason in DropReason::ALL {
            let n = self.drops[*reason as usize];
            if n > 0 {
                println!("  drop {:<28} {n}", reason.name());
            }
        }
        if self.ct_inserts > 0 {
            println!("  conntrack: {} flows inserted, {} hits, {} related", self.ct_inserts, self.ct_hits, self.ct_related);
        }
    }
}

/// Aborts the process if not dropped within `limit`: a worker stuck in a loop cannot
/// be interrupted otherwise.
struct Watchdog(Option<mpsc::Sender<()>>);

impl Watchdog {
    fn new(what: String, limit: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("pcap replay: {what} still running after {limit:?}: hang, aborting");
                std::process::abort();
            }
        });
        Watchdog(Some(tx))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.take();
    }
}

/// Frees everything waiting at the far end of the cable; returns (packets, bytes).
fn drain(port: &Port) -> (u64, u64) {
    let mut rx = port.rx_queue(0).unwrap();
    let (mut packets, mut bytes) = (0, 0);
    loop {
        let mut burst = MbufBurst::new();
        let n = rx.rx_burst(&mut burst);
        if n == 0 {
            return (packets, bytes);
        }
        packets += n as u64;
        bytes += burst.iter().map(|m| u64::from(m.pkt_len())).sum::<u64>();
    }
}

fn corpus_files() -> Vec<PathBuf> {
    let dir = FsPath::new(CORPUS);
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| {
        panic!("pcap corpus {} is missing ({e}): it must sit next to the repository, at ../shared/corpus/pcap/tcpdump-tests", dir.display())
    });
    let mut files: Vec<PathBuf> =
        entries.map(|e| e.expect("read corpus dir").path()).filter(|p| p.extension().is_some_and(|x| x == "pcap")).collect();
    files.sort();
    assert!(!files.is_empty(), "pcap corpus {} holds no .pcap file", dir.display());
    files
}

/// Replays the whole corpus through one worker per file; `conntrack` says whether the
/// worker tracks connections (a fresh table per file).
fn replay_corpus(name: &str, policy: Policy, conntrack: bool) -> Summary {
    let _eal = eal();
    let started = Instant::now();
    let _watchdog = Watchdog::new(format!("run {name}"), RUN_DEADLINE);
    let pool = Mempool::new(&unique("pcap_pool"), 4095, 0, Mempool::DEFAULT_DATA_ROOM, -1).expect("mempool");
    let start_free = pool.available();
    let mut cable = VirtualCable::new(&unique("pcap_out"), 1024).expect("cable");
    let setup = PortSetup { rx_descriptors: 512, tx_descriptors: 512, ..PortSetup::default() };
    for end in [&mut cable.a, &mut cable.b] {
        end.configure(setup, &pool).expect("configure cable");
        end.start().expect("start cable");
    }
    let shared = Arc::new(SharedPolicy::new());
    shared.publish(Arc::new(ActivePolicy::new(policy, 1)));
    let ct_counters = Arc::new(ConntrackCounters::default());
    let mut sum = Summary::default();

    for file in corpus_files() {
        let label = file.file_name().unwrap().to_string_lossy().into_owned();
        let capture = match read_capture(&file) {
            Ok(c) if c.linktype == LINKTYPE_ETHERNET => c,
            Ok(c) => {
                sum.skipped.push((label, format!("link type {} is not Ethernet", c.linktype)));
                continue;
            }
            Err(why) => {
                sum.skipped.push((label, why));
                continue;
            }
        };
        sum.files += 1;

        let mut pcap = Port::attach_vdev(&format!("{},rx_pcap={}", unique("net_pcap_replay"), file.display()))
            .unwrap_or_else(|e| panic!("{label}: attach net_pcap: {e}"));
        pcap.configure(setup, &pool).unwrap_or_else(|e| panic!("{label}: configure: {e}"));
        pcap.start().unwrap_or_else(|e| panic!("{label}: start: {e}"));
        // Transmit through libpcap is a system call; through a ring it is not (the
        // worker batches light traffic only on the former).
        assert!(pcap.tx_queue(0).unwrap().syscall_per_burst(), "{label}: net_pcap tx is a system call");
        assert!(!cable.a.tx_queue(0).unwrap().syscall_per_burst(), "{label}: net_ring tx is not");

        let counters = Arc::new(WorkerCounters::new(2));
        let ct = conntrack.then(|| {
            let cfg = conntrack::Config { capacity: 4096, fragment_capacity: 256, seed: Some(7), ..Default::default() };
            Conntrack::new(cfg, ct_counters.clone())
        });
        let paths = vec![Path { rx: pcap.rx_queue(0).unwrap(), tx: cable.a.tx_queue(0).unwrap(), rx_port: 0, tx_port: 1 }];
        let mut worker = Worker::new(0, paths, shared.clone(), counters.clone(), Arc::new(AtomicBool::new(false)), ct);

        let deadline = Instant::now() + FILE_DEADLINE;
        let (mut out_packets, mut out_bytes, mut idle) = (0u64, 0u64, 0u32);
        while idle < IDLE_ROUNDS {
            assert!(Instant::now() < deadline, "{label}: still receiving after {FILE_DEADLINE:?} (hang?)");
            if worker.poll_once() == 0 {
                idle += 1;
            } else {
                idle = 0;
            }
            let (p, b) = drain(&cable.b);
            out_packets += p;
            out_bytes += b;
        }
        worker.flush_all();
        let (p, b) = drain(&cable.b);
        out_packets += p;
        out_bytes += b;
        drop(worker);

        let port = &counters.ports[0];
        let received = port.rx_packets.get();
        assert_eq!(received, capture.records, "{label}: packets received vs records in the file");
        assert_eq!(port.rx_bytes.get(), capture.bytes, "{label}: bytes received vs captured bytes in the file");
        let stats = pcap.stats().expect("pcap stats");
        assert_eq!(stats.rx_packets, received, "{label}: driver and worker disagree on rx");
        assert_eq!((stats.rx_errors, stats.rx_nombuf), (0, 0), "{label}: driver rx errors / mbuf shortage");

        let forwarded = counters.ports[1].tx_packets.get();
        let drops: u64 = (0..DropReason::COUNT).map(|r| counters.drops[r].get()).sum();
        assert_eq!(
            received,
            forwarded + drops,
            "{label}: received {received} != forwarded {forwarded} + dropped {drops} ({:?})",
            DropReason::ALL.iter().map(|r| (r.name(), counters.drops[*r as usize].get())).filter(|x| x.1 > 0).collect::<Vec<_>>()
        );
        assert_eq!((out_packets, out_bytes), (forwarded, counters.ports[1].tx_bytes.get()), "{label}: cable vs tx counters");
        assert_eq!(counters.drops[DropReason::TxFull as usize].get(), 0, "{label}: the cable is drained every round");

        drop(pcap);
        assert_eq!(pool.available(), start_free, "{label}: mbufs leaked");

        sum.packets += received;
        sum.bytes += capture.bytes;
        sum.forwarded += forwarded;
        sum.multi_segment += capture.jumbo;
        for r in 0..DropReason::COUNT {
            sum.drops[r] += counters.drops[r].get();
        }
    }
    sum.ct_inserts = ct_counters.inserts.get();
    sum.ct_hits = ct_counters.hits.get();
    sum.ct_related = ct_counters.related.get();
    drop(cable);
    assert_eq!(pool.available(), start_free, "mbufs leaked over the run");
    sum.print(name, started.elapsed());
    sum
}

#[test]
fn corpus_through_allow_all_policy_stateless() {
    let sum = replay_corpus("allow-all, stateless", allow_all_policy(), false);
    assert!(sum.packets > 0 && sum.forwarded > 0, "the corpus carried no traffic through");
    assert_eq!(sum.drops[DropReason::PolicyDeny as usize], 0, "allow-all denied something");
}

#[test]
fn corpus_through_strict_policy_with_conntrack() {
    let sum = replay_corpus("strict, conntrack", strict_policy(), true);
    assert!(sum.drops[DropReason::PolicyDeny as usize] > 0 && sum.drops[DropReason::UnknownAddress as usize] > 0);
    assert!(sum.ct_inserts > 0, "some flow was admitted and tracked");
}

#[test]
fn corpus_through_allow_all_policy_with_conntrack() {
    let sum = replay_corpus("allow-all, conntrack", allow_all_policy(), true);
    assert!(sum.ct_inserts > 0 && sum.ct_hits > 0);
}

#[test]
fn attach_vdev_refuses_a_missing_file_and_names_can_be_reused() {
    let _eal = eal();
    let err = Port::attach_vdev("net_pcap_missing0,rx_pcap=/nonexistent/bulkhead.pcap").unwrap_err();
    assert!(err.to_string().contains("net_pcap_missing0"), "{err}");
    let file = corpus_files().into_iter().next().unwrap();
    for _ in 0..3 {
        let port = Port::attach_vdev(&format!("net_pcap_again0,rx_pcap={}", file.display())).expect("attach");
        assert_eq!(port.name(), "net_pcap_again0");
    }
}

/// Mempool exhaustion: while every mbuf is taken, the device cannot receive (the driver
/// counts `rx_nombuf`, exported as `bulkhead_port_rx_nombuf_total`) and the worker just
/// polls on; once mbufs come back, the rest of the capture is received, every record is
/// accounted for (received, or counted by the driver), and no mbuf is leaked.
#[test]
fn an_exhausted_mempool_is_counted_and_recovers_without_a_leak() {
    let _eal = eal();
    let _watchdog = Watchdog::new("mempool exhaustion".into(), RUN_DEADLINE);
    let file = PathBuf::from(CORPUS).join("AoE_Linux.pcap");
    let capture = read_capture(&file).expect("capture");
    assert!(capture.records > 100, "a capture with enough packets");
    let pool = Mempool::new(&unique("exhaust_pool"), 1023, 0, Mempool::DEFAULT_DATA_ROOM, -1).expect("mempool");
    let start_free = pool.available();
    let setup = PortSetup { rx_descriptors: 64, tx_descriptors: 512, ..PortSetup::default() };
    let mut cable = VirtualCable::new(&unique("exhaust_out"), 2048).expect("cable");
    for end in [&mut cable.a, &mut cable.b] {
        end.configure(setup, &pool).expect("configure cable");
        end.start().expect("start cable");
    }
    let mut pcap = Port::attach_vdev(&format!("{},rx_pcap={}", unique("net_pcap_exhaust"), file.display())).expect("attach");
    pcap.configure(setup, &pool).expect("configure");
    pcap.start().expect("start");
    let shared = Arc::new(SharedPolicy::new());
    shared.publish(Arc::new(ActivePolicy::new(allow_all_policy(), 1)));
    let counters = Arc::new(WorkerCounters::new(2));
    let paths = vec![Path { rx: pcap.rx_queue(0).unwrap(), tx: cable.a.tx_queue(0).unwrap(), rx_port: 0, tx_port: 1 }];
    let mut worker = Worker::new(0, paths, shared, counters.clone(), Arc::new(AtomicBool::new(false)), None);

    // Take every mbuf: the device has nothing to receive into.
    let mut held = Vec::new();
    while let Some(m) = pool.alloc() {
        held.push(m);
    }
    for _ in 0..100 {
        worker.poll_once();
    }
    assert_eq!(counters.ports[0].rx_packets.get(), 0, "nothing received without mbufs");
    assert!(pcap.stats().unwrap().rx_nombuf > 0, "the driver counted the shortage");

    // Give them back: the capture is received in full.
    drop(held);
    let deadline = Instant::now() + FILE_DEADLINE;
    let mut idle = 0;
    let mut out = 0u64;
    while idle < IDLE_ROUNDS {
        assert!(Instant::now() < deadline, "still receiving (hang?)");
        idle = if worker.poll_once() == 0 { idle + 1 } else { 0 };
        out += drain(&cable.b).0;
    }
    worker.flush_all();
    out += drain(&cable.b).0;
    drop(worker);
    let received = counters.ports[0].rx_packets.get();
    // The pcap driver consumes a record even when it has no mbuf for it: those are the
    // ones it counted as rx_nombuf. Every record is either received or counted so.
    let nombuf = pcap.stats().unwrap().rx_nombuf;
    assert!(received > 0 && nombuf > 0);
    assert_eq!(received + nombuf, capture.records, "every record received or counted as rx_nombuf");
    let drops: u64 = (0..DropReason::COUNT).map(|r| counters.drops[r].get()).sum();
    assert_eq!(received, out + drops, "forwarded + dropped = received");
    drop(pcap);
    drop(cable);
    assert_eq!(pool.available(), start_free, "no mbuf leaked");
}
