//! Good files load to exactly the expected validated types; the example loads; `check`
//! warns about what it should and only that.

use std::path::{Path, PathBuf};

use dataplane::policy::spec::{
    Action, NonIpSpec, PolicySpec, PortRange, ProtocolMatch, RuleSpec, SegmentMatch, SegmentSpec,
    Unmatched,
};
use mgmt::config::{ApplianceConfig, Config, DescriptorConfig, Device, MempoolConfig, PortConfig};
use mgmt::lint::{check_command, lint};

fn manifest(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}

fn pr(lo: u16, hi: u16) -> PortRange {
    PortRange { lo, hi }
}

#[test]
fn a_full_file_loads_to_the_expected_spec() {
    let cfg = Config::load(&manifest("tests/good/full.yaml")).unwrap();
    let seg = |name: &str, cidrs: &[&str], vlans: &[u16]| SegmentSpec {
        name: name.to_string(),
        cidrs: cidrs.iter().map(|c| net(c)).collect(),
        vlans: vlans.to_vec(),
        mode: dataplane::policy::Mode::Protect,
    };
    let expected = PolicySpec {
        segments: vec![
            seg("web", &["10.1.0.0/24", "fd00:1::/64"], &[100]),
            seg("web-b", &["10.1.0.0/24"], &[200, 201]),
            seg("host1", &["10.1.0.7/32"], &[]),
            seg("outside", &[], &[]),
        ],
        rules: vec![
            RuleSpec {
                name: "web-to-host".to_string(),
                from: SegmentMatch::Segment(0),
                to: SegmentMatch::Segment(2),
                protocol: ProtocolMatch::Number(6),
                dst_ports: vec![pr(8080, 8080), pr(9000, 9100)],
                src_ports: vec![pr(1024, 65535)],
                icmp_types: vec![],
                action: Action::Allow,
                log: true,
            },
            RuleSpec {
                name: "ping".to_string(),
                from: SegmentMatch::Any,
                to: SegmentMatch::Segment(0),
                protocol: ProtocolMatch::Number(1),
                dst_ports: vec![],
                src_ports: vec![],
                icmp_types: vec![8, 0],
                action: Action::Allow,
                log: false,
            },
            RuleSpec {
                name: "gre".to_string(),
                from: SegmentMatch::Segment(3),
                to: SegmentMatch::Any,
                protocol: ProtocolMatch::Number(47),
                dst_ports: vec![],
                src_ports: vec![],
                icmp_types: vec![],
                action: Action::Deny,
                log: false,
            },
            RuleSpec {
                name: "quoted-number".to_string(),
                from: SegmentMatch::Any,
                to: SegmentMatch::Any,
                protocol: ProtocolMatch::Number(132),
                dst_ports: vec![pr(80, 80)],
                src_ports: vec![],
                icmp_types: vec![],
                action: Action::Allow,
                log: false,
            },
        ],
        default_action: Action::Allow,
        intra_segment_default: Action::Deny,
        unmatched: Unmatched::Segment(3),
        non_ip: NonIpSpec {
            allow_arp: false,
            allow_llc: false,
            allow_neighbor_discovery: true,
            allowed_ethertypes: vec![0x88cc, 0x88b5],
        },
    };
    let got = cfg.policy.clone();
    assert_eq!(got, expected);

    let expected_appliance = ApplianceConfig {
        ports: vec![
            PortConfig {
                name: "west".into(),
                device: Device::Pci("0000:03:00.0".into()),
            },
            PortConfig {
                name: "east".into(),
                device: Device::Pci("0000:03:00.1".into()),
            },
            PortConfig {
                name: "host".into(),
                device: Device::Vdev("net_tap0,iface=bh0".into()),
            },
            PortConfig {
                name: "wire".into(),
                device: Device::Vdev("net_af_packet0,iface=eth9".into()),
            },
        ],
        pairs: vec![[0, 1], [2, 3]],
        workers: vec![2, 3],
        management_core: Some(0),
        mempool: MempoolConfig {
            mbufs: 16383,
            cache: 128,
        },
        descriptors: DescriptorConfig { rx: 2048, tx: 512 },
        hugepages: false,
        memory_mb: 512,
        eal_args: vec!["--log-level=8".into(), "--file-prefix=bh".into()],
        conntrack: Some(dataplane::conntrack::Config::default()),
        management: mgmt::config::ManagementConfig {
            metrics: Some("127.0.0.1:9464".parse().unwrap()),
            control_socket: Some(mgmt::control::default_socket_path()),
            watch: true,
        },
        events: mgmt::config::EventsConfig { sinks: vec![], aggregator: Default::default() },
    };
    assert_eq!(cfg.appliance, Some(expected_appliance));
    assert_eq!(cfg.appliance.as_ref().unwrap().effective_memory_mb(), 512);
    assert_eq!(
        cfg.appliance.as_ref().unwrap().ports[2].device.eal_args(),
        ["--vdev".to_string(), "net_tap0,iface=bh0".to_string()]
    );
}

