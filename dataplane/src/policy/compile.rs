//! [`PolicySpec`] -> [`Policy`]: the prefix tables and the rule index.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::lpm::{key_v4, key_v6, Entry, Trie};
use super::rules::RuleIndex;
use super::spec::{Mode, PolicySpec, SegmentId, Unmatched};
use super::{CompileError, Policy};

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
                let key = u32::from(a);
                let base = self.v4.lookup_v4(key);
                match overlay {
                    Some((o, _)) => base.longer(o.lookup_v4(key)),
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
