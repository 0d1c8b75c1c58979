//! Per-worker connection tracking: which flows the policy admitted, so that their
//! packets (both ways) pass without asking the classifier again, and nothing else does.
//!
//! # How the worker uses it
//!
//! One [`Conntrack`] per worker, created at start-up with every byte it will use
//! ([`Conntrack::new`]); both directions of a flow reach the same worker (symmetric
//! RSS), so the table is single-threaded and lock-free. For each parsed packet:
//!
//! ```ignore
//! let out = ct.process(frame, &meta, policy.version(), now_s, |m| policy.classify(m));
//! match out.verdict {
//!     Verdict::Allow => forward(mbuf),
//!     Verdict::Deny(reason) => { counters.drop(reason); free(mbuf) }
//! }
//! if out.fresh { /* out.decision is a new classification: rule counters, events */ }
//! ```
//!
//! and once per poll round `ct.expire(now_s, 64)` (incremental sweep). `now` is a
//! monotonic time in seconds supplied by the caller (e.g. TSC / tsc_hz, computed once
//! per round); nothing here reads a clock. The [`ConntrackCounters`] are shared with
//! the management thread; the worker is their only writer.
//!
//! # What [`Conntrack::process`] decides
//!
//! 1. **Non-IP frames** are classified and not tracked ([`Kind::Untracked`]).
//! 2. **Later fragments** (no ports) follow their first fragment: the verdict recorded
//!    for (source, destination, protocol, fragment id; for IPv6 without the protocol,
//!    as RFC 8200 reassembles: a later fragment names the first header of the
//!    fragmentable part, which need not be the upper-layer protocol the first fragment
//!    was classified by) when the first fragment passed
//!    here, for [`Timeouts::fragment`] seconds ([`Kind::Fragment`]). One that arrives
//!    before its first fragment, or after the record timed out, is dropped as
//!    [`DropReason::FragmentNoFlow`]: holding fragments is not implemented (senders
//!    retransmit). The fragment table is small, set-associative and soft: a full set
//!    overwrites the entry that expires first.
//! 3. **ICMP errors** (destination unreachable, time exceeded, parameter problem, packet
//!    too big; v4 and v6) are looked up by the datagram they quote
//!    ([`crate::packet::icmp::error_quote`]), which must have been sent by the error's
//!    destination: if that flow is tracked (and, under [`PolicyChange::Recheck`],
//!    admitted by the policy version in force), the error passes as [`Kind::Related`]
//!    (without refreshing the flow); otherwise it is [`Kind::Unrelated`] (dropped as
//!    [`DropReason::CtInvalid`] unless the worker finds its flow in another worker's
//!    table, [`Conntrack::relate`]) in strict mode and classified untracked in loose
//!    mode. Other ICMP messages that are not
//!    echo (neighbour discovery, router advertisements, ...) are classified, untracked.
//! 4. **A hit** (the key of either direction, not expired) passes with the flow's
//!    cached decision ([`Kind::Tracked`]), after the state machine ([`tcp_next`];
//!    pseudo-connections become [`State::Replied`] on the first reply) and the timeout
//!    of the new state. Packets that hit a flow's key without being its traffic are
//!    not passed on its decision: an echo request from the responder or an echo reply
//!    from the originator is classified on its own (untracked; a reply as the request
//!    it answers), and a SYN from the responder is classified as a new flow once the
//!    flow is closed (TIME-WAIT, CLOSE; the old flow gives way), passes during the
//!    handshake (simultaneous open) and is [`DropReason::CtInvalid`] once established.
//!    A TCP packet with SYN and FIN or RST is [`DropReason::CtInvalid`] on any flow.
//!    If the flow was admitted by another policy version and
//!    [`PolicyChange::Recheck`] is configured, the flow's *original direction* is
//!    classified again first (a reply is turned around, an echo reply becomes a
//!    request): allowed, the flow takes the new version and decision
//!    ([`Kind::Rechecked`]); denied, the flow is removed and the packet dropped as
//!    [`DropReason::CtRevoked`].
//! 5. **A miss**: may the packet start a flow? TCP: a SYN without ACK, RST or FIN
//!    (strict, the default); [`TcpMode::Loose`] also picks up mid-stream packets (not
//!    RST), as UNREPLIED until the responder answers (embryonic: evictable, the SYN
//!    timeout). UDP, SCTP, other protocols and ICMP echo requests: yes. An
//!    echo reply: no. If not, [`DropReason::CtInvalid`]. If so, the classifier decides
//!    the packet; denied: dropped with the policy's reason ([`Kind::Classified`]);
//!    allowed: the flow is inserted ([`Kind::New`]). If the table is full, flows expired
//!    near the new key's slot are reclaimed; then, with [`FullPolicy::EvictEmbryonic`],
//!    the embryonic flow ([`State::is_embryonic`]: SYN-SENT, SYN-RECEIVED, unreplied)
//!    nearest to expiry among the [`EVICT_WINDOW`] slots from the new key's home slot is
//!    evicted. Established flows are never evicted. If nothing can go, the packet is
//!    dropped as [`DropReason::CtTableFull`] (fail closed).
//! 6. A **first fragment** records its verdict (allow or the drop reason) for its later
//!    fragments.
//!
//! SCTP is tracked as a pseudo-connection with the UDP timeouts (no SCTP state
//! machine). The key is the normalised 5-tuple: both addresses and ports in ascending
//! order, the protocol, both VLAN ids and the family; the flow remembers which endpoint
//! is the originator.
//!
//! # Memory
//!
//! A flow is 64 bytes, one cache line (key 44, state, expiry, policy version, packed
//! decision), in a pool of `capacity` flows; the Robin Hood slot array that finds them
//! has capacity x 9/8 slots of 8 bytes (pool index, hash tag, distance). About 73 bytes
//! per flow of capacity ([`Conntrack::memory_bytes`]): 1,000,000 flows take 73 MB per
//! worker, allocated when the table is created.
//!
//! # Expiry
//!
//! Lazy: a lookup that finds an expired flow removes it and proceeds as for a miss.
//! Incremental: [`Conntrack::expire`] visits at most `budget` flow-pool entries per
//! call, from a cursor that wraps around the pool.

