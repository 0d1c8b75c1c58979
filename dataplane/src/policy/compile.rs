//! [`PolicySpec`] -> [`Policy`]: the prefix tables and the rule index.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::lpm::{key_v4, key_v6, Entry, Trie};
use super::spec::{
    Mode,
    PolicySpec, PortRange, ProtocolMatch, RuleId, SegmentId, SegmentMatch, Unmatched,
};
use super::{Action, CompileError, Policy};

/// Most segments: every [`SegmentId`] value.
pub(super) const MAX_SEGMENTS: usize = 1 << 16;
/// Most rules (rule ids and list offsets are `u32`; `u32::MAX` means "no rule").
pub(super) const MAX_RULES: usize = 1 << 24;
/// VLAN ids are 12 bits.
const VLAN_IDS: usize = 4096;
/// Root stride of the base tables (DIR-16-8-8 for IPv4).
const BASE_ROOT_BITS: u8 = 16;
/// Root stride of the per-VLAN overlay tables, which hold few prefixes.
const OVERLAY_ROOT_BITS: u8 = 8;

/// The prefix tables: a base table per family for the segments without VLANs, and per
/// VLAN that some segment names an overlay with that VLAN's segments.
#[derive(Debug)]
pub(super) struct Lpm {
    v4: Trie,
    v6: Trie,
    /// VLAN id -> overlay number + 1; 0 means "no overlay". Always 4096 long.
    vlan_view: Box<[u16]>,
    overlays: Box<[(Trie, Trie)]>,
}

impl Lpm {
    /// Longest match for `addr` in the view of `vlan`.
    #[inline(always)]
    pub(super) fn lookup(&self, addr: IpAddr, vlan: Option<u16>) -> Entry {
        let overlay = match vlan {
            Some(v) => match self.vlan_view.get(usize::from(v)).copied().unwrap_or(0) {
                0 => None,
                n => self.overlays.get(usize::from(n) - 1),
            },
            None => None,
        };
        match addr {
            IpAddr::V4(a) => {
                let key = key_v4(a);
                let base = self.v4.lookup(key);
                match overlay {
                    Some((o, _)) => base.longer(o.lookup(key)),
                    None => base,
                }
            }
            IpAddr::V6(a) => {
                let key = key_v6(a);
                let base = self.v6.lookup(key);
                match overlay {
                    Some((_, o)) => base.longer(o.lookup(key)),
                    None => base,
                }
            }
        }
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.v4.heap_bytes()
            + self.v6.heap_bytes()
            + self.vlan_view.len() * 2
            + self
                .overlays
                .iter()
                .map(|(a, b)| a.heap_bytes() + b.heap_bytes())
                .sum::<usize>()
    }
}

/// A span of the flat rule-id array.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) start: u32,
    pub(super) len: u32,
}

/// Protocol value meaning "any".
pub(super) const PROTO_ANY: u16 = 0x100;

/// One rule, ready to match: constraints as spans of flat arrays.
#[derive(Clone, Copy, Debug)]
pub(super) struct CompiledRule {
    /// IP protocol, or [`PROTO_ANY`].
    pub(super) proto: u16,
    /// Destination port ranges in `RuleIndex::ports` (sorted, disjoint); empty = any.
    pub(super) dst_ports: Span,
    /// Source port ranges in `RuleIndex::ports`; empty = any.
    pub(super) src_ports: Span,
    /// ICMP types in `RuleIndex::icmp` (sorted, unique); empty = any.
    pub(super) icmp: Span,
    pub(super) action: Action,
    pub(super) log: bool,
}

/// Rules indexed by segment pair. The candidates for (s, d) are the union, in rule order,
/// of the lists for (s, d), (s, Any), (Any, d) and (Any, Any).
#[derive(Debug)]
pub(super) struct RuleIndex {
    pub(super) rules: Box<[CompiledRule]>,
    /// Port ranges of all rules, `(lo, hi)`.
    pub(super) ports: Box<[(u16, u16)]>,
    /// ICMP types of all rules.
    pub(super) icmp: Box<[u8]>,
    /// Rule ids of all lists, each list ascending.
    pub(super) ids: Box<[u32]>,
    /// `pair_start[s]..pair_start[s + 1]` is the range of `pairs` for source `s`.
    pub(super) pair_start: Box<[u32]>,
    /// `(destination, list)` for rules naming both segments, sorted by destination.
    pub(super) pairs: Box<[(SegmentId, Span)]>,
    /// Per source segment: rules `from: s, to: Any`.
    pub(super) from_src: Box<[Span]>,
    /// Per destination segment: rules `from: Any, to: d`.
    pub(super) to_dst: Box<[Span]>,
    /// Rules `from: Any, to: Any`.
    pub(super) any_any: Span,
}

