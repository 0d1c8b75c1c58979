//! The run-to-completion poll loop.
//!
//! A worker owns a set of [`Path`]s, each one direction of a port pair: an rx queue on
//! one port and a tx queue on its partner. One round of the loop visits every path:
//! receive a burst into a stack array, parse it whole, prefetch the flow-table slots of
//! its packets (with conntrack), judge each packet ([`judge_parsed`]: connection tracking and the
//! current policy), move what is allowed into the path's pending tx burst and free what
//! is not (counted by reason). A pending burst is sent when it is full; when the rx
//! queue runs empty (a short or empty rx burst: nothing more to batch with), unless each
//! transmit costs a system call ([`TxQueue::syscall_per_burst`]: af_packet, af_xdp, tap,
//! pcap), where light traffic is batched; and every [`DRAIN_INTERVAL_US`] in any case. What the
//! NIC refuses is freed and counted as `tx_full`.
//!
//! With several workers, an ICMP error can reach a worker that does not track the flow
//! it quotes (the error has no ports of its own for RSS or the kernel's fanout to hash
//! by): such errors go round the other workers ([`Handoff`]) until one relates them to
//! its flow and forwards them, or all have said no (`ct_invalid`).
//!
//! On the packet path nothing allocates, locks, blocks or panics: bursts live on the
//! stack, counters are the worker's own, and the policy is read through an
//! [`arc_swap`] load between bursts (a new policy takes effect at the next burst).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use arrayvec::ArrayVec;
use crossbeam_channel::{Receiver, Sender};

use crate::conntrack::{Conntrack, Prefetch};
use crate::counters::{DropReason, PolicyCounters, WorkerCounters};
use crate::dpdk::{self, Mbuf, MbufBurst, RxQueue, TxQueue, BURST_SIZE};
use crate::packet::{self, PacketMeta, ParseError};
use crate::policy::{Decision, Mode, Policy, Verdict, Why};

/// How long a partly filled tx burst may wait for more packets, in microseconds.
pub const DRAIN_INTERVAL_US: u64 = 100;

/// Flow-table slots the incremental expiry sweep visits per round.
const CT_SWEEP_BUDGET: usize = 64;

/// A compiled policy as the workers run it, with one set of [`PolicyCounters`] per
/// worker, numbered like the policy.
#[derive(Debug)]
pub struct ActivePolicy {
    policy: Policy,
    counters: Box<[PolicyCounters]>,
}

impl ActivePolicy {
    /// Wraps `policy` for `workers` workers.
    pub fn new(policy: Policy, workers: usize) -> Self {
        let rules = policy.rule_count();
        ActivePolicy { policy, counters: (0..workers).map(|_| PolicyCounters::new(rules)).collect() }
    }

    /// The compiled policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The policy's version.
    pub fn version(&self) -> u64 {
        self.policy.version()
    }

    /// Each worker's counters for this policy, indexed by worker.
    pub fn counters(&self) -> &[PolicyCounters] {
        &self.counters
    }

    /// Counts a decision of worker `worker` on a packet of `len` bytes. Always inlined:
    /// out of line (the compiler's choice once it had a second caller) the judging loop
    /// lost about 10 cycles a packet on `net_null`.
    #[inline(always)]
    fn record(&self, worker: usize, decision: &Decision, len: u64) {
        let Some(c) = self.counters.get(worker) else { return };
        match decision.why {
            Why::Rule(id) => {
                if let Some(rule) = c.rules.get(id as usize) {
                    rule.add(len);
                }
            }
            Why::Default => c.default_action.add(len),
            Why::IntraSegmentDefault => c.intra_segment_default.add(len),
            Why::NonIp => return,
            Why::NeighborDiscovery | Why::UnknownSource | Why::UnknownDestination => {}
        }
        match c.pairs.slot(decision.src_segment, decision.dst_segment) {
            Some(slot) if decision.verdict.is_allow() => slot.allowed.add(len),
            Some(slot) => slot.denied.add(len),
            None => c.pairs.overflow.inc(),
        }
    }
}

