//! Exporting what the appliance counts: the Prometheus text exposition ([`prometheus`])
//! served over HTTP ([`http`]), and the policy digest that identifies a policy file in
//! metrics and security events ([`policy_digest`]).
//!
//! Wiring in the management thread (`run.rs`):
//!
//! ```text
//! digest  = policy_digest(&std::fs::read(config_path)?)            // at load and each reload
//! render  = move || prometheus::render(&snapshot_now(), &extra_now())
//!           // snapshot_now: Snapshot::take(..) + uptime_secs
//!           // extra_now: Extra { policy_sha256, reloads_ok, reloads_error,
//!           //   worker_heartbeat_age_secs: stats::heartbeat_ages(&refs, dpdk::tsc(), dpdk::tsc_hz()),
//!           //   events: Some(aggregator.stats()), sinks: vec![("syslog".into(), sink.stats())] }
//! server  = http::MetricsServer::start(http::parse_addr(http::DEFAULT_ADDR)?, stop.clone(), render)?
//! ...     // on shutdown, after `stop` is set:
//! server.join()
//! ```

pub mod http;
pub mod prometheus;

use sha2::{Digest, Sha256};

/// The SHA-256 of a policy (or configuration) file's content, as 64 lowercase hex digits.
///
/// Metrics (`bulkhead_policy_info{sha256=...}`) and security events carry it, so that an
/// operator can tell exactly which file was in force: hash the bytes as read from disk,
/// before any parsing.
pub fn policy_digest(file_bytes: &[u8]) -> String {
    let digest = Sha256::digest(file_bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        use std::fmt::Write as _;
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_known_vectors() {
        assert_eq!(policy_digest(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(policy_digest(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
