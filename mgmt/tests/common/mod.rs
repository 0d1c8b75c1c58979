//! Shared harness of the system tests (`system.rs`, `system_wire.rs`,
//! `system_gateway.rs`): a network-namespace test-bed made by one of the test-bed
//! scripts under a unique prefix and removed on drop, and the real `bulkhead` binary
//! running in one of its namespaces, killed on drop. Needs root.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

/// Tests take this lock: each appliance busy-polls a core.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn require_root() {
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "system tests need root (network namespaces); CI runs as root"
    );
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A test-bed made by `scripts/<script> up <prefix>`, `down` on drop.
pub struct Testbed {
    script: &'static str,
    pub prefix: String,
}

impl Testbed {
    pub fn up(script: &'static str, tag: &str) -> Testbed {
        require_root();
        static N: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!("{tag}{}x{}", std::process::id() % 100_000, N.fetch_add(1, Ordering::Relaxed));
        let tb = Testbed { script, prefix };
        let out = tb.script("up");
        assert!(out.status.success(), "{script} up failed: {}", text(&out));
        tb
    }

    /// Runs `scripts/<script> <cmd> <prefix>`.
    pub fn script(&self, cmd: &str) -> Output {
        Command::new("bash").arg(repo().join("scripts").join(self.script)).args([cmd, &self.prefix]).output().unwrap()
    }

    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// Runs `args` in namespace `<prefix>-<host>`.
    pub fn exec(&self, host: &str, args: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.ns(host)]).args(args).output().unwrap()
    }

    /// Runs `args` in `<prefix>-<host>` and asserts success.
    pub fn must(&self, host: &str, args: &[&str]) -> String {
        let out = self.exec(host, args);
        assert!(out.status.success(), "{host}: {args:?} failed: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn spawn(&self, host: &str, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn ping(&self, from: &str, to: &str, count: u32) -> bool {
        self.exec(from, &["ping", "-c", &count.to_string(), "-i", "0.2", "-W", "1", to]).status.success()
    }

    /// Sends `bytes` over TCP from `from` to `to:port` (served in `server`); true when
    /// the server got them all and answered.
    pub fn tcp_transfer(&self, from: &str, server: &str, to: &str, port: u16, bytes: usize) -> bool {
        let probe = repo().join("scripts/netprobe.py");
        let probe = probe.to_str().unwrap();
        let srv = self.spawn(server, &["python3", probe, "tcp-server", "--port", &port.to_string(), "--timeout", "6"]);
        std::thread::sleep(Duration::from_millis(300));
        let client = self.exec(
            from,
            &["python3", probe, "tcp-client", "--host", to, "--port", &port.to_string(), "--bytes", &bytes.to_string(), "--timeout", "4"],
        );
        let srv = srv.wait_with_output().unwrap();
        let sent = String::from_utf8_lossy(&client.stdout).trim().to_string();
        let got = String::from_utf8_lossy(&srv.stdout).trim().to_string();
        client.status.success() && srv.status.success() && sent == got && got.starts_with(&bytes.to_string())
    }

    /// One UDP datagram of `size` bytes from `client` (source port `sport`) to
    /// `to:port` on `server`, echoed back; true when the echo arrived.
    pub fn udp_exchange(&self, client: &str, server: &str, to: &str, port: u16, sport: u16, size: usize) -> bool {
        let probe = repo().join("scripts/netprobe.py");
        let probe = probe.to_str().unwrap();
        let mut srv = self.spawn(server, &["python3", probe, "udp-server", "--port", &port.to_string(), "--timeout", "3"]);
        std::thread::sleep(Duration::from_millis(300));
        let out = self.exec(
            client,
            &["python3", probe, "udp-client", "--host", to, "--port", &port.to_string(), "--sport", &sport.to_string(), "--size", &size.to_string(), "--timeout", "1.5"],
        );
        let _ = srv.kill();
        let _ = srv.wait();
        out.status.success()
    }

    /// The MAC address of `dev` in `<prefix>-<host>`.
    pub fn mac(&self, host: &str, dev: &str) -> String {
        self.must(host, &["cat", &format!("/sys/class/net/{dev}/address")]).trim().to_string()
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = self.script("down");
    }
}

/// A bounded capture: `tcpdump -e -n` on `dev` in `<prefix>-<host>` for at most
/// `seconds` or `count` frames matching `filter`.
pub struct Capture(Child);

