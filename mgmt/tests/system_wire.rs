//! Ring 3, bump-in-the-wire: L2 transparency of the real `bulkhead` binary on the
//! namespace test-bed of `scripts/testbed.sh` (west: web, ops; east: api, db). VLAN
//! tags cross the wire unchanged and segments can be restricted to a VLAN (tagged
//! frames are sent raw: the test machine's kernel may have no 8021q module for VLAN
//! sub-interfaces); ARP resolves across; source and destination MACs are untouched;
//! jumbo MTUs are refused at start-up.
//!
//! Needs root. Each test makes its own test-bed under a unique prefix and removes it
//! (namespaces and the processes in them) when it ends, pass or fail; one at a time.

mod common;

use common::{config, counter, pair, serial, Appliance, Capture, Testbed};

const WEB: &str = "10.10.1.10";
const API: &str = "10.10.2.10";

/// The demo's appliance section with a policy of VLAN-restricted segments: the same
/// prefix 10.100.0.0/24 is segment `v100` on VLAN 100 and `v200` on VLAN 200; only
/// `v100` may ping inside itself. Untagged web and api may ping each other.
fn vlan_config() -> String {
    let demo = config("demo.yaml");
    let appliance = &demo[..demo.find("\nsegments:").unwrap()];
    format!(
        "{appliance}
segments:
  - {{name: web, cidrs: [10.10.1.0/24]}}
  - {{name: api, cidrs: [10.10.2.0/24]}}
  - {{name: v100, cidrs: [10.100.0.0/24], vlans: [100]}}
  - {{name: v200, cidrs: [10.100.0.0/24], vlans: [200]}}
rules:
  - {{name: web-api-ping, from: web, to: api, protocol: icmp, action: allow}}
  - {{name: v100-ping, from: v100, to: v100, protocol: icmp, action: allow}}
default: deny
intra_segment: deny
unmatched: drop
"
    )
}

/// Sends `count` ICMP echo requests tagged with VLAN `vid` from `host`'s eth0 (raw
/// frames: this kernel may lack VLAN sub-interfaces) to `dst_mac`.
fn vlan_ping(tb: &Testbed, host: &str, dst_mac: &str, vid: u16, src: &str, dst: &str, count: u32) {
    let probe = common::repo().join("scripts/netprobe.py");
    tb.must(
        host,
        &["python3", probe.to_str().unwrap(), "vlan-ping", "--iface", "eth0", "--dst-mac", dst_mac, "--vlan", &vid.to_string(),
          "--src", src, "--dst", dst, "--count", &count.to_string()],
    );
}

#[test]
fn vlan_tags_arp_and_macs_cross_the_wire_unchanged() {
    let _serial = serial();
    let tb = Testbed::up("testbed.sh", "bw");
    let (web_mac, api_mac) = (tb.mac("web", "eth0"), tb.mac("api", "eth0"));
    let app = Appliance::start(&tb, "app", &vlan_config());

    // Untagged: ARP resolves across the wire to the peer's own MAC, and the frames
    // arrive with both MACs as the sender wrote them.
    let cap = Capture::start(&tb, "api", "eth0", "icmp and icmp[0] == 8", 2, 5);
    assert!(tb.ping("web", API, 2), "web -> api ping");
    let lines = cap.lines();
    assert!(!lines.is_empty(), "api saw the pings");
    for l in &lines {
        assert!(l.contains(&format!("{web_mac} > {api_mac}")), "MACs untouched: {l}");
    }
    let neigh = tb.must("web", &["ip", "neigh", "show", API, "dev", "eth0"]);
    assert!(neigh.contains(&api_mac), "web resolved api to api's own MAC {api_mac}: {neigh}");
    let neigh = tb.must("api", &["ip", "neigh", "show", WEB, "dev", "eth0"]);
    assert!(neigh.contains(&web_mac), "api resolved web to web's own MAC {web_mac}: {neigh}");

    // VLAN 100: tagged echo requests arrive on the east side with their tag (and both
    // MACs) as sent; segment v100 allows them.
    let cap = Capture::start(&tb, "api", "eth0", "vlan 100 and icmp", 3, 5);
    vlan_ping(&tb, "web", &api_mac, 100, "10.100.0.1", "10.100.0.2", 3);
    let lines = cap.lines();
    assert_eq!(lines.len(), 3, "api saw the 3 tagged pings: {lines:?}");
    for l in &lines {
        assert!(l.contains(&format!("{web_mac} > {api_mac}")) && l.contains("vlan 100"), "tag and MACs kept: {l}");
    }

    // VLAN 200: the same addresses under another tag are segment v200: denied, and
    // nothing tagged 200 reaches the east side.
    let cap = Capture::start(&tb, "api", "eth0", "vlan 200", 1, 3);
    vlan_ping(&tb, "web", &api_mac, 200, "10.100.0.1", "10.100.0.2", 3);
    let lines = cap.lines();
    assert!(lines.is_empty(), "VLAN 200 frames must not cross: {lines:?}");

    let report = app.stop();
    assert!(pair(&report, "v100", "v100").0 >= 3, "v100 pings allowed:\n{report}");
    assert!(pair(&report, "v200", "v200").1 >= 3, "v200 pings denied:\n{report}");
    assert!(counter(&report, "web-api-ping") >= 2, "{report}");
}

#[test]
fn a_jumbo_mtu_is_refused_at_start_up() {
    let _serial = serial();
    let tb = Testbed::up("testbed.sh", "bj");
    tb.must("app", &["ip", "link", "set", "west", "mtu", "9000"]);
    let seen = match Appliance::try_start(&tb, "app", &config("demo.yaml")) {
        Ok(_) => panic!("bulkhead started on a 9000-byte MTU"),
        Err(seen) => seen,
    };
    assert!(
        seen.contains("appliance.ports[0] (west): interface west has MTU 9000, above 1500")
            && seen.contains("ip link set west mtu 1500"),
        "one clear line:\n{seen}"
    );
    // Back to 1500, it starts.
    tb.must("app", &["ip", "link", "set", "west", "mtu", "1500"]);
    Appliance::start(&tb, "app", &config("demo.yaml")).stop();
}
