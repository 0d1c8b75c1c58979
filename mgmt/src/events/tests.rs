use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};
use std::process::{Child, Command, Stdio};

use super::*;

fn at(secs: u64, millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis)
}

fn event() -> Event {
    Event {
        time: at(1_700_000_000, 123),
        policy_version: 3,
        policy_sha256: "ab".repeat(32),
        src_segment: "web".into(),
        dst_segment: "api".into(),
        src_ip: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 5)),
        dst_ip: IpAddr::V4(Ipv4Addr::new(10, 2, 0, 7)),
        src_port: 40000,
        dst_port: 8080,
        icmp_type: None,
        icmp_code: None,
        protocol: 6,
        vlan: Some(100),
        rule: Some("web-to-api".into()),
        verdict: EventVerdict::Deny,
        reason: "policy_deny".into(),
        packets: 3,
        bytes: 180,
        first_seen: at(1_699_999_999, 500),
        last_seen: at(1_700_000_000, 0),
    }
}

fn opts() -> SyslogOptions {
    SyslogOptions {
        facility: Facility::LOCAL0,
        hostname: "gw1".into(),
        app_name: "bulkhead".into(),
        procid: "42".into(),
        message: SyslogMessage::Cef,
        product_version: "0.1.0".into(),
    }
}

#[test]
fn timestamps() {
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(at(951_782_400, 0)), "2000-02-29T00:00:00.000Z");
    assert_eq!(rfc3339(at(1_700_000_000, 123)), "2023-11-14T22:13:20.123Z");
    assert_eq!(rfc3339(at(4_107_542_399, 999)), "2100-02-28T23:59:59.999Z");
}

#[test]
fn json_golden() {
    assert_eq!(
        event().to_json(),
        format!(
            "{{\"time\":\"2023-11-14T22:13:20.123Z\",\"policy_version\":3,\"policy_sha256\":\"{}\",\
             \"src_segment\":\"web\",\"dst_segment\":\"api\",\"src_ip\":\"10.1.0.5\",\"dst_ip\":\"10.2.0.7\",\
             \"src_port\":40000,\"dst_port\":8080,\"icmp_type\":null,\"icmp_code\":null,\"protocol\":6,\"protocol_name\":\"tcp\",\"vlan\":100,\
             \"rule\":\"web-to-api\",\"verdict\":\"deny\",\"reason\":\"policy_deny\",\"packets\":3,\"bytes\":180,\
             \"first_seen\":\"2023-11-14T22:13:19.500Z\",\"last_seen\":\"2023-11-14T22:13:20.000Z\"}}",
            "ab".repeat(32)
        )
    );
    let mut e = event();
    e.rule = None;
    e.vlan = None;
    let v: serde_json::Value = serde_json::from_str(&e.to_json()).expect("valid JSON");
    assert!(v["rule"].is_null() && v["vlan"].is_null());
}

#[test]
fn cef_golden_and_escaping() {
    let sha = "ab".repeat(32);
    assert_eq!(
        event().to_cef("0.1.0"),
        format!(
            "CEF:0|bulkhead|bulkhead|0.1.0|flow-deny|Flow denied by segmentation policy|5|rt=1700000000123 \
             start=1699999999500 end=1700000000000 src=10.1.0.5 dst=10.2.0.7 spt=40000 dpt=8080 proto=TCP act=deny \
             reason=policy_deny cnt=3 in=180 cs1Label=rule cs1=web-to-api cs2Label=srcSegment cs2=web \
             cs3Label=dstSegment cs3=api cs4Label=policySha256 cs4={sha} cn1Label=policyVersion cn1=3 \
             cn2Label=vlan cn2=100"
        )
    );
    let mut e = event();
    e.rule = None;
    e.reason = "a=b\\c|d\ne".into();
    let cef = e.to_cef("1|2\\3");
    assert!(cef.starts_with("CEF:0|bulkhead|bulkhead|1\\|2\\\\3|flow-deny|"), "{cef}");
    assert!(cef.contains(" reason=a\\=b\\\\c|d\\ne "), "{cef}");
    assert!(cef.contains(" cs1=(default) "), "{cef}");
    assert_eq!(cef_ext_escape("x=1\r"), "x\\=1\\r");
}