/// The policy the workers enforce, published by the management thread. Empty until the
/// first policy is loaded: until then every packet is dropped (`no_policy`).
#[derive(Debug, Default)]
pub struct SharedPolicy {
    current: ArcSwapOption<ActivePolicy>,
}

impl SharedPolicy {
    /// An empty slot (fail closed).
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes `policy`; workers switch to it at their next round.
    pub fn publish(&self, policy: Arc<ActivePolicy>) {
        self.current.store(Some(policy));
    }

    /// The policy in force, if any.
    pub fn current(&self) -> Option<Arc<ActivePolicy>> {
        self.current.load_full()
    }
}

/// What the worker does with one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// A policy decision governs the frame; its verdict is the one to apply, connection
    /// tracking's own drops included.
    Decided {
        /// The decision.
        decision: Decision,
        /// Whether the classifier made it for this packet (rather than the packet's
        /// flow having cached it).
        fresh: bool,
    },
    /// Forward without a decision of its own: a later fragment of an allowed datagram.
    Pass,
    /// An ICMP error that quotes no flow this worker tracks (strict connection
    /// tracking): dropped as `ct_invalid`, unless another worker's table holds the flow
    /// (see [`Handoff`]).
    Unrelated,
    /// Drop for a reason no decision governs: malformed, no policy, no flow.
    Drop(DropReason),
}

/// Judges one frame the way the worker does: parse, then connection tracking (if
/// enabled) with the policy as its classifier, or the policy alone. Pure apart from
/// the flow table: testable on byte slices.
#[inline]
pub fn judge(frame: &[u8], active: Option<&ActivePolicy>, conntrack: Option<&mut Conntrack>, now_s: u32) -> Judgement {
    match packet::parse(frame) {
        Ok(meta) => judge_parsed(frame, &meta, active, conntrack, now_s),
        Err(e) => Judgement::Drop(e.into()),
    }
}

/// [`judge`] for a frame already parsed into `meta`.
#[inline]
pub fn judge_parsed(
    frame: &[u8],
    meta: &PacketMeta,
    active: Option<&ActivePolicy>,
    conntrack: Option<&mut Conntrack>,
    now_s: u32,
) -> Judgement {
    let Some(policy) = active.map(ActivePolicy::policy) else {
        return Judgement::Drop(DropReason::NoPolicy);
    };
    let Some(ct) = conntrack else {
        return Judgement::Decided { decision: policy.classify(meta), fresh: true };
    };
    let out = ct.process(frame, meta, policy.version(), now_s, |m| policy.classify(m));
    if out.kind == crate::conntrack::Kind::Unrelated {
        return Judgement::Unrelated;
    }
    match (out.decision, out.verdict) {
        (Some(decision), verdict) => Judgement::Decided { decision: Decision { verdict, ..decision }, fresh: out.fresh },
        (None, Verdict::Allow) => Judgement::Pass,
        (None, Verdict::Deny(reason)) => Judgement::Drop(reason),
    }
}

/// A decision worth a security event (a denied flow, or a rule with `log: true`), handed
/// from a worker to the management thread. Small and `Copy`: it travels through a
/// bounded channel, and a full channel is counted, never waited for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEvent {
    /// Version of the policy that decided.
    pub policy_version: u64,
    /// The packet, as parsed.
    pub meta: PacketMeta,
    /// The decision (verdict, why, segments).
    pub decision: Decision,
    /// Frame length in bytes.
    pub len: u32,
}

/// Most security events one worker hands over per second; the rest are counted in
/// `events_dropped`.
pub const EVENTS_PER_SECOND: u64 = 20_000;

/// A worker's end of the event channel, paced by the TSC.
struct EventGate {
    tx: Sender<FlowEvent>,
    /// TSC ticks between two events.
    interval: u64,
    /// No event before this TSC reading.
    next: u64,
}

impl EventGate {
    #[inline]
    fn offer(&mut self, now: u64, ev: FlowEvent, counters: &WorkerCounters) {
        if now < self.next {
            counters.events_dropped.inc();
            return;
        }
        match self.tx.try_send(ev) {
            Ok(()) => {
                counters.events_sent.inc();
                // Credit for at most a short burst after a quiet spell.
                self.next = self.next.max(now.saturating_sub(self.interval * 64)) + self.interval;
            }
            Err(_) => counters.events_dropped.inc(),
        }
    }
}

