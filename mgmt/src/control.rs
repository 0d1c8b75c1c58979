//! The control socket: a Unix stream socket (mode 0600) speaking JSON lines, through
//! which `bulkhead status`, `bulkhead stats` and `bulkhead reload` talk to a running
//! appliance.
//!
//! Protocol: the client sends one request line, `{"cmd":"status"}`, `{"cmd":"stats"}` or
//! `{"cmd":"reload"}`; the server answers one line, `{"ok":true,"result":...}` or
//! `{"ok":false,"error":"..."}`, and closes the connection. One thread serves one
//! connection at a time; a client gets [`IO_TIMEOUT`] to send its request, so a peer that
//! connects and says nothing holds the server no longer than that.
//!
//! The appliance supplies the answers through [`Handler`].

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::stats::Snapshot;

/// How long a client may take to send its request and read the answer (server side).
pub const IO_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the client waits for an answer (a reload compiles a policy: give it time).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest request line read.
const MAX_REQUEST: u64 = 64 * 1024;

/// How often the idle server looks at the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// What is running: versions, policy, uptime, reloads.
    Status,
    /// All counters ([`Snapshot`]).
    Stats,
    /// Reload the policy from its file; the running one is kept if the new one is bad.
    Reload,
    /// The policy learned from discover-mode segments, as YAML.
    Learn,
}

/// The answer to `status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// bulkhead's version.
    pub version: String,
    /// The appliance's process id.
    pub pid: u32,
    /// The configuration file it runs.
    pub config_file: String,
    /// Version of the policy in force (0: none).
    pub policy_version: u64,
    /// SHA-256 (hex) of the policy file in force.
    pub policy_sha256: Option<String>,
    /// Seconds since the ports started forwarding.
    pub uptime_secs: f64,
    /// Number of workers.
    pub workers: usize,
    /// Port names, in config order.
    pub ports: Vec<String>,
    /// Reloads that succeeded.
    pub reloads_ok: u64,
    /// Reloads refused.
    pub reloads_error: u64,
    /// Why the latest refused reload was refused.
    pub last_reload_error: Option<String>,
    /// Per worker: seconds since its latest poll round (a stalled worker's grows).
    #[serde(default)]
    pub worker_heartbeat_age_secs: Vec<f64>,
    /// Workers whose heartbeat is older than [`STALLED_AFTER_SECS`].
    #[serde(default)]
    pub stalled_workers: Vec<usize>,
    /// Per port, in config order: (name, link up, speed in Mbit/s).
    #[serde(default)]
    pub links: Vec<(String, bool, u32)>,
}

/// A worker whose latest poll round is older than this is reported stalled.
pub const STALLED_AFTER_SECS: f64 = 1.0;

/// The workers whose heartbeat (seconds since their latest poll round) says they stalled.
pub fn stalled_workers(heartbeat_ages: &[f64]) -> Vec<usize> {
    heartbeat_ages.iter().enumerate().filter(|(_, a)| **a > STALLED_AFTER_SECS).map(|(i, _)| i).collect()
}

/// The answer to a successful `reload`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    /// Version of the policy now in force.
    pub policy_version: u64,
    /// SHA-256 (hex) of its file.
    pub policy_sha256: String,
    /// Warnings or notes for the operator (may be empty).
    pub message: String,
}

/// What the appliance answers; implemented in `run.rs`. Called on the control thread.
pub trait Handler: Send + Sync {
    /// The `status` answer.
    fn status(&self) -> Status;
    /// The `stats` answer.
    fn stats(&self) -> Snapshot;
    /// Reloads the policy; `Err` with the reason it was refused (the running policy
    /// stays in force).
    fn reload(&self) -> Result<ReloadOutcome, String>;
    /// The policy learned from what discover-mode segments observed, as YAML.
    fn learn(&self) -> Result<String, String>;
}

/// A control-socket failure, as one line for the operator.
#[derive(Debug)]
pub struct ControlError(pub String);

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ControlError {}