#[test]
fn a_minimal_file_takes_the_documented_defaults() {
    let cfg = Config::from_yaml_str(
        "min.yaml",
        "segments:\n  - name: a\n    cidrs: [10.0.0.0/8]\n",
    )
    .unwrap();
    assert_eq!(cfg.appliance, None);
    let p = cfg.policy;
    assert!(p.rules.is_empty());
    assert_eq!(p.default_action, Action::Deny);
    assert_eq!(p.intra_segment_default, Action::Deny);
    assert_eq!(p.unmatched, Unmatched::Drop);
    assert_eq!(
        p.non_ip,
        NonIpSpec {
            allow_arp: true,
            allow_llc: false,
            allow_neighbor_discovery: true,
            allowed_ethertypes: vec![]
        }
    );
}

#[test]
fn appliance_defaults() {
    let text = "appliance:\n  ports: [{name: a, device: net_null0}, {name: b, device: net_null1}]\n  pairs: [[a, b]]\n  workers: [1]\nsegments: []\n";
    let a = Config::from_yaml_str("a.yaml", text)
        .unwrap()
        .appliance
        .unwrap();
    assert_eq!(
        a.mempool,
        MempoolConfig {
            mbufs: 8191,
            cache: 256
        }
    );
    assert_eq!(a.descriptors, DescriptorConfig { rx: 1024, tx: 1024 });
    assert!(a.hugepages);
    assert_eq!(a.memory_mb, 0);
    assert_eq!(a.management_core, None);
    assert!(a.eal_args.is_empty());
}

#[test]
fn same_prefix_on_disjoint_vlans_and_nested_prefixes_are_legal() {
    let text = "segments:\n  - {name: a, cidrs: [10.1.0.0/24], vlans: [1, 2]}\n  - {name: b, cidrs: [10.1.0.0/24], vlans: [3]}\n  - {name: c, cidrs: [10.0.0.0/8, 10.1.0.0/16]}\n";
    let cfg = Config::from_yaml_str("v.yaml", text).unwrap();
    assert_eq!(cfg.policy.segments.len(), 3);
}

#[test]
fn the_example_loads_and_checks_clean() {
    let path = manifest("../configs/policy-example.yaml");
    let cfg = Config::load(&path).unwrap();
    assert!(cfg.appliance.is_some());
    assert!(lint(&cfg.policy).is_empty(), "{:?}", lint(&cfg.policy));
    let mut out = Vec::new();
    assert_eq!(check_command(&path, &mut out), 0);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains(
            ": ok: 6 segments, 7 CIDRs (5 IPv4, 2 IPv6), 8 rules (7 allow, 1 deny), 0 warnings"
        ),
        "{out}"
    );
}

const BASE: &str = "segments:\n  - {name: web, cidrs: [10.1.0.0/24]}\n  - {name: api, cidrs: [10.2.0.0/24]}\n  - {name: ops, cidrs: [10.3.0.0/24], vlans: [10]}\n  - {name: lab, cidrs: [10.4.0.0/24], vlans: [20]}\n  - {name: void}\n";

fn warnings(rules: &str) -> Vec<String> {
    let cfg = Config::from_yaml_str("w.yaml", &format!("{BASE}rules:\n{rules}")).unwrap();
    lint(&cfg.policy)
        .into_iter()
        .map(|w| w.to_string())
        .collect()
}

#[test]
fn a_shadowed_rule_is_reported_with_its_shadow() {
    let w = warnings(
        "  - {name: web-api, from: web, to: any, protocol: tcp, ports: [\"8000-9000\"], action: allow}\n  - {name: narrow, from: web, to: api, protocol: tcp, ports: [8080, 8443], action: deny}\n",
    );
    let shadow: Vec<&String> = w.iter().filter(|w| w.contains("shadowed")).collect();
    assert_eq!(shadow.len(), 1, "{w:?}");
    assert!(
        shadow[0].starts_with("rules[1]: rule `narrow` is shadowed by rule `web-api` (rules[0])"),
        "{w:?}"
    );
    assert!(shadow[0].contains("so its action never applies"), "{w:?}");
}