/// Whether a fresh decision goes to the management thread: a security event (a denial,
/// a rule with `log: true`, a monitor-mode violation) or a discover-mode observation.
#[inline]
fn is_event(decision: &Decision) -> bool {
    decision.log
        || decision.overridden
        || decision.mode == Mode::Discover
        || matches!(decision.verdict, Verdict::Deny(DropReason::PolicyDeny | DropReason::UnknownAddress))
}

/// One direction of a port pair, as one worker serves it.
#[derive(Debug)]
pub struct Path {
    /// Where packets come from.
    pub rx: RxQueue,
    /// Where allowed packets go.
    pub tx: TxQueue,
    /// Index of the rx port in the worker's per-port counters.
    pub rx_port: usize,
    /// Index of the tx port in the worker's per-port counters.
    pub tx_port: usize,
}

/// ICMP errors a worker could not relate to a flow of its own, passed round the workers:
/// worker `i` hands to worker `i + 1` (the last to the first) through a bounded queue,
/// and each asks its own flow table ([`Conntrack::relate`]). The first that finds the
/// flow forwards the error; after every worker has looked, it is dropped as
/// `ct_invalid`. A full queue drops it as `handoff_full`. ICMP errors are rare next to
/// the traffic they report on, so the queues are small and polled once a round.
#[derive(Debug)]
pub struct Handoff {
    next: Sender<Stray>,
    inbox: Receiver<Stray>,
    workers: usize,
}

/// One ICMP error on its way round the workers.
#[derive(Debug)]
pub struct Stray {
    mbuf: Mbuf,
    /// As the first worker parsed it (so that the packet path has one call of the
    /// parser, which the compiler then inlines).
    meta: PacketMeta,
    /// Index of the port it arrived on (it leaves on that port's partner).
    rx_port: usize,
    /// Workers that have looked for its flow before the one that holds it.
    hops: usize,
}

/// Strays each worker's queue holds.
pub const HANDOFF_QUEUE: usize = 256;

impl Handoff {
    /// The ring for `workers` workers, in worker order: give worker `i` element `i`.
    /// Also returns every queue's receiving end, to free what is still queued after the
    /// workers stopped ([`drain_strays`]).
    pub fn ring(workers: usize) -> (Vec<Handoff>, Vec<Receiver<Stray>>) {
        let (senders, inboxes): (Vec<_>, Vec<_>) =
            (0..workers).map(|_| crossbeam_channel::bounded::<Stray>(HANDOFF_QUEUE)).unzip();
        let ring = (0..workers)
            .map(|i| Handoff {
                next: senders[(i + 1) % workers].clone(),
                inbox: inboxes[i].clone(),
                workers,
            })
            .collect();
        (ring, inboxes)
    }

    /// Hands `stray` to the next worker; counted. Cold and out of line: rare, and kept
    /// out of the judging loop's code.
    #[cold]
    #[inline(never)]
    fn pass(&self, mut stray: Stray, counters: &WorkerCounters) {
        stray.hops += 1;
        match self.next.try_send(stray) {
            Ok(()) => counters.handed_off.inc(),
            // The stray (and its mbuf) is dropped, which frees it.
            Err(_) => counters.drop(DropReason::HandoffFull),
        }
    }
}

/// Frees the strays still queued (after every worker has stopped).
pub fn drain_strays(inboxes: &[Receiver<Stray>]) -> usize {
    inboxes.iter().map(|q| q.try_iter().count()).sum()
}

struct PathState {
    path: Path,
    pending: MbufBurst,
    /// Send a pending burst as soon as the rx queue runs empty (cheap transmits), rather
    /// than waiting for it to fill or for the drain timer (a system call per transmit).
    eager: bool,
}

/// A worker: its paths, the shared policy, its own counters, and the stop flag.
pub struct Worker {
    index: usize,
    conntrack: Option<Conntrack>,
    events: Option<EventGate>,
    handoff: Option<Handoff>,
    tsc_hz: u64,
    paths: Vec<PathState>,
    policy: Arc<SharedPolicy>,
    counters: Arc<WorkerCounters>,
    stop: Arc<AtomicBool>,
    drain_interval_tsc: u64,
    last_drain_tsc: u64,
}