use std::net::IpAddr;
use std::sync::Arc;

use crate::counters::{ConntrackCounters, Counter, DropReason};
use crate::packet::{icmp, proto, tcp_flags, Fragment, PacketMeta, L4};
use crate::policy::{Decision, Mode, Verdict, Why};

mod frag;
mod key;
mod state;
mod table;
#[cfg(test)]
mod tests;

pub use state::{tcp_initial, tcp_next, Direction, State, Timeouts, FIN_ORIG, FIN_REPLY};

use key::{Hasher64, Key, ORIG_IS_LO};
use state::ProtoClass;
use table::{Flow, Table};

/// Slots searched, from the new key's home slot, for a flow to evict or reclaim when
/// the table is full.
pub const EVICT_WINDOW: usize = 32;

/// Which TCP packets may start a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TcpMode {
    /// Only a SYN without ACK, RST or FIN (the default).
    #[default]
    Strict,
    /// Also any packet without RST (picked up mid-stream, ESTABLISHED once the responder
    /// answers), e.g. after a
    /// restart of the appliance. The packet is classified in its own direction.
    Loose,
}

/// What a new flow does when the table is full (expired flows are always reclaimed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FullPolicy {
    /// Drop the new flow's packet (fail closed).
    Drop,
    /// Evict an embryonic flow near the new key's slot (see [`EVICT_WINDOW`]); drop the
    /// packet if there is none (the default).
    #[default]
    EvictEmbryonic,
}

/// What a new policy does to flows admitted by an older one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PolicyChange {
    /// Open flows keep passing.
    Keep,
    /// On its next packet, a flow is classified again by the new policy (the default).
    #[default]
    Recheck,
}

/// Connection-tracking configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Most flows per worker (default 1,000,000).
    pub capacity: usize,
    /// Entries of the fragment table (default 4096).
    pub fragment_capacity: usize,
    /// Timeouts per state.
    pub timeouts: Timeouts,
    /// Which TCP packets may start a flow.
    pub tcp_mode: TcpMode,
    /// What happens when the table is full.
    pub on_full: FullPolicy,
    /// What a new policy does to open flows.
    pub on_policy_change: PolicyChange,
    /// Hash seed; `None` (the default) draws one at random when the table is created,
    /// which is what resists hash flooding. Tests and benchmarks fix it.
    pub seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            capacity: 1_000_000,
            fragment_capacity: 4096,
            timeouts: Timeouts::default(),
            tcp_mode: TcpMode::Strict,
            on_full: FullPolicy::EvictEmbryonic,
            on_policy_change: PolicyChange::Recheck,
            seed: None,
        }
    }
}