#[test]
fn syslog_golden_and_escaping() {
    let sha = "ab".repeat(32);
    let line = event().to_syslog(&opts());
    let expected = format!(
        "<132>1 2023-11-14T22:13:20.123Z gw1 bulkhead 42 flow-deny [bulkhead@32473 policy_version=\"3\" \
         policy_sha256=\"{sha}\" src_segment=\"web\" dst_segment=\"api\" src=\"10.1.0.5\" dst=\"10.2.0.7\" \
         spt=\"40000\" dpt=\"8080\" proto=\"tcp\" vlan=\"100\" rule=\"web-to-api\" verdict=\"deny\" \
         reason=\"policy_deny\" packets=\"3\" bytes=\"180\" first_seen=\"2023-11-14T22:13:19.500Z\" \
         last_seen=\"2023-11-14T22:13:20.000Z\"] {}",
        event().to_cef("0.1.0")
    );
    assert_eq!(line, expected);

    let mut e = event();
    e.verdict = EventVerdict::Allow;
    e.reason = "q\"b\\s]e".into();
    let o = SyslogOptions { facility: Facility::from_name("auth").expect("auth"), hostname: "my host\n".into(), message: SyslogMessage::Text, ..opts() };
    let line = e.to_syslog(&o);
    assert!(line.starts_with("<38>1 2023-11-14T22:13:20.123Z myhost bulkhead 42 flow-allow [bulkhead@32473 "), "{line}");
    assert!(line.contains(" reason=\"q\\\"b\\\\s\\]e\""), "{line}");
    assert!(line.ends_with("] allow tcp 10.1.0.5:40000 -> 10.2.0.7:8080 vlan 100 segments web -> api rule web-to-api (q\"b\\s]e) 3 packets 180 bytes policy v3"), "{line}");
    assert_eq!(sd_escape("a\"b\\c]d"), "a\\\"b\\\\c\\]d");
}

/// An ICMP echo request: ports 0, type and code as fields of their own in every format.
fn icmp_event() -> Event {
    Event { src_port: 0, dst_port: 0, icmp_type: Some(8), icmp_code: Some(0), protocol: 1, ..event() }
}

#[test]
fn icmp_type_and_code_are_not_exported_as_ports() {
    let v: serde_json::Value = serde_json::from_str(&icmp_event().to_json()).expect("valid JSON");
    assert_eq!((&v["src_port"], &v["dst_port"]), (&0.into(), &0.into()));
    assert_eq!((&v["icmp_type"], &v["icmp_code"]), (&8.into(), &0.into()));

    let cef = icmp_event().to_cef("0.1.0");
    assert!(cef.contains(" dst=10.2.0.7 proto=ICMP act=deny "), "no spt/dpt: {cef}");
    assert!(!cef.contains("spt=") && !cef.contains("dpt="), "{cef}");
    assert!(cef.ends_with(" cn2Label=vlan cn2=100 cn3Label=icmpType cn3=8 cn4Label=icmpCode cn4=0"), "{cef}");
    assert!(!event().to_cef("0.1.0").contains("cn3"), "TCP has no ICMP fields");

    let line = icmp_event().to_syslog(&opts());
    assert!(line.contains(" dst=\"10.2.0.7\" icmp_type=\"8\" icmp_code=\"0\" proto=\"icmp\" "), "{line}");
    assert!(!line.contains("spt=") && !line.contains("dpt="), "{line}");
    let text = icmp_event().to_syslog(&SyslogOptions { message: SyslogMessage::Text, ..opts() });
    assert!(text.contains("] deny icmp 10.1.0.5 -> 10.2.0.7 type 8 code 0 vlan 100 segments web -> api "), "{text}");
}

#[test]
fn facilities() {
    assert_eq!(Facility::from_name("LOCAL7").map(Facility::code), Ok(23));
    assert_eq!(Facility::from_name("3").map(Facility::name), Ok("daemon"));
    let e = Facility::from_name("local9").expect_err("unknown");
    assert!(e.contains("unknown syslog facility `local9`"), "{e}");
    assert!(Facility::new(24).is_err());
}

fn obs(src_port: u16, verdict: EventVerdict, packets: u64, t: u64) -> Event {
    Event { src_port, verdict, packets, bytes: packets * 60, first_seen: at(t, 0), last_seen: at(t, 0), ..event() }
}