impl Worker {
    /// Worker number `index` (its slot in [`ActivePolicy::counters`]) over `paths`.
    /// `counters` must have one port slot per port index used by the paths.
    pub fn new(
        index: usize,
        paths: Vec<Path>,
        policy: Arc<SharedPolicy>,
        counters: Arc<WorkerCounters>,
        stop: Arc<AtomicBool>,
        conntrack: Option<Conntrack>,
    ) -> Worker {
        let tsc_hz = dpdk::tsc_hz().max(1);
        let drain_interval_tsc = (tsc_hz / 1_000_000).max(1) * DRAIN_INTERVAL_US;
        Worker {
            index,
            conntrack,
            events: None,
            handoff: None,
            tsc_hz,
            paths: paths
                .into_iter()
                .map(|path| {
                    let eager = !path.tx.syscall_per_burst();
                    PathState { path, pending: MbufBurst::new(), eager }
                })
                .collect(),
            policy,
            counters,
            stop,
            drain_interval_tsc,
            last_drain_tsc: 0,
        }
    }

    /// Reports security events ([`FlowEvent`]) to `events` (a bounded channel), at
    /// most [`EVENTS_PER_SECOND`] a second: the management thread aggregates them per
    /// flow anyway, and a flood of denied packets must not turn into a flood of work
    /// (and cache pressure) beside the workers.
    pub fn with_events(mut self, events: Sender<FlowEvent>) -> Worker {
        let interval = (self.tsc_hz / EVENTS_PER_SECOND).max(1);
        self.events = Some(EventGate { tx: events, interval, next: 0 });
        self
    }

    /// Joins the ring of workers that pass round the ICMP errors none of them could
    /// relate on its own ([`Handoff::ring`]); only useful with connection tracking and
    /// more than one worker.
    pub fn with_handoff(mut self, handoff: Handoff) -> Worker {
        self.handoff = Some(handoff);
        self
    }

    /// Polls until the stop flag is raised, then sends what is pending. Returns 0.
    pub fn run(&mut self) -> i32 {
        while !self.stop.load(Ordering::Relaxed) {
            self.poll_once();
        }
        self.flush_all();
        0
    }

    /// One round over every path; returns the number of packets received.
    pub fn poll_once(&mut self) -> usize {
        let now = dpdk::tsc();
        self.counters.heartbeat_tsc.set(now);
        self.counters.polls.inc();
        // One policy load per round: a reload takes effect at the next round.
        let active = self.policy.current.load();
        let active = active.as_deref();
        self.counters.policy_version.set(active.map_or(0, ActivePolicy::version));
        let now_s = (now / self.tsc_hz) as u32;
        let mut received = 0;
        // Paths two at a time: receive, parse and start the flow lookups of both bursts
        // before judging either, so that the second rx burst hides the latency of the
        // first burst's flow-table prefetches.
        for pair in self.paths.chunks_mut(2) {
            let mut bursts = [Received::new(), Received::new()];
            for (state, burst) in pair.iter_mut().zip(bursts.iter_mut()) {
                receive(state, burst, active.and(self.conntrack.as_ref()));
            }
            if let (Some(ct), Some(_)) = (self.conntrack.as_ref(), active) {
                for burst in bursts.iter() {
                    for &h in burst.hints.iter() {
                        ct.prefetch_flow(h);
                    }
                }
            }
            for (state, burst) in pair.iter_mut().zip(bursts.iter_mut()) {
                received += judge_burst(
                    state,
                    burst,
                    active,
                    self.conntrack.as_mut(),
                    self.events.as_mut(),
                    self.handoff.as_ref(),
                    now,
                    now_s,
                    self.index,
                    &self.counters,
                );
            }
        }
        // Not counted as busy: the cycles per packet are those of received packets.
        self.serve_strays(active, now_s);
        if let Some(ct) = self.conntrack.as_mut() {
            ct.expire(now_s, CT_SWEEP_BUDGET);
        }
        if now.wrapping_sub(self.last_drain_tsc) >= self.drain_interval_tsc {
            self.flush_all();
            self.last_drain_tsc = now;
        }
        if received > 0 {
            self.counters.busy_polls.inc();
            self.counters.busy_cycles.add(dpdk::tsc().wrapping_sub(now));
        }
        received
    }

