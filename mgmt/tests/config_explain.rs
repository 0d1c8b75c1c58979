//! `explain` on the example policy: the segments, the prefixes that put the addresses
//! there, the deciding rule or default, the verdict and the exit status.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use mgmt::explain::{explain_command, ExplainArgs, EXIT_ALLOW, EXIT_DENY};
use mgmt::lint::EXIT_INVALID;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/policy-example.yaml")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn run(args: &ExplainArgs) -> (i32, String) {
    let mut out = Vec::new();
    let rc = explain_command(args, &mut out);
    (rc, String::from_utf8(out).unwrap())
}

fn tcp(src: &str, dst: &str, dport: u16) -> ExplainArgs {
    let mut a = ExplainArgs::new(example(), ip(src), ip(dst), "tcp");
    a.sport = Some(40000);
    a.dport = Some(dport);
    a
}

#[test]
fn an_allowed_flow_names_segments_prefixes_and_rule() {
    let (rc, out) = run(&tcp("10.1.0.5", "10.2.0.7", 8080));
    assert_eq!(rc, EXIT_ALLOW, "{out}");
    assert!(
        out.contains("packet:      tcp 10.1.0.5:40000 -> 10.2.0.7:8080, untagged"),
        "{out}"
    );
    assert!(
        out.contains("source:      10.1.0.5 is in segment `web` (prefix 10.1.0.0/24)"),
        "{out}"
    );
    assert!(
        out.contains("destination: 10.2.0.7 is in segment `api` (prefix 10.2.0.0/24)"),
        "{out}"
    );
    assert!(out.contains("rule `web-to-api` (rules[0]: from web to api, protocol tcp, ports 8080, 9000-9100; action allow)"), "{out}");
    assert!(out.contains("verdict:     ALLOW"), "{out}");
}

#[test]
fn a_denied_flow_names_the_default_and_exits_1() {
    let (rc, out) = run(&tcp("10.1.0.5", "10.3.0.9", 5432));
    assert_eq!(rc, EXIT_DENY, "{out}");
    assert!(
        out.contains("different segments, so `default: deny` applies"),
        "{out}"
    );
    assert!(
        out.contains("verdict:     DENY (dropped, counted as "),
        "{out}"
    );
}

#[test]
fn a_logged_rule_and_the_most_specific_prefix() {
    let (rc, out) = run(&tcp("10.2.0.7", "10.3.0.9", 5432));
    assert_eq!(rc, EXIT_ALLOW, "{out}");
    assert!(out.contains("logged as a security event"), "{out}");
    // 10.3.0.241 is in db's /24 but db-admin's /28 is more specific.
    let (rc, out) = run(&tcp("10.2.0.7", "10.3.0.241", 5432));
    assert_eq!(rc, EXIT_DENY, "{out}");
    assert!(
        out.contains("10.3.0.241 is in segment `db-admin` (prefix 10.3.0.240/28)"),
        "{out}"
    );
}

#[test]
fn unmatched_addresses_go_to_the_unmatched_segment() {
    let mut a = ExplainArgs::new(example(), ip("10.1.0.5"), ip("8.8.8.8"), "udp");
    a.dport = Some(53);
    let (rc, out) = run(&a);
    assert_eq!(rc, EXIT_ALLOW, "{out}");
    assert!(out.contains("8.8.8.8 is in no segment's prefixes; `unmatched: outside` puts it in segment `outside`"), "{out}");
    assert!(out.contains("(source port not given: 0 assumed)"), "{out}");
    assert!(out.contains("rule `dns-out` (rules[5]"), "{out}");
}

#[test]
fn vlans_decide_segment_membership() {
    let mut a = tcp("192.168.100.5", "10.1.0.5", 22);
    a.vlan = Some(100);
    let (rc, out) = run(&a);
    assert_eq!(rc, EXIT_ALLOW, "{out}");
    assert!(
        out.contains(
            "segment `mgmt-vlan` (prefix 192.168.100.0/24, segment restricted to VLANs [100])"
        ),
        "{out}"
    );
    assert!(out.contains("VLAN 100"), "{out}");
    // Untagged, the same address is in no segment: outside, and ssh from outside is denied.
    a.vlan = None;
    let (rc, out) = run(&a);
    assert_eq!(rc, EXIT_DENY, "{out}");
    assert!(
        out.contains("192.168.100.5 is in no segment's prefixes"),
        "{out}"
    );
}

#[test]
fn intra_segment_and_icmp() {
    let (rc, out) = run(&tcp("10.1.0.5", "10.1.0.6", 80));
    assert_eq!(rc, EXIT_ALLOW, "{out}");
    assert!(
        out.contains("same segment, so `intra_segment: allow` applies"),
        "{out}"
    );
    let a = ExplainArgs::new(example(), ip("8.8.8.8"), ip("10.1.0.5"), "icmp");
    let (rc, out) = run(&a);
    assert_eq!(rc, EXIT_ALLOW, "{out}");
    assert!(out.contains("icmp type 8 code 0"), "{out}");
    assert!(out.contains("rule `ping-web` (rules[3]"), "{out}");
    let mut a = ExplainArgs::new(example(), ip("8.8.8.8"), ip("10.1.0.5"), "icmp");
    a.icmp_type = Some(13);
    assert_eq!(run(&a).0, EXIT_DENY);
}

