//! Snapshots of the dataplane's counters, summed over workers, and their text report.
//!
//! The workers write their own counters; this module only reads them (relaxed loads), so
//! taking a snapshot never disturbs the packet path.

use std::fmt::Write as _;

use dataplane::counters::{ConntrackCounters, DropReason, WorkerCounters};
use dataplane::dpdk::PortStats;
use dataplane::worker::ActivePolicy;

/// One port's traffic as the workers counted it, plus the driver's own statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSnapshot {
    /// The port's name from the config.
    pub name: String,
    /// Packets the workers received on it.
    pub rx_packets: u64,
    /// Bytes the workers received on it.
    pub rx_bytes: u64,
    /// Packets the workers transmitted on it.
    pub tx_packets: u64,
    /// Bytes the workers transmitted on it.
    pub tx_bytes: u64,
    /// The driver's statistics (missed, errors, ...), if it gave them.
    pub driver: Option<PortStats>,
}

/// Packets and bytes one rule decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSnapshot {
    /// Rule name.
    pub name: String,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Traffic from one segment to another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PairSnapshot {
    /// Source segment name (`-` for an address in no segment).
    pub src: String,
    /// Destination segment name.
    pub dst: String,
    /// Packets allowed.
    pub allowed_packets: u64,
    /// Bytes allowed.
    pub allowed_bytes: u64,
    /// Packets denied.
    pub denied_packets: u64,
    /// Bytes denied.
    pub denied_bytes: u64,
}

/// Connection tracking, summed over workers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConntrackSnapshot {
    /// Flows tracked now.
    pub entries: u64,
    /// Flows inserted.
    pub inserts: u64,
    /// Flows expired.
    pub expiries: u64,
    /// Embryonic flows evicted for new ones.
    pub evictions: u64,
    /// New flows dropped because the table was full.
    pub table_full: u64,
    /// Flows revoked by a new policy.
    pub revoked: u64,
    /// Packets that hit a tracked flow.
    pub hits: u64,
    /// ICMP errors passed as related.
    pub related: u64,
}

impl ConntrackSnapshot {
    /// Sums the workers' conntrack counters.
    pub fn sum(counters: &[&ConntrackCounters]) -> Self {
        let mut s = ConntrackSnapshot::default();
        for c in counters {
            s.entries += c.entries.get();
            s.inserts += c.inserts.get();
            s.expiries += c.expiries.get();
            s.evictions += c.evictions.get();
            s.table_full += c.table_full.get();
            s.revoked += c.revoked.get();
            s.hits += c.hits.get();
            s.related += c.related.get();
        }
        s
    }
}

/// All counters at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Seconds since the ports started forwarding.
    pub uptime_secs: f64,
    /// Version of the policy in force (0: none).
    pub policy_version: u64,
    /// Per port.
    pub ports: Vec<PortSnapshot>,
    /// Drops by reason (every reason, zeros included).
    pub drops: Vec<(DropReason, u64)>,
    /// Per rule of the policy in force.
    pub rules: Vec<RuleSnapshot>,
    /// Packets decided by the default between segments.
    pub default_packets: u64,
    /// Packets decided by the intra-segment default.
    pub intra_segment_packets: u64,
    /// Per segment pair with traffic.
    pub pairs: Vec<PairSnapshot>,
    /// Packets whose segment pair found no counter slot.
    pub pair_overflow: u64,
    /// Per worker: (loop rounds, rounds that received packets).
    pub workers: Vec<(u64, u64)>,
    /// Connection tracking (`None` when disabled).
    pub conntrack: Option<ConntrackSnapshot>,
}