/// What conntrack did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A packet of a tracked flow; the classifier was not called.
    Tracked {
        /// Which way it travels.
        direction: Direction,
        /// The flow's state after it.
        state: State,
    },
    /// A packet of a tracked flow admitted by another policy version, classified again
    /// and still allowed.
    Rechecked {
        /// Which way it travels.
        direction: Direction,
        /// The flow's state after it.
        state: State,
    },
    /// The first packet of a new flow: classified, allowed, inserted.
    New,
    /// An ICMP error quoting a tracked flow.
    Related,
    /// A later fragment, given its first fragment's verdict.
    Fragment,
    /// Classified and not tracked: non-IP frames, ICMP messages other than echo and
    /// errors, unrelated ICMP errors in loose mode.
    Untracked,
    /// A packet that may start a flow, denied by the classifier (nothing tracked).
    Classified,
    /// An ICMP error that quotes a datagram that could be a flow, but no flow of this
    /// table (strict mode): dropped as `ct_invalid`, unless the caller asks the other
    /// workers' tables
    /// ([`Conntrack::relate`]): with several workers, an error can reach another worker
    /// than the flow it quotes (it has no ports of its own to hash by).
    Unrelated,
    /// Dropped by conntrack itself; the verdict says why (`ct_invalid`,
    /// `ct_table_full`, `ct_revoked`, `fragment_no_flow`).
    Dropped,
}

/// The result of [`Conntrack::process`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Forward or drop (with the reason to count).
    pub verdict: Verdict,
    /// What happened.
    pub kind: Kind,
    /// The decision that governs the packet: the classifier's (when `fresh`) or the
    /// flow's cached one (a hit, or the flow a related ICMP error quotes; `log` is kept
    /// as cached). `None` when no decision applies (fragments, conntrack's own drops
    /// before classifying).
    pub decision: Option<Decision>,
    /// Whether the classifier was called for this packet (count the decision per rule,
    /// raise its event).
    pub fresh: bool,
}

impl Outcome {
    fn drop(reason: DropReason, decision: Option<Decision>, fresh: bool) -> Outcome {
        Outcome {
            verdict: Verdict::Deny(reason),
            kind: Kind::Dropped,
            decision,
            fresh,
        }
    }
}

/// A tracked flow as [`Conntrack::flow`] reports it (for inspection and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowInfo {
    /// Its state.
    pub state: State,
    /// When it expires.
    pub expires: u32,
    /// Low 32 bits of the policy version that admitted it.
    pub policy_version: u32,
    /// The cached decision.
    pub decision: Decision,
    /// The direction of the packet the flow was looked up with.
    pub direction: Direction,
}

/// The hash of a packet's flow key, from [`Conntrack::prefetch`] for
/// [`Conntrack::prefetch_flow`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefetch(u64);

/// One worker's connection-tracking state: the flow table and the fragment table.
#[derive(Debug)]
pub struct Conntrack {
    cfg: Config,
    table: Table,
    frags: frag::FragTable,
    hasher: Hasher64,
    cursor: usize,
    counters: Arc<ConntrackCounters>,
}

/// The tuple of a packet, as conntrack sees it.
struct Tuple {
    key: Key,
    hash: u64,
    src_is_lo: bool,
    class: ProtoClass,
}