/// The default socket path: under systemd's `$RUNTIME_DIRECTORY`, else
/// `/run/bulkhead/bulkhead.sock` for root, else `$XDG_RUNTIME_DIR/bulkhead/bulkhead.sock`,
/// else `/tmp/bulkhead-UID/bulkhead.sock`.
pub fn default_socket_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY") {
        // systemd may list several, separated by colons: take the first.
        let first = dir.to_string_lossy().split(':').next().unwrap_or("").to_string();
        if !first.is_empty() {
            return Path::new(&first).join("bulkhead.sock");
        }
    }
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
    if uid == 0 {
        return PathBuf::from("/run/bulkhead/bulkhead.sock");
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        return Path::new(&dir).join("bulkhead").join("bulkhead.sock");
    }
    PathBuf::from(format!("/tmp/bulkhead-{uid}/bulkhead.sock"))
}

/// A running control server. It removes its socket file when it stops.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Creates the socket at `path` (mode 0600; a missing parent directory is created
    /// with mode 0700; a stale socket nobody answers on is replaced) and serves it on a
    /// thread of its own until `stop` is set.
    pub fn start(path: &Path, handler: Arc<dyn Handler>, stop: Arc<AtomicBool>) -> Result<ControlServer, ControlError> {
        let shown = path.display();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| ControlError(format!("cannot create the control socket's directory {}: {e}", dir.display())))?;
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(ControlError(format!(
                        "control socket {shown}: another bulkhead is answering on it; stop it or choose another path"
                    )));
                }
                std::fs::remove_file(path)
                    .map_err(|e| ControlError(format!("control socket {shown}: cannot remove the stale socket: {e}")))?;
            }
            Ok(_) => {
                return Err(ControlError(format!("control socket {shown}: the path exists and is not a socket; refusing to replace it")))
            }
            Err(_) => {}
        }
        let listener = UnixListener::bind(path).map_err(|e| ControlError(format!("cannot create control socket {shown}: {e}")))?;
        let cleanup = |e: String| {
            let _ = std::fs::remove_file(path);
            ControlError(e)
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| cleanup(format!("control socket {shown}: cannot set mode 0600: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| cleanup(format!("control socket {shown}: cannot make it non-blocking: {e}")))?;
        let thread = std::thread::Builder::new()
            .name("bulkhead-control".into())
            .spawn(move || serve(&listener, handler.as_ref(), &stop))
            .map_err(|e| cleanup(format!("cannot start the control thread: {e}")))?;
        Ok(ControlServer { path: path.to_path_buf(), thread: Some(thread) })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the thread to end (after `stop` was set) and removes the socket.
    pub fn join(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for ControlServer {
    /// Joins the thread if `stop` was set; a server dropped while still running is left
    /// to run (it holds the listener) and only stops with its flag.
    fn drop(&mut self) {
        if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            self.finish();
        }
    }
}

fn serve(listener: &UnixListener, handler: &dyn Handler, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = handle(stream, handler) {
                    log::debug!("control client: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL_INTERVAL),
            Err(e) => {
                log::warn!("control socket: {e}");
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    }
}

/// The answer line for one request line.
pub fn answer(line: &str, handler: &dyn Handler) -> String {
    let reply = match serde_json::from_str::<Request>(line.trim()) {
        Err(e) => Err(format!(
            "bad request ({e}); expected one JSON object per line: {{\"cmd\":\"status\"}}, {{\"cmd\":\"stats\"}} or {{\"cmd\":\"reload\"}}"
        )),
        Ok(Request::Status) => serde_json::to_value(handler.status()).map_err(|e| e.to_string()),
        Ok(Request::Stats) => serde_json::to_value(handler.stats()).map_err(|e| e.to_string()),
        Ok(Request::Reload) => handler.reload().and_then(|r| serde_json::to_value(r).map_err(|e| e.to_string())),
        Ok(Request::Learn) => handler.learn().map(serde_json::Value::String),
    };
    let value = match reply {
        Ok(result) => serde_json::json!({ "ok": true, "result": result }),
        Err(error) => serde_json::json!({ "ok": false, "error": error }),
    };
    value.to_string()
}

fn handle(stream: UnixStream, handler: &dyn Handler) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = String::new();
    let read = BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line);
    let mut reply = match read {
        Ok(_) if line.ends_with('\n') => answer(&line, handler),
        Ok(_) if line.len() as u64 >= MAX_REQUEST => {
            serde_json::json!({ "ok": false, "error": "request too long" }).to_string()
        }
        // EOF without a newline: take what came as the request.
        Ok(_) if !line.trim().is_empty() => answer(&line, handler),
        Ok(_) => return Ok(()),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            serde_json::json!({ "ok": false, "error": "timed out waiting for a request line" }).to_string()
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            serde_json::json!({ "ok": false, "error": "request is not UTF-8" }).to_string()
        }
        Err(e) => return Err(e),
    };
    reply.push('\n');
    (&stream).write_all(reply.as_bytes())?;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}

// ---- client -----------------------------------------------------------------------------

/// Sends `request` to the appliance at `socket` and returns its `result`; a refusal
/// (`"ok":false`) is an error carrying the appliance's reason.
pub fn request(socket: &Path, req: Request) -> Result<serde_json::Value, ControlError> {
    exchange(socket, req)?.map_err(ControlError)
}

/// Sends `request` and returns the appliance's answer: `Ok(result)` or `Err(reason)`
/// when it refused. The outer error is a transport or protocol failure.
pub fn exchange(socket: &Path, request: Request) -> Result<Result<serde_json::Value, String>, ControlError> {
    let shown = socket.display();
    let stream = UnixStream::connect(socket).map_err(|e| {
        ControlError(format!(
            "cannot reach bulkhead at {shown}: {e} (is `bulkhead run` running? use --socket to name another path)"
        ))
    })?;
    let io = |e: std::io::Error| ControlError(format!("control socket {shown}: {e}"));
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_string(&request).map_err(|e| ControlError(e.to_string()))?;
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new((&stream).take(64 * 1024 * 1024)).read_line(&mut answer).map_err(io)?;
    if answer.trim().is_empty() {
        return Err(ControlError(format!("control socket {shown}: the appliance closed the connection without an answer")));
    }
    let mut value: serde_json::Value = serde_json::from_str(&answer)
        .map_err(|e| ControlError(format!("control socket {shown}: answer is not JSON: {e}")))?;
    if value.get("ok").and_then(serde_json::Value::as_bool) == Some(true) {
        Ok(Ok(value.get_mut("result").map(serde_json::Value::take).unwrap_or_default()))
    } else {
        let reason = value.get("error").and_then(serde_json::Value::as_str).unwrap_or("no reason given");
        Ok(Err(reason.to_string()))
    }
}

fn typed<T: serde::de::DeserializeOwned>(socket: &Path, req: Request) -> Result<T, ControlError> {
    let value = request(socket, req)?;
    serde_json::from_value(value)
        .map_err(|e| ControlError(format!("control socket {}: unexpected answer to {req:?}: {e}", socket.display())))
}

/// `status` from the appliance at `socket`.
pub fn client_status(socket: &Path) -> Result<Status, ControlError> {
    typed(socket, Request::Status)
}

/// `stats` from the appliance at `socket`.
pub fn client_stats(socket: &Path) -> Result<Snapshot, ControlError> {
    typed(socket, Request::Stats)
}

/// Asks the appliance at `socket` to reload its policy.
pub fn client_reload(socket: &Path) -> Result<ReloadOutcome, ControlError> {
    typed(socket, Request::Reload)
}

// ---- CLI subcommands --------------------------------------------------------------------

/// `bulkhead status`: prints what runs. Exit code 0, or 2 when the appliance cannot be
/// reached.
pub fn status_command(socket: &Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match client_status(socket) {
        Ok(s) => {
            let _ = writeln!(out, "bulkhead {} (pid {}), up {:.1} s", s.version, s.pid, s.uptime_secs);
            let _ = writeln!(out, "config: {}", s.config_file);
            let _ = writeln!(
                out,
                "policy: version {}, sha256 {}",
                s.policy_version,
                s.policy_sha256.as_deref().unwrap_or("-")
            );
            let alive = s.workers - s.stalled_workers.len().min(s.workers);
            let _ = writeln!(out, "workers: {} ({alive} alive)", s.workers);
            for w in &s.stalled_workers {
                let age = s.worker_heartbeat_age_secs.get(*w).copied().unwrap_or(f64::INFINITY);
                let _ = writeln!(out, "  worker {w}: STALLED (no poll round for {age:.1} s)");
            }
            for (name, up, speed) in &s.links {
                let _ = writeln!(out, "port {name}: link {}{}", if *up { "up" } else { "down" }, if *speed > 0 { format!(", {speed} Mbit/s") } else { String::new() });
            }
            if s.links.is_empty() {
                let _ = writeln!(out, "ports: {}", s.ports.join(", "));
            }
            let _ = write!(out, "reloads: {} ok, {} refused", s.reloads_ok, s.reloads_error);
            match &s.last_reload_error {
                Some(e) => {
                    let _ = writeln!(out, " (latest refusal: {e})");
                }
                None => {
                    let _ = writeln!(out);
                }
            }
            0
        }
        Err(e) => {
            let _ = writeln!(err, "bulkhead: {e}");
            2
        }
    }
}

/// `bulkhead stats [--json]`: prints the counters as a table, or as JSON. Exit code 0,
/// or 2 when the appliance cannot be reached.
pub fn stats_command(socket: &Path, json: bool, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match client_stats(socket) {
        Ok(s) => {
            if json {
                match serde_json::to_string_pretty(&s) {
                    Ok(text) => {
                        let _ = writeln!(out, "{text}");
                    }
                    Err(e) => {
                        let _ = writeln!(err, "bulkhead: cannot write the counters as JSON: {e}");
                        return 2;
                    }
                }
            } else {
                let _ = write!(out, "{}", s.report());
            }
            0
        }
        Err(e) => {
            let _ = writeln!(err, "bulkhead: {e}");
            2
        }
    }
}

/// `bulkhead reload`: asks for a policy reload. Exit code 0 when the new policy is in
/// force, 1 when it was refused (the running one kept), 2 when the appliance cannot be
/// reached.
pub fn reload_command(socket: &Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match exchange(socket, Request::Reload) {
        Ok(Ok(value)) => match serde_json::from_value::<ReloadOutcome>(value) {
            Ok(r) => {
                let _ = writeln!(out, "policy version {} in force (sha256 {})", r.policy_version, r.policy_sha256);
                if !r.message.is_empty() {
                    let _ = writeln!(out, "{}", r.message);
                }
                0
            }
            Err(e) => {
                let _ = writeln!(err, "bulkhead: unexpected answer to reload: {e}");
                2
            }
        },
        Ok(Err(reason)) => {
            let _ = writeln!(err, "bulkhead: reload refused, the running policy is kept: {reason}");
            1
        }
        Err(e) => {
            let _ = writeln!(err, "bulkhead: {e}");
            2
        }
    }
}

/// `bulkhead learn --out FILE`: writes the policy learned from discover-mode segments.
/// Exit code 0, 1 when the appliance refused, 2 when it cannot be reached or the file
/// cannot be written.
pub fn learn_command(socket: &Path, out_file: &Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match exchange(socket, Request::Learn) {
        Ok(Ok(serde_json::Value::String(yaml))) => match std::fs::write(out_file, &yaml) {
            Ok(()) => {
                let rules = yaml.matches("\n  - name: learned-").count();
                let _ = writeln!(out, "wrote {} ({rules} learned rules); review it, then `bulkhead check` it", out_file.display());
                0
            }
            Err(e) => {
                let _ = writeln!(err, "bulkhead: cannot write {}: {e}", out_file.display());
                2
            }
        },
        Ok(Ok(other)) => {
            let _ = writeln!(err, "bulkhead: unexpected answer to learn: {other}");
            2
        }
        Ok(Err(reason)) => {
            let _ = writeln!(err, "bulkhead: learn refused: {reason}");
            1
        }
        Err(e) => {
            let _ = writeln!(err, "bulkhead: {e}");
            2
        }
    }
}

#[cfg(test)]
mod tests;