impl RuleIndex {
    pub(super) fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.rules.len() * size_of::<CompiledRule>()
            + self.ports.len() * 4
            + self.icmp.len()
            + self.ids.len() * 4
            + self.pair_start.len() * 4
            + self.pairs.len() * size_of::<(SegmentId, Span)>()
            + (self.from_src.len() + self.to_dst.len()) * size_of::<Span>()
    }
}

/// Non-IP handling.
#[derive(Debug)]
pub(super) struct NonIp {
    pub(super) allow_arp: bool,
    pub(super) allow_nd: bool,
    pub(super) allow_llc: bool,
    /// Sorted, unique.
    pub(super) ethertypes: Box<[u16]>,
}

pub(super) fn compile(spec: &PolicySpec, version: u64) -> Result<Policy, CompileError> {
    let nseg = spec.segments.len();
    if nseg > MAX_SEGMENTS {
        return Err(CompileError::TooManySegments {
            count: nseg,
            max: MAX_SEGMENTS,
        });
    }
    if spec.rules.len() > MAX_RULES {
        return Err(CompileError::TooManyRules {
            count: spec.rules.len(),
            max: MAX_RULES,
        });
    }
    if let Unmatched::Segment(s) = spec.unmatched {
        if usize::from(s) >= nseg {
            return Err(CompileError::UnknownUnmatchedSegment { segment: s });
        }
    }
    let lpm = build_lpm(spec)?;
    let rules = build_rules(spec)?;
    let mut ethertypes = spec.non_ip.allowed_ethertypes.clone();
    ethertypes.sort_unstable();
    ethertypes.dedup();
    Ok(Policy {
        version,
        spec: spec.clone(),
        lpm,
        rules,
        non_ip: NonIp {
            allow_arp: spec.non_ip.allow_arp,
            allow_nd: spec.non_ip.allow_neighbor_discovery,
            allow_llc: spec.non_ip.allow_llc,
            ethertypes: ethertypes.into_boxed_slice(),
        },
        default_action: spec.default_action,
        intra_segment_default: spec.intra_segment_default,
        unmatched: spec.unmatched,
        modes: spec.segments.iter().map(|s| s.mode).collect(),
        all_protect: spec.segments.iter().all(|s| s.mode == Mode::Protect),
    })
}

/// `(left-aligned key, length, segment)`, as [`Trie::build`] takes them.
type Prefix = (u128, u8, SegmentId);

/// Segment ids for one prefix: those without VLANs, and per VLAN those restricted to it.
#[derive(Default)]
struct Owners {
    base: Vec<SegmentId>,
    vlan: Vec<(u16, SegmentId)>,
}

