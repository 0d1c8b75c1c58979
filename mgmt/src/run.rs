//! `bulkhead run`: bring up the EAL, ports and workers from the `appliance:` section,
//! enforce the policy, serve the management endpoints, and on SIGINT/SIGTERM stop
//! cleanly and print the final counters.
//!
//! Threads: worker 0 runs on the EAL main lcore (the thread that called `run`), the
//! other workers on the remaining EAL lcores. The management thread is an ordinary
//! thread pinned with `core_affinity` to `management_core`: it never touches a packet.
//! It reloads the policy (SIGHUP, the file changing, `bulkhead reload`), turns the
//! workers' [`FlowEvent`]s into aggregated, rate-limited security events for the sinks,
//! and folds the counters of replaced policies into running totals. The metrics server
//! and the control socket have a thread each and read the same [`Runtime`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{bounded, Receiver};
use dataplane::conntrack::{Conntrack, TcpMode};
use dataplane::counters::{ConntrackCounters, WorkerCounters};
use dataplane::dpdk::{self, Eal, Mempool, Port, PortSetup};
use dataplane::packet::L4;
use dataplane::policy::{Mode, Policy};
use dataplane::worker::{drain_strays, ActivePolicy, FlowEvent, Handoff, Path as WorkerPath, SharedPolicy, Worker};

use crate::config::{ApplianceConfig, Config, Device};
use crate::control::{stalled_workers, ControlServer, Handler, ReloadOutcome, Status};
use crate::events::{Aggregator, Event, EventSink, EventVerdict};
use crate::export::{http::MetricsServer, policy_digest, prometheus};
use crate::learn::{learned_policy, policy_yaml, Observation};
use crate::stats::{heartbeat_ages, ConntrackSnapshot, PolicyTotals, Snapshot};

/// Options of `bulkhead run` beyond the config file.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Stop by itself after this long (for demos and tests); `None`: until a signal.
    pub duration: Option<Duration>,
    /// Print the counters this often while running.
    pub stats_interval: Option<Duration>,
}

/// A number of seconds as `bulkhead run --duration` and `--stats-interval` take it: a
/// finite number, at least 0 and small enough for a [`Duration`] (`60`, `0.5`, `1e3`).
///
/// # Errors
///
/// A one-line reason for anything else (negative, `nan`, `inf`, `1e30`, not a number).
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let expected = "expected a number of seconds, 0 or more (e.g. 60 or 0.5)";
    let secs: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number: {expected}"))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}`: {expected}"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is too many seconds: {expected}, at most about 1.8e19"))
}

/// A start-up or run-time failure, as one line for the operator.
#[derive(Debug)]
pub struct RunError(pub String);

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(msg: impl Into<String>) -> RunError {
    RunError(msg.into())
}

/// Security events a worker may queue before it starts counting them as lost.
const EVENT_CHANNEL_CAPACITY: usize = 4096;
/// A replaced policy's counters are folded into the totals once no worker can still be
/// writing them: workers switch policies between rounds, far sooner than this.
const RETIRE_AFTER: Duration = Duration::from_secs(1);
/// The management thread's pace: events drained, timers checked.
const TICK: Duration = Duration::from_millis(20);
/// How often the management thread looks at the configuration file for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The DPDK port name of a configured device: the PCI address, or the virtual device's
/// driver instance name (`net_af_packet0` of `net_af_packet0,iface=veth1`).
pub fn port_name(device: &Device) -> &str {
    match device {
        Device::Pci(addr) => addr,
        Device::Vdev(s) => s.split(',').next().unwrap_or(s),
    }
}

/// The EAL arguments for `appliance`. `file_prefix` keeps runtime files of concurrent
/// instances apart.
pub fn eal_args(appliance: &ApplianceConfig, file_prefix: &str) -> Vec<String> {
    let lcores: Vec<String> = appliance.workers.iter().map(u32::to_string).collect();
    let mut args = vec!["-l".to_string(), lcores.join(","), "--main-lcore".to_string(), lcores[0].clone()];
    if !appliance.hugepages {
        // `--in-memory` is refused with `--no-huge`; `--no-shconf` gives the same
        // isolation from other DPDK processes.
        args.extend(["--no-huge".into(), "--no-shconf".into(), "-m".into(), appliance.effective_memory_mb().to_string()]);
    }
    if !appliance.ports.iter().any(|p| matches!(p.device, Device::Pci(_))) {
        // Only virtual devices: do not probe (or grab) the host's NICs.
        args.push("--no-pci".into());
    }
    args.extend([
        "--file-prefix".into(),
        file_prefix.to_string(),
        "--log-level".into(),
        "*:warning".into(),
        "--no-telemetry".into(),
    ]);
    for p in &appliance.ports {
        args.extend(p.device.eal_args());
    }
    args.extend(appliance.eal_args.iter().cloned());
    args
}

