//! Flow states, the TCP state machine and per-state timeouts. Pure functions, no table.

use crate::packet::tcp_flags::{ACK, FIN, RST, SYN};

/// Which way a packet travels relative to the flow's first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the originator (the sender of the flow's first packet).
    Original,
    /// From the responder.
    Reply,
}

/// The state of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum State {
    /// TCP: the originator's SYN seen, no answer yet. Embryonic.
    SynSent,
    /// TCP: the responder's SYN-ACK (or a simultaneous-open SYN) seen; waiting for the
    /// originator's ACK. Embryonic.
    SynRecv,
    /// TCP: the three-way handshake completed, or a flow picked up mid-stream (loose
    /// mode) answered by its responder.
    Established,
    /// TCP: one side sent a FIN (half-closed).
    FinWait,
    /// TCP: both sides sent a FIN.
    TimeWait,
    /// TCP: a RST was seen.
    Close,
    /// UDP, ICMP echo or another protocol, or a TCP flow picked up mid-stream (loose
    /// mode): packets seen from the originator only. Embryonic.
    Unreplied,
    /// UDP, ICMP echo or another protocol: packets seen both ways.
    Replied,
}

impl State {
    /// Whether a flow in this state has not yet been answered: the TCP handshake is
    /// not complete, or a pseudo-connection saw no reply. Only flows that were never
    /// answered may be evicted when the table is full (see
    /// [`super::FullPolicy::EvictEmbryonic`]).
    #[inline]
    pub fn is_embryonic(self) -> bool {
        matches!(self, State::SynSent | State::SynRecv | State::Unreplied)
    }
}

/// Flow timeouts, in seconds of the caller's clock. A flow expires when no packet
/// refreshed it for the timeout of its current state. Defaults follow Linux conntrack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP SYN-SENT and SYN-RECEIVED (default 120).
    pub tcp_syn: u32,
    /// TCP ESTABLISHED (default 7440, Linux's 2 h 4 min, above the 2 h keepalive).
    pub tcp_established: u32,
    /// TCP FIN-WAIT (one FIN) and TIME-WAIT (both FINs) (default 120).
    pub tcp_fin: u32,
    /// TCP after a RST (default 10).
    pub tcp_closed: u32,
    /// UDP, packets one way only (default 30).
    pub udp: u32,
    /// UDP, seen both ways (default 180).
    pub udp_stream: u32,
    /// ICMP and ICMPv6 echo (default 30).
    pub icmp: u32,
    /// Other protocols, tracked by address pair (default 600).
    pub other: u32,
    /// Fragment-table entries: how long later fragments follow their first one
    /// (default 30, like Linux's `ipfrag_time`).
    pub fragment: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn: 120,
            tcp_established: 7440,
            tcp_fin: 120,
            tcp_closed: 10,
            udp: 30,
            udp_stream: 180,
            icmp: 30,
            other: 600,
            fragment: 30,
        }
    }
}

/// What kind of protocol a flow follows: it picks the state machine and the timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProtoClass {
    Tcp,
    Udp,
    Icmp,
    Other,
}

impl Timeouts {
    /// The timeout of a flow of class `class` in state `state`.
    #[inline]
    pub(crate) fn of(&self, class: ProtoClass, state: State) -> u32 {
        match (class, state) {
            (_, State::SynSent | State::SynRecv) | (ProtoClass::Tcp, State::Unreplied) => self.tcp_syn,
            (_, State::Established) => self.tcp_established,
            (_, State::FinWait | State::TimeWait) => self.tcp_fin,
            (_, State::Close) => self.tcp_closed,
            (ProtoClass::Udp, State::Unreplied) => self.udp,
            (ProtoClass::Udp, State::Replied) => self.udp_stream,
            (ProtoClass::Icmp, _) => self.icmp,
            (ProtoClass::Tcp | ProtoClass::Other, _) => self.other,
        }
    }
}

/// FIN seen from the originator.
pub const FIN_ORIG: u8 = 1;
/// FIN seen from the responder.
pub const FIN_REPLY: u8 = 2;

/// The state a TCP flow starts in when its first packet has `flags`, or `None` when
/// such a packet may not start a flow. A SYN without ACK, RST and FIN starts one in
/// SYN-SENT; in `loose` mode any other packet without RST (and not SYN+FIN) is picked up
/// mid-stream as UNREPLIED: embryonic (evictable, the SYN timeout) until the responder
/// answers, so that a flood of unanswered mid-stream packets cannot fill the table with
/// flows that live for the established timeout and are never evicted. A RST never
/// starts a flow.
#[inline]
pub fn tcp_initial(flags: u8, loose: bool) -> Option<State> {
    let f = flags & (SYN | ACK | RST | FIN);
    if f & RST != 0 || f & (SYN | FIN) == SYN | FIN {
        return None;
    }
    if f == SYN {
        return Some(State::SynSent);
    }
    loose.then_some(State::Unreplied)
}