    /// Looks for the flows of the ICMP errors other workers handed over (at most a
    /// burst a round): forwards those it relates, hands the others on or drops them once
    /// every worker has looked. Out of line: rare work, kept out of `poll_once`.
    #[inline(never)]
    fn serve_strays(&mut self, active: Option<&ActivePolicy>, now_s: u32) {
        let (Some(handoff), Some(ct), Some(active)) = (self.handoff.as_ref(), self.conntrack.as_mut(), active) else {
            return;
        };
        // Empty, the common case: two loads (a receive on an empty queue would cost a fence).
        if handoff.inbox.is_empty() {
            return;
        }
        let counters = &*self.counters;
        let mut served = 0;
        while served < BURST_SIZE {
            let Ok(stray) = handoff.inbox.try_recv() else { break };
            served += 1;
            let found = ct.relate(stray.mbuf.data(), &stray.meta, active.version(), now_s);
            let path = self.paths.iter_mut().find(|p| p.path.rx_port == stray.rx_port);
            match (found, path) {
                (Some(decision), Some(state)) => {
                    active.record(self.index, &decision, u64::from(stray.mbuf.pkt_len()));
                    if state.pending.is_full() {
                        flush(state, counters);
                    }
                    let _ = state.pending.try_push(stray.mbuf);
                }
                // Others have not looked yet (with this one, `hops + 1` workers have).
                (None, _) if stray.hops + 1 < handoff.workers => handoff.pass(stray, counters),
                // Every worker looked: nobody tracks the flow it quotes.
                _ => counters.drop(DropReason::CtInvalid),
            }
        }
    }

    /// Sends every pending burst now.
    pub fn flush_all(&mut self) {
        for state in self.paths.iter_mut() {
            flush(state, &self.counters);
        }
    }
}

/// One received burst, parsed, with the first prefetch stage of its flow lookups issued.
struct Received {
    rx: MbufBurst,
    /// As the parser returned them: the error becomes a drop reason only for the
    /// packets dropped (converting every result on the way in cost the loop a copy of
    /// each 60-byte meta).
    parsed: ArrayVec<Result<PacketMeta, ParseError>, BURST_SIZE>,
    hints: ArrayVec<Prefetch, BURST_SIZE>,
}

impl Received {
    #[inline(always)]
    fn new() -> Received {
        Received { rx: MbufBurst::new(), parsed: ArrayVec::new(), hints: ArrayVec::new() }
    }
}

/// Receives one burst on `state`'s rx queue into `burst`, parses it whole, and with
/// connection tracking (`conntrack`, given only when a policy is in force) issues the
/// first prefetch stage of every packet's flow lookup ([`Conntrack::prefetch`]); the
/// caller issues the second ([`Conntrack::prefetch_flow`]) a little later, then
/// [`judge_burst`]. Hints only: what is decided does not depend on them.
#[inline]
fn receive(state: &mut PathState, burst: &mut Received, conntrack: Option<&Conntrack>) {
    if state.path.rx.rx_burst(&mut burst.rx) == 0 {
        return;
    }
    // Ask for every header of the burst at once, so their cache misses overlap.
    for m in burst.rx.iter() {
        m.prefetch_data();
    }
    for m in burst.rx.iter() {
        let _ = burst.parsed.try_push(packet::parse(m.data()));
    }
    if let Some(ct) = conntrack {
        for meta in burst.parsed.iter().flatten() {
            if let Some(h) = ct.prefetch(meta) {
                let _ = burst.hints.try_push(h);
            }
        }
    }
}