#[test]
fn a_rule_that_is_not_covered_is_not_reported() {
    let w = warnings(
        // narrower first, then broader: fine; and a partial overlap: fine; other protocol: fine
        "  - {name: narrow, from: web, to: api, protocol: tcp, ports: [8080], action: deny}\n  - {name: broad, from: web, to: any, protocol: tcp, ports: [\"8000-9000\"], action: allow}\n  - {name: overlap, from: web, to: api, protocol: tcp, ports: [\"8500-9500\"], action: allow}\n  - {name: udp, from: web, to: api, protocol: udp, action: allow}\n  - {name: src-narrow, from: web, to: api, protocol: udp, source_ports: [53], action: allow}\n",
    );
    let shadow: Vec<&String> = w.iter().filter(|w| w.contains("shadowed")).collect();
    // Only src-narrow, covered by `udp` (any port).
    assert_eq!(shadow.len(), 1, "{w:?}");
    assert!(
        shadow[0].starts_with("rules[4]: rule `src-narrow` is shadowed by rule `udp` (rules[3])"),
        "{w:?}"
    );
    assert!(shadow[0].contains("redundant"), "{w:?}");
}

#[test]
fn rules_that_cannot_match_and_empty_segments_are_reported() {
    let w = warnings(
        "  - {name: cross-vlan, from: ops, to: lab, action: allow}\n  - {name: to-void, from: web, to: void, action: allow}\n  - {name: nd, from: any, to: any, protocol: icmpv6, icmp_types: [135, 136], action: deny}\n  - {name: fine, from: ops, to: web, action: allow}\n",
    );
    assert_eq!(w.len(), 4, "{w:?}");
    assert!(
        w[0].starts_with("segments[4]: segment `void` has no CIDRs"),
        "{w:?}"
    );
    assert!(
        w[1].starts_with(
            "rules[0]: rule `cross-vlan` can never match: segment `ops` is only on VLANs [10]"
        ),
        "{w:?}"
    );
    assert!(
        w[2].starts_with(
            "rules[1]: rule `to-void` can never match: its `to` segment `void` has no CIDRs"
        ),
        "{w:?}"
    );
    assert!(
        w[3].starts_with("rules[2]: rule `nd` can never match: neighbour discovery"),
        "{w:?}"
    );
}

#[test]
fn check_prints_warnings_and_still_exits_0() {
    let dir = std::env::temp_dir().join(format!("bulkhead-good-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shadow.yaml");
    std::fs::write(
        &path,
        format!("{BASE}unmatched: void\nrules:\n  - {{name: all, from: any, to: any, action: allow}}\n  - {{name: late, from: web, to: api, protocol: tcp, action: deny}}\n"),
    )
    .unwrap();
    let mut out = Vec::new();
    assert_eq!(check_command(&path, &mut out), 0);
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let file = path.display().to_string();
    assert_eq!(
        lines[0],
        format!("{file}: warning: rules[1]: rule `late` is shadowed by rule `all` (rules[0]), which comes first and matches every packet it matches, so its action never applies")
    );
    assert!(lines[1].starts_with(&format!("{file}: ok: 5 segments, 4 CIDRs (4 IPv4, 0 IPv6), 2 rules (1 allow, 1 deny), 1 warning")), "{out}");
    std::fs::remove_file(&path).unwrap();
}

/// Each sink type loads with every key that applies to it.
#[test]
fn every_sink_type_loads_with_its_keys() {
    use mgmt::events::{Format, Target};
    let text = std::fs::read_to_string(manifest("tests/broken/appliance_unknown_key.yaml")).unwrap().replace(
        "  worker: [2]\n",
        "  events:\n    sinks:\n      - { type: stdout, format: cef }\n      - { type: file, path: /tmp/e.jsonl, format: json }\n\
         \x20     - { type: syslog, transport: tcp, address: \"[2001:db8::10]:514\", format: text, facility: auth }\n",
    );
    let cfg = Config::from_yaml_str("sinks.yaml", &text).unwrap();
    let sinks = cfg.appliance.unwrap().events.sinks;
    assert_eq!(sinks.len(), 3);
    assert_eq!((&sinks[0].target, &sinks[0].format), (&Target::Stdout, &Format::Cef));
    assert_eq!((&sinks[1].target, &sinks[1].format), (&Target::File("/tmp/e.jsonl".into()), &Format::Json));
    assert_eq!(sinks[2].target, Target::SyslogTcp("[2001:db8::10]:514".parse().unwrap()));
}