/// Checks that every configured core exists on this machine (and is ours to use).
fn check_cores(file: &str, appliance: &ApplianceConfig) -> Result<(), RunError> {
    let available: Vec<u32> =
        core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id as u32).collect();
    let listing = available.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    for (i, core) in appliance.workers.iter().enumerate() {
        if !available.contains(core) {
            return Err(err(format!(
                "{file}: appliance.workers[{i}]: core {core} is not available on this machine (available: {listing})"
            )));
        }
    }
    if let Some(core) = appliance.management_core {
        if !available.contains(&core) {
            return Err(err(format!(
                "{file}: appliance.management_core: core {core} is not available on this machine (available: {listing})"
            )));
        }
    }
    Ok(())
}

/// Runs the appliance described by `path` until a signal (or `options.duration`).
/// Returns the final counters.
pub fn run(path: &Path, options: &RunOptions) -> Result<Snapshot, RunError> {
    // Read once, with the size limit: the digest is of the bytes that were loaded.
    let bytes = Config::read_file(path).map_err(|e| err(e.to_string()))?;
    let config = Config::from_bytes(&path.display().to_string(), &bytes).map_err(|e| err(e.to_string()))?;
    let file = config.file.clone();
    let appliance = config.appliance.clone().ok_or_else(|| {
        err(format!("{file}: appliance: section missing; `bulkhead run` needs its ports, pairs and workers"))
    })?;
    let policy =
        Policy::compile(&config.policy, 1).map_err(|e| err(format!("{file}: policy does not compile: {e}")))?;
    check_cores(&file, &appliance)?;
    crate::preflight::check_kernel_mtus(&file, &appliance, Path::new("/sys/class/net")).map_err(RunError)?;

    let stop = Arc::new(AtomicBool::new(false));
    let hangup = Arc::new(AtomicBool::new(false));
    for (signal, flag) in [
        (signal_hook::consts::SIGINT, &stop),
        (signal_hook::consts::SIGTERM, &stop),
        (signal_hook::consts::SIGHUP, &hangup),
    ] {
        signal_hook::flag::register(signal, flag.clone())
            .map_err(|e| err(format!("cannot handle signal {signal}: {e}")))?;
    }

    let eal = Eal::init(&eal_args(&appliance, &format!("bulkhead-{}", std::process::id())))
        .map_err(|e| err(format!("DPDK EAL start failed: {e}")))?;
    let start = Start { path: path.to_path_buf(), file, appliance, policy, digest: policy_digest(&bytes), stop, hangup };
    let result = run_with_eal(&eal, start, options);
    drop(eal);
    result
}

/// What `run` hands to the part that needs the EAL.
struct Start {
    path: PathBuf,
    file: String,
    appliance: ApplianceConfig,
    policy: Policy,
    digest: String,
    stop: Arc<AtomicBool>,
    hangup: Arc<AtomicBool>,
}

