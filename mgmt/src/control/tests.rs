use std::sync::Mutex;
use std::time::Instant;

use dataplane::counters::DropReason;

use super::*;
use crate::stats::{PairSnapshot, PortSnapshot, WorkerSnapshot};

struct Mock {
    reloads: Mutex<u64>,
}

impl Handler for Mock {
    fn status(&self) -> Status {
        Status {
            version: "0.1.0".into(),
            pid: 7,
            config_file: "/etc/bulkhead/bulkhead.yaml".into(),
            policy_version: 3,
            policy_sha256: Some("cd".repeat(32)),
            uptime_secs: 12.5,
            workers: 2,
            ports: vec!["west".into(), "east".into()],
            reloads_ok: 2,
            reloads_error: 1,
            last_reload_error: Some("rules[0].to: unknown segment `apii`".into()),
            worker_heartbeat_age_secs: vec![0.001],
            stalled_workers: vec![],
            links: vec![("west".into(), true, 10_000)],
        }
    }

    fn stats(&self) -> Snapshot {
        Snapshot {
            uptime_secs: 1.5,
            policy_version: 3,
            ports: vec![PortSnapshot {
                name: "west".into(),
                rx_packets: 10,
                driver: Some(dataplane::dpdk::PortStats { rx_missed: 4, ..Default::default() }),
                ..Default::default()
            }],
            drops: DropReason::ALL.iter().map(|&r| (r, u64::from(r == DropReason::PolicyDeny) * 5)).collect(),
            pairs: vec![PairSnapshot { src: "web".into(), dst: "api".into(), allowed_packets: 9, ..Default::default() }],
            workers: vec![WorkerSnapshot { polls: 100, busy_polls: 25, busy_cycles: 2500, rx_packets: 50, handed_off: 0 }],
            ..Default::default()
        }
    }

    fn reload(&self) -> Result<ReloadOutcome, String> {
        let mut n = self.reloads.lock().map_err(|_| "poisoned".to_string())?;
        *n += 1;
        if *n == 1 {
            Ok(ReloadOutcome { policy_version: 4, policy_sha256: "ef".repeat(32), message: String::new() })
        } else {
            Err("policy.yaml: rules[2].from: unknown segment `wbe`".into())
        }
    }

    fn learn(&self) -> Result<String, String> {
        Ok("segments: []\n".into())
    }
}

struct Running {
    _dir: tempfile::TempDir,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    server: Option<ControlServer>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(s) = self.server.take() {
            s.join();
        }
    }
}

fn start() -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("run").join("bulkhead.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let server = ControlServer::start(&path, Arc::new(Mock { reloads: Mutex::new(0) }), stop.clone()).expect("start");
    Running { _dir: dir, path, stop, server: Some(server) }
}

fn raw(path: &Path, line: &[u8]) -> serde_json::Value {
    let s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    (&s).write_all(line).expect("write");
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).expect("read");
    serde_json::from_str(&answer).expect("answer is JSON")
}

#[test]
fn socket_is_private() {
    let r = start();
    let mode = std::fs::metadata(&r.path).expect("socket").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(r.path.parent().expect("dir")).expect("dir").permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700, "a directory it creates is private");
}

#[test]
fn status_stats_reload_round_trip() {
    let r = start();
    let status = client_status(&r.path).expect("status");
    assert_eq!(status.policy_version, 3);
    assert_eq!(status.ports, ["west", "east"]);

    let stats = client_stats(&r.path).expect("stats");
    assert_eq!(stats, Mock { reloads: Mutex::new(0) }.stats(), "a Snapshot survives JSON");
    let v = raw(&r.path, b"{\"cmd\":\"stats\"}\n");
    assert_eq!(v["ok"], true);
    assert_eq!(v["result"]["drops"]["policy_deny"], 5, "drops keyed by reason name");
    assert_eq!(v["result"]["ports"][0]["driver"]["rx_missed"], 4);

    let mut out = Vec::new();
    let mut err = Vec::new();
    assert_eq!(reload_command(&r.path, &mut out, &mut err), 0);
    assert!(String::from_utf8_lossy(&out).starts_with("policy version 4 in force"));
    out.clear();
    assert_eq!(reload_command(&r.path, &mut out, &mut err), 1, "a refused reload");
    let err_text = String::from_utf8_lossy(&err);
    assert!(err_text.contains("reload refused, the running policy is kept: policy.yaml: rules[2].from"), "{err_text}");

    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(stats_command(&r.path, false, &mut out, &mut err), 0);
    let table = String::from_utf8_lossy(&out);
    assert!(table.contains("policy_deny") && table.contains("west"), "{table}");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(stats_command(&r.path, true, &mut out, &mut err), 0);
    let back: Snapshot = serde_json::from_slice(&out).expect("--json is a Snapshot");
    assert_eq!(back.policy_version, 3);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(status_command(&r.path, &mut out, &mut err), 0);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("policy: version 3, sha256 cdcd") && text.contains("1 refused (latest refusal: rules[0].to"), "{text}");
}

