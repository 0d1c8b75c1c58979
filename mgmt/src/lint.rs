//! Policy checks that do not refuse a file but deserve a warning, and the
//! `bulkhead check` command.
//!
//! Every warning is exact for what it claims: a rule reported as shadowed really can
//! never decide a packet, a rule reported as unable to match really cannot. Cases
//! beyond what is checked exactly (a rule covered only by the union of several earlier
//! rules, say) are not reported.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::Path;

use dataplane::packet::proto;
use dataplane::policy::spec::{
    Action, PolicySpec, PortRange, ProtocolMatch, RuleSpec, SegmentId, SegmentMatch, Unmatched,
};
use dataplane::policy::Policy;

use crate::config::{Config, ConfigError};

/// Exit status of `check` for a loadable policy (warnings allowed).
pub const EXIT_OK: i32 = 0;
/// Exit status of `check` (and `explain`) for a file that cannot be loaded.
pub const EXIT_INVALID: i32 = 2;

/// Pairwise shadowing comparisons `lint` does at most; past this it says it stopped.
pub const SHADOW_COMPARISON_BUDGET: u64 = 20_000_000;

/// One warning about a loadable policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// Field path of what the warning is about, e.g. `rules[3]`.
    pub path: String,
    /// What is odd, one line.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Checks a validated policy. Warnings come in file order: segments first, then rules.
pub fn lint(spec: &PolicySpec) -> Vec<Warning> {
    let mut out = Vec::new();
    let unmatched_seg = match spec.unmatched {
        Unmatched::Segment(id) => Some(id),
        Unmatched::Drop => None,
    };
    if spec.segments.is_empty() {
        out.push(Warning {
            path: "segments".to_string(),
            message: "no segments: every IP packet has addresses in no segment and is dropped"
                .to_string(),
        });
    }
    for (i, s) in spec.segments.iter().enumerate() {
        if s.cidrs.is_empty() && unmatched_seg != Some(i as SegmentId) {
            out.push(Warning {
                path: format!("segments[{i}]"),
                message: format!(
                    "segment `{}` has no CIDRs and is not the `unmatched` segment: no address is ever in it",
                    s.name
                ),
            });
        }
    }
    let mut rule_warnings: Vec<(usize, Warning)> = Vec::new();
    for (i, r) in spec.rules.iter().enumerate() {
        if let Some(why) = never_matches(spec, r) {
            rule_warnings.push((
                i,
                Warning {
                    path: format!("rules[{i}]"),
                    message: format!("rule `{}` can never match: {why}", r.name),
                },
            ));
        }
    }
    let (shadowed, stopped) = shadowed_rules(&spec.rules, SHADOW_COMPARISON_BUDGET);
    for (b, a) in shadowed {
        let (rb, ra) = (&spec.rules[b], &spec.rules[a]);
        // A rule that cannot match at all is reported once, as such.
        if rule_warnings.iter().any(|(i, _)| *i == b) {
            continue;
        }
        let tail = if ra.action == rb.action {
            "with the same action, so it is redundant"
        } else {
            "so its action never applies"
        };
        rule_warnings.push((
            b,
            Warning {
                path: format!("rules[{b}]"),
                message: format!(
                    "rule `{}` is shadowed by rule `{}` (rules[{a}]), which comes first and matches every packet it matches, {tail}",
                    rb.name, ra.name
                ),
            },
        ));
    }
    rule_warnings.sort_by_key(|(i, _)| *i);
    out.extend(rule_warnings.into_iter().map(|(_, w)| w));
    if stopped {
        out.push(Warning {
            path: "rules".to_string(),
            message: format!(
                "the shadowed-rule check stopped after {SHADOW_COMPARISON_BUDGET} comparisons; later rules were not all checked"
            ),
        });
    }
    out
}