fn run_with_eal(eal: &Eal, start: Start, options: &RunOptions) -> Result<Snapshot, RunError> {
    let Start { path, file, mut appliance, policy, digest, stop, hangup } = start;
    // As configured (a reload compares against it), before the queues trim the workers.
    let configured = appliance.clone();
    let socket = eal.lcore_socket(eal.main_lcore());
    let pool = Mempool::new(
        "bulkhead_mbufs",
        appliance.mempool.mbufs,
        appliance.mempool.cache,
        Mempool::DEFAULT_DATA_ROOM,
        socket,
    )
    .map_err(|e| {
        err(format!(
            "{file}: appliance.mempool: {} mbufs do not fit in {} MiB of EAL memory ({e}); raise appliance.memory_mb or lower appliance.mempool.mbufs",
            appliance.mempool.mbufs,
            appliance.effective_memory_mb()
        ))
    })?;

    // Ports in config order; every worker gets one rx and one tx queue on each.
    let mut ports = Vec::with_capacity(appliance.ports.len());
    for (i, pc) in appliance.ports.iter().enumerate() {
        let name = port_name(&pc.device);
        ports.push(Port::by_name(name).map_err(|e| {
            err(format!(
                "{file}: appliance.ports[{i}] ({}): device {} is not available: {e} (is the interface or PCI device there, and bound to DPDK?)",
                pc.name,
                pc.device.as_str()
            ))
        })?);
    }
    // A device with fewer queues than workers limits how many workers can run.
    for (i, port) in ports.iter().enumerate() {
        let (rx, tx) = port.max_queues().map_err(|e| err(e.to_string()))?;
        let fit = usize::from(rx.min(tx)).max(1);
        if fit < appliance.workers.len() {
            eprintln!(
                "bulkhead: port {} ({}) has {fit} queue(s): running {fit} of {} workers (give net_af_packet `qpairs={}`, or use a NIC with RSS)",
                appliance.ports[i].name,
                appliance.ports[i].device.as_str(),
                appliance.workers.len(),
                appliance.workers.len()
            );
            appliance.workers.truncate(fit);
        }
    }
    let workers = appliance.workers.len();
    for (i, port) in ports.iter_mut().enumerate() {
        let pc = &appliance.ports[i];
        let queues = u16::try_from(workers).map_err(|_| err("too many workers"))?;
        let setup = PortSetup {
            rx_queues: queues,
            tx_queues: queues,
            rx_descriptors: appliance.descriptors.rx,
            tx_descriptors: appliance.descriptors.tx,
            promiscuous: true,
        };
        port.configure(setup, &pool).map_err(|e| err(format!("{file}: appliance.ports[{i}] ({}): {e}", pc.name)))?;
    }

    // Fail closed: the policy is in place before the first port starts.
    let shared = Arc::new(SharedPolicy::new());
    shared.publish(Arc::new(ActivePolicy::new(policy, workers)));

    for (i, port) in ports.iter_mut().enumerate() {
        port.start().map_err(|e| err(format!("{file}: appliance.ports[{i}] ({}): {e}", appliance.ports[i].name)))?;
    }

    let started = Instant::now();
    let counters: Vec<Arc<WorkerCounters>> = (0..workers).map(|_| Arc::new(WorkerCounters::new(ports.len()))).collect();
    let ct_counters: Vec<Arc<ConntrackCounters>> =
        (0..workers).map(|_| Arc::new(ConntrackCounters::default())).collect();
    let (event_tx, event_rx) = bounded::<FlowEvent>(EVENT_CHANNEL_CAPACITY);
    // With several stateful workers, ICMP errors a worker cannot relate go round the
    // others (their flow may be on another worker).
    // (Loose mode judges such errors by the policy instead.)
    let (handoffs, stray_queues) = match appliance.conntrack {
        Some(ct) if workers > 1 && ct.tcp_mode == TcpMode::Strict => Handoff::ring(workers),
        _ => (Vec::new(), Vec::new()),
    };
    let mut handoffs = handoffs.into_iter();
    let mut worker_list = Vec::with_capacity(workers);
    for (w, wc) in counters.iter().enumerate() {
        let mut paths = Vec::new();
        for &[a, b] in &appliance.pairs {
            for (from, to) in [(a, b), (b, a)] {
                let q = w as u16;
                paths.push(WorkerPath {
                    rx: ports[from].rx_queue(q).map_err(|e| err(e.to_string()))?,
                    tx: ports[to].tx_queue(q).map_err(|e| err(e.to_string()))?,
                    rx_port: from,
                    tx_port: to,
                });
            }
        }
        let conntrack = appliance.conntrack.map(|cfg| Conntrack::new(cfg, ct_counters[w].clone()));
        let mut worker = Worker::new(w, paths, shared.clone(), wc.clone(), stop.clone(), conntrack).with_events(event_tx.clone());
        if let Some(h) = handoffs.next() {
            worker = worker.with_handoff(h);
        }
        worker_list.push(worker);
    }
    drop(event_tx);

    let runtime = Arc::new(Runtime {
        config_path: path,
        file: file.clone(),
        appliance: configured,
        started,
        port_names: appliance.ports.iter().map(|p| p.name.clone()).collect(),
        port_ids: ports.iter().map(Port::id).collect(),
        counters,
        ct_counters,
        shared,
        state: Mutex::new(PolicyState::new(1, digest)),
        event_stats: Mutex::new(EventStats::default()),
        observations: Mutex::new(Default::default()),
    });

    // Management endpoints: refuse to start rather than run without what was asked for.
    let metrics = match appliance.management.metrics {
        Some(addr) => {
            let rt = runtime.clone();
            Some(
                MetricsServer::start(addr, stop.clone(), move || prometheus::render(&rt.snapshot(), &rt.extra()))
                    .map_err(|e| err(format!("{file}: appliance.management.metrics: {e}")))?,
            )
        }
        None => None,
    };
    let control = match &appliance.management.control_socket {
        Some(socket) => Some(
            ControlServer::start(socket, Arc::new(RuntimeHandler(runtime.clone())), stop.clone())
                .map_err(|e| err(format!("{file}: appliance.management.control_socket: {e}")))?,
        ),
        None => None,
    };
    let mut sinks = Vec::new();
    for (i, cfg) in appliance.events.sinks.iter().enumerate() {
        sinks.push(
            EventSink::start(cfg.clone()).map_err(|e| err(format!("{file}: appliance.events.sinks[{i}]: {e}")))?,
        );
    }

    let mgmt = {
        let rt = runtime.clone();
        let stop = stop.clone();
        let options = options.clone();
        let core = appliance.management_core;
        let watch = appliance.management.watch;
        std::thread::Builder::new()
            .name("bulkhead-mgmt".into())
            .spawn(move || management_loop(core, watch, &rt, &stop, &hangup, &options, &event_rx, sinks))
            .map_err(|e| err(format!("cannot start the management thread: {e}")))?
    };

    let mut worker_list = worker_list.into_iter();
    let mut main_worker = worker_list.next().ok_or_else(|| err("no workers"))?;
    let mut launched = Vec::new();
    for (worker, &lcore) in worker_list.zip(appliance.workers.iter().skip(1)) {
        let mut worker = worker;
        match dpdk::lcore::launch(lcore, move || worker.run()) {
            Ok(l) => launched.push(l),
            Err(e) => {
                stop.store(true, Ordering::SeqCst);
                for l in launched {
                    let _ = l.wait();
                }
                let _ = mgmt.join();
                return Err(err(format!("cannot start worker on lcore {lcore}: {e}")));
            }
        }
    }
    eprintln!(
        "bulkhead: forwarding: {} ports in {} pairs, {} workers on lcores {:?}, policy version 1; stop with SIGINT or SIGTERM, reload with SIGHUP",
        ports.len(),
        appliance.pairs.len(),
        workers,
        appliance.workers
    );
    main_worker.run();
    for l in launched {
        let lcore = l.lcore();
        let code = l.wait();
        if code != 0 {
            log::error!("worker on lcore {lcore} ended with code {code}");
        }
    }
    // ICMP errors still on their way between workers: freed before the pool is checked.
    drain_strays(&stray_queues);
    let _ = mgmt.join();
    if let Some(m) = metrics {
        m.join();
    }
    if let Some(c) = control {
        c.join();
    }

    // Stop the ports before reading their final statistics.
    for port in ports.iter_mut() {
        if let Err(e) = port.stop() {
            log::warn!("{e}");
        }
    }
    let driver: Vec<_> = ports.iter().map(|p| p.stats().ok()).collect();
    let snapshot = runtime.snapshot_with_driver(&driver);
    // DPDK 22.11's net_af_xdp does not return the mbufs of its fill rings (and of its rx
    // rings) when its ports close. Up to that many mbufs still out are the driver's, not
    // lost packets: say so instead of warning. More than that is a leak, and the pool's
    // drop warns as for any other driver. Either way the pool is not freed (its mbufs
    // would dangle): the process exit returns the memory.
    let af_xdp_held: u32 = ports
        .iter()
        .filter(|p| p.driver_name().is_ok_and(|d| d == "net_af_xdp"))
        .map(|p| p.setup().map_or(0, |s| u32::from(s.rx_queues)) * AF_XDP_MBUFS_PER_RX_QUEUE)
        .sum();
    drop(ports);
    let held = pool.in_use();
    if held > 0 && held <= af_xdp_held {
        log::info!("{held} mbufs stay in net_af_xdp's fill and rx rings after close (DPDK 22.11); pool left to the process exit");
        pool.leak();
    } else {
        drop(pool);
    }
    Ok(snapshot)
}