/// The TCP state machine: the state (and FIN bits, [`FIN_ORIG`] / [`FIN_REPLY`]) after
/// a packet with `flags` travelling `dir` in a flow in `state`.
///
/// Sequence numbers are not checked: the flow was allowed by the policy, and the state
/// only drives timeouts. Packets that fit no transition leave the state as it is.
///
/// - RST, either way, any state: CLOSE.
/// - UNREPLIED (picked up mid-stream): the first packet from the responder (not a SYN)
///   makes it ESTABLISHED, then counts as in ESTABLISHED (its FIN included).
/// - SYN (no ACK) from the originator in TIME-WAIT or CLOSE: the tuple is reused, back
///   to SYN-SENT with the FIN bits cleared. (From the responder it is not this flow's:
///   the caller classifies it; see `Conntrack::hit`.)
/// - SYN-SENT: SYN-ACK from the responder, or a SYN from it (simultaneous open):
///   SYN-RECEIVED.
/// - SYN-RECEIVED: ACK (no SYN) from the originator: ESTABLISHED.
/// - SYN-RECEIVED, ESTABLISHED, FIN-WAIT: a FIN records its side; one side: FIN-WAIT,
///   both sides: TIME-WAIT.
pub fn tcp_next(state: State, fins: u8, dir: Direction, flags: u8) -> (State, u8) {
    if flags & RST != 0 {
        return (State::Close, fins);
    }
    let syn = flags & SYN != 0;
    let ack = flags & ACK != 0;
    let fin = flags & FIN != 0;
    let state = match (state, dir) {
        (State::Unreplied, Direction::Reply) if !syn => State::Established,
        _ => state,
    };
    match (state, dir) {
        (State::TimeWait | State::Close, Direction::Original) if syn && !ack && !fin => {
            return (State::SynSent, 0)
        }
        (State::SynSent, Direction::Reply) if syn => return (State::SynRecv, fins),
        _ => {}
    }
    if syn {
        return (state, fins);
    }
    match state {
        State::SynRecv | State::Established | State::FinWait if fin => {
            let fins = fins
                | match dir {
                    Direction::Original => FIN_ORIG,
                    Direction::Reply => FIN_REPLY,
                };
            let next = if fins == FIN_ORIG | FIN_REPLY {
                State::TimeWait
            } else {
                State::FinWait
            };
            (next, fins)
        }
        State::SynRecv if ack && dir == Direction::Original => (State::Established, fins),
        _ => (state, fins),
    }
}

#[cfg(test)]
mod tests {
    use super::Direction::{Original as O, Reply as R};
    use super::State::*;
    use super::*;

    const SA: u8 = SYN | ACK;
    const FA: u8 = FIN | ACK;

    fn run(steps: &[(Direction, u8)]) -> (State, u8) {
        let mut s = tcp_initial(steps[0].1, false).unwrap();
        let mut f = 0;
        for &(d, fl) in &steps[1..] {
            (s, f) = tcp_next(s, f, d, fl);
        }
        (s, f)
    }

    #[test]
    fn initial_states() {
        assert_eq!(tcp_initial(SYN, false), Some(SynSent));
        assert_eq!(tcp_initial(SYN | 0x08, false), Some(SynSent)); // PSH ignored
        for f in [SA, ACK, FA, RST, RST | ACK, SYN | FIN, SYN | RST, 0] {
            assert_eq!(tcp_initial(f, false), None, "{f:#x}");
        }
        assert_eq!(tcp_initial(ACK, true), Some(Unreplied));
        assert_eq!(tcp_initial(SA, true), Some(Unreplied));
        assert_eq!(tcp_initial(FA, true), Some(Unreplied));
        assert_eq!(tcp_initial(RST | ACK, true), None);
        assert_eq!(tcp_initial(SYN | FIN, true), None);
    }

    #[test]
    fn handshake_and_orderly_close_both_ways() {
        assert_eq!(run(&[(O, SYN)]), (SynSent, 0));
        assert_eq!(run(&[(O, SYN), (R, SA)]), (SynRecv, 0));
        assert_eq!(run(&[(O, SYN), (R, SA), (O, ACK)]), (Established, 0));
        let est = [(O, SYN), (R, SA), (O, ACK)];
        // Originator closes first.
        let mut s = est.to_vec();
        s.push((O, FA));
        assert_eq!(run(&s), (FinWait, FIN_ORIG));
        s.push((R, ACK));
        assert_eq!(run(&s), (FinWait, FIN_ORIG));
        s.push((O, FA)); // retransmitted FIN
        assert_eq!(run(&s), (FinWait, FIN_ORIG));
        s.push((R, FA));
        assert_eq!(run(&s), (TimeWait, FIN_ORIG | FIN_REPLY));
        s.push((O, ACK));
        assert_eq!(run(&s), (TimeWait, FIN_ORIG | FIN_REPLY));
        // Responder closes first.
        let mut s = est.to_vec();
        s.push((R, FA));
        assert_eq!(run(&s), (FinWait, FIN_REPLY));
        s.push((O, FA));
        assert_eq!(run(&s), (TimeWait, FIN_ORIG | FIN_REPLY));
    }

