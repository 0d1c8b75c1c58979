//! Snapshots of the dataplane's counters, summed over workers, and their text report.
//!
//! The workers write their own counters; this module only reads them (relaxed loads), so
//! taking a snapshot never disturbs the packet path.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use dataplane::counters::{ConntrackCounters, DropReason, WorkerCounters};
use dataplane::dpdk::PortStats;
use dataplane::worker::ActivePolicy;

/// One port's traffic as the workers counted it, plus the driver's own statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    #[serde(with = "serde_driver")]
    pub driver: Option<PortStats>,
}

/// Packets and bytes one rule decided.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSnapshot {
    /// Rule name.
    pub name: String,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Traffic from one segment to another.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Flows re-checked against a new policy and kept.
    #[serde(default)]
    pub rechecked: u64,
    /// First fragments recorded, for their datagram's later fragments to follow.
    #[serde(default)]
    pub fragments_tracked: u64,
    /// Fragment-table entries overwritten before they expired.
    #[serde(default)]
    pub fragment_overwrites: u64,
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
            s.rechecked += c.rechecked.get();
            s.fragments_tracked += c.fragments_tracked.get();
            s.fragment_overwrites += c.fragment_overwrites.get();
        }
        s
    }
}

/// Policy counters summed by name (rules, segment pairs), so that they survive reloads:
/// a reloaded policy starts counters of its own, and the management thread folds the
/// replaced policy's counts in here once no worker can still be writing them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyTotals {
    /// Packets and bytes per rule name.
    pub rules: std::collections::BTreeMap<String, (u64, u64)>,
    /// Per (source segment, destination segment) name.
    pub pairs: std::collections::BTreeMap<(String, String), PairSnapshot>,
    /// Packets decided by the default between segments.
    pub default_packets: u64,
    /// Packets decided by the intra-segment default.
    pub intra_segment_packets: u64,
    /// Packets whose segment pair found no counter slot.
    pub pair_overflow: u64,
}

impl PolicyTotals {
    /// Adds every worker's counters of `active`.
    pub fn add(&mut self, active: &ActivePolicy) {
        let policy = active.policy();
        let name = |id: Option<u16>| id.and_then(|id| policy.segment_name(id)).unwrap_or("-").to_string();
        for c in active.counters() {
            for (id, rc) in c.rules.iter().enumerate() {
                let r = self.rules.entry(policy.rule_name(id as u32).unwrap_or("?").to_string()).or_default();
                r.0 += rc.packets.get();
                r.1 += rc.bytes.get();
            }
            self.default_packets += c.default_action.packets.get();
            self.intra_segment_packets += c.intra_segment_default.packets.get();
            self.pair_overflow += c.pairs.overflow.get();
            for (src, dst, slot) in c.pairs.iter() {
                let (src, dst) = (name(src), name(dst));
                let p = self
                    .pairs
                    .entry((src.clone(), dst.clone()))
                    .or_insert_with(|| PairSnapshot { src, dst, ..Default::default() });
                p.allowed_packets += slot.allowed.packets.get();
                p.allowed_bytes += slot.allowed.bytes.get();
                p.denied_packets += slot.denied.packets.get();
                p.denied_bytes += slot.denied.bytes.get();
            }
        }
    }
}

/// One worker's loop counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerSnapshot {
    /// Loop rounds.
    pub polls: u64,
    /// Rounds that received packets.
    pub busy_polls: u64,
    /// Timestamp-counter cycles spent in the rounds that received packets.
    pub busy_cycles: u64,
    /// Packets the worker received, all its ports.
    pub rx_packets: u64,
    /// ICMP errors it handed to the next worker (it tracks no flow they quote).
    #[serde(default)]
    pub handed_off: u64,
}

impl WorkerSnapshot {
    /// Share of the rounds that received packets.
    pub fn busy_ratio(&self) -> f64 {
        if self.polls == 0 {
            0.0
        } else {
            self.busy_polls as f64 / self.polls as f64
        }
    }