/// The most mbufs DPDK 22.11's net_af_xdp can hold per rx queue after close: its fill
/// ring (2 x `XSK_RING_CONS__DEFAULT_NUM_DESCS` = 4,096 descriptors) and its rx ring
/// (2,048). Observed: 4,102 held by two single-queue ports.
const AF_XDP_MBUFS_PER_RX_QUEUE: u32 = 4096 + 2048;

/// What the management thread, the metrics server and the control socket share.
pub struct Runtime {
    config_path: PathBuf,
    file: String,
    appliance: ApplianceConfig,
    started: Instant,
    port_names: Vec<String>,
    port_ids: Vec<u16>,
    counters: Vec<Arc<WorkerCounters>>,
    ct_counters: Vec<Arc<ConntrackCounters>>,
    shared: Arc<SharedPolicy>,
    state: Mutex<PolicyState>,
    event_stats: Mutex<EventStats>,
    /// What discover-mode segments have seen (for `bulkhead learn`).
    observations: Mutex<std::collections::BTreeSet<Observation>>,
}

/// How many policy versions' digests are kept for the events still queued from them.
const RECENT_DIGESTS: usize = 16;

/// The policy's history, changed only by reloads (one at a time, under the lock).
#[derive(Default)]
struct PolicyState {
    version: u64,
    sha256: String,
    /// (version, SHA-256) of the latest policies, the one in force included: events a
    /// worker queued before a reload still name the digest of the policy that decided.
    recent: std::collections::VecDeque<(u64, String)>,
    reloads_ok: u64,
    reloads_error: u64,
    last_error: Option<String>,
    /// Counters of replaced policies, folded by name.
    retired: PolicyTotals,
    /// Replaced policies whose workers may still be finishing a round.
    retiring: Vec<(Arc<ActivePolicy>, Instant)>,
}

