//! Ring 3: the real `bulkhead` binary on the network-namespace test-bed
//! (scripts/testbed.sh), with real ping, TCP and UDP between namespaces.
//!
//! Needs root (as CI has). Each test brings up its own test-bed under a unique prefix
//! and tears it down when it ends, pass or fail; tests run one at a time because each
//! appliance busy-polls a core. All traffic stays between the test's own namespaces.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{config, counter, pair, port_row, repo, serial, Appliance, Testbed};

const WEB: &str = "10.10.1.10";
const API: &str = "10.10.2.10";
const DB: &str = "10.10.3.10";
const API6: &str = "fd10:0:2::10";

fn demo_config() -> String {
    config("demo.yaml")
}

/// The demo's appliance section with a policy that allows everything.
fn allow_all_config() -> String {
    let demo = demo_config();
    let appliance = &demo[..demo.find("\nsegments:").unwrap()];
    format!("{appliance}\nsegments:\n  - name: all\n    cidrs: [0.0.0.0/0, \"::/0\"]\ndefault: allow\nintra_segment: allow\nunmatched: drop\n")
}



#[test]
fn ping_and_tcp_cross_the_appliance_and_stop_when_it_stops() {
    let _serial = serial();
    let tb = Testbed::up("testbed.sh", "bt");
    // Without the appliance the two sides are not connected at all.
    assert!(!tb.ping("web", API, 1), "west and east must only meet through bulkhead");

    let app = Appliance::start(&tb, "app", &allow_all_config());
    assert!(tb.ping("web", API, 3), "ping web -> api through bulkhead");
    assert!(tb.ping("api", WEB, 2), "ping api -> web through bulkhead");
    assert!(tb.tcp_transfer("web", "api", API, 5001, 2 << 20), "2 MiB over TCP web -> api");
    let report = app.stop();
    let (west, east) = (port_row(&report, "west"), port_row(&report, "east"));
    assert!(west[1] >= 2 << 20, "the 2 MiB entered on west:\n{report}");
    assert_eq!((west[0], west[1]), (east[2], east[3]), "all west rx left on east:\n{report}");
    assert_eq!((east[0], east[1]), (west[2], west[3]), "all east rx left on west:\n{report}");
    assert_eq!(counter(&report, "drops:"), 0, "{report}");

    assert!(!tb.ping("web", API, 2), "traffic must stop when bulkhead stops");
}

