//! Ring 3, gateway host: bulkhead between a host's NIC and the host's own kernel, on
//! the namespace test-bed of `scripts/testbed-gateway.sh` (topology in that script and
//! in docs/deployments.md). The NIC is a veth taken with `net_af_packet`, the
//! exception port a `net_tap` that bulkhead creates in the host namespace; the host's
//! address moves onto it, and the host keeps routing for its containers.
//!
//! Needs root. Each test makes its own test-bed under a unique prefix and removes it
//! (namespaces and the processes in them) when it ends, pass or fail; one at a time.

mod common;

use common::{config, counter, pair, port_row, serial, text, Appliance, Testbed};

const HOST: &str = "192.168.60.2";
const WEB: &str = "10.20.1.10";
const DB: &str = "10.20.1.20";

#[test]
fn routed_traffic_to_containers_crosses_bulkhead_by_policy() {
    let _serial = serial();
    let tb = Testbed::up("testbed-gateway.sh", "gt");
    // Before bulkhead: the host's address on its NIC, routing to both containers.
    assert!(tb.ping("up", HOST, 1), "upstream reaches the host directly");
    assert!(tb.ping("up", DB, 1), "upstream reaches db through the host's routing");

    let app = Appliance::start(&tb, "host", &config("gateway-testbed.yaml"));
    let out = tb.script("attach");
    assert!(out.status.success(), "attach: {}", text(&out));
    let addrs = tb.must("host", &["ip", "-4", "-o", "addr", "show", "dev", "bh0"]);
    assert!(addrs.contains(HOST), "the host's address is on the tap: {addrs}");
    assert!(!tb.must("host", &["ip", "-4", "-o", "addr", "show", "dev", "nic0"]).contains(HOST), "and no longer on nic0");

    // Allowed: ping and HTTP to web, routed by the host kernel (one hop: ttl 63).
    let ping = tb.exec("up", &["ping", "-c", "3", "-i", "0.2", "-W", "1", WEB]);
    assert!(ping.status.success(), "upstream -> web ping is allowed: {}", text(&ping));
    assert!(text(&ping).contains("ttl=63"), "the reply was routed by the host: {}", text(&ping));
    assert!(tb.tcp_transfer("up", "web", WEB, 8080, 1 << 20), "upstream -> web tcp/8080 (1 MiB) is allowed");
    // The failsafe rule: the host's SSH port.
    assert!(tb.tcp_transfer("up", "host", HOST, 22, 4096), "upstream -> host tcp/22 is allowed (failsafe)");
    // The tap carries the NIC's MAC (net_tap mac=), and upstream resolves the host to
    // it: ARP crosses bulkhead both ways.
    let tap_mac = tb.mac("host", "bh0");
    assert_eq!(tap_mac, tb.mac("host", "nic0"), "bh0 has the host's (the NIC's) MAC");
    let neigh = tb.must("up", &["ip", "neigh", "show", HOST]);
    assert!(neigh.contains(&tap_mac), "upstream resolved the host to {tap_mac}: {neigh}");

    // Denied: everything else, the host itself included. (Frames for the host's MAC
    // also reach nic0's kernel side, since af_packet does not take the interface away;
    // `attach` stops the kernel from answering or routing what arrives there.)
    assert!(!tb.ping("up", DB, 2), "upstream -> db is denied");
    assert!(!tb.tcp_transfer("up", "db", DB, 8080, 1024), "upstream -> db tcp/8080 is denied");
    assert!(!tb.tcp_transfer("up", "web", WEB, 9090, 1024), "upstream -> web tcp/9090 is denied");
    assert!(!tb.ping("up", HOST, 1), "upstream -> host ping is denied");
    assert!(!tb.tcp_transfer("web", "up", "192.168.60.1", 8080, 1024), "web -> upstream is not allowed to open");

    let report = app.stop();
    let (nic, host) = (port_row(&report, "nic"), port_row(&report, "host"));
    assert!(nic[1] >= 1 << 20 && host[3] >= 1 << 20, "the MiB entered on the NIC and left to the host:\n{report}");
    assert!(counter(&report, "upstream-to-web-http") > 0, "{report}");
    assert!(counter(&report, "upstream-to-web-ping") >= 3, "{report}");
    assert!(counter(&report, "host-ssh") > 0, "{report}");
    assert!(pair(&report, "upstream", "db").1 >= 2, "upstream -> db denied:\n{report}");
    assert!(pair(&report, "web", "upstream").1 >= 1, "web -> upstream denied:\n{report}");

    // bulkhead stopped: the tap is gone and the host is cut off from the NIC's network.
    assert!(!tb.exec("host", &["ip", "link", "show", "bh0"]).status.success(), "bh0 left with bulkhead");
    assert!(!tb.ping("up", HOST, 1), "no bypass while bulkhead is down");
    assert!(!tb.ping("up", WEB, 1), "no bypass to the containers either");
    // The operator's way back: the address returns to the NIC.
    let out = tb.script("detach");
    assert!(out.status.success(), "detach: {}", text(&out));
    assert!(tb.ping("up", HOST, 2), "after detach the host answers on its NIC again");
    assert!(tb.ping("up", WEB, 1), "and routes to its containers without bulkhead");
}