impl Capture {
    pub fn start(tb: &Testbed, host: &str, dev: &str, filter: &str, count: u32, seconds: u32) -> Capture {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &tb.ns(host), "timeout", &seconds.to_string(), "tcpdump", "-e", "-n", "-l", "-c"])
            .arg(count.to_string())
            .args(["-i", dev])
            .args(filter.split_whitespace())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        // Wait until tcpdump listens ("listening on ..." goes to stderr).
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let _ = rx.recv_timeout(Duration::from_secs(5));
        Capture(child)
    }

    /// The captured lines (waits for the count or the time limit).
    pub fn lines(mut self) -> Vec<String> {
        let mut out = String::new();
        self.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let _ = self.0.wait();
        out.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The running appliance in namespace `<prefix>-<ns>`; killed on drop. Its control
/// socket and events file live in a temporary directory of the test's own (the demo
/// config's paths are rewritten there).
pub struct Appliance {
    pub child: Option<Child>,
    stderr: mpsc::Receiver<String>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// What it printed on stderr before it said it was forwarding.
    pub startup: Vec<String>,
}

impl Appliance {
    /// Starts `bulkhead run` and waits for its "forwarding" line.
    pub fn start(tb: &Testbed, ns: &str, config_yaml: &str) -> Appliance {
        match Appliance::try_start(tb, ns, config_yaml) {
            Ok(app) => app,
            Err(seen) => panic!("bulkhead did not start:\n{seen}"),
        }
    }

    /// Starts `bulkhead run`; `Err(what it printed)` if it did not reach forwarding.
    pub fn try_start(tb: &Testbed, ns: &str, config_yaml: &str) -> Result<Appliance, String> {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bulkhead.yaml");
        std::fs::write(&config, Self::localise(&dir, config_yaml)).unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &tb.ns(ns), env!("CARGO_BIN_EXE_bulkhead"), "run", "--config"])
            .arg(&config)
            .args(["--duration", "60"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut app = Appliance { child: Some(child), stderr: rx, dir, config, startup: Vec::new() };
        loop {
            match app.stderr.recv_timeout(Duration::from_secs(20)) {
                Ok(line) if line.contains("bulkhead: forwarding") => return Ok(app),
                Ok(line) => app.startup.push(line),
                Err(_) => {
                    if let Some(mut child) = app.child.take() {
                        let _ = child.kill();
                        if let Ok(status) = child.wait() {
                            app.startup.push(format!("(exit: {status})"));
                        }
                    }
                    return Err(app.startup.join("\n"));
                }
            }
        }
    }

    /// Points the demo's control socket and events file into the test's directory.
    fn localise(dir: &tempfile::TempDir, yaml: &str) -> String {
        yaml.replace("/run/bulkhead/demo.sock", &dir.path().join("control.sock").display().to_string())
            .replace("/tmp/bulkhead-demo-events.jsonl", &dir.path().join("events.jsonl").display().to_string())
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    /// Replaces the configuration file (atomically, as an editor would).
    pub fn rewrite(&self, yaml: &str) {
        let tmp = self.dir.path().join("next.yaml");
        std::fs::write(&tmp, Self::localise(&self.dir, yaml)).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    /// Runs `bulkhead ARGS --socket <its socket>`; (exit code, stdout + stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_bulkhead")).args(args).arg("--socket").arg(self.socket()).output().unwrap();
        (out.status.code().unwrap_or(-1), text(&out))
    }

    /// The security events written so far (JSON lines).
    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("an event line is JSON"))
            .collect()
    }

    /// SIGTERM, wait, and return what it printed on stdout (the final counters).
    pub fn stop(self) -> String {
        self.stop_with_log().0
    }

    /// [`Appliance::stop`], with what it printed on stderr after start-up (its log).
    pub fn stop_with_log(mut self) -> (String, String) {
        let mut child = self.child.take().unwrap();
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        let mut out = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let status = child.wait().unwrap();
        // The reader thread ends when the pipe closes, with the process.
        let log: Vec<String> = std::iter::from_fn(|| self.stderr.recv_timeout(Duration::from_secs(5)).ok()).collect();
        let log = log.join("\n");
        assert!(status.success(), "bulkhead exited with {status}; stdout:\n{out}\nstderr:\n{log}");
        (out, log)
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The config file `configs/<name>`.
pub fn config(name: &str) -> String {
    std::fs::read_to_string(repo().join("configs").join(name)).unwrap()
}

/// Value of counter line `name` (first number after it) in a report.
pub fn counter(report: &str, name: &str) -> u64 {
    report
        .lines()
        .find(|l| l.trim_start().starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// rx_packets, rx_bytes, tx_packets, tx_bytes of port `name` in a report.
pub fn port_row(report: &str, name: &str) -> [u64; 4] {
    let line = report.lines().find(|l| l.split_whitespace().next() == Some(name)).expect("port row");
    let v: Vec<u64> = line.split_whitespace().skip(1).take(4).map(|x| x.parse().unwrap()).collect();
    [v[0], v[1], v[2], v[3]]
}

/// (allowed, denied) packets of segment pair `from -> to` in a report.
pub fn pair(report: &str, from: &str, to: &str) -> (u64, u64) {
    report
        .lines()
        .find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 7 && w[0] == from && w[1] == "->" && w[2] == to)
                .then(|| (w[4].parse().unwrap_or(0), w[6].parse().unwrap_or(0)))
        })
        .unwrap_or((0, 0))
}
