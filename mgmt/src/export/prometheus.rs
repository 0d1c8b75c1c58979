//! The Prometheus text exposition format (version 0.0.4) of a [`Snapshot`] and of the
//! management thread's own figures ([`Extra`]).
//!
//! Naming follows Prometheus conventions: every name starts with `bulkhead_`, counters end
//! in `_total`, units are base units (`_bytes_total`, `_seconds`), every family has one
//! HELP and one TYPE line followed by all of its samples, and label values are escaped
//! (`\\`, `\"`, `\n`). Families are always present, with zero samples where there is
//! nothing to report, so dashboards see a stable set of names.

use std::fmt::Write as _;

use dataplane::counters::DropReason;

use crate::events::{AggregatorStats, SinkStats};
use crate::stats::{Snapshot, WorkerSnapshot};

/// The `Content-Type` of this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Figures the management thread keeps beside the dataplane counters; `run.rs` fills
/// this in before each render. Every field has a neutral default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Extra {
    /// SHA-256 (hex) of the policy file in force ([`crate::export::policy_digest`]);
    /// `None` before the first policy.
    pub policy_sha256: Option<String>,
    /// Policy reloads that succeeded (the new policy is in force).
    pub reloads_ok: u64,
    /// Policy reloads refused (the running policy was kept).
    pub reloads_error: u64,
    /// Per worker, in worker order: seconds since its latest heartbeat (the start of
    /// its latest poll round). A stuck worker's age grows without bound.
    pub worker_heartbeat_age_secs: Vec<f64>,
    /// The security-event aggregator's counters (zeros when events are off).
    pub events: Option<AggregatorStats>,
    /// Per event sink (a name of the operator's choosing, e.g. `syslog`), its counters.
    pub sinks: Vec<(String, SinkStats)>,
}