/// Why a rule can never match, if it provably cannot.
fn never_matches(spec: &PolicySpec, r: &RuleSpec) -> Option<String> {
    let unmatched_seg = match spec.unmatched {
        Unmatched::Segment(id) => Some(id),
        Unmatched::Drop => None,
    };
    let seg = |m: SegmentMatch| match m {
        SegmentMatch::Segment(id) if Some(id) != unmatched_seg => {
            spec.segments.get(usize::from(id)).map(|s| (id, s))
        }
        _ => None,
    };
    for (side, m) in [("from", r.from), ("to", r.to)] {
        if let Some((_, s)) = seg(m) {
            if s.cidrs.is_empty() {
                return Some(format!(
                    "its `{side}` segment `{}` has no CIDRs (and is not the `unmatched` segment)",
                    s.name
                ));
            }
        }
    }
    if let (Some((_, a)), Some((_, b))) = (seg(r.from), seg(r.to)) {
        if !a.vlans.is_empty()
            && !b.vlans.is_empty()
            && !a.vlans.iter().any(|v| b.vlans.contains(v))
        {
            return Some(format!(
                "segment `{}` is only on VLANs {:?} and segment `{}` only on VLANs {:?}; a packet has one VLAN",
                a.name, a.vlans, b.name, b.vlans
            ));
        }
    }
    if spec.non_ip.allow_neighbor_discovery
        && r.protocol == ProtocolMatch::Number(proto::ICMPV6)
        && !r.icmp_types.is_empty()
        && r.icmp_types.iter().all(|t| (133..=137).contains(t))
    {
        return Some(
            "neighbour discovery (ICMPv6 types 133-137) is allowed before any rule (non_ip.neighbor_discovery: allow)"
                .to_string(),
        );
    }
    None
}

/// Sorted, merged (adjacent ranges joined) copy of a list of ranges.
fn merge(ranges: &[PortRange]) -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> = ranges
        .iter()
        .map(|r| (u32::from(r.lo), u32::from(r.hi)))
        .collect();
    v.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if lo <= last.1 + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// Whether the port set `b` (merged) lies inside `a` (merged); an empty list is every
/// port.
fn ports_within(b: &[(u32, u32)], a: &[(u32, u32)]) -> bool {
    if a.is_empty() {
        return true;
    }
    if b.is_empty() {
        return false;
    }
    b.iter()
        .all(|&(lo, hi)| a.iter().any(|&(alo, ahi)| alo <= lo && hi <= ahi))
}

fn types_within(b: &[u8], a: &[u8]) -> bool {
    a.is_empty() || (!b.is_empty() && b.iter().all(|t| a.contains(t)))
}

