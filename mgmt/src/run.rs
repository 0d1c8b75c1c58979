//! `bulkhead run`: bring up the EAL, ports and workers from the `appliance:` section,
//! enforce the policy, and on SIGINT/SIGTERM stop cleanly and print the final counters.
//!
//! Threads: worker 0 runs on the EAL main lcore (the thread that called `run`), the
//! other workers on the remaining EAL lcores; the management thread is an ordinary
//! thread pinned with `core_affinity` to `management_core`. It never touches a packet.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::conntrack::Conntrack;
use dataplane::counters::{ConntrackCounters, WorkerCounters};
use dataplane::dpdk::{self, Eal, Mempool, Port, PortSetup};
use dataplane::policy::Policy;
use dataplane::worker::{ActivePolicy, Path as WorkerPath, SharedPolicy, Worker};

use crate::config::{ApplianceConfig, Config, Device};
use crate::stats::{ConntrackSnapshot, Snapshot};

/// Options of `bulkhead run` beyond the config file.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Stop by itself after this long (for demos and tests); `None`: until a signal.
    pub duration: Option<Duration>,
    /// Print the counters this often while running.
    pub stats_interval: Option<Duration>,
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
    args.extend(["--file-prefix".into(), file_prefix.to_string(), "--log-level".into(), "*:warning".into(), "--no-telemetry".into()]);
    for p in &appliance.ports {
        args.extend(p.device.eal_args());
    }
    args.extend(appliance.eal_args.iter().cloned());
    args
}

/// Checks that every configured core exists on this machine (and is ours to use).
fn check_cores(file: &str, appliance: &ApplianceConfig) -> Result<(), RunError> {
    let available: Vec<u32> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id as u32)
        .collect();
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
    let config = Config::load(path).map_err(|e| err(e.to_string()))?;
    let file = config.file.clone();
    let appliance = config.appliance.clone().ok_or_else(|| {
        err(format!("{file}: appliance: section missing; `bulkhead run` needs its ports, pairs and workers"))
    })?;
    let policy = Policy::compile(&config.policy, 1).map_err(|e| err(format!("{file}: policy does not compile: {e}")))?;
    check_cores(&file, &appliance)?;
    crate::preflight::check_kernel_mtus(&file, &appliance, Path::new("/sys/class/net")).map_err(RunError)?;

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).map_err(|e| err(format!("cannot handle signal {signal}: {e}")))?;
    }

    let eal = Eal::init(&eal_args(&appliance, &format!("bulkhead-{}", std::process::id())))
        .map_err(|e| err(format!("DPDK EAL start failed: {e}")))?;
    let result = run_with_eal(&eal, &file, &appliance, policy, stop, options);
    drop(eal);
    result
}

fn run_with_eal(
    eal: &Eal,
    file: &str,
    appliance: &ApplianceConfig,
    policy: Policy,
    stop: Arc<AtomicBool>,
    options: &RunOptions,
) -> Result<Snapshot, RunError> {
    let workers = appliance.workers.len();
    let socket = eal.lcore_socket(eal.main_lcore());
    let pool = Mempool::new("bulkhead_mbufs", appliance.mempool.mbufs, appliance.mempool.cache, Mempool::DEFAULT_DATA_ROOM, socket)
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
        let mut port = Port::by_name(name).map_err(|e| {
            err(format!(
                "{file}: appliance.ports[{i}] ({}): device {} is not available: {e} (is the interface or PCI device there, and bound to DPDK?)",
                pc.name,
                pc.device.as_str()
            ))
        })?;
        let queues = u16::try_from(workers).map_err(|_| err("too many workers"))?;
        let setup = PortSetup {
            rx_queues: queues,
            tx_queues: queues,
            rx_descriptors: appliance.descriptors.rx,
            tx_descriptors: appliance.descriptors.tx,
            promiscuous: true,
        };
        port.configure(setup, &pool)
            .map_err(|e| err(format!("{file}: appliance.ports[{i}] ({}): {e}", pc.name)))?;
        ports.push(port);
    }

    // Fail closed: the policy is in place before the first port starts.
    let shared = Arc::new(SharedPolicy::new());
    shared.publish(Arc::new(ActivePolicy::new(policy, workers)));

    for (i, port) in ports.iter_mut().enumerate() {
        port.start()
            .map_err(|e| err(format!("{file}: appliance.ports[{i}] ({}): {e}", appliance.ports[i].name)))?;
    }

    let started = Instant::now();
    let counters: Vec<Arc<WorkerCounters>> = (0..workers).map(|_| Arc::new(WorkerCounters::new(ports.len()))).collect();
    let ct_counters: Vec<Arc<ConntrackCounters>> = (0..workers).map(|_| Arc::new(ConntrackCounters::default())).collect();
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
        worker_list.push(Worker::new(w, paths, shared.clone(), wc.clone(), stop.clone(), conntrack));
    }

    let port_names: Vec<String> = appliance.ports.iter().map(|p| p.name.clone()).collect();
    let mgmt = {
        let stop = stop.clone();
        let counters = counters.clone();
        let shared = shared.clone();
        let port_names = port_names.clone();
        let core = appliance.management_core;
        let options = options.clone();
        std::thread::Builder::new()
            .name("bulkhead-mgmt".into())
            .spawn(move || management_loop(core, started, &stop, &options, &port_names, &counters, &shared))
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
        "bulkhead: forwarding: {} ports in {} pairs, {} workers on lcores {:?}, policy version 1; stop with SIGINT or SIGTERM",
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
    let _ = mgmt.join();

    // Stop the ports before reading their final statistics.
    for port in ports.iter_mut() {
        if let Err(e) = port.stop() {
            log::warn!("{e}");
        }
    }
    let driver: Vec<_> = ports.iter().map(|p| p.stats().ok()).collect();
    let refs: Vec<&WorkerCounters> = counters.iter().map(Arc::as_ref).collect();
    let active = shared.current();
    let mut snapshot = Snapshot::take(&port_names, &driver, &refs, active.as_deref());
    snapshot.uptime_secs = started.elapsed().as_secs_f64();
    if appliance.conntrack.is_some() {
        snapshot.conntrack = Some(ConntrackSnapshot::sum(&ct_counters.iter().map(Arc::as_ref).collect::<Vec<_>>()));
    }
    drop(ports);
    drop(pool);
    Ok(snapshot)
}

fn management_loop(
    core: Option<u32>,
    started: Instant,
    stop: &AtomicBool,
    options: &RunOptions,
    port_names: &[String],
    counters: &[Arc<WorkerCounters>],
    shared: &SharedPolicy,
) {
    if let Some(core) = core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core as usize }) {
            log::warn!("could not pin the management thread to core {core}");
        }
    }
    let mut last_stats = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if options.duration.is_some_and(|d| started.elapsed() >= d) {
            stop.store(true, Ordering::SeqCst);
        }
        if let Some(every) = options.stats_interval {
            if last_stats.elapsed() >= every {
                last_stats = Instant::now();
                let refs: Vec<&WorkerCounters> = counters.iter().map(Arc::as_ref).collect();
                let active = shared.current();
                let mut snapshot = Snapshot::take(port_names, &[], &refs, active.as_deref());
                snapshot.uptime_secs = started.elapsed().as_secs_f64();
                eprint!("{}", snapshot.report());
            }
        }
    }
}