#[test]
fn aggregates_per_flow_and_window() {
    let t0 = Instant::now();
    let mut agg = Aggregator::new(AggregatorConfig::default(), t0);
    agg.record(obs(1, EventVerdict::Deny, 1, 10));
    agg.record(obs(1, EventVerdict::Deny, 2, 12));
    agg.record(obs(1, EventVerdict::Deny, 1, 11));
    agg.record(obs(2, EventVerdict::Allow, 5, 10));
    agg.record(obs(3, EventVerdict::Deny, 1, 10));
    assert!(agg.poll(t0 + Duration::from_millis(500)).is_empty(), "window not over");
    let events = agg.poll(t0 + Duration::from_secs(1));
    assert_eq!(events.len(), 3);
    // Denies first, most packets first.
    assert_eq!((events[0].src_port, events[0].packets, events[0].bytes), (1, 4, 240));
    assert_eq!((events[0].first_seen, events[0].last_seen), (at(10, 0), at(12, 0)));
    assert_eq!((events[1].src_port, events[2].src_port), (3, 2));
    assert_eq!(agg.stats(), AggregatorStats { observed: 5, emitted: 3, suppressed: 0, table_full: 0 });
    assert!(agg.poll(t0 + Duration::from_millis(1500)).is_empty(), "a new window started");
}

/// Two ICMP types between the same addresses are two flows (they were told apart by the
/// ports they were exported as; the ports are now 0).
#[test]
fn icmp_types_keep_flows_apart() {
    let t0 = Instant::now();
    let mut agg = Aggregator::new(AggregatorConfig::default(), t0);
    agg.record(icmp_event());
    agg.record(Event { icmp_type: Some(13), ..icmp_event() });
    agg.record(Event { icmp_code: Some(1), ..icmp_event() });
    agg.record(icmp_event());
    let mut got: Vec<_> = agg.poll(t0 + Duration::from_secs(1)).iter().map(|e| (e.icmp_type, e.icmp_code, e.packets)).collect();
    got.sort();
    assert_eq!(got, [(Some(8), Some(0), 6), (Some(8), Some(1), 3), (Some(13), Some(0), 3)]);
}

/// The same 5-tuple on two VLANs is two flows in two segment pairs (two tenants): two
/// events, neither one's counts in the other.
#[test]
fn vlans_and_segments_keep_flows_apart() {
    let t0 = Instant::now();
    let mut agg = Aggregator::new(AggregatorConfig::default(), t0);
    let tenant = |vlan: u16, seg: &str, packets: u64| Event {
        vlan: Some(vlan),
        src_segment: format!("{seg}-web"),
        dst_segment: format!("{seg}-db"),
        ..obs(1, EventVerdict::Deny, packets, 10)
    };
    agg.record(tenant(10, "tenantA", 1));
    agg.record(tenant(20, "tenantB", 2));
    agg.record(tenant(10, "tenantA", 4));
    let mut events = agg.poll(t0 + Duration::from_secs(1));
    events.sort_by_key(|e| e.vlan);
    let got: Vec<_> = events.iter().map(|e| (e.vlan, e.src_segment.as_str(), e.dst_segment.as_str(), e.packets)).collect();
    assert_eq!(got, [(Some(10), "tenantA-web", "tenantA-db", 5), (Some(20), "tenantB-web", "tenantB-db", 2)]);
    // Segments alone (a reload moved the prefixes) also keep them apart.
    agg.record(tenant(10, "tenantA", 1));
    agg.record(Event { dst_segment: "other".into(), ..tenant(10, "tenantA", 1) });
    assert_eq!(agg.poll(t0 + Duration::from_secs(2)).len(), 2);
}

#[test]
fn rate_limit_and_table_bound() {
    let t0 = Instant::now();
    let config = AggregatorConfig { window: Duration::from_secs(1), rate_per_sec: 2.0, burst: 3, max_flows: 5 };
    let mut agg = Aggregator::new(config, t0);
    for port in 0..8 {
        agg.record(obs(port, EventVerdict::Deny, 1, 1));
    }
    let first = agg.poll(t0 + Duration::from_secs(1));
    // 5 flows kept (3 dropped at the table); the bucket held 3 and refilled 2 in 1 s, capped at 3.
    assert_eq!(first.len(), 3);
    assert_eq!(agg.stats(), AggregatorStats { observed: 8, emitted: 3, suppressed: 2, table_full: 3 });
    for port in 0..4 {
        agg.record(obs(port, EventVerdict::Deny, 1, 2));
    }
    let second = agg.poll(t0 + Duration::from_secs(2));
    assert_eq!(second.len(), 2, "2 tokens a second");
    assert_eq!(agg.stats().suppressed, 4);
}

#[test]
fn file_sink_writes_json_lines_and_counts_overflow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let sink = EventSink::start(SinkConfig { target: Target::File(path.clone()), format: Format::Json, capacity: 1 })
        .expect("start");
    let n = 5000;
    for port in 0..n {
        sink.submit(obs(port, EventVerdict::Deny, 1, 1));
    }
    let stats = sink.close();
    assert_eq!(stats.sent + stats.queue_full, u64::from(n));
    assert!(stats.queue_full > 0, "a queue of 1 overflows: {stats:?}");
    assert_eq!(stats.failed, 0);
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.lines().count() as u64, stats.sent);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(v["verdict"], "deny");
    }
}