    /// Cycles the worker spent per packet it received (0 before the first packet).
    pub fn cycles_per_packet(&self) -> f64 {
        if self.rx_packets == 0 {
            0.0
        } else {
            self.busy_cycles as f64 / self.rx_packets as f64
        }
    }
}

/// All counters at one instant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Seconds since the ports started forwarding.
    pub uptime_secs: f64,
    /// Timestamp-counter cycles per second (the unit of [`WorkerSnapshot::busy_cycles`]).
    #[serde(default)]
    pub tsc_hz: u64,
    /// Version of the policy in force (0: none).
    pub policy_version: u64,
    /// Per port.
    pub ports: Vec<PortSnapshot>,
    /// Drops by reason (every reason, zeros included); serialised as an object keyed by
    /// [`DropReason::name`].
    #[serde(with = "serde_drops")]
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
    /// Per worker.
    pub workers: Vec<WorkerSnapshot>,
    /// Connection tracking (`None` when disabled).
    pub conntrack: Option<ConntrackSnapshot>,
    /// Per worker: security events lost to a full channel.
    #[serde(default)]
    pub worker_events_dropped: Vec<u64>,
}

impl Snapshot {
    /// Sums `workers`' counters and the policy counters (`retired`: what the policies
    /// replaced by reloads counted, plus the active policy's), naming ports with
    /// `port_names`.
    pub fn take(
        port_names: &[String],
        driver: &[Option<PortStats>],
        workers: &[&WorkerCounters],
        active: Option<&ActivePolicy>,
        retired: &PolicyTotals,
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
        s.workers = workers
            .iter()
            .map(|w| WorkerSnapshot {
                polls: w.polls.get(),
                busy_polls: w.busy_polls.get(),
                busy_cycles: w.busy_cycles.get(),
                rx_packets: w.ports.iter().map(|p| p.rx_packets.get()).sum(),
                handed_off: w.handed_off.get(),
            })
            .collect();
        s.worker_events_dropped = workers.iter().map(|w| w.events_dropped.get()).collect();
        let mut totals = retired.clone();
        if let Some(active) = active {
            totals.add(active);
        }
        // Rules in the active policy's order, then rules only older policies had.
        let active_rules: Vec<String> = active.map_or_else(Vec::new, |a| {
            (0..a.policy().rule_count()).map(|id| a.policy().rule_name(id as u32).unwrap_or("?").to_string()).collect()
        });
        for name in &active_rules {
            let (packets, bytes) = totals.rules.get(name).copied().unwrap_or_default();
            s.rules.push(RuleSnapshot { name: name.clone(), packets, bytes });
        }
        for (name, &(packets, bytes)) in &totals.rules {
            if !active_rules.contains(name) {
                s.rules.push(RuleSnapshot { name: name.clone(), packets, bytes });
            }
        }
        s.default_packets = totals.default_packets;
        s.intra_segment_packets = totals.intra_segment_packets;
        s.pair_overflow = totals.pair_overflow;
        s.pairs = totals.pairs.into_values().collect();
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
                "conntrack: {} flows, {} inserts, {} expiries, {} evictions, {} table-full drops, {} revoked, {} hits, {} related, \
                 {} rechecked, {} fragments tracked, {} fragment overwrites",
                ct.entries,
                ct.inserts,
                ct.expiries,
                ct.evictions,
                ct.table_full,
                ct.revoked,
                ct.hits,
                ct.related,
                ct.rechecked,
                ct.fragments_tracked,
                ct.fragment_overwrites
            );
        }
        for (i, w) in self.workers.iter().enumerate() {
            let _ = write!(
                out,
                "worker {i}: {} polls, busy ratio {:.3}, {:.0} cycles/packet",
                w.polls,
                w.busy_ratio(),
                w.cycles_per_packet()
            );
            if w.handed_off > 0 {
                let _ = write!(out, ", {} ICMP errors handed to the next worker", w.handed_off);
            }
            let _ = writeln!(out);
        }
        out
    }
}

