//! A deliberately small HTTP/1.x server for `GET /metrics`.
//!
//! One thread, one connection at a time, `Connection: close`, short timeouts: a client
//! that stalls holds the server for at most [`IO_TIMEOUT`]. Anything but `GET /metrics`
//! (query strings ignored) gets 404, any method but `GET` 405, a malformed request 400.
//! It listens on loopback by default ([`DEFAULT_ADDR`]); exposing it further is an
//! operator's explicit choice. It stops within [`POLL_INTERVAL`] of the shared stop flag
//! being set.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::prometheus::CONTENT_TYPE;

/// The default listening address (loopback; 9464 is the port Prometheus exporters'
/// registry lists for OpenTelemetry's exporter, unused by DPDK tooling).
pub const DEFAULT_ADDR: &str = "127.0.0.1:9464";

/// The longest a client may take to send its request or read the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the idle server looks at the stop flag.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The largest request head read (request line and headers).
const MAX_REQUEST: usize = 8 * 1024;

/// A server that could not start.
#[derive(Debug)]
pub struct HttpError(pub String);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpError {}

/// A running metrics server.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `render()`'s text at `/metrics` on a thread of its own
    /// until `stop` is set. Port 0 picks a free port ([`MetricsServer::local_addr`]).
    pub fn start<F>(addr: SocketAddr, stop: Arc<AtomicBool>, render: F) -> Result<MetricsServer, HttpError>
    where
        F: Fn() -> String + Send + 'static,
    {
        let listener =
            TcpListener::bind(addr).map_err(|e| HttpError(format!("cannot listen for /metrics on {addr}: {e}")))?;
        let addr = listener.local_addr().map_err(|e| HttpError(format!("metrics listener: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| HttpError(format!("metrics listener on {addr}: cannot make it non-blocking: {e}")))?;
        let thread = std::thread::Builder::new()
            .name("bulkhead-metrics".into())
            .spawn(move || serve(&listener, &stop, &render))
            .map_err(|e| HttpError(format!("cannot start the metrics thread: {e}")))?;
        Ok(MetricsServer { addr, thread: Some(thread) })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the thread to end (after `stop` was set).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Parses `"127.0.0.1:9464"`-style addresses with a clear error.
pub fn parse_addr(s: &str) -> Result<SocketAddr, HttpError> {
    s.parse().map_err(|e| HttpError(format!("`{s}` is not a listening address such as {DEFAULT_ADDR}: {e}")))
}

fn serve(listener: &TcpListener, stop: &AtomicBool, render: &dyn Fn() -> String) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = handle(stream, render) {
                    log::debug!("metrics client: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL_INTERVAL),
            Err(e) => {
                log::warn!("metrics listener: {e}");
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    }
}

fn handle(mut stream: TcpStream, render: &dyn Fn() -> String) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n").or_else(|| find(&buf, b"\n\n")) {
            break Some(i);
        }
        if buf.len() > MAX_REQUEST || Instant::now() >= deadline {
            break None;
        }
        match stream.read(&mut chunk) {
            Ok(0) => break None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e),
        }
    };
    let Some(head_end) = head_end else {
        return respond(&mut stream, "400 Bad Request", "text/plain", b"incomplete or oversized request\n", false, &[]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target), Some(version)) = (method, target, version) else {
        return respond(&mut stream, "400 Bad Request", "text/plain", b"malformed request line\n", false, &[]);
    };
    if !version.starts_with("HTTP/1.") {
        return respond(&mut stream, "400 Bad Request", "text/plain", b"HTTP/1.x only\n", false, &[]);
    }
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return respond(&mut stream, "404 Not Found", "text/plain", b"not found; metrics are at /metrics\n", method == "HEAD", &[]);
    }
    match method {
        "GET" => {
            let body = render();
            respond(&mut stream, "200 OK", CONTENT_TYPE, body.as_bytes(), false, &[])
        }
        _ => respond(&mut stream, "405 Method Not Allowed", "text/plain", b"only GET\n", false, &[("Allow", "GET")]),
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    headers: &[(&str, &str)],
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body);
    }
    stream.write_all(&bytes)?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> (String, String) {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        s.write_all(request.as_bytes()).expect("write");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read");
        let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
        (head.to_string(), body.to_string())
    }

    fn server() -> (MetricsServer, Arc<AtomicBool>) {
        let stop = Arc::new(AtomicBool::new(false));
        let n = std::sync::atomic::AtomicU64::new(0);
        let s = MetricsServer::start("127.0.0.1:0".parse().expect("addr"), stop.clone(), move || {
            format!("# TYPE x_total counter\nx_total {}\n", n.fetch_add(1, Ordering::Relaxed))
        })
        .expect("start");
        (s, stop)
    }

    #[test]
    fn serves_metrics_and_refuses_the_rest() {
        let (server, stop) = server();
        let addr = server.local_addr();
        assert!(addr.ip().is_loopback());

        let (head, body) = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
        assert_eq!(body, "# TYPE x_total counter\nx_total 0\n");
        let (_, body) = get(addr, "GET /metrics?name[]=x HTTP/1.0\r\n\r\n");
        assert_eq!(body, "# TYPE x_total counter\nx_total 1\n", "rendered afresh for each request");

        let (head, _) = get(addr, "GET / HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
        let (head, _) = get(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 405 ") && head.contains("Allow: GET"), "{head}");
        let (head, _) = get(addr, "garbage\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 400 "), "{head}");

        stop.store(true, Ordering::SeqCst);
        let t = Instant::now();
        server.join();
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_silent_client_does_not_hold_the_server() {
        let (server, stop) = server();
        let addr = server.local_addr();
        let t = Instant::now();
        let _silent = TcpStream::connect(addr).expect("connect");
        std::thread::sleep(Duration::from_millis(100));
        let (head, _) = get(addr, "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(t.elapsed() < IO_TIMEOUT + Duration::from_secs(1), "served after the silent client timed out");
        stop.store(true, Ordering::SeqCst);
        server.join();
    }

    #[test]
    fn a_taken_address_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let stop = Arc::new(AtomicBool::new(false));
        let e = MetricsServer::start(taken.local_addr().expect("addr"), stop, String::new).expect_err("in use");
        assert!(e.to_string().contains("cannot listen for /metrics on 127.0.0.1:"), "{e}");
        assert!(parse_addr("localhost").is_err());
    }
}