impl PolicyState {
    /// The state of the first policy.
    fn new(version: u64, sha256: String) -> PolicyState {
        let mut st = PolicyState::default();
        st.in_force(version, sha256);
        st
    }

    /// Records a policy put in force.
    fn in_force(&mut self, version: u64, sha256: String) {
        if self.recent.len() == RECENT_DIGESTS {
            self.recent.pop_front();
        }
        self.recent.push_back((version, sha256.clone()));
        self.version = version;
        self.sha256 = sha256;
    }

    /// The SHA-256 of policy `version`'s file; empty if it is older than the last
    /// [`RECENT_DIGESTS`] versions.
    fn sha256_of(&self, version: u64) -> String {
        self.recent.iter().rev().find(|(v, _)| *v == version).map(|(_, h)| h.clone()).unwrap_or_default()
    }
}

#[derive(Default)]
struct EventStats {
    aggregator: Option<crate::events::AggregatorStats>,
    sinks: Vec<(String, crate::events::SinkStats)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the management plane down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Runtime {
    fn snapshot(&self) -> Snapshot {
        self.snapshot_with_driver(&self.port_ids.iter().map(|&id| Port::stats_of(id).ok()).collect::<Vec<_>>())
    }

    fn snapshot_with_driver(&self, driver: &[Option<dpdk::PortStats>]) -> Snapshot {
        let refs: Vec<&WorkerCounters> = self.counters.iter().map(Arc::as_ref).collect();
        let active = self.shared.current();
        let totals = {
            let st = lock(&self.state);
            let mut totals = st.retired.clone();
            for (old, _) in &st.retiring {
                totals.add(old);
            }
            totals
        };
        let mut s = Snapshot::take(&self.port_names, driver, &refs, active.as_deref(), &totals);
        s.uptime_secs = self.started.elapsed().as_secs_f64();
        s.tsc_hz = dpdk::tsc_hz();
        if self.appliance.conntrack.is_some() {
            s.conntrack = Some(ConntrackSnapshot::sum(&self.ct_counters.iter().map(Arc::as_ref).collect::<Vec<_>>()));
        }
        s
    }

    fn heartbeat_ages(&self) -> Vec<f64> {
        let refs: Vec<&WorkerCounters> = self.counters.iter().map(Arc::as_ref).collect();
        heartbeat_ages(&refs, dpdk::tsc(), dpdk::tsc_hz())
    }

    fn extra(&self) -> prometheus::Extra {
        let st = lock(&self.state);
        let ev = lock(&self.event_stats);
        prometheus::Extra {
            policy_sha256: Some(st.sha256.clone()),
            reloads_ok: st.reloads_ok,
            reloads_error: st.reloads_error,
            worker_heartbeat_age_secs: self.heartbeat_ages(),
            events: ev.aggregator,
            sinks: ev.sinks.clone(),
        }
    }

    fn status(&self) -> Status {
        let st = lock(&self.state);
        let ages = self.heartbeat_ages();
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            config_file: self.file.clone(),
            policy_version: st.version,
            policy_sha256: Some(st.sha256.clone()),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            workers: self.counters.len(),
            ports: self.port_names.clone(),
            reloads_ok: st.reloads_ok,
            reloads_error: st.reloads_error,
            last_reload_error: st.last_error.clone(),
            stalled_workers: stalled_workers(&ages),
            worker_heartbeat_age_secs: ages,
            links: self
                .port_names
                .iter()
                .zip(&self.port_ids)
                .map(|(name, &id)| {
                    let link = Port::link_of(id).ok();
                    (name.clone(), link.is_some_and(|l| l.up), link.map_or(0, |l| l.speed_mbps))
                })
                .collect(),
        }
    }

    /// Reloads the policy from the configuration file: parse, validate and compile off
    /// the packet path, then publish; workers switch at their next round. A file that
    /// does not load or compile is refused whole and the running policy stays.
    pub fn reload(&self, trigger: &str) -> Result<ReloadOutcome, String> {
        let mut st = lock(&self.state);
        let result = self.load_new_policy(st.version + 1);
        match result {
            Ok((policy, sha256, message)) => {
                let version = policy.version();
                let old = self.shared.current();
                self.shared.publish(Arc::new(ActivePolicy::new(policy, self.counters.len())));
                if let Some(old) = old {
                    st.retiring.push((old, Instant::now()));
                }
                st.in_force(version, sha256.clone());
                st.reloads_ok += 1;
                log::info!("reload ({trigger}): policy version {version} in force, sha256 {sha256}{message}");
                Ok(ReloadOutcome { policy_version: version, policy_sha256: sha256, message })
            }
            Err(e) => {
                st.reloads_error += 1;
                st.last_error = Some(e.clone());
                log::error!("reload ({trigger}) refused: {e}; policy version {} stays in force", st.version);
                Err(e)
            }
        }
    }

