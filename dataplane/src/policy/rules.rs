//! The rule index: which rule matches a packet first, given its segments.
//!
//! Every rule lives in exactly one *list*, chosen by its sides: per (source,
//! destination) pair, per source (`to: Any`), per destination (`from: Any`), or the one
//! `Any -> Any` list. The candidates for a packet between segments `s` and `d` are the
//! four lists of `(s, d)`, `(s, Any)`, `(Any, d)` and `(Any, Any)`; most are empty, and an
//! empty list costs one load and a branch. Memory stays linear in the rules.
//!
//! Inside a list, rules are not tried one by one. A list is cut by packet *class* (TCP,
//! UDP, ICMP, ICMPv6, other: the rules whose protocol can match, in rule order) into
//! *blocks* of at most 64 rules. A block holds a *filter table*: the key space of a
//! packet's layer-4 header (see [`packet_key`]: the destination port, or the ICMP type, or
//! "no layer 4") cut into sorted intervals, each with a 64-bit mask of the block's rules
//! that can match a key in it. Classification finds the interval of the packet's key
//! (a short branch-free search), and the lowest set bit of the mask is the first
//! candidate. The filter is exact for everything but source ports and a protocol of the
//! "other" class; a rule with such a constraint is checked in full ([`matches`]) before
//! it wins, the others win at once (the block's `exact` mask).

use std::collections::BTreeMap;

use super::spec::{PolicySpec, PortRange, ProtocolMatch, RuleId, SegmentId, SegmentMatch};
use super::{Action, CompileError};
use crate::packet::{proto, PacketMeta, L4};

/// Packet classes: the protocols with their own part of a list, then everything else.
const CLASSES: usize = 5;
/// The protocol of each class but the last.
const CLASS_PROTO: [u8; CLASSES - 1] = [proto::TCP, proto::UDP, proto::ICMP, proto::ICMPV6];
/// Class of each IP protocol number.
static CLASS_OF: [u8; 256] = {
    let mut t = [(CLASSES - 1) as u8; 256];
    let mut c = 0;
    while c < CLASSES - 1 {
        t[CLASS_PROTO[c] as usize] = c as u8;
        c += 1;
    }
    t
};

/// Filter keys: destination ports are `0..=0xffff`, ICMP types follow, then one key for
/// a packet without a layer-4 header that rules can look at.
const KEY_ICMP: u32 = 0x1_0000;
const KEY_NONE: u32 = KEY_ICMP + 256;
/// One past the last key.
const KEY_END: u32 = KEY_NONE + 1;
/// Up to this many intervals a filter table is searched linearly (vectorised); beyond,
/// by bisection.
const LINEAR: usize = 16;

/// The class and the filter key of a packet.
#[inline(always)]
pub(super) fn packet_key(meta: &PacketMeta) -> (usize, u32) {
    let key = match meta.l4 {
        L4::Ports { dst, .. } => u32::from(dst),
        L4::Icmp { ty, .. } => KEY_ICMP + u32::from(ty),
        L4::None => KEY_NONE,
    };
    (usize::from(CLASS_OF[usize::from(meta.proto)]), key)
}

/// A span of a flat array.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) start: u32,
    pub(super) len: u32,
}

/// Protocol value meaning "any".
const PROTO_ANY: u16 = 0x100;

/// One rule, ready to match: constraints as spans of flat arrays.
#[derive(Clone, Copy, Debug)]
pub(super) struct CompiledRule {
    /// IP protocol, or [`PROTO_ANY`].
    proto: u16,
    /// Destination port ranges in `RuleIndex::ports` (sorted, disjoint); empty = any.
    dst_ports: Span,
    /// Source port ranges in `RuleIndex::ports`; empty = any.
    src_ports: Span,
    /// ICMP types in `RuleIndex::icmp` (sorted, unique); empty = any.
    icmp: Span,
    pub(super) action: Action,
    pub(super) log: bool,
}