#[test]
fn segments_allow_and_deny_by_policy() {
    let _serial = serial();
    let tb = Testbed::up("testbed.sh", "bt");
    let app = Appliance::start(&tb, "app", &demo_config());

    assert!(tb.ping("web", API, 2), "web -> api ping is allowed");
    assert!(tb.exec("web", &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", API6]).status.success(), "web -> api ping6");
    assert!(tb.tcp_transfer("web", "api", API, 8080, 256 << 10), "web -> api tcp/8080 is allowed");
    assert!(tb.tcp_transfer("ops", "db", DB, 5432, 64 << 10), "ops -> db tcp/5432 is allowed");
    assert!(!tb.ping("web", DB, 2), "web -> db is denied");
    assert!(!tb.tcp_transfer("web", "api", API, 22, 1024), "web -> api tcp/22 is denied");
    assert!(!tb.tcp_transfer("web", "db", DB, 5432, 1024), "web -> db tcp/5432 is denied");

    let report = app.stop();
    assert!(counter(&report, "policy_deny") > 0, "denials counted:\n{report}");
    assert!(counter(&report, "web-to-api-http") > 0, "rule counter:\n{report}");
    assert!(counter(&report, "ops-to-db") > 0, "rule counter:\n{report}");
    assert!(counter(&report, "web-to-api-ping") >= 2, "rule counter:\n{report}");
}

/// The demo config with `from` replaced by `to` (the test fails if `from` is missing).
fn demo_with(replacements: &[(&str, &str)]) -> String {
    let mut c = demo_config();
    for (from, to) in replacements {
        assert!(c.contains(from), "configs/demo.yaml no longer contains {from:?}");
        c = c.replacen(from, to, 1);
    }
    c
}

#[test]
fn connections_are_stateful_in_both_directions() {
    let _serial = serial();
    let tb = Testbed::up("testbed.sh", "bt");
    let app = Appliance::start(&tb, "app", &demo_with(&[("udp: 30, udp_stream: 180, icmp: 30", "udp: 2, udp_stream: 2, icmp: 2")]));

    // TCP opened from the allowed side: data both ways (the server answers with a digest).
    assert!(tb.tcp_transfer("web", "api", API, 8080, 512 << 10), "web -> api tcp/8080, both ways");
    // The same port opened from the other side is a new flow the policy denies.
    assert!(!tb.tcp_transfer("api", "web", WEB, 8080, 1024), "api -> web tcp/8080 must not open");
    // Ping: only web may start it; its replies come back.
    assert!(tb.ping("web", API, 2), "web -> api ping and replies");
    assert!(!tb.ping("api", WEB, 1), "api -> web ping is not allowed");

    // UDP request/reply, then the reverse direction of that flow while it is tracked...
    assert!(tb.udp_exchange("web", "api", API, 53, 5353, 64), "web:5353 -> api:53 and reply");
    assert!(tb.udp_exchange("api", "web", WEB, 5353, 53, 64), "api:53 -> web:5353 is the tracked flow");
    // ...but another source port on api is a new flow, and api may not start flows.
    assert!(!tb.udp_exchange("api", "web", WEB, 5353, 54, 64), "api:54 -> web:5353 is new: denied");
    // Once the flow has expired (udp timeout 2 s), the reverse direction is new: denied.
    std::thread::sleep(Duration::from_secs(4));
    assert!(!tb.udp_exchange("api", "web", WEB, 5353, 53, 64), "after expiry api:53 -> web:5353 is new");

    // Fragments: DPDK 22.11's af_packet PMD joins its sockets with
    // PACKET_FANOUT_FLAG_DEFRAG, so the kernel reassembles them before the appliance sees
    // them. On XDP sockets it sees them as sent (the af_xdp test below);
    // dataplane/tests/dpdk_inprocess.rs covers the out-of-order cases.

    let report = app.stop();
    let ct = report.lines().find(|l| l.starts_with("conntrack:")).expect("conntrack line");
    let field = |name: &str| -> u64 {
        let words: Vec<&str> = ct.split([',', ':']).map(str::trim).collect();
        words.iter().find(|w| w.ends_with(name)).and_then(|w| w.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    assert!(field("inserts") >= 3, "tcp, icmp and udp flows were tracked: {ct}");
    assert!(field("expiries") >= 1, "the UDP flow expired: {ct}");
    assert!(field("hits") > 100, "replies hit tracked flows: {ct}");
    assert!(counter(&report, "ct_invalid") + counter(&report, "policy_deny") > 0, "{report}");
}

#[test]
fn syn_flood_keeps_the_table_bounded_and_established_flows_alive() {
    let _serial = serial();
    let tb = Testbed::up("testbed.sh", "bt");
    let app = Appliance::start(&tb, "app", &demo_with(&[("capacity: 65536", "capacity: 256")]));
    let probe = repo().join("scripts/netprobe.py");
    let probe = probe.to_str().unwrap();

    // A long transfer, established before the flood starts.
    let srv = tb.spawn("api", &["python3", probe, "tcp-server", "--port", "8080", "--timeout", "30"]);
    std::thread::sleep(Duration::from_millis(300));
    let client = tb.spawn("web", &["python3", probe, "tcp-client", "--host", API, "--port", "8080", "--bytes", "60000000", "--timeout", "30"]);
    std::thread::sleep(Duration::from_millis(500));
    // 20,000 SYNs from random ports, allowed by the policy, against a 256-flow table.
    let flood = tb.exec(
        "web",
        &["python3", probe, "syn-flood", "--iface", "eth0", "--src", WEB, "--dst", API, "--dport", "8080", "--count", "20000", "--seconds", "8"],
    );
    assert!(flood.status.success(), "flood: {}", String::from_utf8_lossy(&flood.stderr));
    let client = client.wait_with_output().unwrap();
    let srv = srv.wait_with_output().unwrap();
    assert!(client.status.success(), "the established transfer survived the flood: {}", String::from_utf8_lossy(&client.stdout));
    assert_eq!(String::from_utf8_lossy(&client.stdout).trim(), String::from_utf8_lossy(&srv.stdout).trim());

    let report = app.stop();
    let ct = report.lines().find(|l| l.starts_with("conntrack:")).expect("conntrack line");
    let flows: u64 = ct.trim_start_matches("conntrack:").split_whitespace().next().unwrap().parse().unwrap();
    assert!(flows <= 256, "table bounded: {ct}");
    assert!(ct.contains(" evictions") && !ct.contains(" 0 evictions"), "embryonic flows were evicted: {report}");
}

/// Polls `f` for up to `secs` seconds.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn status_version(app: &Appliance) -> u64 {
    let (code, out) = app.cli(&["status"]);
    assert_eq!(code, 0, "status: {out}");
    out.lines()
        .find_map(|l| l.strip_prefix("policy: version "))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no policy version in status:\n{out}"))
}

#[test]
fn reload_status_metrics_and_events() {
    let _serial = serial();
    let tb = Testbed::up("testbed.sh", "bt");
    let demo = demo_config();
    let app = Appliance::start(&tb, "app", &demo);

    // A denied flow becomes a security event naming segments, protocol and verdict.
    assert!(!tb.ping("web", DB, 2));
    assert!(eventually(5, || app.events().iter().any(|e| e["dst_segment"] == "db")), "no event for web -> db");
    let ev = app.events().into_iter().find(|e| e["dst_segment"] == "db").unwrap();
    assert_eq!((ev["src_segment"].as_str(), ev["verdict"].as_str(), ev["src_ip"].as_str()), (Some("web"), Some("deny"), Some(WEB)), "{ev}");
    assert_eq!(ev["policy_version"], 1);

    // status: version 1 and the file's digest.
    assert_eq!(status_version(&app), 1);
    let (_, status) = app.cli(&["status"]);
    let digest = {
        use sha2::Digest;
        let bytes = std::fs::read(&app.config).unwrap();
        sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert!(status.contains(&digest), "status names the policy digest:\n{status}");
    assert!(status.contains("(1 alive)"), "{status}");

    // Metrics over HTTP on the appliance's loopback, checked by a real parser.
    let scrape = tb.exec("app", &["python3", "-c", "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9464/metrics',timeout=3).read().decode())"]);
    let text = String::from_utf8_lossy(&scrape.stdout).to_string();
    assert!(text.contains("bulkhead_policy_version 1"), "{text}");
    assert!(text.contains(&format!("sha256=\"{digest}\"")), "metrics carry the digest");
    let mut promtool = Command::new("promtool").args(["check", "metrics"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("promtool (apt: prometheus)");
    std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(checked.status.success(), "promtool: {}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));

    // Reload through the control socket: a policy that lets web ping db.
    let allow_db = demo.replace("  - name: ops-to-db", "  - name: web-to-db-ping\n    from: web\n    to: db\n    protocol: icmp\n    action: allow\n  - name: ops-to-db");
    app.rewrite(&allow_db);
    let (code, out) = app.cli(&["reload"]);
    assert_eq!(code, 0, "reload: {out}");
    assert!(tb.ping("web", DB, 2), "the new policy is in force");
    let v = status_version(&app);
    assert!(v >= 2, "version after reload: {v}");

    // A broken file is refused whole; the running policy stays.
    app.rewrite("segments: [ {name: web, cidrs: [10.10.1.0/33]} ]\n");
    let (code, out) = app.cli(&["reload"]);
    assert_eq!(code, 1, "a bad policy is refused: {out}");
    assert!(out.contains("/33"), "the refusal says why: {out}");
    assert!(tb.ping("web", DB, 2), "the running policy stays after a refused reload");
    let (_, status) = app.cli(&["status"]);
    assert!(status.contains("refused"), "{status}");

    // SIGHUP reloads the (restored) original: web -> db denied again.
    app.rewrite(&demo);
    std::thread::sleep(Duration::from_millis(200));
    let pid = app.child.as_ref().unwrap().id().to_string();
    // `ip netns exec` runs bulkhead as its child: signal the appliance itself.
    let bh = Command::new("pgrep").args(["-P", &pid]).output().unwrap();
    let bh_pid = String::from_utf8_lossy(&bh.stdout).trim().to_string();
    let target = if bh_pid.is_empty() { pid } else { bh_pid };
    Command::new("kill").args(["-HUP", &target]).status().unwrap();
    assert!(eventually(5, || !tb.ping("web", DB, 1)), "SIGHUP reloaded the original policy");

    // Editing the file is enough: the watcher reloads it.
    let before = status_version(&app);
    app.rewrite(&allow_db);
    assert!(eventually(6, || status_version(&app) > before), "the file watcher reloaded");
    assert!(tb.ping("web", DB, 2));

    let report = app.stop();
    assert!(counter(&report, "web-to-db-ping") > 0, "counters survive reloads by rule name:\n{report}");
}

#[test]
fn events_reach_a_real_syslog_receiver_as_rfc5424() {
    let _serial = serial();
    let tb = Testbed::up("testbed.sh", "bt");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let conf = format!(
        r#"global(workDirectory="{d}")
module(load="imudp")
module(load="imtcp")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="bh") {{ action(type="omfile" file="{d}/out.log" template="raw") }}
input(type="imudp" address="127.0.0.1" port="5514" ruleset="bh")
input(type="imtcp" address="127.0.0.1" port="5515" ruleset="bh")
"#
    );
    std::fs::write(dir.path().join("rsyslog.conf"), conf).unwrap();
    let conf_path = dir.path().join("rsyslog.conf").display().to_string();
    let pid_path = dir.path().join("rsyslog.pid").display().to_string();
    let mut rsyslog = tb.spawn("app", &["rsyslogd", "-n", "-f", &conf_path, "-i", &pid_path]);
    std::thread::sleep(Duration::from_millis(800));

    let config = demo_config().replace(
        "      - { type: file, path: /tmp/bulkhead-demo-events.jsonl, format: json }",
        "      - { type: syslog, transport: udp, address: \"127.0.0.1:5514\", format: cef }\n      - { type: syslog, transport: tcp, address: \"127.0.0.1:5515\", format: text }",
    );
    let app = Appliance::start(&tb, "app", &config);
    assert!(!tb.ping("web", DB, 2), "denied");
    assert!(!tb.tcp_transfer("web", "api", API, 22, 100), "denied");
    let out = dir.path().join("out.log");
    let lines = || std::fs::read_to_string(&out).unwrap_or_default().lines().map(str::to_string).collect::<Vec<_>>();
    let got = eventually(8, || {
        let l = lines();
        l.iter().any(|x| x.contains("CEF:0|") && x.contains("dst=10.10.3.10")) && l.iter().any(|x| !x.contains("CEF:0|") && x.contains("10.10.2.10"))
    });
    let report = app.stop();
    let _ = rsyslog.kill();
    let _ = rsyslog.wait();
    assert!(got, "events over UDP (CEF) and TCP (text) arrived:\n{}\n{report}", lines().join("\n"));
    // Every line is RFC 5424: <PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG.
    let re = regex::Regex::new(r#"^<(\d{1,3})>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)) (\S+) bulkhead (\d+|-) (flow-deny|flow-allow) (\[bulkhead@32473( [a-z0-9_]+="([^"\\\]]|\\.)*")+\]) (.*)$"#).unwrap();
    for line in lines() {
        let c = re.captures(&line).unwrap_or_else(|| panic!("not RFC 5424: {line}"));
        let pri: u32 = c[1].parse().unwrap();
        let sd = &c[8];
        if sd.contains("verdict=\"deny\"") {
            assert_eq!(pri % 8, 4, "deny is severity warning: {line}");
        }
        // The traffic the test sent (other lines: e.g. link-local multicast in no segment).
        if sd.contains(&format!("src=\"{WEB}\"")) {
            assert!(sd.contains("src_segment=\"web\"") && sd.contains("verdict=\"deny\""), "{line}");
            assert!(sd.contains("dst_segment=\"db\"") || sd.contains("dst_segment=\"api\""), "{line}");
        }
    }
}

#[test]
fn monitor_and_discover_modes_and_learn() {
    let _serial = serial();
    let tb = Testbed::up("testbed.sh", "bt");
    // web monitors; ops and db discover; api protects.
    let config = demo_with(&[
        ("  - name: web\n    cidrs: [10.10.1.0/24, \"fd10:0:1::/48\"]\n", "  - name: web\n    cidrs: [10.10.1.0/24, \"fd10:0:1::/48\"]\n    mode: monitor\n"),
        ("  - name: db\n    cidrs: [10.10.3.0/24, \"fd10:0:3::/48\"]\n", "  - name: db\n    cidrs: [10.10.3.0/24, \"fd10:0:3::/48\"]\n    mode: discover\n"),
        ("  - name: ops\n    cidrs: [10.10.4.0/24, \"fd10:0:4::/48\"]\n", "  - name: ops\n    cidrs: [10.10.4.0/24, \"fd10:0:4::/48\"]\n    mode: discover\n"),
    ]);
    let app = Appliance::start(&tb, "app", &config);

    // Monitor: web -> db is denied by the rules, forwarded, and reported.
    assert!(tb.ping("web", DB, 2), "monitor mode forwards what the policy denies");
    assert!(
        eventually(5, || app.events().iter().any(|e| e["reason"] == "monitor_violation" && e["dst_segment"] == "db")),
        "a monitor violation event: {:?}",
        app.events()
    );
    // Protect still protects: api's segment enforces.
    assert!(!tb.tcp_transfer("web", "api", API, 22, 100), "api is in protect mode");

    // Discover: ops -> db traffic passes, allowed by a rule or not, and is recorded.
    assert!(tb.tcp_transfer("ops", "db", DB, 5432, 4096), "ops -> db tcp/5432");
    assert!(tb.udp_exchange("ops", "db", DB, 53, 5353, 32), "ops -> db udp/53 (no rule; discover forwards)");

    let learned = app.dir.path().join("learned.yaml");
    let (code, out) = app.cli(&["learn", "--out", learned.to_str().unwrap()]);
    assert_eq!(code, 0, "learn: {out}");
    let text = std::fs::read_to_string(&learned).unwrap();
    let mut names: Vec<&str> = text.lines().filter_map(|l| l.trim().strip_prefix("- name: learned-")).collect();
    names.sort();
    assert_eq!(names, vec!["ops-to-db-tcp-5432", "ops-to-db-udp-53"], "exactly what was observed:\n{text}");
    let check = Command::new(env!("CARGO_BIN_EXE_bulkhead")).arg("check").arg(&learned).output().unwrap();
    assert!(check.status.success(), "bulkhead check accepts the learned policy: {}", String::from_utf8_lossy(&check.stderr));
    app.stop();
}

#[test]
fn broken_configs_sent_as_reloads_leave_the_running_policy_and_traffic() {
    let _serial = serial();
    let tb = Testbed::up("testbed.sh", "bt");
    let app = Appliance::start(&tb, "app", &demo_config());
    let mut broken: Vec<PathBuf> = std::fs::read_dir(repo().join("mgmt/tests/broken"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    broken.sort();
    assert!(broken.len() >= 30, "the broken-config corpus is there");
    for file in &broken {
        let bytes = std::fs::read(file).unwrap();
        let tmp = app.dir.path().join("next.yaml");
        std::fs::write(&tmp, &bytes).unwrap();
        std::fs::rename(&tmp, &app.config).unwrap();
        let (code, out) = app.cli(&["reload"]);
        assert_eq!(code, 1, "{} must be refused as a reload: {out}", file.display());
        assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
    }
    assert_eq!(status_version(&app), 1, "the first policy is still in force");
    // Refused as many times as asked at least (the file watcher may try some too), and
    // never accepted.
    let (_, status) = app.cli(&["status"]);
    let line = status.lines().find(|l| l.starts_with("reloads: ")).expect("reloads line");
    let nums: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    assert_eq!(nums[0], 0, "no reload accepted: {line}");
    assert!(nums[1] >= broken.len() as u64, "every broken file refused: {line}");
    assert!(tb.ping("web", API, 2), "allowed traffic untouched");
    assert!(tb.tcp_transfer("web", "api", API, 8080, 64 << 10), "allowed traffic untouched");
    assert!(!tb.ping("web", DB, 1), "denied traffic still denied");
    app.stop();
}

/// The demo with two queue pairs per af_packet port (the kernel spreads flows by a
/// symmetric hash) and a worker on each core; the management thread then shares a core.
fn demo_on_two_workers() -> String {
    demo_with(&[
        ("\"net_af_packet0,iface=west\"", "\"net_af_packet0,iface=west,qpairs=2\""),
        ("\"net_af_packet1,iface=east\"", "\"net_af_packet1,iface=east,qpairs=2\""),
        ("  workers: [1]", "  workers: [0, 1]"),
        ("  management_core: 0", "  # management_core: not pinned"),
    ])
}

#[test]
fn two_workers_share_the_flows_and_keep_both_directions_together() {
    let _serial = serial();
    let tb = Testbed::up("testbed.sh", "bt");
    let config = demo_on_two_workers();
    let app = Appliance::start(&tb, "app", &config);
    // Stateful TCP needs both directions of each connection on the worker that saw its
    // SYN: every one of these connections only completes if the spreading is symmetric.
    for i in 0..10 {
        assert!(tb.tcp_transfer("web", "api", API, 8080, 32 << 10), "connection {i} through two workers");
    }
    let (code, json) = app.cli(&["stats", "--json"]);
    assert_eq!(code, 0, "{json}");
    let stats: serde_json::Value = serde_json::from_str(&json).unwrap();
    let workers = stats["workers"].as_array().expect("per-worker counters");
    assert_eq!(workers.len(), 2, "two workers ran: {json}");
    for (i, w) in workers.iter().enumerate() {
        assert!(w["busy_polls"].as_u64().unwrap() > 0, "worker {i} received traffic: {w}");
    }
    let report = app.stop();
    assert_eq!(counter(&report, "ct_invalid"), 0, "no packet reached a worker without its flow:\n{report}");
}

#[test]
fn icmp_errors_reach_the_flow_they_quote_through_two_workers() {
    let _serial = serial();
    let tb = Testbed::up("testbed.sh", "bt");
    let config = demo_on_two_workers();
    let app = Appliance::start(&tb, "app", &config);
    // web -> api:53/udp is allowed and nothing listens there: api's kernel answers each
    // datagram with a port unreachable. The kernel's fanout spreads the 16 flows over
    // both workers by their ports, but puts every error (no ports) on one of them.
    // The kernel limits port unreachables per destination (a burst of 6, then 1/s).
    tb.must("api", &["sysctl", "-q", "-w", "net.ipv4.icmp_ratelimit=0"]);
    // Neighbours resolved first: on a fresh test-bed the first ARP exchange sometimes
    // waits for the kernel's 1 s retransmission.
    assert!(tb.ping("web", API, 2), "web reaches api");
    let probe = repo().join("scripts/netprobe.py");
    let out = tb.exec("web", &["python3", probe.to_str().unwrap(), "udp-refused", "--host", API, "--port", "53", "--sport", "41000", "--count", "16", "--timeout", "3"]);
    let refused = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (_, json) = app.cli(&["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&json).unwrap();
    let handed: u64 = stats["workers"].as_array().unwrap().iter().map(|w| w["handed_off"].as_u64().unwrap()).sum();
    let report = app.stop();
    let probe_log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(refused, "16", "every datagram's port unreachable came back: {probe_log}\n{report}");
    assert!(handed > 0, "some errors reached the worker without their flow and were handed on: {json}");
    assert_eq!(counter(&report, "ct_invalid"), 0, "{report}");
    assert_eq!(counter(&report, "handoff_full"), 0, "{report}");
}

#[test]
fn a_single_queue_device_runs_one_worker_and_says_so() {
    let _serial = serial();
    let tb = Testbed::up("testbed.sh", "bt");
    let config = demo_with(&[("  workers: [1]", "  workers: [0, 1]"), ("  management_core: 0", "  # management_core: not pinned")]);
    let app = Appliance::start(&tb, "app", &config);
    assert!(
        app.startup.iter().any(|l| l.contains("running 1 of 2 workers") && l.contains("qpairs=2")),
        "start-up says why only one worker runs: {:?}",
        app.startup
    );
    assert!(tb.ping("web", API, 2));
    let (_, json) = app.cli(&["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(stats["workers"].as_array().map(Vec::len), Some(1), "{json}");
    app.stop();
}

/// The demo's ports as XDP sockets (`net_af_xdp`) on the same veths.
fn demo_on_af_xdp() -> String {
    demo_with(&[("net_af_packet0,iface=west", "net_af_xdp0,iface=west"), ("net_af_packet1,iface=east", "net_af_xdp1,iface=east")])
}

#[test]
fn af_xdp_ports_forward_and_see_ip_fragments_as_sent() {
    let _serial = serial();
    let tb = Testbed::up("testbed.sh", "bt");
    let app = Appliance::start(&tb, "app", &demo_on_af_xdp());
    assert!(tb.ping("web", API, 2), "web -> api ping over af_xdp ports");
    assert!(tb.tcp_transfer("web", "api", API, 8080, 1 << 20), "1 MiB web -> api tcp/8080 and the digest back");
    // 4,000-byte datagrams leave the hosts as three IPv4 fragments each (MTU 1500). An
    // XDP socket hands them over as they are (af_packet's fanout reassembles them first):
    // the first fragment decides, the later ones follow it.
    assert!(tb.udp_exchange("web", "api", API, 53, 5353, 4000), "fragmented request and reply of an allowed flow");
    assert!(!tb.udp_exchange("api", "web", WEB, 5353, 54, 4000), "fragments of a flow api may not open are dropped");
    let (report, log) = app.stop_with_log();
    let ct = report.lines().find(|l| l.starts_with("conntrack:")).expect("conntrack line");
    let tracked: u64 = ct
        .split(',')
        .find(|f| f.contains("fragments tracked"))
        .and_then(|f| f.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("fragments tracked in the conntrack line");
    // The first fragments of the request, the reply and the denied datagram, each with
    // its verdict for the later fragments to follow.
    assert!(tracked >= 3, "first fragments were recorded: {ct}");
    // The denied datagram: its first fragment decided (one denial of the pair), its two
    // later fragments followed it (three policy drops).
    assert_eq!(pair(&report, "api", "web").1, 1, "one decision for the denied datagram:\n{report}");
    assert!(counter(&report, "policy_deny") >= 3, "all three fragments of the denied datagram dropped:\n{report}");
    assert_eq!(counter(&report, "fragment_no_flow"), 0, "no later fragment arrived without its first:\n{report}");
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "a clean stop, no warning:\n{log}");
}