#[test]
fn malformed_requests_get_json_errors() {
    let r = start();
    for bad in [&b"hello\n"[..], b"{\"cmd\":\"shutdown\"}\n", b"{}\n", b"\xff\xfe\n"] {
        let v = raw(&r.path, bad);
        assert_eq!(v["ok"], false, "{v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let v = raw(&r.path, b"{\"cmd\":\"shutdown\"}\n");
    assert!(v["error"].as_str().unwrap_or("").contains("expected one JSON object per line"), "{v}");
    // Without the newline, at EOF, a request still counts.
    let s = UnixStream::connect(&r.path).expect("connect");
    (&s).write_all(b"{\"cmd\":\"status\"}").expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).expect("read");
    assert!(answer.starts_with("{\"ok\":true"), "{answer}");
}

#[test]
fn a_silent_peer_does_not_block_the_server() {
    let r = start();
    let t = Instant::now();
    let silent = UnixStream::connect(&r.path).expect("connect");
    std::thread::sleep(Duration::from_millis(100));
    let status = client_status(&r.path).expect("served after the silent peer timed out");
    assert_eq!(status.pid, 7);
    assert!(t.elapsed() < IO_TIMEOUT + Duration::from_secs(1), "{:?}", t.elapsed());
    // The silent peer was told why it was dropped.
    silent.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
    let mut answer = String::new();
    BufReader::new(&silent).read_line(&mut answer).expect("read");
    assert!(answer.contains("timed out waiting for a request line"), "{answer}");
}

#[test]
fn stale_sockets_are_replaced_and_live_ones_refused() {
    let r = start();
    let stop = Arc::new(AtomicBool::new(false));
    let e = ControlServer::start(&r.path, Arc::new(Mock { reloads: Mutex::new(0) }), stop.clone()).expect_err("in use");
    assert!(e.to_string().contains("another bulkhead is answering on it"), "{e}");

    let dir = tempfile::tempdir().expect("tempdir");
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).expect("bind"));
    assert!(stale.exists(), "a socket file outlives its listener");
    let s = ControlServer::start(&stale, Arc::new(Mock { reloads: Mutex::new(0) }), stop.clone()).expect("replaces a stale socket");
    assert!(client_status(&stale).is_ok());
    stop.store(true, Ordering::SeqCst);
    s.join();
    assert!(!stale.exists(), "removed on stop");

    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").expect("write");
    let e = ControlServer::start(&file, Arc::new(Mock { reloads: Mutex::new(0) }), Arc::new(AtomicBool::new(false)))
        .expect_err("not a socket");
    assert!(e.to_string().contains("exists and is not a socket"), "{e}");

    let missing = dir.path().join("nobody.sock");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(status_command(&missing, &mut out, &mut err), 2);
    assert!(String::from_utf8_lossy(&err).contains("cannot reach bulkhead at"), "{}", String::from_utf8_lossy(&err));
}

#[test]
fn default_path_is_under_a_runtime_dir() {
    let p = default_socket_path();
    assert!(p.ends_with("bulkhead.sock"), "{}", p.display());
}

/// A worker whose heartbeat stopped: its age grows, `status` names it and the metrics
/// carry the age.
#[test]
fn a_stalled_worker_shows_in_status_and_metrics() {
    use dataplane::counters::WorkerCounters;
    let hz = 1_000_000_000u64;
    let (alive, stalled) = (WorkerCounters::new(1), WorkerCounters::new(1));
    alive.heartbeat_tsc.set(10 * hz - hz / 1000);
    stalled.heartbeat_tsc.set(7 * hz);
    let ages = crate::stats::heartbeat_ages(&[&alive, &stalled], 10 * hz, hz);
    assert_eq!(stalled_workers(&ages), vec![1]);

    let status = Status { workers: 2, stalled_workers: stalled_workers(&ages), worker_heartbeat_age_secs: ages.clone(), ..Default::default() };
    let dir = tempfile::tempdir().unwrap();
    struct One(Status);
    impl Handler for One {
        fn status(&self) -> Status {
            self.0.clone()
        }
        fn stats(&self) -> crate::stats::Snapshot {
            Default::default()
        }
        fn reload(&self) -> Result<ReloadOutcome, String> {
            Err("no".into())
        }
        fn learn(&self) -> Result<String, String> {
            Err("no".into())
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let path = dir.path().join("s.sock");
    let server = ControlServer::start(&path, Arc::new(One(status)), stop.clone()).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(status_command(&path, &mut out, &mut err), 0);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("workers: 2 (1 alive)") && text.contains("worker 1: STALLED (no poll round for 3.0 s)"), "{text}");
    stop.store(true, Ordering::SeqCst);
    server.join();

    let extra = crate::export::prometheus::Extra { worker_heartbeat_age_secs: ages, ..Default::default() };
    let metrics = crate::export::prometheus::render(&crate::stats::Snapshot::default(), &extra);
    assert!(metrics.contains("bulkhead_worker_heartbeat_age_seconds{worker=\"1\"} 3"), "{metrics}");
}