/// Up to 64 rules of one list and class, with their filter table.
#[derive(Clone, Copy, Debug)]
struct Block {
    /// The first rule id (the block's ids ascend, and blocks follow each other in order).
    first: RuleId,
    /// The block's rule ids in `RuleIndex::ids`: bit `i` of a mask is `ids[ids + i]`.
    ids: u32,
    /// The filter table: interval starts in `RuleIndex::bounds` (ascending, the first
    /// is 0) and the masks in `RuleIndex::masks`, at the same positions.
    table: Span,
    /// Rules whose filter is exact: a candidate among them matches.
    exact: u64,
}

/// The segments' lists, packed so that one load serves a packet's side.
#[derive(Clone, Copy, Debug, Default)]
struct SegLists {
    /// `pairs[pairs_lo..pairs_hi]` are the (source, destination) lists of this source.
    pairs_lo: u32,
    pairs_hi: u32,
    /// List of `from: this, to: Any` (0: none).
    from: u32,
    /// List of `from: Any, to: this` (0: none).
    to: u32,
}

/// The rule index (see the module documentation).
#[derive(Debug)]
pub(super) struct RuleIndex {
    rules: Box<[CompiledRule]>,
    /// Port ranges of all rules, `(lo, hi)`.
    ports: Box<[(u16, u16)]>,
    /// ICMP types of all rules.
    icmp: Box<[u8]>,
    /// Per list, per class: its blocks in `blocks`. List 0 is empty.
    lists: Box<[[Span; CLASSES]]>,
    blocks: Box<[Block]>,
    /// Rule ids of all blocks.
    ids: Box<[RuleId]>,
    bounds: Box<[u32]>,
    masks: Box<[u64]>,
    /// Per segment.
    segs: Box<[SegLists]>,
    /// `(destination, list)` of the rules naming both segments, by source then
    /// destination.
    pairs: Box<[(SegmentId, u32)]>,
    /// List of `Any -> Any` (0: none).
    any_any: u32,
}