/// Pairs `(shadowed, shadowing)`: rule `shadowed` matches only packets that the earlier
/// rule `shadowing` (the first such) also matches. The second value says whether the
/// comparison budget ran out.
///
/// Rules are grouped by (from, to, protocol); a rule can only be covered by an earlier
/// rule whose from, to and protocol are each equal or `Any`, so at most eight groups are
/// looked at. In each group the first rule without port or type constraints covers all
/// later rules of narrower groups at once; constrained rules are compared one by one.
pub fn shadowed_rules(rules: &[RuleSpec], budget: u64) -> (Vec<(usize, usize)>, bool) {
    type Key = (SegmentMatch, SegmentMatch, ProtocolMatch);
    #[derive(Default)]
    struct Group {
        unconstrained: Option<usize>,
        constrained: Vec<usize>,
    }
    struct Merged {
        dst: Vec<(u32, u32)>,
        src: Vec<(u32, u32)>,
    }
    let merged: Vec<Merged> = rules
        .iter()
        .map(|r| Merged {
            dst: merge(&r.dst_ports),
            src: merge(&r.src_ports),
        })
        .collect();
    let mut groups: HashMap<Key, Group> = HashMap::new();
    let mut out = Vec::new();
    let mut spent: u64 = 0;
    let mut stopped = false;
    for (b, rb) in rules.iter().enumerate() {
        let froms: &[SegmentMatch] = if rb.from == SegmentMatch::Any {
            &[SegmentMatch::Any]
        } else {
            &[SegmentMatch::Any, rb.from]
        };
        let tos: &[SegmentMatch] = if rb.to == SegmentMatch::Any {
            &[SegmentMatch::Any]
        } else {
            &[SegmentMatch::Any, rb.to]
        };
        let protos: &[ProtocolMatch] = if rb.protocol == ProtocolMatch::Any {
            &[ProtocolMatch::Any]
        } else {
            &[ProtocolMatch::Any, rb.protocol]
        };
        let mut first: Option<usize> = None;
        for &f in froms {
            for &t in tos {
                for &p in protos {
                    let Some(g) = groups.get(&(f, t, p)) else {
                        continue;
                    };
                    if let Some(a) = g.unconstrained {
                        first = Some(first.map_or(a, |x| x.min(a)));
                    }
                    for &a in &g.constrained {
                        if first.is_some_and(|x| x <= a) {
                            break;
                        }
                        if spent >= budget {
                            stopped = true;
                            break;
                        }
                        spent += 1;
                        let ra = &rules[a];
                        if ports_within(&merged[b].dst, &merged[a].dst)
                            && ports_within(&merged[b].src, &merged[a].src)
                            && types_within(&rb.icmp_types, &ra.icmp_types)
                        {
                            first = Some(a);
                            break;
                        }
                    }
                }
            }
        }
        if let Some(a) = first {
            out.push((b, a));
        }
        let g = groups.entry((rb.from, rb.to, rb.protocol)).or_default();
        let unconstrained =
            rb.dst_ports.is_empty() && rb.src_ports.is_empty() && rb.icmp_types.is_empty();
        if unconstrained {
            if g.unconstrained.is_none() {
                g.unconstrained = Some(b);
            }
        } else if g.unconstrained.is_none() {
            // Behind an unconstrained rule of the same group a constrained one can cover
            // nothing the unconstrained one does not: no need to keep it.
            g.constrained.push(b);
        }
    }
    (out, stopped)
}

/// Counts for the summary line.
fn summary(cfg: &Config, warnings: usize) -> String {
    let p = &cfg.policy;
    let v4 = p
        .segments
        .iter()
        .flat_map(|s| &s.cidrs)
        .filter(|c| matches!(c, ipnet::IpNet::V4(_)))
        .count();
    let total: usize = p.segments.iter().map(|s| s.cidrs.len()).sum();
    let allow = p.rules.iter().filter(|r| r.action == Action::Allow).count();
    let mut line = format!(
        "{}: ok: {} segments, {} CIDRs ({} IPv4, {} IPv6), {} rules ({} allow, {} deny), {} warning{}",
        cfg.file,
        p.segments.len(),
        total,
        v4,
        total - v4,
        p.rules.len(),
        allow,
        p.rules.len() - allow,
        warnings,
        if warnings == 1 { "" } else { "s" }
    );
    if let Some(a) = &cfg.appliance {
        line.push_str(&format!(
            "; appliance: {} ports in {} pair{}, {} worker{}",
            a.ports.len(),
            a.pairs.len(),
            if a.pairs.len() == 1 { "" } else { "s" },
            a.workers.len(),
            if a.workers.len() == 1 { "" } else { "s" }
        ));
    }
    line
}

/// Loads a file and compiles its policy, as `check` and `explain` do: a policy that the
/// dataplane refuses is refused here too, with the file's name.
pub fn load_and_compile(path: &Path) -> Result<(Config, Policy), ConfigError> {
    let cfg = Config::load(path)?;
    let policy = Policy::compile(&cfg.policy, 0).map_err(|e| {
        ConfigError::new(
            &cfg.file,
            "",
            format!("the dataplane cannot compile this policy: {e}"),
        )
    })?;
    Ok((cfg, policy))
}