    fn load_new_policy(&self, version: u64) -> Result<(Policy, String, String), String> {
        load_policy(&self.config_path, &self.file, version, &self.appliance)
    }

    /// Folds the counters of policies replaced long enough ago into the totals.
    fn retire_old_policies(&self) {
        let mut st = lock(&self.state);
        let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut st.retiring).into_iter().partition(|(_, t)| t.elapsed() >= RETIRE_AFTER);
        st.retiring = keep;
        for (old, _) in done {
            st.retired.add(&old);
        }
    }

    /// Takes one report of a worker: a discover-mode observation is recorded for
    /// `learn`; a security event (denial, `log: true`, monitor violation) goes to the
    /// aggregator.
    fn take_report(&self, ev: &FlowEvent, aggregator: &mut Aggregator) {
        let d = &ev.decision;
        if d.mode == Mode::Discover {
            if let Some(active) = self.shared.current().filter(|a| a.version() == ev.policy_version) {
                if let Some(o) = Observation::of(active.policy(), &ev.meta, d) {
                    lock(&self.observations).insert(o);
                }
            }
        }
        let violation = d.overridden && d.mode == Mode::Monitor;
        if d.log || violation || !d.verdict.is_allow() {
            let mut event = self.event(ev);
            if violation {
                event.reason = "monitor_violation".into();
            }
            aggregator.record(event);
        }
    }

    /// The policy learned from discover-mode observations, as YAML.
    fn learned(&self) -> Result<String, String> {
        let active = self.shared.current().ok_or("no policy is loaded")?;
        let observed = lock(&self.observations).clone();
        let spec = learned_policy(active.policy().spec(), &observed);
        Ok(format!(
            "# Learned by bulkhead from {} observations in discover-mode segments ({}).\n# Review, `bulkhead check`, then switch the segments to `mode: protect`.\n{}",
            observed.len(),
            self.file,
            policy_yaml(&spec)
        ))
    }

    /// The security event for a worker's observation, named with the policy that decided.
    fn event(&self, ev: &FlowEvent) -> Event {
        let st = lock(&self.state);
        let policy = self
            .shared
            .current()
            .filter(|a| a.version() == ev.policy_version)
            .or_else(|| st.retiring.iter().map(|(a, _)| a.clone()).find(|a| a.version() == ev.policy_version));
        flow_event(ev, policy.as_ref().map(|a| a.policy()), st.sha256_of(ev.policy_version), SystemTime::now())
    }
}

/// Loads the configuration file for a reload, with the limits of [`Config::load`], and
/// compiles its policy as `version`: the policy, the SHA-256 of the bytes read, and a
/// note when the `appliance:` section differs from the running `appliance`.
fn load_policy(path: &Path, file: &str, version: u64, appliance: &ApplianceConfig) -> Result<(Policy, String, String), String> {
    let bytes = Config::read_file(path).map_err(|e| e.to_string())?;
    let config = Config::from_bytes(file, &bytes).map_err(|e| e.to_string())?;
    let policy = Policy::compile(&config.policy, version).map_err(|e| format!("{file}: policy does not compile: {e}"))?;
    let message = match config.appliance {
        Some(a) if a == *appliance => String::new(),
        _ => "; the appliance section changed: restart bulkhead to apply it".to_string(),
    };
    Ok((policy, policy_digest(&bytes), message))
}

/// The security event of one worker report, before aggregation: `policy` is the policy
/// that decided (its segment and rule names; `?` when it is gone), `sha256` its file's
/// digest, `now` the time of the observation.
fn flow_event(ev: &FlowEvent, policy: Option<&Policy>, sha256: String, now: SystemTime) -> Event {
    let (src, dst) = ev.meta.addrs.unwrap_or((std::net::Ipv4Addr::UNSPECIFIED.into(), std::net::Ipv4Addr::UNSPECIFIED.into()));
    let (src_port, dst_port, icmp_type, icmp_code) = match ev.meta.l4 {
        L4::Ports { src, dst } => (src, dst, None, None),
        L4::Icmp { ty, code, .. } => (0, 0, Some(ty), Some(code)),
        L4::None => (0, 0, None, None),
    };
    let names = |policy: &Policy| {
        let seg = |id: Option<u16>| id.and_then(|i| policy.segment_name(i)).unwrap_or("-").to_string();
        (seg(ev.decision.src_segment), seg(ev.decision.dst_segment), ev.decision.rule().and_then(|r| policy.rule_name(r)).map(str::to_string))
    };
    let (src_segment, dst_segment, rule) = policy.map_or(("?".into(), "?".into(), None), names);
    let (verdict, reason) = EventVerdict::from_verdict(ev.decision.verdict);
    Event {
        time: now,
        policy_version: ev.policy_version,
        policy_sha256: sha256,
        src_segment,
        dst_segment,
        src_ip: src,
        dst_ip: dst,
        src_port,
        dst_port,
        icmp_type,
        icmp_code,
        protocol: ev.meta.proto,
        // The tag the segments were chosen by: the inner one of a QinQ frame.
        vlan: ev.meta.vlan(),
        rule,
        verdict,
        reason: reason.to_string(),
        packets: 1,
        bytes: u64::from(ev.len),
        first_seen: now,
        last_seen: now,
    }
}

