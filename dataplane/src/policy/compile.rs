//! [`PolicySpec`] -> [`Policy`]: the prefix tables and the rule index.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::lpm::{key_v4, key_v6, Entry, Table4, Table6};
use super::rules::RuleIndex;
use super::spec::{Mode, PolicySpec, SegmentId, Unmatched};
use super::{CompileError, Policy};

/// Most segments: every [`SegmentId`] value below [`crate::counters::NO_SEGMENT`] (the
/// per-pair counters keep two values for "no segment" and "free slot").
pub(super) const MAX_SEGMENTS: usize = crate::counters::NO_SEGMENT as usize;
/// Most rules (rule ids and list offsets are `u32`; `u32::MAX` means "no rule").
pub(super) const MAX_RULES: usize = 1 << 24;
/// VLAN ids are 12 bits.
const VLAN_IDS: usize = 4096;

/// The prefix tables: a base table per family for the segments without VLANs, and per
/// VLAN that some segment names an overlay with that VLAN's segments.
#[derive(Debug)]
pub(super) struct Lpm {
    v4: Table4,
    v6: Table6,
    /// VLAN id -> overlay number + 1; 0 means "no overlay". 4096 long, or empty when no
    /// segment is restricted to VLANs (then no lookup reads it).
    vlan_view: Box<[u16]>,
    overlays: Box<[(Table4, Table6)]>,
}

impl Lpm {
    /// The overlay of `vlan`, if it has one. Without VLAN-restricted segments, no load.
    #[inline(always)]
    fn overlay(&self, vlan: Option<u16>) -> Option<&(Table4, Table6)> {
        if self.overlays.is_empty() {
            return None;
        }
        let n = self.vlan_view.get(usize::from(vlan?)).copied().unwrap_or(0);
        self.overlays.get(usize::from(n).checked_sub(1)?)
    }

    #[inline(always)]
    fn lookup_in(&self, addr: IpAddr, overlay: Option<&(Table4, Table6)>) -> Entry {
        match addr {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                let base = self.v4.lookup(a);
                match overlay {
                    Some((o, _)) => base.longer(o.lookup(a)),
                    None => base,
                }
            }
            IpAddr::V6(a) => {
                let key = u128::from(a);
                let base = self.v6.lookup(key);
                match overlay {
                    Some((_, o)) => base.longer(o.lookup(key)),
                    None => base,
                }
            }
        }
    }

    /// Longest match for `addr` in the view of `vlan`.
    #[inline(always)]
    pub(super) fn lookup(&self, addr: IpAddr, vlan: Option<u16>) -> Entry {
        self.lookup_in(addr, self.overlay(vlan))
    }

    /// Longest matches for a packet's source and destination in the view of `vlan`.
    #[inline(always)]
    pub(super) fn lookup_pair(&self, (s, d): (IpAddr, IpAddr), vlan: Option<u16>) -> (Entry, Entry) {
        let overlay = self.overlay(vlan);
        (self.lookup_in(s, overlay), self.lookup_in(d, overlay))
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
            + self.overlays.len() * std::mem::size_of::<(Table4, Table6)>()
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
    let rules = RuleIndex::build(spec)?;
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

/// `(left-aligned key, length, segment)`, as [`Table4::build`] takes them.
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

    let v4 = Table4::build(&base4);
    let v6 = Table6::build(&base6);
    let overlays: Vec<(Table4, Table6)> = over
        .iter()
        .map(|(o4, o6)| (Table4::build(o4), Table6::build(o6)))
        .collect();
    let mut vlan_view = if overlays.is_empty() {
        Box::default()
    } else {
        vec![0u16; VLAN_IDS].into_boxed_slice()
    };
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