/// `bulkhead check FILE`: loads and validates the file (the `appliance:` section too,
/// when present), compiles the policy, and writes to `out` one line per warning
/// (`FILE: warning: PATH: ...`) and a summary line (`FILE: ok: ...`).
///
/// Returns [`EXIT_OK`] (0) when the file is loadable, warnings or not, and
/// [`EXIT_INVALID`] (2) when it is not; then the one error line
/// (`FILE: PATH: what is wrong`) is the only thing written.
pub fn check_command(path: &Path, out: &mut dyn Write) -> i32 {
    let (cfg, _policy) = match load_and_compile(path) {
        Ok(x) => x,
        Err(e) => {
            let _ = writeln!(out, "{e}");
            return EXIT_INVALID;
        }
    };
    let warnings = lint(&cfg.policy);
    for w in &warnings {
        let _ = writeln!(out, "{}: warning: {w}", cfg.file);
    }
    let _ = writeln!(out, "{}", summary(&cfg, warnings.len()));
    EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, from: SegmentMatch, to: SegmentMatch, p: ProtocolMatch) -> RuleSpec {
        RuleSpec {
            name: name.to_string(),
            from,
            to,
            protocol: p,
            dst_ports: vec![],
            src_ports: vec![],
            icmp_types: vec![],
            action: Action::Allow,
            log: false,
        }
    }

    fn pr(lo: u16, hi: u16) -> PortRange {
        PortRange { lo, hi }
    }

    const TCP: ProtocolMatch = ProtocolMatch::Number(6);
    const UDP: ProtocolMatch = ProtocolMatch::Number(17);
    const S0: SegmentMatch = SegmentMatch::Segment(0);
    const S1: SegmentMatch = SegmentMatch::Segment(1);
    const ANY: SegmentMatch = SegmentMatch::Any;

    #[test]
    fn merged_ranges_cover_joined_ranges() {
        let a = merge(&[pr(1, 5), pr(6, 10), pr(20, 30)]);
        assert_eq!(a, vec![(1, 10), (20, 30)]);
        assert!(ports_within(&merge(&[pr(3, 8)]), &a));
        assert!(!ports_within(&merge(&[pr(3, 12)]), &a));
        assert!(!ports_within(&[], &a));
        assert!(ports_within(&[], &[]));
    }

    #[test]
    fn shadowing_is_found_and_not_invented() {
        let mut a = rule("a", S0, ANY, TCP);
        a.dst_ports = vec![pr(80, 90)];
        let mut b = rule("b", S0, S1, TCP);
        b.dst_ports = vec![pr(85, 85)];
        let mut c = rule("c", S0, S1, TCP);
        c.dst_ports = vec![pr(85, 95)]; // not inside a
        let d = rule("d", S0, S1, UDP); // other protocol
        let e = rule("e", ANY, ANY, ProtocolMatch::Any);
        let f = rule("f", S1, S0, UDP); // after e: shadowed by e
        let (found, stopped) = shadowed_rules(&[a, b, c, d, e, f], u64::MAX);
        assert!(!stopped);
        assert_eq!(found, vec![(1, 0), (5, 4)]);
    }

    #[test]
    fn the_earliest_shadowing_rule_is_named() {
        let mut a = rule("a", S0, S1, TCP);
        a.dst_ports = vec![pr(1, 100)];
        let b = rule("b", ANY, ANY, TCP);
        let mut c = rule("c", S0, S1, TCP);
        c.dst_ports = vec![pr(5, 6)];
        let (found, _) = shadowed_rules(&[a, b, c], u64::MAX);
        assert_eq!(found, vec![(2, 0)]);
    }

    #[test]
    fn budget_stops_the_check() {
        let rules: Vec<RuleSpec> = (0..100)
            .map(|i| {
                let mut r = rule(&format!("r{i}"), S0, S1, TCP);
                r.dst_ports = vec![pr(i, i)];
                r
            })
            .collect();
        let (found, stopped) = shadowed_rules(&rules, 10);
        assert!(found.is_empty());
        assert!(stopped);
    }
}