/// The control socket's view of the runtime.
struct RuntimeHandler(Arc<Runtime>);

impl Handler for RuntimeHandler {
    fn status(&self) -> Status {
        self.0.status()
    }

    fn stats(&self) -> Snapshot {
        self.0.snapshot()
    }

    fn reload(&self) -> Result<ReloadOutcome, String> {
        self.0.reload("control socket")
    }

    fn learn(&self) -> Result<String, String> {
        self.0.learned()
    }
}

#[allow(clippy::too_many_arguments)]
fn management_loop(
    core: Option<u32>,
    watch: bool,
    rt: &Runtime,
    stop: &AtomicBool,
    hangup: &AtomicBool,
    options: &RunOptions,
    events: &Receiver<FlowEvent>,
    sinks: Vec<EventSink>,
) {
    if let Some(core) = core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core as usize }) {
            log::warn!("could not pin the management thread to core {core}");
        }
    }
    let mut aggregator = Aggregator::new(rt.appliance.events.aggregator, Instant::now());
    let modified = || std::fs::metadata(&rt.config_path).and_then(|m| m.modified()).ok();
    let mut last_modified = modified();
    let mut last_watch = Instant::now();
    let mut last_stats = Instant::now();
    let emit = |batch: Vec<Event>| {
        for e in batch {
            for s in &sinks {
                s.submit(e.clone());
            }
        }
    };
    while !stop.load(Ordering::Relaxed) {
        // Poll, never block in the channel: a receiver waiting in `recv` makes every
        // worker `try_send` wake it with a system call, on the packet path.
        std::thread::sleep(TICK);
        for ev in events.try_iter().take(EVENT_CHANNEL_CAPACITY) {
            rt.take_report(&ev, &mut aggregator);
        }
        emit(aggregator.poll(Instant::now()));
        {
            let mut ev = lock(&rt.event_stats);
            ev.aggregator = Some(aggregator.stats());
            ev.sinks = sinks.iter().enumerate().map(|(i, s)| (format!("sink{i}"), s.stats())).collect();
        }
        if options.duration.is_some_and(|d| rt.started.elapsed() >= d) {
            stop.store(true, Ordering::SeqCst);
        }
        if hangup.swap(false, Ordering::SeqCst) {
            let _ = rt.reload("SIGHUP");
            last_modified = modified();
        }
        if watch && last_watch.elapsed() >= WATCH_INTERVAL {
            last_watch = Instant::now();
            let now = modified();
            if now != last_modified {
                last_modified = now;
                let _ = rt.reload("file changed");
            }
        }
        rt.retire_old_policies();
        if let Some(every) = options.stats_interval {
            if last_stats.elapsed() >= every {
                last_stats = Instant::now();
                eprint!("{}", rt.snapshot().report());
            }
        }
    }
    for ev in events.try_iter() {
        rt.take_report(&ev, &mut aggregator);
    }
    emit(aggregator.flush(Instant::now()));
    for s in sinks {
        s.close();
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use dataplane::packet::{Fragment, PacketMeta, ETHERTYPE_IPV4};

    use super::*;

    /// Segments `a` and `b` on VLAN 10, `c` and `d` (same prefixes) on VLAN 20.
    fn policy() -> Policy {
        let cfg = Config::from_yaml_str(
            "p.yaml",
            "segments:\n  - {name: a, cidrs: [10.1.0.0/24], vlans: [10]}\n  - {name: b, cidrs: [10.2.0.0/24], vlans: [10]}\n\
             \x20 - {name: c, cidrs: [10.1.0.0/24], vlans: [20]}\n  - {name: d, cidrs: [10.2.0.0/24], vlans: [20]}\n\
             rules:\n  - {name: icmp-in, from: any, to: any, protocol: icmp, action: deny, log: true}\n",
        )
        .expect("loads");
        Policy::compile(&cfg.policy, 7).expect("compiles")
    }

    fn report(policy: &Policy, outer_vlan: Option<u16>, inner_vlan: Option<u16>, l4: L4, proto: u8) -> FlowEvent {
        let ip = |s: &str| s.parse::<IpAddr>().expect("address");
        let meta = PacketMeta {
            outer_vlan,
            inner_vlan,
            ethertype: ETHERTYPE_IPV4,
            addrs: Some((ip("10.1.0.5"), ip("10.2.0.7"))),
            proto,
            l4,
            tcp_flags: 0,
            fragment: Fragment::None,
        };
        FlowEvent { policy_version: 7, meta, decision: policy.classify(&meta), len: 60 }
    }

    #[test]
    fn seconds_are_checked_not_panicked_on() {
        assert_eq!(parse_seconds("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        for bad in ["-1", "-0.001", "nan", "NaN", "inf", "-inf", "1e30", "", "ten", "1s"] {
            let e = parse_seconds(bad).expect_err(bad);
            assert!(e.contains("expected a number of seconds") && !e.contains('\n'), "{bad}: {e}");
        }
    }

    /// A QinQ frame's segments are chosen by its inner tag, and its event says so.
    #[test]
    fn events_carry_the_vlan_segments_were_chosen_by() {
        let p = policy();
        let udp = L4::Ports { src: 1000, dst: 53 };
        let e = flow_event(&report(&p, Some(100), Some(20), udp, 17), Some(&p), "h".into(), SystemTime::now());
        assert_eq!((e.vlan, e.src_segment.as_str(), e.dst_segment.as_str()), (Some(20), "c", "d"));
        let e = flow_event(&report(&p, Some(10), None, udp, 17), Some(&p), "h".into(), SystemTime::now());
        assert_eq!((e.vlan, e.src_segment.as_str(), e.dst_segment.as_str()), (Some(10), "a", "b"));
    }

    const APPLIANCE: &str = "appliance:\n  ports:\n    - {name: west, device: net_null0}\n    - {name: east, device: net_null1}\n\
                             \x20 pairs: [[west, east]]\n  workers: [1]\n";

    /// A runtime without ports or workers: enough for its policy history and events.
    fn runtime(path: &Path) -> Runtime {
        let cfg = Config::from_yaml_str("r.yaml", &format!("{APPLIANCE}segments: []\n")).expect("loads");
        Runtime {
            config_path: path.to_path_buf(),
            file: path.display().to_string(),
            appliance: cfg.appliance.expect("appliance"),
            started: Instant::now(),
            port_names: Vec::new(),
            port_ids: Vec::new(),
            counters: Vec::new(),
            ct_counters: Vec::new(),
            shared: Arc::new(SharedPolicy::new()),
            state: Mutex::new(PolicyState::new(1, "h1".into())),
            event_stats: Mutex::new(EventStats::default()),
            observations: Mutex::new(Default::default()),
        }
    }

    /// An event queued by a worker before a reload carries the digest of the policy
    /// that decided it, not an empty one; only versions long gone have none.
    #[test]
    fn queued_events_keep_their_policy_digest_after_reloads() {
        let rt = runtime(Path::new("/nonexistent.yaml"));
        let p = policy();
        let udp = L4::Ports { src: 1000, dst: 53 };
        let mut ev = report(&p, Some(10), None, udp, 17);
        for v in 2..=20 {
            lock(&rt.state).in_force(v, format!("h{v}"));
        }
        for (version, sha) in [(20, "h20"), (19, "h19"), (5, "h5"), (4, ""), (1, "")] {
            ev.policy_version = version;
            assert_eq!(rt.event(&ev).policy_sha256, sha, "version {version}");
        }
    }

    /// A reload reads the file with the loader's size limit, and digests what it read.
    #[test]
    fn a_reload_reads_with_the_size_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.yaml");
        let text = format!("{APPLIANCE}segments:\n  - {{name: web, cidrs: [10.1.0.0/24]}}\n");
        std::fs::write(&path, &text).expect("write");
        let rt = runtime(&path);
        let (policy, sha, message) = rt.load_new_policy(2).expect("loads");
        assert_eq!((policy.version(), sha, message), (2, policy_digest(text.as_bytes()), String::new()));
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(crate::config::MAX_FILE_BYTES + 1))
            .expect("grow the file (sparse)");
        let e = rt.load_new_policy(3).expect_err("over the limit");
        assert_eq!(e, format!("{}: file is 257 MiB, larger than the 256 MiB limit", path.display()));
    }

    /// ICMP has no ports: its type and code are fields of their own, the ports 0.
    #[test]
    fn icmp_type_and_code_are_not_ports() {
        let p = policy();
        let echo = L4::Icmp { ty: 8, code: 0, id: 7 };
        let e = flow_event(&report(&p, Some(10), None, echo, 1), Some(&p), "h".into(), SystemTime::now());
        assert_eq!((e.src_port, e.dst_port, e.icmp_type, e.icmp_code), (0, 0, Some(8), Some(0)));
        assert_eq!(e.rule.as_deref(), Some("icmp-in"));
        let udp = L4::Ports { src: 1000, dst: 53 };
        let e = flow_event(&report(&p, Some(10), None, udp, 17), Some(&p), "h".into(), SystemTime::now());
        assert_eq!((e.src_port, e.dst_port, e.icmp_type, e.icmp_code), (1000, 53, None, None));
    }
}