fn build_lpm(spec: &PolicySpec) -> Result<Lpm, CompileError> {
    // Every (prefix, segment) once, with who holds each prefix, to refuse duplicates.
    // Ordered, so the duplicate reported first does not depend on hashing.
    let mut owners: BTreeMap<IpNet, Owners> = BTreeMap::new();
    let mut vlan_numbers: BTreeMap<u16, usize> = BTreeMap::new();
    for (id, seg) in spec.segments.iter().enumerate() {
        // In range: checked against MAX_SEGMENTS by the caller.
        let id = id as SegmentId;
        let mut vlans = seg.vlans.clone();
        vlans.sort_unstable();
        vlans.dedup();
        for &v in &vlans {
            if usize::from(v) >= VLAN_IDS {
                return Err(CompileError::BadVlan {
                    segment: seg.name.clone(),
                    vlan: v,
                });
            }
            let next = vlan_numbers.len();
            vlan_numbers.entry(v).or_insert(next);
        }
        for net in &seg.cidrs {
            let o = owners.entry(net.trunc()).or_default();
            if vlans.is_empty() {
                if !o.base.contains(&id) {
                    o.base.push(id);
                }
            } else {
                for &v in &vlans {
                    if !o.vlan.contains(&(v, id)) {
                        o.vlan.push((v, id));
                    }
                }
            }
        }
    }

    let name = |id: SegmentId| {
        spec.segments
            .get(usize::from(id))
            .map(|s| s.name.clone())
            .unwrap_or_default()
    };
    let mut base4 = Vec::new();
    let mut base6 = Vec::new();
    let mut over: Vec<(Vec<Prefix>, Vec<Prefix>)> =
        vec![(Vec::new(), Vec::new()); vlan_numbers.len()];
    for (net, o) in &owners {
        if let [a, b, ..] = o.base[..] {
            return Err(CompileError::DuplicatePrefix {
                prefix: *net,
                first: name(a),
                second: name(b),
                vlan: None,
            });
        }
        for (i, &(v, s)) in o.vlan.iter().enumerate() {
            let clash = o
                .base
                .first()
                .copied()
                .or_else(|| o.vlan.iter().skip(i + 1).find(|x| x.0 == v).map(|x| x.1));
            if let Some(other) = clash {
                return Err(CompileError::DuplicatePrefix {
                    prefix: *net,
                    first: name(other.min(s)),
                    second: name(other.max(s)),
                    vlan: Some(v),
                });
            }
        }
        let (key, is_v4) = match net {
            IpNet::V4(n) => (key_v4(n.network()), true),
            IpNet::V6(n) => (key_v6(n.network()), false),
        };
        let len = net.prefix_len();
        if let Some(&s) = o.base.first() {
            if is_v4 { &mut base4 } else { &mut base6 }.push((key, len, s));
        }
        for &(v, s) in &o.vlan {
            let n = vlan_numbers.get(&v).copied().unwrap_or(0);
            if let Some((o4, o6)) = over.get_mut(n) {
                if is_v4 { o4 } else { o6 }.push((key, len, s));
            }
        }
    }

    let full = |_| CompileError::TableFull;
    let v4 = Trie::build(32, BASE_ROOT_BITS, &base4).map_err(full)?;
    let v6 = Trie::build(128, BASE_ROOT_BITS, &base6).map_err(full)?;
    let mut overlays = Vec::with_capacity(over.len());
    for (o4, o6) in &over {
        overlays.push((
            Trie::build(32, OVERLAY_ROOT_BITS, o4).map_err(full)?,
            Trie::build(128, OVERLAY_ROOT_BITS, o6).map_err(full)?,
        ));
    }
    let mut vlan_view = vec![0u16; VLAN_IDS].into_boxed_slice();
    for (&v, &n) in &vlan_numbers {
        if let Some(slot) = vlan_view.get_mut(usize::from(v)) {
            // At most 4096 overlays: fits.
            *slot = (n + 1) as u16;
        }
    }
    Ok(Lpm {
        v4,
        v6,
        vlan_view,
        overlays: overlays.into_boxed_slice(),
    })
}

fn build_rules(spec: &PolicySpec) -> Result<RuleIndex, CompileError> {
    let nseg = spec.segments.len();
    let mut rules = Vec::with_capacity(spec.rules.len());
    let mut ports: Vec<(u16, u16)> = Vec::new();
    let mut icmp: Vec<u8> = Vec::new();

    let mut pair_lists: BTreeMap<(SegmentId, SegmentId), Vec<u32>> = BTreeMap::new();
    let mut from_lists: Vec<Vec<u32>> = vec![Vec::new(); nseg];
    let mut to_lists: Vec<Vec<u32>> = vec![Vec::new(); nseg];
    let mut any_list: Vec<u32> = Vec::new();

    for (id, r) in spec.rules.iter().enumerate() {
        // In range: checked against MAX_RULES by the caller.
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

    let mut ids: Vec<u32> = Vec::new();
    let mut push_list = |list: &[u32]| {
        let span = Span {
            start: ids.len() as u32,
            len: list.len() as u32,
        };
        ids.extend_from_slice(list);
        span
    };
    let mut pairs = Vec::with_capacity(pair_lists.len());
    let mut pair_start = vec![0u32; nseg + 1];
    // BTreeMap order: by source, then destination.
    for (&(s, d), list) in &pair_lists {
        pairs.push((d, push_list(list)));
        if let Some(c) = pair_start.get_mut(usize::from(s) + 1) {
            *c += 1;
        }
    }
    for i in 1..pair_start.len() {
        let prev = pair_start.get(i - 1).copied().unwrap_or(0);
        if let Some(c) = pair_start.get_mut(i) {
            *c += prev;
        }
    }
    let from_src: Vec<Span> = from_lists.iter().map(|l| push_list(l)).collect();
    let to_dst: Vec<Span> = to_lists.iter().map(|l| push_list(l)).collect();
    let any_any = push_list(&any_list);

    Ok(RuleIndex {
        rules: rules.into_boxed_slice(),
        ports: ports.into_boxed_slice(),
        icmp: icmp.into_boxed_slice(),
        ids: ids.into_boxed_slice(),
        pair_start: pair_start.into_boxed_slice(),
        pairs: pairs.into_boxed_slice(),
        from_src: from_src.into_boxed_slice(),
        to_dst: to_dst.into_boxed_slice(),
        any_any,
    })
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