/// Renders `snapshot` and `extra` in the text exposition format 0.0.4.
pub fn render(snapshot: &Snapshot, extra: &Extra) -> String {
    let mut o = Out::default();

    o.family("bulkhead_uptime_seconds", "gauge", "Seconds since the ports started forwarding.");
    o.sample("bulkhead_uptime_seconds", &[], F(snapshot.uptime_secs));

    // Policy.
    o.family("bulkhead_policy_version", "gauge", "Version of the policy in force (0: none yet).");
    o.sample("bulkhead_policy_version", &[], snapshot.policy_version);
    o.family(
        "bulkhead_policy_info",
        "gauge",
        "The policy in force: its version and the SHA-256 of its file (always 1).",
    );
    let version = snapshot.policy_version.to_string();
    o.sample(
        "bulkhead_policy_info",
        &[("version", &version), ("sha256", extra.policy_sha256.as_deref().unwrap_or(""))],
        1,
    );
    o.family("bulkhead_policy_reloads_total", "counter", "Policy reloads by result (error: the running policy was kept).");
    o.sample("bulkhead_policy_reloads_total", &[("result", "ok")], extra.reloads_ok);
    o.sample("bulkhead_policy_reloads_total", &[("result", "error")], extra.reloads_error);

    // Ports: what the workers counted.
    type PortField = fn(&crate::stats::PortSnapshot) -> u64;
    let port_families: [(&str, &str, PortField); 4] = [
        ("bulkhead_port_rx_packets_total", "Packets the workers received on the port.", |p| p.rx_packets),
        ("bulkhead_port_rx_bytes_total", "Bytes the workers received on the port.", |p| p.rx_bytes),
        ("bulkhead_port_tx_packets_total", "Packets the workers transmitted on the port.", |p| p.tx_packets),
        ("bulkhead_port_tx_bytes_total", "Bytes the workers transmitted on the port.", |p| p.tx_bytes),
    ];
    for (name, help, field) in port_families {
        o.family(name, "counter", help);
        for p in &snapshot.ports {
            o.sample(name, &[("port", &p.name)], field(p));
        }
    }
    // Ports: what the driver counted (only ports whose driver gave statistics).
    o.family("bulkhead_port_rx_missed_total", "counter", "Packets the NIC dropped because its receive queues were full (driver statistics).");
    for p in &snapshot.ports {
        if let Some(d) = p.driver {
            o.sample("bulkhead_port_rx_missed_total", &[("port", &p.name)], d.rx_missed);
        }
    }
    o.family("bulkhead_port_errors_total", "counter", "Erroneous received packets and failed transmissions (driver statistics).");
    for p in &snapshot.ports {
        if let Some(d) = p.driver {
            o.sample("bulkhead_port_errors_total", &[("port", &p.name), ("direction", "rx")], d.rx_errors);
            o.sample("bulkhead_port_errors_total", &[("port", &p.name), ("direction", "tx")], d.tx_errors);
        }
    }
    o.family("bulkhead_port_rx_nombuf_total", "counter", "Receive buffer allocation failures, mempool exhausted (driver statistics).");
    for p in &snapshot.ports {
        if let Some(d) = p.driver {
            o.sample("bulkhead_port_rx_nombuf_total", &[("port", &p.name)], d.rx_nombuf);
        }
    }

    // Drops: every reason the dataplane declares, zeros included.
    o.family("bulkhead_drops_total", "counter", "Packets dropped, by reason.");
    for &reason in DropReason::ALL {
        let n = snapshot.drops.iter().find(|(r, _)| *r == reason).map_or(0, |(_, n)| *n);
        o.sample("bulkhead_drops_total", &[("reason", reason.name())], n);
    }

    // Rules and defaults.
    o.family("bulkhead_rule_packets_total", "counter", "Packets decided by a rule of the policy in force.");
    for r in &snapshot.rules {
        o.sample("bulkhead_rule_packets_total", &[("rule", &r.name)], r.packets);
    }
    o.family("bulkhead_rule_bytes_total", "counter", "Bytes decided by a rule of the policy in force.");
    for r in &snapshot.rules {
        o.sample("bulkhead_rule_bytes_total", &[("rule", &r.name)], r.bytes);
    }
    o.family(
        "bulkhead_default_packets_total",
        "counter",
        "Packets no rule matched, decided by the default (scope inter_segment) or the intra-segment default.",
    );
    o.sample("bulkhead_default_packets_total", &[("scope", "inter_segment")], snapshot.default_packets);
    o.sample("bulkhead_default_packets_total", &[("scope", "intra_segment")], snapshot.intra_segment_packets);

    // Segment pairs.
    o.family("bulkhead_segment_packets_total", "counter", "Packets from one segment to another, by verdict (segment - : in no segment).");
    for p in &snapshot.pairs {
        o.sample("bulkhead_segment_packets_total", &[("src", &p.src), ("dst", &p.dst), ("verdict", "allow")], p.allowed_packets);
        o.sample("bulkhead_segment_packets_total", &[("src", &p.src), ("dst", &p.dst), ("verdict", "deny")], p.denied_packets);
    }
    o.family("bulkhead_segment_bytes_total", "counter", "Bytes from one segment to another, by verdict (segment - : in no segment).");
    for p in &snapshot.pairs {
        o.sample("bulkhead_segment_bytes_total", &[("src", &p.src), ("dst", &p.dst), ("verdict", "allow")], p.allowed_bytes);
        o.sample("bulkhead_segment_bytes_total", &[("src", &p.src), ("dst", &p.dst), ("verdict", "deny")], p.denied_bytes);
    }
    o.family("bulkhead_segment_pair_overflow_total", "counter", "Packets whose segment pair found no counter slot.");
    o.sample("bulkhead_segment_pair_overflow_total", &[], snapshot.pair_overflow);

    if let Some(ct) = &snapshot.conntrack {
        o.family("bulkhead_conntrack_entries", "gauge", "Flows in the connection-tracking tables now.");
        o.sample("bulkhead_conntrack_entries", &[], ct.entries);
        for (name, help, value) in [
            ("bulkhead_conntrack_inserts_total", "Flows inserted.", ct.inserts),
            ("bulkhead_conntrack_expiries_total", "Flows expired.", ct.expiries),
            ("bulkhead_conntrack_evictions_total", "Embryonic flows evicted for new ones.", ct.evictions),
            ("bulkhead_conntrack_table_full_total", "New flows dropped because the table was full.", ct.table_full),
            ("bulkhead_conntrack_revoked_total", "Flows revoked by a new policy.", ct.revoked),
            ("bulkhead_conntrack_hits_total", "Packets that hit a tracked flow.", ct.hits),
            ("bulkhead_conntrack_related_total", "ICMP errors passed as related to a tracked flow.", ct.related),
            ("bulkhead_conntrack_rechecked_total", "Flows re-checked against a new policy and kept.", ct.rechecked),
            (
                "bulkhead_conntrack_fragments_tracked_total",
                "First fragments recorded for their datagram's later fragments.",
                ct.fragments_tracked,
            ),
            (
                "bulkhead_conntrack_fragment_overwrites_total",
                "Fragment-table entries overwritten before they expired.",
                ct.fragment_overwrites,
            ),
        ] {
            o.family(name, "counter", help);
            o.sample(name, &[], value);
        }
    }

    // Workers.
    // Per-worker counters: name, help, and how to read it from a worker's snapshot.
    type Read = fn(&WorkerSnapshot) -> u64;
    let per_worker: [(&str, &str, Read); 4] = [
        ("bulkhead_worker_polls_total", "Poll rounds of the worker.", |w| w.polls),
        ("bulkhead_worker_busy_polls_total", "Poll rounds of the worker that received packets.", |w| w.busy_polls),
        (
            "bulkhead_worker_busy_cycles_total",
            "Timestamp-counter cycles the worker spent in poll rounds that received packets (divided by its received packets: cycles per packet).",
            |w| w.busy_cycles,
        ),
        (
            "bulkhead_worker_handed_off_total",
            "ICMP errors the worker handed to the next worker because it tracks no flow they quote.",
            |w| w.handed_off,
        ),
    ];
    for (name, help, value) in per_worker {
        o.family(name, "counter", help);
        for (i, w) in snapshot.workers.iter().enumerate() {
            o.sample(name, &[("worker", &i.to_string())], value(w));
        }
    }
    o.family(
        "bulkhead_worker_events_dropped_total",
        "counter",
        "Security events a worker could not hand over because the channel to the management thread was full.",
    );
    for (i, dropped) in snapshot.worker_events_dropped.iter().enumerate() {
        o.sample("bulkhead_worker_events_dropped_total", &[("worker", &i.to_string())], *dropped);
    }
    o.family(
        "bulkhead_worker_busy_ratio",
        "gauge",
        "Share of the worker's poll rounds that received packets, since start (rate() of the two counters gives it over a window).",
    );
    for (i, w) in snapshot.workers.iter().enumerate() {
        o.sample("bulkhead_worker_busy_ratio", &[("worker", &i.to_string())], F(w.busy_ratio()));
    }
    o.family("bulkhead_worker_heartbeat_age_seconds", "gauge", "Seconds since the worker last started a poll round.");
    for (i, age) in extra.worker_heartbeat_age_secs.iter().enumerate() {
        o.sample("bulkhead_worker_heartbeat_age_seconds", &[("worker", &i.to_string())], F(*age));
    }

    // Security events.
    let events = extra.events.unwrap_or_default();
    o.family("bulkhead_events_observed_total", "counter", "Packet observations handed to the security-event aggregator.");
    o.sample("bulkhead_events_observed_total", &[], events.observed);
    o.family("bulkhead_events_emitted_total", "counter", "Security events emitted to the sinks.");
    o.sample("bulkhead_events_emitted_total", &[], events.emitted);
    o.family("bulkhead_events_suppressed_total", "counter", "Security events not emitted, by cause (rate_limit, table_full).");
    o.sample("bulkhead_events_suppressed_total", &[("cause", "rate_limit")], events.suppressed);
    o.sample("bulkhead_events_suppressed_total", &[("cause", "table_full")], events.table_full);
    o.family("bulkhead_event_sink_messages_total", "counter", "Messages per event sink, by result (sent, queue_full, failed).");
    for (sink, s) in &extra.sinks {
        o.sample("bulkhead_event_sink_messages_total", &[("sink", sink), ("result", "sent")], s.sent);
        o.sample("bulkhead_event_sink_messages_total", &[("sink", sink), ("result", "queue_full")], s.queue_full);
        o.sample("bulkhead_event_sink_messages_total", &[("sink", sink), ("result", "failed")], s.failed);
    }
    o.s
}