impl RuleIndex {
    /// Approximate heap bytes.
    pub(super) fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.rules.len() * size_of::<CompiledRule>()
            + self.ports.len() * 4
            + self.icmp.len()
            + self.lists.len() * size_of::<[Span; CLASSES]>()
            + self.blocks.len() * size_of::<Block>()
            + self.ids.len() * 4
            + self.bounds.len() * 4
            + self.masks.len() * 8
            + self.segs.len() * size_of::<SegLists>()
            + self.pairs.len() * size_of::<(SegmentId, u32)>()
    }

    /// A rule's action and log flag.
    #[inline(always)]
    pub(super) fn rule(&self, id: RuleId) -> Option<&CompiledRule> {
        self.rules.get(id as usize)
    }

    /// The lowest-numbered rule that matches a packet from segment `s` to `d`.
    #[inline(always)]
    pub(super) fn first_match(
        &self,
        s: SegmentId,
        d: SegmentId,
        meta: &PacketMeta,
    ) -> Option<RuleId> {
        let (class, key) = packet_key(meta);
        let src = self.segs.get(usize::from(s)).copied().unwrap_or_default();
        let to = self.segs.get(usize::from(d)).map_or(0, |x| x.to);
        let mut best = RuleId::MAX;
        if src.pairs_lo != src.pairs_hi {
            let pairs = self
                .pairs
                .get(src.pairs_lo as usize..src.pairs_hi as usize)
                .unwrap_or(&[]);
            if let Ok(i) = pairs.binary_search_by_key(&d, |x| x.0) {
                if let Some(&(_, list)) = pairs.get(i) {
                    self.scan(list, class, key, meta, &mut best);
                }
            }
        }
        for list in [src.from, to, self.any_any] {
            if list != 0 {
                self.scan(list, class, key, meta, &mut best);
            }
        }
        (best != RuleId::MAX).then_some(best)
    }

    /// Lowers `best` to the first rule of `list` that matches, if below it.
    #[inline(always)]
    fn scan(&self, list: u32, class: usize, key: u32, meta: &PacketMeta, best: &mut RuleId) {
        let Some(span) = self.lists.get(list as usize).and_then(|l| l.get(class)) else {
            return;
        };
        for b in slice(&self.blocks, *span) {
            if b.first >= *best {
                return;
            }
            let mut m = self.lookup(b.table, key);
            while m != 0 {
                let i = m.trailing_zeros();
                let Some(&id) = self.ids.get(b.ids as usize + i as usize) else {
                    return;
                };
                if id >= *best {
                    return;
                }
                if b.exact & (1 << i) != 0
                    || self.rules.get(id as usize).is_some_and(|r| self.matches(r, meta))
                {
                    *best = id;
                    return;
                }
                m &= m - 1;
            }
        }
    }

    /// The mask of the interval of `table` that holds `key`.
    #[inline(always)]
    fn lookup(&self, table: Span, key: u32) -> u64 {
        let bounds = slice(&self.bounds, table);
        // The number of interval starts at or below `key`; the first start is 0.
        let n = if bounds.len() <= LINEAR {
            bounds.iter().map(|&b| usize::from(b <= key)).sum::<usize>()
        } else {
            // Branch-free bisection: the steps depend on the length only, and each
            // step's choice is arithmetic, so a key the predictor cannot guess (a port
            // from random traffic) costs no mispredicted branches.
            let mut lo = 0usize;
            let mut len = bounds.len();
            while len > 1 {
                let half = len / 2;
                let b = bounds.get(lo + half).copied().unwrap_or(u32::MAX);
                lo += half * usize::from(b <= key);
                len -= half;
            }
            lo + 1
        };
        n.checked_sub(1)
            .and_then(|i| self.masks.get(table.start as usize + i))
            .copied()
            .unwrap_or(0)
    }

    /// Whether `r` matches `meta` (segments aside): the whole contract, for the rules
    /// whose filter is not exact.
    fn matches(&self, r: &CompiledRule, meta: &PacketMeta) -> bool {
        if r.proto != PROTO_ANY && r.proto != u16::from(meta.proto) {
            return false;
        }
        if r.dst_ports.len != 0 || r.src_ports.len != 0 {
            let L4::Ports { src, dst } = meta.l4 else {
                return false;
            };
            if !in_ranges(slice(&self.ports, r.dst_ports), dst)
                || !in_ranges(slice(&self.ports, r.src_ports), src)
            {
                return false;
            }
        }
        if r.icmp.len != 0 {
            let L4::Icmp { ty, .. } = meta.l4 else {
                return false;
            };
            if slice(&self.icmp, r.icmp).binary_search(&ty).is_err() {
                return false;
            }
        }
        true
    }

    /// Builds the index; refuses rules that name unknown segments.
    pub(super) fn build(spec: &PolicySpec) -> Result<RuleIndex, CompileError> {
        let nseg = spec.segments.len();
        let mut rules = Vec::with_capacity(spec.rules.len());
        let mut ports: Vec<(u16, u16)> = Vec::new();
        let mut icmp: Vec<u8> = Vec::new();

        let mut pair_lists: BTreeMap<(SegmentId, SegmentId), Vec<RuleId>> = BTreeMap::new();
        let mut from_lists: Vec<Vec<RuleId>> = vec![Vec::new(); nseg];
        let mut to_lists: Vec<Vec<RuleId>> = vec![Vec::new(); nseg];
        let mut any_list: Vec<RuleId> = Vec::new();

        for (id, r) in spec.rules.iter().enumerate() {
            // In range: the caller checks the count against MAX_RULES.
            let id = id as RuleId;
            for m in [r.from, r.to] {
                if let SegmentMatch::Segment(s) = m {
                    if usize::from(s) >= nseg {
                        return Err(CompileError::UnknownSegmentInRule {
                            rule: r.name.clone(),
                            segment: s,
                        });
                    }
                }
            }
            let list = match (r.from, r.to) {
                (SegmentMatch::Segment(s), SegmentMatch::Segment(d)) => {
                    pair_lists.entry((s, d)).or_default()
                }
                (SegmentMatch::Segment(s), SegmentMatch::Any) => from_lists
                    .get_mut(usize::from(s))
                    .ok_or(CompileError::TableFull)?,
                (SegmentMatch::Any, SegmentMatch::Segment(d)) => to_lists
                    .get_mut(usize::from(d))
                    .ok_or(CompileError::TableFull)?,
                (SegmentMatch::Any, SegmentMatch::Any) => &mut any_list,
            };
            list.push(id);
            rules.push(CompiledRule {
                proto: match r.protocol {
                    ProtocolMatch::Any => PROTO_ANY,
                    ProtocolMatch::Number(p) => u16::from(p),
                },
                dst_ports: push_ranges(&mut ports, &r.dst_ports),
                src_ports: push_ranges(&mut ports, &r.src_ports),
                icmp: push_icmp(&mut icmp, &r.icmp_types),
                action: r.action,
                log: r.log,
            });
        }

        let mut b = Builder {
            rules: &rules,
            ports: &ports,
            icmp: &icmp,
            lists: vec![[Span::default(); CLASSES]],
            blocks: Vec::new(),
            ids: Vec::new(),
            bounds: Vec::new(),
            masks: Vec::new(),
        };
        let mut segs = vec![SegLists::default(); nseg];
        let mut pairs = Vec::with_capacity(pair_lists.len());
        // BTreeMap order: by source, then destination.
        for (&(s, d), list) in &pair_lists {
            let n = pairs.len() as u32;
            if let Some(x) = segs.get_mut(usize::from(s)) {
                if x.pairs_lo == x.pairs_hi {
                    x.pairs_lo = n;
                }
                x.pairs_hi = n + 1;
            }
            pairs.push((d, b.list(list)?));
        }
        for (x, (from, to)) in segs.iter_mut().zip(from_lists.iter().zip(&to_lists)) {
            x.from = b.list(from)?;
            x.to = b.list(to)?;
        }
        let any_any = b.list(&any_list)?;
        let Builder {
            lists,
            blocks,
            ids,
            bounds,
            masks,
            ..
        } = b;
        Ok(RuleIndex {
            rules: rules.into_boxed_slice(),
            ports: ports.into_boxed_slice(),
            icmp: icmp.into_boxed_slice(),
            lists: lists.into_boxed_slice(),
            blocks: blocks.into_boxed_slice(),
            ids: ids.into_boxed_slice(),
            bounds: bounds.into_boxed_slice(),
            masks: masks.into_boxed_slice(),
            segs: segs.into_boxed_slice(),
            pairs: pairs.into_boxed_slice(),
            any_any,
        })
    }
}