/// Judges a burst [`receive`]d on `state`, packet by packet in order: allowed packets
/// join the pending tx burst, the others are freed and counted. Returns the number of
/// packets.
#[allow(clippy::too_many_arguments)]
#[inline]
fn judge_burst(
    state: &mut PathState,
    burst: &mut Received,
    active: Option<&ActivePolicy>,
    mut conntrack: Option<&mut Conntrack>,
    mut events: Option<&mut EventGate>,
    handoff: Option<&Handoff>,
    now: u64,
    now_s: u32,
    worker: usize,
    counters: &WorkerCounters,
) -> usize {
    let n = burst.rx.len();
    if n == 0 {
        // The rx queue is empty: what an earlier full burst left pending goes now.
        if state.eager && !state.pending.is_empty() {
            flush(state, counters);
        }
        return 0;
    }
    let rx_port = &counters.ports[state.path.rx_port];
    let mut dropped = MbufBurst::new();
    let mut rx_bytes = 0u64;
    // The metas are read in place: moving each 60-byte `PacketMeta` out of the array
    // cost about 4 cycles a packet (3%, A/B on `net_null` and on the full policy).
    for (mbuf, parsed) in burst.rx.drain(..).zip(burst.parsed.iter()) {
        let len = u64::from(mbuf.pkt_len());
        rx_bytes += len;
        let frame = mbuf.data();
        let judgement = match parsed {
            Ok(meta) => {
                let j = judge_parsed(frame, meta, active, conntrack.as_deref_mut(), now_s);
                if let (Judgement::Decided { decision, fresh: true }, Some(gate), Some(active)) =
                    (j, events.as_deref_mut(), active)
                {
                    if is_event(&decision) {
                        let ev = FlowEvent { policy_version: active.version(), meta: *meta, decision, len: len as u32 };
                        gate.offer(now, ev, counters);
                    }
                }
                j
            }
            Err(e) => Judgement::Drop(DropReason::from(*e)),
        };
        let verdict = match judgement {
            Judgement::Decided { decision, .. } => {
                if let Some(active) = active {
                    active.record(worker, &decision, len);
                }
                decision.verdict
            }
            Judgement::Pass => Verdict::Allow,
            Judgement::Drop(reason) => Verdict::Deny(reason),
            Judgement::Unrelated => match (handoff, parsed) {
                (Some(h), Ok(meta)) if h.workers > 1 => {
                    h.pass(Stray { mbuf, meta: *meta, rx_port: state.path.rx_port, hops: 0 }, counters);
                    continue;
                }
                _ => Verdict::Deny(DropReason::CtInvalid),
            },
        };
        match verdict {
            Verdict::Allow => {
                if state.pending.is_full() {
                    flush(state, counters);
                }
                // Cannot fail: the burst was just flushed if it was full.
                let _ = state.pending.try_push(mbuf);
            }
            Verdict::Deny(reason) => {
                counters.drop(reason);
                let _ = dropped.try_push(mbuf);
            }
        }
    }
    burst.parsed.clear();
    rx_port.rx_packets.add(n as u64);
    rx_port.rx_bytes.add(rx_bytes);
    // A short burst means the rx queue is empty: send now rather than wait for the drain
    // timer, so that light traffic is not delayed (unless a transmit is a system call:
    // then batching is worth the wait). Under load bursts are full and tx stays batched.
    if state.pending.is_full() || (state.eager && n < dpdk::BURST_SIZE) {
        flush(state, counters);
    }
    dpdk::free_bulk(&mut dropped);
    n
}

/// Sends `state`'s pending burst; frees and counts what the NIC refused.
#[inline]
fn flush(state: &mut PathState, counters: &WorkerCounters) {
    if state.pending.is_empty() {
        return;
    }
    let offered_bytes = burst_bytes(&state.pending);
    let sent = state.path.tx.tx_burst(&mut state.pending);
    let refused = state.pending.len();
    let refused_bytes = if refused == 0 { 0 } else { burst_bytes(&state.pending) };
    dpdk::free_bulk(&mut state.pending);
    let tx_port = &counters.ports[state.path.tx_port];
    tx_port.tx_packets.add(sent as u64);
    tx_port.tx_bytes.add(offered_bytes - refused_bytes);
    if refused > 0 {
        counters.drop_n(DropReason::TxFull, refused as u64);
    }
}

#[inline]
fn burst_bytes(burst: &MbufBurst) -> u64 {
    burst.iter().map(|m| u64::from(m.pkt_len())).sum()
}