/// An `f64` written as Prometheus reads it (`+Inf`, `-Inf`, `NaN`).
struct F(f64);

impl std::fmt::Display for F {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_nan() {
            f.write_str("NaN")
        } else if self.0.is_infinite() {
            f.write_str(if self.0 > 0.0 { "+Inf" } else { "-Inf" })
        } else {
            write!(f, "{}", self.0)
        }
    }
}

#[derive(Default)]
struct Out {
    s: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.s, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.s, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        write_sample(&mut self.s, name, labels, value);
    }
}

fn write_sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape_label_value(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes HELP text: backslash and line feed.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    use dataplane::dpdk::PortStats;

    use super::*;
    use crate::stats::{PairSnapshot, PortSnapshot, RuleSnapshot, WorkerSnapshot};

    /// A snapshot with every kind of figure, and label values that need escaping.
    /// Every metric the Grafana dashboard queries is one bulkhead exports.
    #[test]
    fn the_dashboard_queries_exported_metrics() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/grafana-dashboard.json");
        let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let (snapshot, extra) = sample();
        let text = render(&snapshot, &extra);
        let families: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
        let mut checked = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for (i, _) in expr.match_indices("bulkhead_") {
                    let name: String = expr[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    assert!(families.contains(&name.as_str()), "panel {:?} queries {name}, which is not exported", panel["title"]);
                    checked += 1;
                }
            }
        }
        assert!(checked >= 14, "the dashboard queries the metrics ({checked})");
    }

    fn sample() -> (Snapshot, Extra) {
        let drops = DropReason::ALL
            .iter()
            .map(|&r| (r, if r == DropReason::PolicyDeny { 7 } else { 0 }))
            .collect();
        let snapshot = Snapshot {
            uptime_secs: 12.5,
            tsc_hz: 2_000_000_000,
            policy_version: 3,
            ports: vec![
                PortSnapshot {
                    name: "west".into(),
                    rx_packets: 100,
                    rx_bytes: 64_000,
                    tx_packets: 90,
                    tx_bytes: 57_600,
                    driver: Some(PortStats { rx_missed: 4, rx_errors: 2, tx_errors: 1, rx_nombuf: 5, ..Default::default() }),
                },
                PortSnapshot { name: "ea\"st\\\nx".into(), rx_packets: 90, ..Default::default() },
            ],
            drops,
            rules: vec![
                RuleSnapshot { name: "web-to-api".into(), packets: 80, bytes: 51_200 },
                RuleSnapshot { name: "dns".into(), packets: 0, bytes: 0 },
            ],
            default_packets: 7,
            intra_segment_packets: 2,
            pairs: vec![PairSnapshot {
                src: "web".into(),
                dst: "api".into(),
                allowed_packets: 80,
                allowed_bytes: 51_200,
                denied_packets: 7,
                denied_bytes: 420,
            }],
            pair_overflow: 0,
            workers: vec![
                WorkerSnapshot { polls: 1000, busy_polls: 250, busy_cycles: 90_000, rx_packets: 1000, handed_off: 0 },
                WorkerSnapshot::default(),
            ],
            conntrack: Some(crate::stats::ConntrackSnapshot { entries: 3, inserts: 9, expiries: 6, ..Default::default() }),
            worker_events_dropped: vec![0, 3],
        };
        let extra = Extra {
            policy_sha256: Some(crate::export::policy_digest(b"segments: []\n")),
            reloads_ok: 2,
            reloads_error: 1,
            worker_heartbeat_age_secs: vec![0.001, f64::INFINITY],
            events: Some(AggregatorStats { observed: 10, emitted: 4, suppressed: 5, table_full: 1 }),
            sinks: vec![("syslog".into(), SinkStats { sent: 4, queue_full: 0, failed: 2 })],
        };
        (snapshot, extra)
    }

    #[test]
    fn exact_lines() {
        let (s, e) = sample();
        let text = render(&s, &e);
        for line in [
            "# TYPE bulkhead_port_rx_packets_total counter",
            "bulkhead_port_rx_packets_total{port=\"west\"} 100",
            "bulkhead_port_rx_packets_total{port=\"ea\\\"st\\\\\\nx\"} 90",
            "bulkhead_port_rx_bytes_total{port=\"west\"} 64000",
            "bulkhead_port_rx_missed_total{port=\"west\"} 4",
            "bulkhead_port_errors_total{port=\"west\",direction=\"rx\"} 2",
            "bulkhead_port_errors_total{port=\"west\",direction=\"tx\"} 1",
            "bulkhead_drops_total{reason=\"policy_deny\"} 7",
            "bulkhead_drops_total{reason=\"truncated_ethernet\"} 0",
            "bulkhead_rule_packets_total{rule=\"web-to-api\"} 80",
            "bulkhead_rule_bytes_total{rule=\"web-to-api\"} 51200",
            "bulkhead_segment_packets_total{src=\"web\",dst=\"api\",verdict=\"allow\"} 80",
            "bulkhead_segment_bytes_total{src=\"web\",dst=\"api\",verdict=\"deny\"} 420",
            "bulkhead_policy_version 3",
            "bulkhead_policy_info{version=\"3\",sha256=\"5a0a4e3a6a2d8d6c5bd9e8c07b8f0b2dc9a1f2c31c8d1f7e4a2b1a7c9e0d3f21\"} 1",
            "bulkhead_policy_reloads_total{result=\"ok\"} 2",
            "bulkhead_policy_reloads_total{result=\"error\"} 1",
            "bulkhead_worker_busy_cycles_total{worker=\"0\"} 90000",
            "bulkhead_worker_busy_ratio{worker=\"0\"} 0.25",
            "bulkhead_worker_busy_ratio{worker=\"1\"} 0",
            "bulkhead_worker_heartbeat_age_seconds{worker=\"1\"} +Inf",
            "bulkhead_uptime_seconds 12.5",
            "bulkhead_events_suppressed_total{cause=\"rate_limit\"} 5",
            "bulkhead_event_sink_messages_total{sink=\"syslog\",result=\"failed\"} 2",
        ] {
            let line = if line.contains("sha256=") {
                line.replace(
                    "5a0a4e3a6a2d8d6c5bd9e8c07b8f0b2dc9a1f2c31c8d1f7e4a2b1a7c9e0d3f21",
                    e.policy_sha256.as_deref().unwrap_or(""),
                )
            } else {
                line.to_string()
            };
            assert!(text.lines().any(|l| l == line), "missing line {line:?} in:\n{text}");
        }
        // Every reason, once.
        assert_eq!(text.lines().filter(|l| l.starts_with("bulkhead_drops_total{")).count(), DropReason::COUNT);
        // One HELP and one TYPE per family, before its samples.
        let types: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
        let mut names: Vec<&str> = types.iter().filter_map(|t| t.split(' ').next()).collect();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "a family declared twice");
        assert!(text.ends_with('\n'));
    }

    fn tool(name: &str) -> bool {
        Command::new(name).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    }

    fn run_with_stdin(cmd: &mut Command, input: &str) -> std::process::Output {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn parser");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write to parser");
        child.wait_with_output().expect("parser output")
    }

    const PY_PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        print(json.dumps({"family": fam.name, "type": fam.type, "name": s.name, "labels": s.labels, "value": str(s.value)}))