/// The lists under construction.
struct Builder<'a> {
    rules: &'a [CompiledRule],
    ports: &'a [(u16, u16)],
    icmp: &'a [u8],
    lists: Vec<[Span; CLASSES]>,
    blocks: Vec<Block>,
    ids: Vec<RuleId>,
    bounds: Vec<u32>,
    masks: Vec<u64>,
}

impl Builder<'_> {
    /// Adds a list of ascending rule ids; returns its number (0 for an empty list).
    fn list(&mut self, ids: &[RuleId]) -> Result<u32, CompileError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut classes = [Span::default(); CLASSES];
        for (c, span) in classes.iter_mut().enumerate() {
            let members: Vec<RuleId> = ids
                .iter()
                .copied()
                .filter(|&id| self.rule(id).is_some_and(|r| can_match_class(r, c)))
                .collect();
            span.start = len32(self.blocks.len())?;
            for chunk in members.chunks(64) {
                self.block(chunk, c)?;
            }
            span.len = len32(self.blocks.len())? - span.start;
        }
        self.lists.push(classes);
        len32(self.lists.len() - 1)
    }

    fn rule(&self, id: RuleId) -> Option<&CompiledRule> {
        self.rules.get(id as usize)
    }

    /// Adds a block of up to 64 ascending rule ids of class `c`.
    fn block(&mut self, ids: &[RuleId], c: usize) -> Result<(), CompileError> {
        // Each rule's key set is a union of disjoint, non-adjacent intervals, so the
        // rule's bit flips on at an interval's start and off one past its end: sweep the
        // flips in key order.
        let mut flips: Vec<(u32, u64)> = Vec::new();
        let mut exact = 0u64;
        for (i, &id) in ids.iter().enumerate() {
            let Some(r) = self.rule(id) else { continue };
            let bit = 1u64 << i;
            for (lo, hi) in key_set(r, self.ports, self.icmp) {
                flips.push((lo, bit));
                flips.push((hi + 1, bit));
            }
            if r.src_ports.len == 0 && (c < CLASSES - 1 || r.proto == PROTO_ANY) {
                exact |= bit;
            }
        }
        flips.sort_unstable_by_key(|f| f.0);
        let start = len32(self.bounds.len())?;
        let mut mask = 0u64;
        let mut at = 0u32;
        let push = |bounds: &mut Vec<u32>, masks: &mut Vec<u64>, at: u32, mask: u64| {
            // Merge an interval into the previous one with the same mask.
            if bounds.len() > start as usize && masks.last() == Some(&mask) {
                return;
            }
            bounds.push(at);
            masks.push(mask);
        };
        for (k, bit) in flips {
            if k != at {
                push(&mut self.bounds, &mut self.masks, at, mask);
                at = k;
            }
            mask ^= bit;
        }
        if at < KEY_END {
            push(&mut self.bounds, &mut self.masks, at, mask);
        }
        let table = Span {
            start,
            len: len32(self.bounds.len())? - start,
        };
        self.blocks.push(Block {
            first: ids.first().copied().unwrap_or(RuleId::MAX),
            ids: len32(self.ids.len())?,
            table,
            exact,
        });
        self.ids.extend_from_slice(ids);
        Ok(())
    }
}