#[test]
fn ipv6_and_neighbor_discovery() {
    let mut a = ExplainArgs::new(example(), ip("fd00:1::5"), ip("fd00:2::7"), "tcp");
    a.dport = Some(9050);
    let (rc, out) = run(&a);
    assert_eq!(rc, EXIT_ALLOW, "{out}");
    assert!(out.contains("[fd00:1::5]:0 -> [fd00:2::7]:9050"), "{out}");
    assert!(out.contains("prefix fd00:1::/64"), "{out}");
    let mut a = ExplainArgs::new(example(), ip("fd00:1::5"), ip("fd00:2::7"), "icmpv6");
    a.icmp_type = Some(135);
    let (rc, out) = run(&a);
    assert_eq!(rc, EXIT_ALLOW, "{out}");
    assert!(out.contains("neighbour discovery"), "{out}");
}

#[test]
fn bad_descriptions_and_files_exit_2() {
    let a = ExplainArgs::new(example(), ip("10.1.0.5"), ip("fd00::1"), "tcp");
    let (rc, out) = run(&a);
    assert_eq!(rc, EXIT_INVALID);
    assert!(
        out.starts_with("explain: --src and --dst must both be"),
        "{out}"
    );
    let a = ExplainArgs::new(example(), ip("10.1.0.5"), ip("10.2.0.7"), "tcp");
    let (rc, out) = run(&a);
    assert_eq!(rc, EXIT_INVALID);
    assert!(out.contains("--dport: required"), "{out}");
    let mut a = ExplainArgs::new(example(), ip("10.1.0.5"), ip("10.2.0.7"), "icmp");
    a.dport = Some(1);
    assert_eq!(run(&a).0, EXIT_INVALID);
    let a = ExplainArgs::new(example(), ip("10.1.0.5"), ip("10.2.0.7"), "bogus");
    assert_eq!(run(&a).0, EXIT_INVALID);
    let broken = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken/host_bits.yaml");
    let mut a = tcp("10.1.0.5", "10.2.0.7", 80);
    a.file = broken;
    let (rc, out) = run(&a);
    assert_eq!(rc, EXIT_INVALID);
    assert!(
        out.contains("host_bits.yaml: segments[0].cidrs[0]: "),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1);
}

/// The frame a packet description stands for: Ethernet, an IPv4 or IPv6 header with
/// protocol `p`, and 8 bytes of L4 header (`l4`).
fn frame(src: IpAddr, dst: IpAddr, p: u8, l4: [u8; 8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 28, 0, 1, 0, 0, 64, p, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 8, p, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => unreachable!(),
    }
    f.extend_from_slice(&l4);
    f
}

/// ICMPv6 in IPv4 and ICMP in IPv6 carry no ICMP header the dataplane reads (it reads
/// one for protocol 1 in IPv4 and 58 in IPv6 only): `explain` describes the packet as
/// the parser does, so it gives the dataplane's verdict, not the ping rules'.
#[test]
fn icmp_of_the_other_family_has_no_icmp_header() {
    let (_cfg, policy) = mgmt::lint::load_and_compile(&example()).unwrap();
    for (src, dst, p, name, ty) in [
        ("10.2.0.7", "10.1.0.5", 58u8, "icmpv6", 128u8),
        ("fd00:2::7", "fd00:1::5", 1, "icmp", 8),
    ] {
        let a = ExplainArgs::new(example(), ip(src), ip(dst), name);
        let (meta, _notes) = mgmt::explain::packet_meta(&a).unwrap();
        // An echo request's header bytes after the IP header: the parser ignores them.
        let parsed = dataplane::packet::parse(&frame(ip(src), ip(dst), p, [ty, 0, 0, 0, 0, 1, 0, 1])).unwrap();
        assert_eq!(meta, parsed, "{name} from {src}");
        let d = policy.classify(&parsed);
        assert!(!d.verdict.is_allow(), "the dataplane denies {name} from {src}: {d:?}");
        let (rc, out) = run(&a);
        assert_eq!(rc, EXIT_DENY, "{out}");
        assert!(out.contains("no ICMP header"), "{out}");
        assert!(!out.contains("ping"), "{out}");
        // An ICMP type cannot be asked for: the dataplane would never see one.
        let mut a = a;
        a.icmp_type = Some(ty);
        let (rc, out) = run(&a);
        assert_eq!(rc, EXIT_INVALID, "{out}");
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.starts_with(&format!("explain: --icmp-type: protocol {name} in IPv")), "{out}");
    }
    // The matching family still reads the header and the ping rules apply.
    for (src, dst, name) in [("10.2.0.7", "10.1.0.5", "icmp"), ("fd00:2::7", "fd00:1::5", "icmpv6")] {
        let (rc, out) = run(&ExplainArgs::new(example(), ip(src), ip(dst), name));
        assert_eq!(rc, EXIT_ALLOW, "{out}");
        assert!(out.contains("rule `ping"), "{out}");
    }
}