"#;

    fn python_client() -> bool {
        Command::new("python3")
            .args(["-c", "import prometheus_client.parser"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Parses the exposition with real Prometheus parsers: `promtool check metrics`
    /// (Debian package `prometheus`; it also lints names, units and HELP) and the
    /// official Python client's parser (PyPI `prometheus_client`), reading the values
    /// and the unescaped labels back.
    #[test]
    fn real_parsers_accept_it() {
        let (s, e) = sample();
        let text = render(&s, &e);
        let (have_promtool, have_python) = (tool("promtool"), python_client());
        if !have_promtool && !have_python {
            let msg = "NEITHER promtool (apt-get install prometheus) NOR python3 prometheus_client (pip install \
                       prometheus_client) IS INSTALLED: the Prometheus exposition was NOT checked by a real parser";
            assert!(std::env::var_os("BULKHEAD_REQUIRE_PARSERS").is_none(), "{msg}");
            eprintln!("\n\n*** WARNING: {msg} ***\n");
            return;
        }
        if have_promtool {
            let out = run_with_stdin(Command::new("promtool").args(["check", "metrics"]), &text);
            assert!(
                out.status.success(),
                "promtool check metrics failed:\n{}{}\n--- input ---\n{text}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            eprintln!("*** promtool not installed (apt-get install prometheus): checked with prometheus_client only");
        }
        if have_python {
            let out = run_with_stdin(Command::new("python3").args(["-c", PY_PARSER]), &text);
            assert!(out.status.success(), "prometheus_client failed:\n{}", String::from_utf8_lossy(&out.stderr));
            let samples: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| serde_json::from_str(l).expect("parser output is JSON"))
                .collect();
            let find = |name: &str, label: (&str, &str)| -> f64 {
                samples
                    .iter()
                    .find(|s| s["name"] == name && s["labels"][label.0] == label.1)
                    .and_then(|s| s["value"].as_str().and_then(|v| v.parse().ok()))
                    .unwrap_or_else(|| panic!("no sample {name}{{{}={:?}}}", label.0, label.1))
            };
            assert_eq!(find("bulkhead_drops_total", ("reason", "policy_deny")), 7.0);
            assert_eq!(find("bulkhead_port_rx_packets_total", ("port", "ea\"st\\\nx")), 90.0, "label unescaped back");
            assert_eq!(find("bulkhead_worker_busy_ratio", ("worker", "0")), 0.25);
            assert_eq!(find("bulkhead_policy_info", ("version", "3")), 1.0);
            let counters = samples.iter().filter(|s| s["type"] == "counter").count();
            assert!(counters > DropReason::COUNT, "counters parsed as counters");
            assert_eq!(samples.len(), text.lines().filter(|l| !l.starts_with('#')).count(), "every sample parsed");
        } else {
            eprintln!("*** python3 prometheus_client not installed: checked with promtool only");
        }
    }

    #[test]
    fn empty_snapshot_is_valid_too() {
        let text = render(&Snapshot::default(), &Extra::default());
        assert!(text.contains("bulkhead_policy_info{version=\"0\",sha256=\"\"} 1\n"));
        assert!(text.contains("bulkhead_drops_total{reason=\"policy_deny\"} 0\n"));
        if tool("promtool") {
            let out = run_with_stdin(Command::new("promtool").args(["check", "metrics"]), &text);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        }
    }
}