fn len32(n: usize) -> Result<u32, CompileError> {
    u32::try_from(n).map_err(|_| CompileError::TableFull)
}

/// Whether a rule can match a packet of class `c` (by protocol alone).
fn can_match_class(r: &CompiledRule, c: usize) -> bool {
    match CLASS_PROTO.get(c) {
        Some(&p) => r.proto == PROTO_ANY || r.proto == u16::from(p),
        None => r.proto == PROTO_ANY || !CLASS_PROTO.iter().any(|&p| r.proto == u16::from(p)),
    }
}

/// The filter keys at which `r` can match, as disjoint, non-adjacent, ascending
/// inclusive intervals. Source ports are left out (the filter is a superset there).
fn key_set(r: &CompiledRule, ports: &[(u16, u16)], icmp: &[u8]) -> Vec<(u32, u32)> {
    let has_ports = r.dst_ports.len != 0 || r.src_ports.len != 0;
    let has_icmp = r.icmp.len != 0;
    let mut out: Vec<(u32, u32)> = Vec::new();
    // Destination ports: a rule with ICMP types never matches a packet with ports.
    if !has_icmp {
        if r.dst_ports.len == 0 {
            out.push((0, 0xffff));
        } else {
            out.extend(
                slice(ports, r.dst_ports)
                    .iter()
                    .map(|&(lo, hi)| (u32::from(lo), u32::from(hi))),
            );
        }
    }
    // ICMP types: a rule with port constraints never matches an ICMP packet.
    if !has_ports {
        if has_icmp {
            out.extend(
                slice(icmp, r.icmp)
                    .iter()
                    .map(|&t| (KEY_ICMP + u32::from(t), KEY_ICMP + u32::from(t))),
            );
        } else {
            out.push((KEY_ICMP, KEY_NONE));
        }
    }
    // Join adjacent intervals (ports up to 0xffff meet the ICMP keys).
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(out.len());
    for (lo, hi) in out {
        match merged.last_mut() {
            Some(last) if lo <= last.1 + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

#[inline(always)]
fn slice<T>(v: &[T], span: Span) -> &[T] {
    let start = span.start as usize;
    v.get(start..start.saturating_add(span.len as usize))
        .unwrap_or(&[])
}

/// Whether `port` lies in one of `ranges` (sorted, disjoint); an empty list is "any".
#[inline(always)]
fn in_ranges(ranges: &[(u16, u16)], port: u16) -> bool {
    if ranges.is_empty() {
        return true;
    }
    let i = ranges.partition_point(|r| r.1 < port);
    ranges.get(i).is_some_and(|r| r.0 <= port)
}

/// Appends `ranges` sorted and merged (overlapping or adjacent ranges joined).
fn push_ranges(out: &mut Vec<(u16, u16)>, ranges: &[PortRange]) -> Span {
    let mut v: Vec<(u16, u16)> = ranges
        .iter()
        .map(|r| (r.lo.min(r.hi), r.lo.max(r.hi)))
        .collect();
    v.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match merged.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    let span = Span {
        start: out.len() as u32,
        len: merged.len() as u32,
    };
    out.extend_from_slice(&merged);
    span
}

fn push_icmp(out: &mut Vec<u8>, types: &[u8]) -> Span {
    let mut v = types.to_vec();
    v.sort_unstable();
    v.dedup();
    let span = Span {
        start: out.len() as u32,
        len: v.len() as u32,
    };
    out.extend_from_slice(&v);
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Fragment, ETHERTYPE_IPV4};
    use crate::policy::spec::{Action, NonIpSpec, RuleSpec, SegmentSpec, Unmatched};
    use crate::policy::{reference, Policy};
    use proptest::prelude::*;

    fn spec(rules: Vec<RuleSpec>) -> PolicySpec {
        PolicySpec {
            segments: (0..3)
                .map(|i| SegmentSpec {
                    name: format!("s{i}"),
                    cidrs: vec![format!("10.{i}.0.0/16").parse().unwrap()],
                    vlans: vec![],
                    mode: crate::policy::Mode::Protect,
                })
                .collect(),
            rules,
            default_action: Action::Deny,
            intra_segment_default: Action::Allow,
            unmatched: Unmatched::Segment(0),
            non_ip: NonIpSpec {
                allow_arp: true,
                allow_neighbor_discovery: false,
                allow_llc: false,
                allowed_ethertypes: vec![],
            },
        }
    }

    fn rule(id: usize, proto: ProtocolMatch, dst: &[(u16, u16)], icmp: &[u8]) -> RuleSpec {
        RuleSpec {
            name: format!("r{id}"),
            from: SegmentMatch::Any,
            to: SegmentMatch::Any,
            protocol: proto,
            dst_ports: dst.iter().map(|&(lo, hi)| PortRange { lo, hi }).collect(),
            src_ports: vec![],
            icmp_types: icmp.to_vec(),
            action: if id.is_multiple_of(2) {
                Action::Allow
            } else {
                Action::Deny
            },
            log: id.is_multiple_of(3),
        }
    }

    fn pkt(src: u8, dst: u8, proto: u8, l4: L4) -> PacketMeta {
        PacketMeta {
            outer_vlan: None,
            inner_vlan: None,
            ethertype: ETHERTYPE_IPV4,
            addrs: Some((
                format!("10.{src}.0.1").parse().unwrap(),
                format!("10.{dst}.0.1").parse().unwrap(),
            )),
            proto,
            l4,
            tcp_flags: 0,
            fragment: Fragment::None,
        }
    }

    fn ports(dst: u16) -> L4 {
        L4::Ports { src: 1000, dst }
    }

    /// The filter table of the only block of the `Any -> Any` list for class `c`.
    fn table(ix: &RuleIndex, c: usize) -> Vec<(u32, u64)> {
        let span = ix.lists[ix.any_any as usize][c];
        assert_eq!(span.len, 1);
        let b = ix.blocks[span.start as usize];
        slice(&ix.bounds, b.table)
            .iter()
            .copied()
            .zip(slice(&ix.masks, b.table).iter().copied())
            .collect()
    }

    #[test]
    fn filter_table_intervals() {
        let s = spec(vec![
            rule(0, ProtocolMatch::Number(proto::TCP), &[(80, 80), (443, 443)], &[]),
            rule(1, ProtocolMatch::Any, &[(1, 100)], &[]),
            rule(2, ProtocolMatch::Number(proto::ICMP), &[], &[8, 0]),
            rule(3, ProtocolMatch::Any, &[], &[]),
        ]);
        let ix = RuleIndex::build(&s).unwrap();
        // TCP: rules 0, 1 and 3 (bits 0, 1, 2).
        assert_eq!(
            table(&ix, 0),
            vec![
                (0, 0b100),
                (1, 0b110),
                (80, 0b111),
                (81, 0b110),
                (101, 0b100),
                (443, 0b101),
                (444, 0b100),
            ]
        );
        // ICMP: rules 1, 2 and 3 (bits 0, 1, 2); type 0 and 8 for rule 2.
        assert_eq!(
            table(&ix, 2),
            vec![
                (0, 0b100),
                (1, 0b101),
                (101, 0b100),
                (KEY_ICMP, 0b110),
                (KEY_ICMP + 1, 0b100),
                (KEY_ICMP + 8, 0b110),
                (KEY_ICMP + 9, 0b100),
            ]
        );
        // Other protocols: rules 1 and 3 (protocol Any).
        assert_eq!(ix.lists[ix.any_any as usize][CLASSES - 1].len, 1);
        let t = table(&ix, CLASSES - 1);
        assert_eq!(t[..3], [(0, 0b10), (1, 0b11), (101, 0b10)]);
        for (c, key, want) in [
            (0, 80, 0b111),
            (0, 79, 0b110),
            (0, 65535, 0b100),
            (0, KEY_NONE, 0b100),
            (2, KEY_ICMP + 8, 0b110),
            (2, KEY_ICMP + 3, 0b100),
            (1, 100, 0b11),
            (1, 101, 0b10),
        ] {
            let span = ix.lists[ix.any_any as usize][c];
            let m = slice(&ix.blocks, span)
                .first()
                .map_or(0, |b| ix.lookup(b.table, key));
            assert_eq!(m, want, "class {c} key {key:#x}");
        }
    }

    #[test]
    fn bisection_matches_linear_search() {
        // 100 port ranges: a table far beyond the linear limit.
        let ranges: Vec<(u16, u16)> = (0..100).map(|i| (i * 600 + 5, i * 600 + 300)).collect();
        let s = spec(vec![
            rule(0, ProtocolMatch::Number(proto::TCP), &ranges, &[]),
            rule(1, ProtocolMatch::Number(proto::TCP), &[(1000, 2000)], &[]),
        ]);
        let ix = RuleIndex::build(&s).unwrap();
        let t = table(&ix, 0);
        assert!(t.len() > LINEAR);
        for key in (0..KEY_END).step_by(7).chain([0, 5, 300, 301, 59705, KEY_END - 1]) {
            let want = t.iter().rev().find(|x| x.0 <= key).unwrap().1;
            let b = ix.blocks[ix.lists[ix.any_any as usize][0].start as usize];
            assert_eq!(ix.lookup(b.table, key), want, "key {key}");
        }
    }

    #[test]
    fn many_any_rules_span_blocks() {
        // 200 Any -> Any rules, only the last ones can match: 4 blocks per class.
        let mut rules: Vec<RuleSpec> = (0..198)
            .map(|i| rule(i, ProtocolMatch::Number(proto::UDP), &[(7, 7)], &[]))
            .collect();
        rules.push(rule(198, ProtocolMatch::Any, &[(8, 9)], &[]));
        rules.push(rule(199, ProtocolMatch::Number(proto::TCP), &[], &[]));
        let s = spec(rules);
        let ix = RuleIndex::build(&s).unwrap();
        assert_eq!(ix.lists[ix.any_any as usize][1].len, 4);
        let p = Policy::compile(&s, 1).unwrap();
        for (meta, want) in [
            (pkt(1, 2, proto::UDP, ports(7)), Some(0)),
            (pkt(1, 2, proto::UDP, ports(8)), Some(198)),
            (pkt(1, 2, proto::TCP, ports(9)), Some(198)),
            (pkt(1, 2, proto::TCP, ports(7)), Some(199)),
            (pkt(1, 2, proto::UDP, ports(10)), None),
            (pkt(1, 2, 47, L4::None), None),
        ] {
            let d = p.classify(&meta);
            assert_eq!(d.rule(), want, "{meta:?}");
            assert_eq!(d, reference::classify(&s, &meta));
        }
    }

    fn arb_rule() -> impl Strategy<Value = RuleSpec> {
        let side = prop_oneof![
            3 => Just(SegmentMatch::Any),
            2 => (0u16..3).prop_map(SegmentMatch::Segment),
        ];
        let proto = prop_oneof![
            Just(ProtocolMatch::Any),
            Just(ProtocolMatch::Number(proto::TCP)),
            Just(ProtocolMatch::Number(proto::UDP)),
            Just(ProtocolMatch::Number(proto::ICMP)),
            Just(ProtocolMatch::Number(47)),
            Just(ProtocolMatch::Number(proto::SCTP)),
        ];
        // Small port space so that ranges overlap and packets hit them.
        let range = (0u16..40, 0u16..10).prop_map(|(lo, w)| PortRange { lo, hi: lo + w });
        let ranges = prop_oneof![
            4 => Just(vec![]),
            3 => prop::collection::vec(range.clone(), 1..4),
            1 => prop::collection::vec(range, 50..100),
        ];
        let src = prop_oneof![
            4 => Just(vec![]),
            1 => prop::collection::vec(
                (0u16..40, 0u16..10).prop_map(|(lo, w)| PortRange { lo, hi: lo + w }),
                1..3
            ),
        ];
        let icmp = prop_oneof![
            3 => Just(vec![]),
            1 => prop::collection::vec(0u8..6, 1..4),
        ];
        (side.clone(), side, proto, ranges, src, icmp, any::<bool>(), any::<bool>()).prop_map(
            |(from, to, protocol, dst_ports, src_ports, icmp_types, allow, log)| RuleSpec {
                name: String::new(),
                from,
                to,
                protocol,
                dst_ports,
                src_ports,
                icmp_types,
                action: if allow { Action::Allow } else { Action::Deny },
                log,
            },
        )
    }

    fn arb_packet() -> impl Strategy<Value = PacketMeta> {
        let l4 = prop_oneof![
            Just(L4::None),
            (0u16..50, 0u16..50).prop_map(|(src, dst)| L4::Ports { src, dst }),
            Just(L4::Ports { src: 65535, dst: 65535 }),
            (0u8..8).prop_map(|ty| L4::Icmp { ty, code: 0, id: 0 }),
        ];
        let proto = prop_oneof![
            Just(proto::TCP),
            Just(proto::UDP),
            Just(proto::ICMP),
            Just(proto::ICMPV6),
            Just(47u8),
            Just(proto::SCTP),
        ];
        (0u8..4, 0u8..4, proto, l4).prop_map(|(s, d, p, l4)| pkt(s, d, p, l4))
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
            ..ProptestConfig::default()
        })]

        /// Pathological rule sets (many Any rules across blocks, 100 port ranges,
        /// overlapping ranges, ICMP types with ports) against the reference.
        #[test]
        fn index_matches_reference(
            rules in prop::collection::vec(arb_rule(), 0..160),
            pkts in prop::collection::vec(arb_packet(), 1..64),
        ) {
            let rules: Vec<RuleSpec> = rules
                .into_iter()
                .enumerate()
                .map(|(i, mut r)| { r.name = format!("r{i}"); r })
                .collect();
            let s = spec(rules);
            let p = Policy::compile(&s, 1).unwrap();
            for meta in pkts {
                prop_assert_eq!(p.classify(&meta), reference::classify(&s, &meta), "{:?}", meta);
            }
        }
    }
}