impl Snapshot {
    /// Sums `workers`' counters and the active policy's, naming ports with `port_names`.
    pub fn take(
        port_names: &[String],
        driver: &[Option<PortStats>],
        workers: &[&WorkerCounters],
        active: Option<&ActivePolicy>,
    ) -> Snapshot {
        let mut s = Snapshot {
            policy_version: active.map_or(0, ActivePolicy::version),
            ..Snapshot::default()
        };
        s.ports = port_names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut p = PortSnapshot { name: name.clone(), driver: driver.get(i).copied().flatten(), ..Default::default() };
                for w in workers {
                    if let Some(c) = w.ports.get(i) {
                        p.rx_packets += c.rx_packets.get();
                        p.rx_bytes += c.rx_bytes.get();
                        p.tx_packets += c.tx_packets.get();
                        p.tx_bytes += c.tx_bytes.get();
                    }
                }
                p
            })
            .collect();
        s.drops = DropReason::ALL
            .iter()
            .map(|&r| (r, workers.iter().map(|w| w.drops[r as usize].get()).sum()))
            .collect();
        s.workers = workers.iter().map(|w| (w.polls.get(), w.busy_polls.get())).collect();
        if let Some(active) = active {
            let policy = active.policy();
            s.rules = (0..policy.rule_count())
                .map(|id| {
                    let mut r = RuleSnapshot { name: policy.rule_name(id as u32).unwrap_or("?").to_string(), ..Default::default() };
                    for c in active.counters() {
                        if let Some(rc) = c.rules.get(id) {
                            r.packets += rc.packets.get();
                            r.bytes += rc.bytes.get();
                        }
                    }
                    r
                })
                .collect();
            let name = |id: Option<u16>| id.and_then(|id| policy.segment_name(id)).unwrap_or("-").to_string();
            let mut pairs: std::collections::BTreeMap<(String, String), PairSnapshot> = Default::default();
            for c in active.counters() {
                s.default_packets += c.default_action.packets.get();
                s.intra_segment_packets += c.intra_segment_default.packets.get();
                s.pair_overflow += c.pairs.overflow.get();
                for (src, dst, slot) in c.pairs.iter() {
                    let (src, dst) = (name(src), name(dst));
                    let p = pairs.entry((src.clone(), dst.clone())).or_insert_with(|| PairSnapshot { src, dst, ..Default::default() });
                    p.allowed_packets += slot.allowed.packets.get();
                    p.allowed_bytes += slot.allowed.bytes.get();
                    p.denied_packets += slot.denied.packets.get();
                    p.denied_bytes += slot.denied.bytes.get();
                }
            }
            s.pairs = pairs.into_values().collect();
        }
        s
    }

    /// Total drops, all reasons.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(|(_, n)| n).sum()
    }

    /// A human-readable report: ports, drops by reason (non-zero), rules, segment pairs.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "policy version {}, uptime {:.3} s", self.policy_version, self.uptime_secs);
        let _ = writeln!(out, "{:<12} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10}", "port", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "missed", "errors");
        for p in &self.ports {
            let (missed, errors) = p.driver.map_or((0, 0), |d| (d.rx_missed, d.rx_errors + d.tx_errors));
            let _ = writeln!(
                out,
                "{:<12} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10}",
                p.name, p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes, missed, errors
            );
        }
        let _ = writeln!(out, "drops: {} total", self.total_drops());
        for (reason, n) in self.drops.iter().filter(|(_, n)| *n > 0) {
            let _ = writeln!(out, "  {:<28} {:>12}  ({})", reason.name(), n, reason.description());
        }
        if !self.rules.is_empty() || self.default_packets + self.intra_segment_packets > 0 {
            let _ = writeln!(out, "rules:");
            for r in &self.rules {
                let _ = writeln!(out, "  {:<28} {:>12} packets {:>14} bytes", r.name, r.packets, r.bytes);
            }
            let _ = writeln!(out, "  {:<28} {:>12} packets", "(default)", self.default_packets);
            let _ = writeln!(out, "  {:<28} {:>12} packets", "(intra-segment default)", self.intra_segment_packets);
        }
        if !self.pairs.is_empty() {
            let _ = writeln!(out, "segment pairs:");
            for p in &self.pairs {
                let _ = writeln!(
                    out,
                    "  {:<14} -> {:<14} allowed {:>10} denied {:>10}",
                    p.src, p.dst, p.allowed_packets, p.denied_packets
                );
            }
        }
        if let Some(ct) = &self.conntrack {
            let _ = writeln!(
                out,
                "conntrack: {} flows, {} inserts, {} expiries, {} evictions, {} table-full drops, {} revoked, {} hits, {} related",
                ct.entries, ct.inserts, ct.expiries, ct.evictions, ct.table_full, ct.revoked, ct.hits, ct.related
            );
        }
        for (i, (polls, busy)) in self.workers.iter().enumerate() {
            let ratio = if *polls == 0 { 0.0 } else { *busy as f64 / *polls as f64 };
            let _ = writeln!(out, "worker {i}: {polls} polls, busy ratio {ratio:.3}");
        }
        out
    }
}