// ---- worker heartbeats (for `export::prometheus::Extra::worker_heartbeat_age_secs`) ------

/// Seconds since each worker's latest heartbeat, from timestamp-counter readings:
/// `now_tsc` is `dataplane::dpdk::tsc()` read now and `tsc_hz` is
/// `dataplane::dpdk::tsc_hz()`. A worker that never beat (heartbeat 0) reports the age
/// of the whole counter, i.e. a very large value, which is what an alert should see;
/// `tsc_hz == 0` gives zeros rather than a division by zero.
pub fn heartbeat_ages(workers: &[&WorkerCounters], now_tsc: u64, tsc_hz: u64) -> Vec<f64> {
    workers
        .iter()
        .map(|w| {
            if tsc_hz == 0 {
                return 0.0;
            }
            now_tsc.saturating_sub(w.heartbeat_tsc.get()) as f64 / tsc_hz as f64
        })
        .collect()
}

#[cfg(test)]
mod heartbeat_tests {
    use super::*;

    #[test]
    fn ages_in_seconds() {
        let (a, b) = (WorkerCounters::new(1), WorkerCounters::new(1));
        a.heartbeat_tsc.set(1_000);
        b.heartbeat_tsc.set(5_000);
        assert_eq!(heartbeat_ages(&[&a, &b], 3_000, 1_000), vec![2.0, 0.0]);
        assert_eq!(heartbeat_ages(&[&a], 3_000, 0), vec![0.0]);
    }
}

// ---- serde support (the control socket's `stats` answer) -------------------------------
//
// `PortStats` and `DropReason` live in the dataplane, which knows nothing of serde; these
// modules (de)serialise them here: driver statistics as a plain object, drops as an object
// keyed by reason name.

/// `Option<PortStats>` as `null` or an object with the driver's counters.
mod serde_driver {
    use dataplane::dpdk::PortStats;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Driver {
        rx_packets: u64,
        tx_packets: u64,
        rx_bytes: u64,
        tx_bytes: u64,
        rx_missed: u64,
        rx_errors: u64,
        tx_errors: u64,
        rx_nombuf: u64,
    }

    pub fn serialize<S: Serializer>(v: &Option<PortStats>, s: S) -> Result<S::Ok, S::Error> {
        v.map(|d| Driver {
            rx_packets: d.rx_packets,
            tx_packets: d.tx_packets,
            rx_bytes: d.rx_bytes,
            tx_bytes: d.tx_bytes,
            rx_missed: d.rx_missed,
            rx_errors: d.rx_errors,
            tx_errors: d.tx_errors,
            rx_nombuf: d.rx_nombuf,
        })
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PortStats>, D::Error> {
        Ok(Option::<Driver>::deserialize(d)?.map(|d| PortStats {
            rx_packets: d.rx_packets,
            tx_packets: d.tx_packets,
            rx_bytes: d.rx_bytes,
            tx_bytes: d.tx_bytes,
            rx_missed: d.rx_missed,
            rx_errors: d.rx_errors,
            tx_errors: d.tx_errors,
            rx_nombuf: d.rx_nombuf,
        }))
    }
}

/// `Vec<(DropReason, u64)>` as `{"policy_deny": 3, ...}` in `DropReason::ALL` order.
/// Reading, names this build does not know (a newer peer) are skipped, and every reason
/// this build knows but the peer did not send is filled in as zero.
mod serde_drops {
    use std::collections::BTreeMap;

    use dataplane::counters::DropReason;
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[(DropReason, u64)], s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(v.len()))?;
        for (reason, n) in v {
            map.serialize_entry(reason.name(), n)?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(DropReason, u64)>, D::Error> {
        let by_name = BTreeMap::<String, u64>::deserialize(d)?;
        Ok(DropReason::ALL.iter().map(|&r| (r, by_name.get(r.name()).copied().unwrap_or(0))).collect())
    }
}