#[test]
fn bad_targets_are_clear_errors_and_failures_are_counted() {
    let e = EventSink::start(SinkConfig {
        target: Target::File("/nonexistent-dir/x.log".into()),
        format: Format::Cef,
        capacity: 8,
    })
    .expect_err("no such directory");
    assert!(e.to_string().starts_with("cannot open event file /nonexistent-dir/x.log: "), "{e}");

    // Nobody listens: every message is lost and counted, and the caller never waits.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let sink = EventSink::start(SinkConfig { target: Target::SyslogTcp(closed), format: Format::Syslog(opts()), capacity: 16 })
        .expect("start");
    let t = Instant::now();
    for port in 0..10 {
        assert!(sink.submit(obs(port, EventVerdict::Deny, 1, 1)));
    }
    assert!(t.elapsed() < Duration::from_millis(100));
    let stats = sink.close();
    assert_eq!(stats, SinkStats { sent: 0, queue_full: 0, failed: 10 });
}

// ---- a real syslog receiver ---------------------------------------------------------------

/// rsyslogd with a configuration of the test's own: UDP and TCP inputs on loopback
/// high ports, each message written as its parsed RFC 5424 fields. Killed on drop.
struct Rsyslog {
    child: Child,
    dir: tempfile::TempDir,
    udp: SocketAddr,
    tcp: SocketAddr,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Rsyslog {
    fn start() -> Option<Rsyslog> {
        if Command::new("rsyslogd").arg("-v").stdout(Stdio::null()).status().is_err() {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let (udp, tcp) = (free_port(), free_port());
        let d = dir.path().display();
        let conf = format!(
            r#"global(workDirectory="{d}" maxMessageSize="64k")
module(load="imudp")
module(load="imtcp")
template(name="fields" type="list") {{
  property(name="pri") constant(value="\t")
  property(name="timereported" dateFormat="rfc3339") constant(value="\t")
  property(name="hostname") constant(value="\t")
  property(name="app-name") constant(value="\t")
  property(name="procid") constant(value="\t")
  property(name="msgid") constant(value="\t")
  property(name="structured-data") constant(value="\t")
  property(name="msg") constant(value="\n")
}}
ruleset(name="bulkhead") {{ action(type="omfile" file="{d}/out.log" template="fields") }}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="bulkhead")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="bulkhead")
"#
        );
        std::fs::write(dir.path().join("rsyslog.conf"), conf).expect("write config");
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(dir.path().join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rsyslogd");
        let r = Rsyslog { child, dir, udp: ([127, 0, 0, 1], udp).into(), tcp: ([127, 0, 0, 1], tcp).into() };
        // Ready when its TCP input accepts (both inputs start together).
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(r.tcp).is_err() {
            assert!(Instant::now() < deadline, "rsyslogd did not start listening within 5 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(r)
    }

    /// Lines written so far, waiting up to 5 s for `n` of them.
    fn lines(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines: Vec<String> = std::fs::File::open(self.dir.path().join("out.log"))
                .map(|f| BufReader::new(f).lines().map_while(Result::ok).collect())
                .unwrap_or_default();
            if lines.len() >= n || Instant::now() >= deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A strict parser of RFC 5424 SD-ELEMENTs: `[ID name="value" ...]...`, values unescaped.
fn parse_sd(sd: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    let mut chars = sd.chars().peekable();
    while let Some(c) = chars.next() {
        assert_eq!(c, '[', "SD-ELEMENT starts with [ in {sd}");
        let mut id = String::new();
        while let Some(&c) = chars.peek() {
            if c == ' ' || c == ']' {
                break;
            }
            assert!(c.is_ascii_graphic() && c != '=' && c != '"', "bad SD-ID char {c:?}");
            id.push(c);
            chars.next();
        }
        let mut params = Vec::new();
        loop {
            match chars.next() {
                Some(']') => break,
                Some(' ') => {}
                other => panic!("expected space or ] after an SD-PARAM, got {other:?} in {sd}"),
            }
            let mut name = String::new();
            for c in chars.by_ref() {
                if c == '=' {
                    break;
                }
                assert!(c.is_ascii_graphic() && c != ']' && c != '"', "bad PARAM-NAME char {c:?}");
                name.push(c);
            }
            assert!(!name.is_empty() && name.len() <= 32, "PARAM-NAME length");
            assert_eq!(chars.next(), Some('"'));
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some('\\') => match chars.next() {
                        Some(c @ ('"' | '\\' | ']')) => value.push(c),
                        other => panic!("bad escape \\{other:?}"),
                    },
                    Some('"') => break,
                    Some(']') => panic!("unescaped ] in PARAM-VALUE"),
                    Some(c) => value.push(c),
                    None => panic!("unterminated PARAM-VALUE"),
                }
            }
            params.push((name, value));
        }
        out.push((id, params));
    }
    out
}

#[test]
fn round_trip_through_rsyslog_over_udp_and_tcp() {
    let Some(rsyslog) = Rsyslog::start() else {
        assert!(std::env::var_os("BULKHEAD_REQUIRE_PARSERS").is_none(), "rsyslogd is not installed");
        eprintln!("\n\n*** WARNING: rsyslogd NOT INSTALLED (apt-get install rsyslog): syslog round trip NOT tested ***\n");
        return;
    };
    let mut deny = event();
    deny.reason = "odd \"reason\" \\ with ] inside".into();
    let mut allow = event();
    allow.verdict = EventVerdict::Allow;
    allow.reason = "allowed".into();
    allow.src_ip = IpAddr::V6(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 5));
    allow.rule = None;
    allow.vlan = None;

    let udp = EventSink::start(SinkConfig { target: Target::SyslogUdp(rsyslog.udp), format: Format::Syslog(opts()), capacity: 8 })
        .expect("udp sink");
    assert!(udp.submit(deny.clone()));
    assert_eq!(udp.close(), SinkStats { sent: 1, queue_full: 0, failed: 0 });
    let tcp_opts = SyslogOptions { facility: Facility::DAEMON, message: SyslogMessage::Text, ..opts() };
    let tcp = EventSink::start(SinkConfig { target: Target::SyslogTcp(rsyslog.tcp), format: Format::Syslog(tcp_opts), capacity: 8 })
        .expect("tcp sink");
    assert!(tcp.submit(allow.clone()));
    assert!(tcp.submit(deny.clone()));
    assert_eq!(tcp.close(), SinkStats { sent: 2, queue_full: 0, failed: 0 });

    let lines = rsyslog.lines(3);
    assert_eq!(lines.len(), 3, "rsyslog wrote: {lines:#?}");
    let fields: Vec<Vec<&str>> = lines.iter().map(|l| l.splitn(8, '\t').collect()).collect();
    for f in &fields {
        assert_eq!(f.len(), 8, "{f:?}");
        assert!(f[1].starts_with("2023-11-14T22:13:20.123"), "timestamp {}", f[1]);
        assert_eq!((f[2], f[3], f[4]), ("gw1", "bulkhead", "42"));
    }
    let udp_line = fields.iter().find(|f| f[0] == "132").expect("the UDP message: local0.warning = 132");
    assert_eq!(udp_line[5], "flow-deny");
    assert!(udp_line[7].trim_start().starts_with("CEF:0|bulkhead|bulkhead|0.1.0|flow-deny|"), "{}", udp_line[7]);
    let sd = parse_sd(udp_line[6]);
    assert_eq!(sd.len(), 1);
    assert_eq!(sd[0].0, SD_ID);
    let get = |k: &str| sd[0].1.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("reason"), Some("odd \"reason\" \\ with ] inside"));
    assert_eq!(get("src"), Some("10.1.0.5"));
    assert_eq!(get("dpt"), Some("8080"));
    assert_eq!(get("vlan"), Some("100"));
    assert_eq!(get("rule"), Some("web-to-api"));
    assert_eq!(get("policy_sha256"), Some("ab".repeat(32).as_str()));

    let allow_line = fields.iter().find(|f| f[0] == "30").expect("daemon.info = 30 over TCP");
    assert_eq!(allow_line[5], "flow-allow");
    let sd = parse_sd(allow_line[6]);
    let get = |k: &str| sd[0].1.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("src"), Some("fd00:1::5"));
    assert_eq!(get("rule"), Some(DEFAULT_RULE_LABEL));
    assert_eq!(get("vlan"), None);
    assert!(allow_line[7].trim_start().starts_with("allow tcp [fd00:1::5]:40000 -> 10.2.0.7:8080 segments"), "{}", allow_line[7]);
    assert!(fields.iter().any(|f| f[0] == "28" && f[5] == "flow-deny"), "daemon.warning = 28, the second TCP message");
}
