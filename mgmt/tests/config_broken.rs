//! Every broken file under `tests/broken/` is refused with one line that names the
//! file, the field path and what is wrong, and `check` exits 2 on it.

use std::path::{Path, PathBuf};

use mgmt::config::Config;
use mgmt::lint::check_command;

/// (file, expected field path ("" for the whole file), expected wording).
const CASES: &[(&str, &str, &str)] = &[
    ("unknown_top_key.yaml", "defualt", "unknown key `defualt`"),
    ("unknown_segment_key.yaml", "segments[0].cidr", "unknown key `cidr` (allowed here: name, cidrs, vlans, mode)"),
    ("unknown_rule_key.yaml", "rules[0].port", "unknown key `port`"),
    ("bad_cidr.yaml", "segments[0].cidrs[1]", "`10.1.0/24` is not a CIDR"),
    ("prefix_too_long.yaml", "segments[0].cidrs[0]", "prefix length /33 is too long for IPv4 (at most /32)"),
    ("prefix_too_long_v6.yaml", "segments[0].cidrs[0]", "prefix length /129 is too long for IPv6"),
    ("host_bits.yaml", "segments[0].cidrs[0]", "has host bits set (0.0.0.5 beyond the /24 prefix); the network is 10.1.0.0/24"),
    ("duplicate_cidr.yaml", "segments[2].cidrs[1]", "10.1.0.0/24 is already in segment `web` (segments[0].cidrs[0])"),
    ("duplicate_cidr_vlan_overlap.yaml", "segments[1].cidrs[0]", "both segments apply to VLAN 200"),
    ("undefined_segment_in_rule.yaml", "rules[0].to", "segment `apj` is not defined (expected one of: any, web, api)"),
    ("undefined_unmatched.yaml", "unmatched", "segment `outside` is not defined (expected drop or one of: web, api)"),
    ("port_out_of_range.yaml", "rules[0].ports[1]", "port 70000 is out of range 0-65535"),
    ("port_range_out_of_range.yaml", "rules[0].ports[0]", "port 65536 is out of range 0-65535"),
    ("inverted_range.yaml", "rules[0].ports[1]", "port range 9100-9000 is inverted"),
    ("bad_port_string.yaml", "rules[0].source_ports[0]", "expected a port (0-65535) or a range"),
    ("duplicate_segment_name.yaml", "segments[2].name", "duplicate segment name `web` (also segments[0])"),
    ("duplicate_rule_name.yaml", "rules[1].name", "duplicate rule name `r0` (also rules[0])"),
    ("any_segment_name.yaml", "segments[0].name", "`any` is reserved"),
    ("bad_segment_name.yaml", "segments[0].name", "segment name \"web tier\" is not allowed"),
    ("icmp_types_with_tcp.yaml", "rules[0].icmp_types", "icmp_types need protocol icmp or icmpv6, and this rule's protocol is tcp"),
    ("ports_with_icmp.yaml", "rules[0].ports", "ports need protocol tcp, udp or sctp, and this rule's protocol is icmp, which has no ports"),
    ("ports_with_any_protocol.yaml", "rules[0].ports", "this rule's protocol is any"),
    ("vlan_out_of_range.yaml", "segments[0].vlans[1]", "VLAN id 4095 is out of range 1-4094"),
    ("empty.yaml", "", "file is empty"),
    ("only_comments.yaml", "", "file sets nothing"),
    ("syntax_error.yaml", "", "not valid YAML"),
    ("binary_garbage.yaml", "", "not a YAML text file"),
    ("not_a_mapping.yaml", "", "the file must be a mapping of keys (segments:, rules:, ...), found a list"),
    ("unknown_protocol.yaml", "rules[0].protocol", "unknown protocol `tcpp`"),
    ("protocol_number_out_of_range.yaml", "rules[0].protocol", "protocol number 300 is out of range 0-255"),
    ("bad_action.yaml", "rules[0].action", "unknown action `permit` (expected allow or deny)"),
    ("wrong_type_cidrs_scalar.yaml", "segments[0].cidrs", "expected a list, found"),
    ("wrong_type_log.yaml", "rules[0].log", "expected true or false, found the string \"yes\""),
    ("wrong_type_vlan_float.yaml", "segments[0].vlans[0]", "expected VLAN id (an integer), found the number 1.5"),
    ("wrong_type_rule_is_list.yaml", "rules[0]", "expected a rule: a mapping with keys name, from, to, protocol, ports, source_ports, icmp_types, action, log, found a list of 3 items"),
    ("missing_action.yaml", "rules[0]", "missing key `action`"),
    ("missing_segments.yaml", "segments", "a policy needs a `segments:` list"),
    ("bad_ethertype.yaml", "non_ip.ethertypes[1]", "ethertype 0x0800 is IPv4"),
    ("bad_default.yaml", "default", "unknown action `reject`"),
    ("appliance_unknown_port_in_pair.yaml", "appliance.pairs[0][1]", "port `south` is not defined in appliance.ports"),
    ("appliance_port_in_two_pairs.yaml", "appliance.pairs[1][0]", "port `east` is already in appliance.pairs[0]"),
    ("appliance_port_in_no_pair.yaml", "appliance.ports[2]", "port `spare` is in no pair"),
    ("appliance_duplicate_port_name.yaml", "appliance.ports[1].name", "duplicate port name `west`"),
    ("appliance_empty_workers.yaml", "appliance.workers", "missing or empty"),
    ("appliance_duplicate_worker.yaml", "appliance.workers[2]", "lcore 1 is listed twice (also appliance.workers[0])"),
    ("appliance_management_core_is_worker.yaml", "appliance.management_core", "core 2 is also a worker"),
    ("appliance_zero_mbufs.yaml", "appliance.mempool.mbufs", "a mempool of 0 mbufs"),
    ("appliance_descriptors_not_power_of_two.yaml", "appliance.descriptors.rx", "descriptor count 1000 is not a power of two"),
    ("appliance_bad_device.yaml", "appliance.ports[1].device", "`eth1` is neither a PCI address"),
    ("appliance_unknown_key.yaml", "appliance.worker", "unknown key `worker`"),
    ("sink_key_of_another_type.yaml", "appliance.events.sinks[0].transport", "`transport` does not apply to a file sink (its keys: type, path, format)"),
    ("sink_path_on_syslog.yaml", "appliance.events.sinks[1].path", "`path` does not apply to a syslog sink (its keys: type, address, transport, format, facility)"),
    ("sink_syslog_host_name.yaml", "appliance.events.sinks[0].address", "`syslog.example.com:514` is not an IP:PORT address such as 192.0.2.10:514 or [2001:db8::10]:514 (host names are not resolved)"),
    // Found by fuzzing: the `config` crate panicked on these (unreachable!()).
    ("null_mapping_key.yaml", "", "a mapping key must be a name, found null"),
    ("bool_mapping_key.yaml", "segments[0]", "a mapping key must be a name, found the boolean true"),
    ("deep_nesting.yaml", "rules", "nested deeper than 64 levels"),
];