    #[test]
    fn rst_closes_from_every_state_both_ways() {
        for st in [SynSent, SynRecv, Established, FinWait, TimeWait, Close] {
            for d in [O, R] {
                assert_eq!(tcp_next(st, 0, d, RST).0, Close);
                assert_eq!(tcp_next(st, 0, d, RST | ACK).0, Close);
            }
        }
        // Connection refused.
        assert_eq!(run(&[(O, SYN), (R, RST | ACK)]).0, Close);
    }

    #[test]
    fn odd_packets_leave_state() {
        // SYN retransmit, ACK from the wrong side, FIN before the handshake.
        assert_eq!(tcp_next(SynSent, 0, O, SYN), (SynSent, 0));
        assert_eq!(tcp_next(SynSent, 0, O, ACK), (SynSent, 0));
        assert_eq!(tcp_next(SynSent, 0, R, ACK), (SynSent, 0));
        assert_eq!(tcp_next(SynSent, 0, O, FA), (SynSent, 0));
        assert_eq!(tcp_next(SynRecv, 0, R, ACK), (SynRecv, 0));
        assert_eq!(tcp_next(SynRecv, 0, R, SA), (SynRecv, 0));
        assert_eq!(tcp_next(Established, 0, O, SYN), (Established, 0));
        assert_eq!(tcp_next(Established, 0, R, SA), (Established, 0));
        assert_eq!(tcp_next(Established, 0, O, ACK), (Established, 0));
        // SYN from the responder in TIME-WAIT does not reopen.
        assert_eq!(tcp_next(TimeWait, 3, R, SYN), (TimeWait, 3));
    }

    #[test]
    fn picked_up_flows_are_embryonic_until_answered() {
        // Loose pick-up: the originator alone keeps it unreplied, on the SYN timeout.
        assert_eq!(tcp_next(Unreplied, 0, O, ACK), (Unreplied, 0));
        assert_eq!(tcp_next(Unreplied, 0, O, FA), (Unreplied, 0));
        assert_eq!(Timeouts::default().of(ProtoClass::Tcp, Unreplied), 120);
        // The responder answers: established, and its FIN counts.
        assert_eq!(tcp_next(Unreplied, 0, R, ACK), (Established, 0));
        assert_eq!(tcp_next(Unreplied, 0, R, FA), (FinWait, FIN_REPLY));
        // A SYN from the responder does not establish it; a RST closes it.
        assert_eq!(tcp_next(Unreplied, 0, R, SYN), (Unreplied, 0));
        assert_eq!(tcp_next(Unreplied, 0, R, RST), (Close, 0));
    }

    #[test]
    fn simultaneous_open_and_fin_in_syn_recv() {
        assert_eq!(tcp_next(SynSent, 0, R, SYN), (SynRecv, 0));
        assert_eq!(tcp_next(SynRecv, 0, O, FA), (FinWait, FIN_ORIG));
    }

    #[test]
    fn reopen_after_close_or_time_wait() {
        assert_eq!(tcp_next(TimeWait, 3, O, SYN), (SynSent, 0));
        assert_eq!(tcp_next(Close, 1, O, SYN), (SynSent, 0));
        assert_eq!(tcp_next(Close, 0, O, SA), (Close, 0));
    }

    #[test]
    fn timeouts_per_state() {
        let t = Timeouts::default();
        use ProtoClass as C;
        assert_eq!(t.of(C::Tcp, SynSent), 120);
        assert_eq!(t.of(C::Tcp, SynRecv), 120);
        assert_eq!(t.of(C::Tcp, Established), 7440);
        assert_eq!(t.of(C::Tcp, FinWait), 120);
        assert_eq!(t.of(C::Tcp, TimeWait), 120);
        assert_eq!(t.of(C::Tcp, Close), 10);
        assert_eq!(t.of(C::Udp, Unreplied), 30);
        assert_eq!(t.of(C::Udp, Replied), 180);
        assert_eq!(t.of(C::Icmp, Unreplied), 30);
        assert_eq!(t.of(C::Icmp, Replied), 30);
        assert_eq!(t.of(C::Other, Unreplied), 600);
        assert_eq!(t.of(C::Other, Replied), 600);
        assert!(SynSent.is_embryonic() && SynRecv.is_embryonic() && Unreplied.is_embryonic());
        assert!(!Established.is_embryonic() && !Replied.is_embryonic() && !FinWait.is_embryonic());
    }
}