impl Conntrack {
    /// A table for `cfg.capacity` flows and `cfg.fragment_capacity` fragments, all
    /// memory allocated now; `counters` are updated by this table only.
    pub fn new(cfg: Config, counters: Arc<ConntrackCounters>) -> Conntrack {
        let hasher = Hasher64::new(cfg.seed);
        counters.entries.set(0);
        Conntrack {
            table: Table::new(cfg.capacity),
            frags: frag::FragTable::new(cfg.fragment_capacity, Hasher64::new(cfg.seed.map(|s| !s))),
            hasher,
            cursor: 0,
            counters,
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The counters.
    pub fn counters(&self) -> &Arc<ConntrackCounters> {
        &self.counters
    }

    /// Flows in the table.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the table holds no flow.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Most flows the table holds.
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// Bytes allocated for the flow table and the fragment table.
    pub fn memory_bytes(&self) -> usize {
        self.table.bytes() + self.frags.bytes()
    }

    /// Decides one packet (see the [module documentation](self)): `frame` is the frame
    /// `meta` was parsed from (only read for ICMP errors), `policy_version` the version
    /// of the policy `classify` consults, `now` the time in seconds. `classify` is
    /// called at most once, only for packets that are not already decided by a flow.
    ///
    /// No allocation, no lock, no panic.
    #[inline]
    pub fn process(
        &mut self,
        frame: &[u8],
        meta: &PacketMeta,
        policy_version: u64,
        now: u32,
        mut classify: impl FnMut(&PacketMeta) -> Decision,
    ) -> Outcome {
        let Some((src, dst)) = meta.addrs else {
            return untracked(classify(meta));
        };
        if let Fragment::Later { id, .. } = meta.fragment {
            let k = frag_key(src, dst, meta, id);
            return match self.frags.get(&k, now) {
                Some(verdict) => Outcome {
                    verdict,
                    kind: Kind::Fragment,
                    decision: None,
                    fresh: false,
                },
                None => Outcome::drop(DropReason::FragmentNoFlow, None, false),
            };
        }
        let out = self.process_unfragmented(frame, meta, src, dst, policy_version, now, &mut classify);
        if let Fragment::First { id } = meta.fragment {
            let k = frag_key(src, dst, meta, id);
            self.counters.fragments_tracked.inc();
            let expires = now.saturating_add(self.cfg.timeouts.fragment);
            if self.frags.insert(k, out.verdict, now, expires) == frag::Inserted::Overwrote {
                self.counters.fragment_overwrites.inc();
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn process_unfragmented(
        &mut self,
        frame: &[u8],
        meta: &PacketMeta,
        src: IpAddr,
        dst: IpAddr,
        policy_version: u64,
        now: u32,
        classify: &mut impl FnMut(&PacketMeta) -> Decision,
    ) -> Outcome {
        let loose = self.cfg.tcp_mode == TcpMode::Loose;
        let v6 = src.is_ipv6();
        let tags = key::tags(meta.outer_vlan, meta.inner_vlan, v6);
        let icmp_proto = if v6 { proto::ICMPV6 } else { proto::ICMP };
        // The tuple, and whether this packet may start a flow.
        let (sport, dport, class, initial) = match meta.l4 {
            L4::Ports { src, dst } => match meta.proto {
                proto::TCP => (src, dst, ProtoClass::Tcp, tcp_initial(meta.tcp_flags, loose)),
                _ => (src, dst, ProtoClass::Udp, Some(State::Unreplied)),
            },
            L4::Icmp { ty, id, .. } if meta.proto == icmp_proto => match icmp::kind(meta.proto, ty) {
                icmp::Kind::EchoRequest => (id, id, ProtoClass::Icmp, Some(State::Unreplied)),
                icmp::Kind::EchoReply => (id, id, ProtoClass::Icmp, None),
                icmp::Kind::Error => return self.related(frame, meta, tags, policy_version, now, loose, classify),
                icmp::Kind::Other => return untracked(classify(meta)),
            },
            L4::Icmp { .. } => return untracked(classify(meta)),
            L4::None => (0, 0, ProtoClass::Other, Some(State::Unreplied)),
        };
        let (key, src_is_lo) = key::make(key::words(src), sport, key::words(dst), dport, meta.proto, tags);
        let t = Tuple {
            hash: self.hasher.key(&key),
            key,
            src_is_lo,
            class,
        };
        if let Some(i) = self.table.find(&t.key, t.hash) {
            if let Some(out) = self.hit(i, &t, meta, policy_version, now, classify) {
                return out;
            }
        }
        // A miss (or an expired flow, now removed).
        let Some(state) = initial else {
            return Outcome::drop(DropReason::CtInvalid, None, false);
        };
        let decision = classify(meta);
        if !decision.verdict.is_allow() {
            return Outcome {
                verdict: decision.verdict,
                kind: Kind::Classified,
                decision: Some(decision),
                fresh: true,
            };
        }
        let flow = Flow {
            key: t.key,
            expires: now.saturating_add(self.cfg.timeouts.of(t.class, state)),
            version: policy_version as u32,
            rule: 0,
            src_seg: 0,
            dst_seg: 0,
            why: 0,
            state,
            flags: if t.src_is_lo { ORIG_IS_LO } else { 0 },
        };
        let flow = pack_decision(flow, &decision);
        if self.table.len() >= self.table.capacity() && !self.make_room(t.hash, now) {
            self.counters.table_full.inc();
            return Outcome::drop(DropReason::CtTableFull, Some(decision), true);
        }
        match self.table.insert(flow, t.hash) {
            Ok(_) => {
                self.counters.inserts.inc();
                self.counters.entries.set(self.table.len() as u64);
                Outcome {
                    verdict: Verdict::Allow,
                    kind: Kind::New,
                    decision: Some(decision),
                    fresh: true,
                }
            }
            Err(table::Full) => {
                self.counters.table_full.inc();
                Outcome::drop(DropReason::CtTableFull, Some(decision), true)
            }
        }
    }

    /// A packet whose key is in slot `i`. `None` when the flow had expired or gave way to
    /// a new one (removed): the caller proceeds as for a miss.
    #[inline]
    fn hit(
        &mut self,
        i: usize,
        t: &Tuple,
        meta: &PacketMeta,
        policy_version: u64,
        now: u32,
        classify: &mut impl FnMut(&PacketMeta) -> Decision,
    ) -> Option<Outcome> {
        let flow = *self.table.get(i)?;
        if now >= flow.expires {
            self.remove_flow(i, |c| &c.expiries);
            return None;
        }
        let direction = if t.src_is_lo == (flow.flags & ORIG_IS_LO != 0) {
            Direction::Original
        } else {
            Direction::Reply
        };
        match t.class {
            // An echo flow is the originator's requests and the responder's replies. A
            // request from the responder (or a reply from the originator) shares the
            // key but is not this flow's traffic: the policy decides it on its own.
            ProtoClass::Icmp => {
                let request = matches!(meta.l4, L4::Icmp { ty, .. } if icmp::kind(meta.proto, ty) == icmp::Kind::EchoRequest);
                if request != (direction == Direction::Original) {
                    let as_sent = if request { *meta } else { original_meta(meta, Direction::Reply) };
                    return Some(untracked(classify(&as_sent)));
                }
            }
            // SYN with FIN or RST is no valid TCP in any state (as for Linux conntrack);
            // passed on a flow it would reach hosts that read it their own way.
            ProtoClass::Tcp
                if meta.tcp_flags & tcp_flags::SYN != 0 && meta.tcp_flags & (tcp_flags::FIN | tcp_flags::RST) != 0 =>
            {
                return Some(Outcome::drop(DropReason::CtInvalid, None, false));
            }
            // A SYN from the responder (one that could open a flow: no ACK, RST or FIN)
            // opens a connection the other way: only a closed flow gives way to it
            // (classified as new by the caller); during the handshake, or before a flow
            // picked up mid-stream was answered, it is a simultaneous open or a
            // retransmission; anywhere else it is no valid part of this connection.
            ProtoClass::Tcp if direction == Direction::Reply && tcp_initial(meta.tcp_flags, false).is_some() => {
                match flow.state {
                    State::SynSent | State::SynRecv | State::Unreplied => {}
                    State::TimeWait | State::Close => {
                        self.remove_flow(i, |c| &c.expiries);
                        return None;
                    }
                    _ => return Some(Outcome::drop(DropReason::CtInvalid, None, false)),
                }
            }
            _ => {}
        }
        let mut fresh = None;
        if self.cfg.on_policy_change == PolicyChange::Recheck && flow.version != policy_version as u32 {
            let d = classify(&original_meta(meta, direction));
            if !d.verdict.is_allow() {
                self.remove_flow(i, |c| &c.revoked);
                return Some(Outcome::drop(DropReason::CtRevoked, Some(d), true));
            }
            self.counters.rechecked.inc();
            fresh = Some(d);
        }
        let timeouts = self.cfg.timeouts;
        let f = self.table.get_mut(i)?;
        if let Some(d) = fresh {
            *f = pack_decision(*f, &d);
            f.version = policy_version as u32;
        }
        let state = match t.class {
            ProtoClass::Tcp => {
                let (s, fins) = tcp_next(f.state, f.flags & (FIN_ORIG | FIN_REPLY), direction, meta.tcp_flags);
                f.flags = (f.flags & !(FIN_ORIG | FIN_REPLY)) | fins;
                s
            }
            _ if direction == Direction::Reply => State::Replied,
            _ => f.state,
        };
        f.state = state;
        f.expires = now.saturating_add(timeouts.of(t.class, state));
        let cached = unpack_decision(f);
        self.counters.hits.inc();
        Some(Outcome {
            verdict: Verdict::Allow,
            kind: match fresh {
                Some(_) => Kind::Rechecked { direction, state },
                None => Kind::Tracked { direction, state },
            },
            decision: Some(fresh.unwrap_or(cached)),
            fresh: fresh.is_some(),
        })
    }

    /// Removes the flow in slot `i`, counting it in `why` (expiries, evictions, ...) and
    /// keeping `entries` current.
    #[inline]
    fn remove_flow(&mut self, i: usize, why: impl Fn(&ConntrackCounters) -> &Counter) {
        self.table.remove(i);
        why(&self.counters).inc();
        self.counters.entries.set(self.table.len() as u64);
    }

    /// An ICMP error: related to a tracked flow, or not.
    #[allow(clippy::too_many_arguments)]
    fn related(
        &mut self,
        frame: &[u8],
        meta: &PacketMeta,
        tags: u32,
        policy_version: u64,
        now: u32,
        loose: bool,
        classify: &mut impl FnMut(&PacketMeta) -> Decision,
    ) -> Outcome {
        let Some(quoted) = self.quoted_key(frame, meta, tags) else {
            // Nothing any flow table could hold: no worker needs to look.
            return if loose { untracked(classify(meta)) } else { Outcome::drop(DropReason::CtInvalid, None, false) };
        };
        match self.flow_decision(&quoted, policy_version, now) {
            Some(d) => {
                self.counters.related.inc();
                Outcome {
                    verdict: Verdict::Allow,
                    kind: Kind::Related,
                    decision: Some(d),
                    fresh: false,
                }
            }
            None if loose => untracked(classify(meta)),
            None => Outcome { kind: Kind::Unrelated, ..Outcome::drop(DropReason::CtInvalid, None, false) },
        }
    }

    /// The flow key of the datagram an ICMP error quotes, if it could be a tracked flow:
    /// the quote parses, was sent by the error's destination, and is not itself an ICMP
    /// message other than echo.
    fn quoted_key(&self, frame: &[u8], meta: &PacketMeta, tags: u32) -> Option<Key> {
        let q = icmp::error_quote(frame, meta)?;
        if Some(q.src) != meta.addrs.map(|(_, d)| d) {
            return None;
        }
        let (sp, dp) = match q.l4 {
            L4::Ports { src, dst } => (src, dst),
            L4::Icmp { ty, id, .. } if icmp::is_echo(q.proto, ty) => (id, id),
            L4::Icmp { .. } => return None,
            L4::None => (0, 0),
        };
        Some(key::make(key::words(q.src), sp, key::words(q.dst), dp, q.proto, tags).0)
    }

    /// The cached decision of the live flow with key `k`. Under [`PolicyChange::Recheck`]
    /// a flow admitted by another policy version vouches for nothing (here: for an ICMP
    /// error) until its own next packet re-checks it.
    fn flow_decision(&self, k: &Key, policy_version: u64, now: u32) -> Option<Decision> {
        let i = self.table.find(k, self.hasher.key(k))?;
        let recheck = self.cfg.on_policy_change == PolicyChange::Recheck;
        self.table
            .get(i)
            .filter(|f| now < f.expires && !(recheck && f.version != policy_version as u32))
            .map(unpack_decision)
    }

    /// For an ICMP error another worker's table found [`Kind::Unrelated`]: the cached
    /// decision of the flow of this table it quotes, if any (counted as related), by the
    /// same rules as [`Conntrack::process`]. `None` for anything else.
    pub fn relate(&mut self, frame: &[u8], meta: &PacketMeta, policy_version: u64, now: u32) -> Option<Decision> {
        let (src, _) = meta.addrs?;
        let L4::Icmp { ty, .. } = meta.l4 else { return None };
        let icmp_proto = if src.is_ipv6() { proto::ICMPV6 } else { proto::ICMP };
        if meta.proto != icmp_proto || icmp::kind(meta.proto, ty) != icmp::Kind::Error {
            return None;
        }
        let tags = key::tags(meta.outer_vlan, meta.inner_vlan, src.is_ipv6());
        let k = self.quoted_key(frame, meta, tags)?;
        let d = self.flow_decision(&k, policy_version, now)?;
        self.counters.related.inc();
        Some(d)
    }

    /// Table full: reclaims an expired flow near `hash`'s home slot, or (if so
    /// configured) evicts the embryonic flow there nearest to expiry. Whether a slot
    /// was freed.
    fn make_room(&mut self, hash: u64, now: u32) -> bool {
        let mut victim: Option<(usize, u32)> = None;
        let mut expired = None;
        for i in self.table.window(hash, EVICT_WINDOW) {
            let Some(f) = self.table.get(i) else { continue };
            if now >= f.expires {
                expired = Some(i);
                break;
            }
            if f.state.is_embryonic() && !matches!(victim, Some((_, e)) if e <= f.expires) {
                victim = Some((i, f.expires));
            }
        }
        if let Some(i) = expired {
            self.remove_flow(i, |c| &c.expiries);
            return true;
        }
        match victim {
            Some((i, _)) if self.cfg.on_full == FullPolicy::EvictEmbryonic => {
                self.remove_flow(i, |c| &c.evictions);
                true
            }
            _ => false,
        }
    }

    /// Removes flows expired at `now`, visiting at most `budget` entries of the flow
    /// pool from where the previous call stopped (call it once per poll round with a
    /// small budget, e.g. 64: the whole table is swept every `capacity / budget` rounds).
    /// The sweep reads the pool in memory order; only an expired flow costs a look at
    /// its slot. Returns the number of flows removed.
    pub fn expire(&mut self, now: u32, budget: usize) -> usize {
        let mut removed = 0;
        let entries = self.table.entries();
        let mut j = if self.cursor >= entries { 0 } else { self.cursor };
        for _ in 0..budget {
            if let Some(f) = self.table.entry(j) {
                if now >= f.expires {
                    let hash = self.hasher.key(&f.key);
                    removed += usize::from(self.table.remove_entry(j, hash));
                }
            }
            j = if j + 1 >= entries { 0 } else { j + 1 };
        }
        self.cursor = j;
        if removed > 0 {
            self.counters.expiries.add(removed as u64);
            self.counters.entries.set(self.table.len() as u64);
        }
        removed
    }

    /// First stage of a batched lookup, for a burst of packets about to be
    /// [`process`](Conntrack::process)ed: computes the hash of `meta`'s flow key and asks
    /// the CPU for the table's cache line where the lookup will start. Call it for every
    /// packet of the burst, then [`Conntrack::prefetch_flow`] for every packet, then
    /// `process` them: the memory latencies of the burst overlap instead of adding up.
    /// `None` for packets `process` does not look up by their own flow key (non-IP,
    /// later fragments, ICMP other than echo).
    ///
    /// A hint only: it reads and changes nothing, so the result of `process` is the same
    /// with or without it (and with the table changed in between).
    #[inline]
    pub fn prefetch(&self, meta: &PacketMeta) -> Option<Prefetch> {
        if matches!(meta.fragment, Fragment::Later { .. }) {
            return None;
        }
        let (k, _) = lookup_key(meta)?;
        let hash = self.hasher.key(&k);
        self.table.prefetch_home(hash);
        Some(Prefetch(hash))
    }

    /// Second stage of a batched lookup (see [`Conntrack::prefetch`]): reads the slot
    /// tags fetched by the first stage and asks for the flow the lookup will compare
    /// first. A hint only.
    #[inline]
    pub fn prefetch_flow(&self, p: Prefetch) {
        self.table.prefetch_flow(p.0);
    }

    /// The flow `meta` belongs to, if tracked and not expired at `now` (for `explain`,
    /// stats and tests; the packet path uses [`Conntrack::process`]).
    pub fn flow(&self, meta: &PacketMeta, now: u32) -> Option<FlowInfo> {
        let (k, src_is_lo) = lookup_key(meta)?;
        let f = self.table.get(self.table.find(&k, self.hasher.key(&k))?)?;
        (now < f.expires).then(|| FlowInfo {
            state: f.state,
            expires: f.expires,
            policy_version: f.version,
            decision: unpack_decision(f),
            direction: if src_is_lo == (f.flags & ORIG_IS_LO != 0) {
                Direction::Original
            } else {
                Direction::Reply
            },
        })
    }

    #[cfg(test)]
    fn check(&self) {
        self.table.check(|k| self.hasher.key(k));
    }
}

/// The flow key `meta` is looked up with, and whether its sender is the key's `lo`
/// endpoint; `None` for non-IP frames and ICMP other than echo.
#[inline]
fn lookup_key(meta: &PacketMeta) -> Option<(Key, bool)> {
    let (src, dst) = meta.addrs?;
    let (sp, dp) = match meta.l4 {
        L4::Ports { src, dst } => (src, dst),
        L4::Icmp { ty, id, .. } if icmp::is_echo(meta.proto, ty) => (id, id),
        L4::Icmp { .. } => return None,
        L4::None => (0, 0),
    };
    let tags = key::tags(meta.outer_vlan, meta.inner_vlan, src.is_ipv6());
    Some(key::make(key::words(src), sp, key::words(dst), dp, meta.proto, tags))
}

#[inline]
fn untracked(d: Decision) -> Outcome {
    Outcome {
        verdict: d.verdict,
        kind: Kind::Untracked,
        decision: Some(d),
        fresh: true,
    }
}

/// The fragment-table key of a fragment of datagram `id`: addresses, VLANs, family,
/// id, and for IPv4 the protocol (RFC 791's reassembly key). IPv6 reassembles by
/// addresses and id (RFC 8200): a later fragment's next header is the first header of
/// the fragmentable part (a destination-options header, say), not the upper-layer
/// protocol the parser found in the first fragment.
#[inline]
fn frag_key(src: IpAddr, dst: IpAddr, meta: &PacketMeta, id: u32) -> Key {
    Key {
        lo: key::words(src),
        hi: key::words(dst),
        ports: id,
        tags: key::tags(meta.outer_vlan, meta.inner_vlan, src.is_ipv6()),
        proto: if src.is_ipv6() { 0 } else { meta.proto },
    }
}

/// `meta` as the flow's originator sent it: a reply turned around (addresses, ports;
/// an echo reply becomes an echo request), for re-checking a flow against a new policy.
fn original_meta(meta: &PacketMeta, direction: Direction) -> PacketMeta {
    let mut m = *meta;
    m.fragment = Fragment::None;
    if direction == Direction::Original {
        return m;
    }
    m.addrs = meta.addrs.map(|(s, d)| (d, s));
    m.l4 = match meta.l4 {
        L4::Ports { src, dst } => L4::Ports { src: dst, dst: src },
        L4::Icmp { ty, code, id } => {
            let ty = match (meta.proto, ty) {
                (proto::ICMP, icmp::V4_ECHO_REPLY) => icmp::V4_ECHO_REQUEST,
                (proto::ICMPV6, icmp::V6_ECHO_REPLY) => icmp::V6_ECHO_REQUEST,
                _ => ty,
            };
            L4::Icmp { ty, code, id }
        }
        L4::None => L4::None,
    };
    if m.proto == proto::TCP {
        m.tcp_flags = tcp_flags::SYN;
    }
    m
}

const WHY_RULE: u8 = 0;
const WHY_DEFAULT: u8 = 1;
const WHY_INTRA: u8 = 2;
const WHY_ND: u8 = 3;
const WHY_NON_IP: u8 = 4;
const WHY_UNKNOWN_SRC: u8 = 5;
const WHY_UNKNOWN_DST: u8 = 6;
const WHY_MASK: u8 = 0x07;
const LOG: u8 = 0x08;
const SRC_SEG: u8 = 0x10;
const DST_SEG: u8 = 0x20;
/// The policy denied the flow's first packet; its segments' mode forwarded it.
const OVERRIDDEN: u8 = 0x40;
/// The flow's segments are in discover mode. With OVERRIDDEN this restores the mode of a
/// cached decision except "monitor, not overridden", which reads back as protect: only
/// fresh decisions raise events and observations, so nothing depends on it.
const DISCOVER: u8 = 0x80;

/// Stores an allowed decision in a flow's `rule`, `src_seg`, `dst_seg` and `why`.
fn pack_decision(mut f: Flow, d: &Decision) -> Flow {
    let (why, rule) = match d.why {
        Why::Rule(r) => (WHY_RULE, r),
        Why::Default => (WHY_DEFAULT, 0),
        Why::IntraSegmentDefault => (WHY_INTRA, 0),
        Why::NeighborDiscovery => (WHY_ND, 0),
        Why::NonIp => (WHY_NON_IP, 0),
        Why::UnknownSource => (WHY_UNKNOWN_SRC, 0),
        Why::UnknownDestination => (WHY_UNKNOWN_DST, 0),
    };
    f.rule = rule;
    f.why = why
        | if d.log { LOG } else { 0 }
        | if d.src_segment.is_some() { SRC_SEG } else { 0 }
        | if d.dst_segment.is_some() { DST_SEG } else { 0 }
        | if d.overridden { OVERRIDDEN } else { 0 }
        | if d.mode == Mode::Discover { DISCOVER } else { 0 };
    f.src_seg = d.src_segment.unwrap_or(0);
    f.dst_seg = d.dst_segment.unwrap_or(0);
    f
}

/// The cached decision of a flow (always an allow).
fn unpack_decision(f: &Flow) -> Decision {
    Decision {
        verdict: Verdict::Allow,
        why: match f.why & WHY_MASK {
            WHY_RULE => Why::Rule(f.rule),
            WHY_DEFAULT => Why::Default,
            WHY_INTRA => Why::IntraSegmentDefault,
            WHY_ND => Why::NeighborDiscovery,
            WHY_NON_IP => Why::NonIp,
            WHY_UNKNOWN_SRC => Why::UnknownSource,
            _ => Why::UnknownDestination,
        },
        src_segment: (f.why & SRC_SEG != 0).then_some(f.src_seg),
        dst_segment: (f.why & DST_SEG != 0).then_some(f.dst_seg),
        log: f.why & LOG != 0,
        mode: if f.why & DISCOVER != 0 {
            Mode::Discover
        } else if f.why & OVERRIDDEN != 0 {
            Mode::Monitor
        } else {
            Mode::Protect
        },
        overridden: f.why & OVERRIDDEN != 0,
    }
}