fn broken(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/broken")
        .join(name)
}

fn expect_refused(path: &Path, field: &str, wording: &str) {
    let file = path.display().to_string();
    let err = match Config::load(path) {
        Ok(_) => panic!("{file}: loaded, but should have been refused ({wording})"),
        Err(e) => e,
    };
    let line = err.to_string();
    assert!(
        !line.contains('\n'),
        "{file}: error is not one line: {line:?}"
    );
    assert_eq!(err.file, file, "{line}");
    assert_eq!(err.path, field, "{line}");
    let prefix = if field.is_empty() {
        format!("{file}: ")
    } else {
        format!("{file}: {field}: ")
    };
    assert!(
        line.starts_with(&prefix),
        "{line:?} does not start with {prefix:?}"
    );
    assert!(line.contains(wording), "{line:?} does not say {wording:?}");

    let mut out = Vec::new();
    assert_eq!(
        check_command(path, &mut out),
        2,
        "{file}: check must exit 2"
    );
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        out,
        format!("{line}\n"),
        "{file}: check prints the one error line"
    );
}

#[test]
fn every_broken_file_is_refused_with_its_path_and_wording() {
    for (name, field, wording) in CASES {
        expect_refused(&broken(name), field, wording);
    }
}

#[test]
fn every_file_in_the_broken_folder_has_a_case() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in &names {
        assert!(
            CASES.iter().any(|(c, _, _)| c == n),
            "{n} has no entry in CASES"
        );
    }
    assert!(names.len() >= 30);
}

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bulkhead-config-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A ~5 MB file of 40,000 rules with one bad port near the end: refused with the exact
/// index, in reasonable time. Generated here rather than kept in git.
#[test]
fn a_large_file_is_refused_with_the_exact_path() {
    use std::fmt::Write as _;
    let mut t = String::from("segments:\n  - name: web\n    cidrs: [10.1.0.0/24]\n  - name: api\n    cidrs: [10.2.0.0/24]\nrules:\n");
    let n = 40_000;
    for i in 0..n {
        let port = if i == n - 7 { 99_999 } else { i % 60_000 };
        writeln!(
            t,
            "  - name: rule-number-{i:06}\n    from: web\n    to: api\n    protocol: tcp\n    ports: [{port}, \"10000-10010\", 443]\n    source_ports: [\"1024-65535\"]\n    action: allow\n    log: false"
        )
        .unwrap();
    }
    assert!(t.len() > 5_000_000, "{}", t.len());
    let path = temp_path("large.yaml");
    std::fs::write(&path, &t).unwrap();
    let started = std::time::Instant::now();
    expect_refused(
        &path,
        &format!("rules[{}].ports[0]", n - 7),
        "port 99999 is out of range 0-65535",
    );
    assert!(started.elapsed().as_secs() < 120);
    std::fs::remove_file(&path).unwrap();
}

/// A file over the size limit is refused before it is read (a sparse file: instant).
#[test]
fn an_oversized_file_is_refused_unread() {
    let path = temp_path("huge.yaml");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(mgmt::config::MAX_FILE_BYTES + 1).unwrap();
    drop(f);
    expect_refused(&path, "", "larger than the 256 MiB limit");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_missing_file_is_refused() {
    expect_refused(&broken("no-such-file.yaml"), "", "cannot read");
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    let text = format!("segments: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let e = Config::from_yaml_str("deep.yaml", &text).unwrap_err();
    assert!(
        e.to_string().starts_with("deep.yaml: not valid YAML"),
        "{e}"
    );
}
