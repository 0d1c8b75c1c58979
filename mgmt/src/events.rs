//! Security events for a SIEM: what a flow was, which policy decided it and how.
//!
//! - [`Event`]: one flow's decision, aggregated over a short window (packets, bytes,
//!   first and last seen).
//! - Formatters: JSON lines ([`Event::to_json`]), CEF ([`Event::to_cef`]) and RFC 5424
//!   syslog ([`Event::to_syslog`], structured data `[bulkhead@32473 ...]`, the message
//!   either CEF or plain text).
//! - [`Aggregator`]: folds packet observations into one event per flow (5-tuple, VLAN,
//!   segments, verdict, rule) per window, and rate-limits what it emits with a token bucket, counting what
//!   it suppressed, so a flood cannot drown the sink.
//! - [`EventSink`]: a thread that writes events to stdout, a file, or syslog over UDP
//!   (one datagram per message) or TCP (RFC 6587 octet counting). It is fed through a
//!   bounded channel with `try_send`: the caller never waits, and what does not fit is
//!   counted, as are write failures.
//!
//! The structured-data ID uses 32473, the private enterprise number IANA reserves for
//! documentation (RFC 5612); a site with its own number can change [`SD_ID`].

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Sender, TrySendError};
use dataplane::policy::Verdict;
use serde::Serialize;

/// The RFC 5424 structured-data ID of bulkhead's parameters.
pub const SD_ID: &str = "bulkhead@32473";

/// The rule label of events no rule decided (a policy default). It cannot be a rule's
/// name: rule names are letters, digits, `_`, `-` and `.`.
pub const DEFAULT_RULE_LABEL: &str = "(default)";

/// Whether the flow was forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventVerdict {
    /// Forwarded.
    Allow,
    /// Dropped.
    Deny,
}

impl EventVerdict {
    /// `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventVerdict::Allow => "allow",
            EventVerdict::Deny => "deny",
        }
    }

    /// The event verdict and reason of a dataplane verdict: `(allow, "allowed")` or
    /// `(deny, <drop reason name>)`.
    pub fn from_verdict(v: Verdict) -> (EventVerdict, &'static str) {
        match v {
            Verdict::Allow => (EventVerdict::Allow, "allowed"),
            Verdict::Deny(reason) => (EventVerdict::Deny, reason.name()),
        }
    }
}

/// One flow's decision over an aggregation window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When the event was emitted.
    pub time: SystemTime,
    /// Version of the policy that decided.
    pub policy_version: u64,
    /// SHA-256 (hex) of that policy's file.
    pub policy_sha256: String,
    /// Source segment name (`-`: in no segment).
    pub src_segment: String,
    /// Destination segment name.
    pub dst_segment: String,
    /// Source address.
    pub src_ip: IpAddr,
    /// Destination address.
    pub dst_ip: IpAddr,
    /// Source port (0 for protocols without ports).
    pub src_port: u16,
    /// Destination port (0 for protocols without ports).
    pub dst_port: u16,
    /// ICMP or ICMPv6 type (`None` for other protocols, and for an ICMP header the
    /// packet did not carry, as in a later fragment).
    pub icmp_type: Option<u8>,
    /// ICMP or ICMPv6 code, as for `icmp_type`.
    pub icmp_code: Option<u8>,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...).
    pub protocol: u8,
    /// VLAN ID the segments were chosen by, if tagged: the inner (C-)tag of a QinQ
    /// frame, else its only tag.
    pub vlan: Option<u16>,
    /// The rule that decided; `None`: a policy default.
    pub rule: Option<String>,
    /// Forwarded or dropped.
    pub verdict: EventVerdict,
    /// Why: `allowed`, or the drop reason's name (`policy_deny`, ...).
    pub reason: String,
    /// Packets of the flow in the window.
    pub packets: u64,
    /// Bytes of the flow in the window.
    pub bytes: u64,
    /// First packet of the flow in the window.
    pub first_seen: SystemTime,
    /// Latest packet of the flow in the window.
    pub last_seen: SystemTime,
}

/// The name of an IP protocol number, lowercase (`tcp`, `udp`, ...), or its number.
pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        58 => "ipv6-icmp".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

/// `t` as an RFC 3339 UTC timestamp with milliseconds (`2024-05-06T07:08:09.123Z`), the
/// form RFC 5424 TIMESTAMP accepts. Times before 1970 are written as the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

#[derive(Serialize)]
struct JsonEvent<'a> {
    time: String,
    policy_version: u64,
    policy_sha256: &'a str,
    src_segment: &'a str,
    dst_segment: &'a str,
    src_ip: IpAddr,
    dst_ip: IpAddr,
    src_port: u16,
    dst_port: u16,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    protocol: u8,
    protocol_name: String,
    vlan: Option<u16>,
    rule: Option<&'a str>,
    verdict: EventVerdict,
    reason: &'a str,
    packets: u64,
    bytes: u64,
    first_seen: String,
    last_seen: String,
}

impl Event {
    /// The event as one line of JSON (no trailing newline). `rule` is `null` when a
    /// policy default decided; `icmp_type` and `icmp_code` are `null` but for ICMP.
    pub fn to_json(&self) -> String {
        let j = JsonEvent {
            time: rfc3339(self.time),
            policy_version: self.policy_version,
            policy_sha256: &self.policy_sha256,
            src_segment: &self.src_segment,
            dst_segment: &self.dst_segment,
            src_ip: self.src_ip,
            dst_ip: self.dst_ip,
            src_port: self.src_port,
            dst_port: self.dst_port,
            icmp_type: self.icmp_type,
            icmp_code: self.icmp_code,
            protocol: self.protocol,
            protocol_name: protocol_name(self.protocol),
            vlan: self.vlan,
            rule: self.rule.as_deref(),
            verdict: self.verdict,
            reason: &self.reason,
            packets: self.packets,
            bytes: self.bytes,
            first_seen: rfc3339(self.first_seen),
            last_seen: rfc3339(self.last_seen),
        };
        // Serialising plain strings and numbers cannot fail; keep a valid line if it did.
        serde_json::to_string(&j).unwrap_or_else(|e| format!("{{\"error\":\"cannot serialise event: {e}\"}}"))
    }

    /// An ICMP or ICMPv6 event (type and code instead of ports).
    fn is_icmp(&self) -> bool {
        self.icmp_type.is_some() || self.icmp_code.is_some()
    }

    fn rule_label(&self) -> &str {
        self.rule.as_deref().unwrap_or(DEFAULT_RULE_LABEL)
    }

    /// The event as a CEF line (no trailing newline): `CEF:0|bulkhead|bulkhead|VERSION|
    /// SIGID|NAME|SEV|extension`, header fields escaped for `|` and `\`, extension values
    /// for `\`, `=` and line breaks. Signature IDs: `flow-deny` (severity 5) and
    /// `flow-allow` (severity 1). ICMP has no ports: `spt`/`dpt` are left out and the
    /// type and code are custom numbers `cn3` (`icmpType`) and `cn4` (`icmpCode`).
    pub fn to_cef(&self, product_version: &str) -> String {
        let (sig, name, sev) = match self.verdict {
            EventVerdict::Deny => ("flow-deny", "Flow denied by segmentation policy", 5),
            EventVerdict::Allow => ("flow-allow", "Flow allowed by segmentation policy", 1),
        };
        let mut s = format!(
            "CEF:0|bulkhead|bulkhead|{}|{sig}|{name}|{sev}|",
            cef_header_escape(product_version)
        );
        let mut ext: Vec<(&str, String)> = vec![
            ("rt", millis(self.time).to_string()),
            ("start", millis(self.first_seen).to_string()),
            ("end", millis(self.last_seen).to_string()),
            ("src", self.src_ip.to_string()),
            ("dst", self.dst_ip.to_string()),
        ];
        if !self.is_icmp() {
            ext.extend([("spt", self.src_port.to_string()), ("dpt", self.dst_port.to_string())]);
        }
        ext.extend([
            ("proto", protocol_name(self.protocol).to_uppercase()),
            ("act", self.verdict.as_str().to_string()),
            ("reason", self.reason.clone()),
            ("cnt", self.packets.to_string()),
            ("in", self.bytes.to_string()),
            ("cs1Label", "rule".into()),
            ("cs1", self.rule_label().to_string()),
            ("cs2Label", "srcSegment".into()),
            ("cs2", self.src_segment.clone()),
            ("cs3Label", "dstSegment".into()),
            ("cs3", self.dst_segment.clone()),
            ("cs4Label", "policySha256".into()),
            ("cs4", self.policy_sha256.clone()),
            ("cn1Label", "policyVersion".into()),
            ("cn1", self.policy_version.to_string()),
        ]);
        if let Some(vlan) = self.vlan {
            ext.push(("cn2Label", "vlan".into()));
            ext.push(("cn2", vlan.to_string()));
        }
        if let Some(t) = self.icmp_type {
            ext.extend([("cn3Label", "icmpType".into()), ("cn3", t.to_string())]);
        }
        if let Some(c) = self.icmp_code {
            ext.extend([("cn4Label", "icmpCode".into()), ("cn4", c.to_string())]);
        }
        for (i, (k, v)) in ext.iter().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            let _ = write!(s, "{k}={}", cef_ext_escape(v));
        }
        s
    }

    /// A one-line human summary (the syslog message in [`SyslogMessage::Text`] mode).
    pub fn to_text(&self) -> String {
        let vlan = self.vlan.map(|v| format!(" vlan {v}")).unwrap_or_default();
        let flow = if self.is_icmp() {
            let n = |v: Option<u8>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
            format!("{} -> {} type {} code {}", self.src_ip, self.dst_ip, n(self.icmp_type), n(self.icmp_code))
        } else {
            format!("{} -> {}", SocketAddr::new(self.src_ip, self.src_port), SocketAddr::new(self.dst_ip, self.dst_port))
        };
        format!(
            "{} {} {flow}{vlan} segments {} -> {} rule {} ({}) {} packets {} bytes policy v{}",
            self.verdict.as_str(),
            protocol_name(self.protocol),
            self.src_segment,
            self.dst_segment,
            self.rule_label(),
            self.reason,
            self.packets,
            self.bytes,
            self.policy_version
        )
    }

    /// The event as an RFC 5424 message (no trailing newline, no framing):
    /// `<PRI>1 TIMESTAMP HOSTNAME bulkhead PROCID MSGID [bulkhead@32473 ...] MSG`.
    /// Severity 4 (warning) for a deny, 6 (informational) for an allow; MSGID
    /// `flow-deny` or `flow-allow`. ICMP carries `icmp_type` and `icmp_code` parameters
    /// instead of `spt` and `dpt`.
    pub fn to_syslog(&self, opts: &SyslogOptions) -> String {
        let severity = match self.verdict {
            EventVerdict::Deny => 4,
            EventVerdict::Allow => 6,
        };
        let pri = u16::from(opts.facility.code()) * 8 + severity;
        let msgid = match self.verdict {
            EventVerdict::Deny => "flow-deny",
            EventVerdict::Allow => "flow-allow",
        };
        let mut s = format!(
            "<{pri}>1 {} {} {} {} {msgid} [{SD_ID}",
            rfc3339(self.time),
            header_field(&opts.hostname, 255),
            header_field(&opts.app_name, 48),
            header_field(&opts.procid, 128),
        );
        let mut params: Vec<(&str, String)> = vec![
            ("policy_version", self.policy_version.to_string()),
            ("policy_sha256", self.policy_sha256.clone()),
            ("src_segment", self.src_segment.clone()),
            ("dst_segment", self.dst_segment.clone()),
            ("src", self.src_ip.to_string()),
            ("dst", self.dst_ip.to_string()),
        ];
        if self.is_icmp() {
            params.extend(self.icmp_type.map(|t| ("icmp_type", t.to_string())));
            params.extend(self.icmp_code.map(|c| ("icmp_code", c.to_string())));
        } else {
            params.extend([("spt", self.src_port.to_string()), ("dpt", self.dst_port.to_string())]);
        }
        params.push(("proto", protocol_name(self.protocol)));
        if let Some(vlan) = self.vlan {
            params.push(("vlan", vlan.to_string()));
        }
        params.extend([
            ("rule", self.rule_label().to_string()),
            ("verdict", self.verdict.as_str().to_string()),
            ("reason", self.reason.clone()),
            ("packets", self.packets.to_string()),
            ("bytes", self.bytes.to_string()),
            ("first_seen", rfc3339(self.first_seen)),
            ("last_seen", rfc3339(self.last_seen)),
        ]);
        for (k, v) in params {
            let _ = write!(s, " {k}=\"{}\"", sd_escape(&v));
        }
        s.push_str("] ");
        match opts.message {
            SyslogMessage::Cef => s.push_str(&self.to_cef(&opts.product_version)),
            SyslogMessage::Text => s.push_str(&self.to_text()),
        }
        s
    }
}

/// Escapes an RFC 5424 PARAM-VALUE (§6.3.3): `"`, `\` and `]` get a backslash.
pub fn sd_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Escapes a CEF header field: `\` and `|` get a backslash; line breaks become spaces.
pub fn cef_header_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a CEF extension value: `\` and `=` get a backslash; line breaks are written
/// `\n` and `\r`.
pub fn cef_ext_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// An RFC 5424 header field: printable US-ASCII without spaces, at most `max` characters;
/// `-` (NILVALUE) when nothing printable is left.
fn header_field(v: &str, max: usize) -> String {
    let s: String = v.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// This machine's host name (from the kernel), or `-` if it cannot be read.
pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| header_field(s.trim(), 255))
        .unwrap_or_else(|_| "-".into())
}

/// A syslog facility (RFC 5424 §6.2.1), 0 to 23.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facility(u8);

impl Facility {
    /// `local0`, a common choice for appliances.
    pub const LOCAL0: Facility = Facility(16);
    /// `auth` (security/authorisation messages).
    pub const AUTH: Facility = Facility(4);
    /// `daemon`.
    pub const DAEMON: Facility = Facility(3);

    const NAMES: [&'static str; 24] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
        "ntp", "security", "console", "solaris-cron", "local0", "local1", "local2", "local3", "local4", "local5",
        "local6", "local7",
    ];

    /// The facility of code `code` (0-23).
    pub fn new(code: u8) -> Result<Facility, String> {
        if code < 24 {
            Ok(Facility(code))
        } else {
            Err(format!("syslog facility {code} is out of range (0 to 23)"))
        }
    }

    /// The facility named `name` (`local0` ... `local7`, `auth`, `daemon`, `user`, ...)
    /// or given by its number.
    pub fn from_name(name: &str) -> Result<Facility, String> {
        let lower = name.trim().to_ascii_lowercase();
        if let Some(i) = Self::NAMES.iter().position(|n| *n == lower) {
            return Ok(Facility(i as u8));
        }
        match lower.parse::<u8>() {
            Ok(code) => Facility::new(code),
            Err(_) => Err(format!(
                "unknown syslog facility `{name}` (expected one of {} or a number 0-23)",
                Self::NAMES.join(", ")
            )),
        }
    }

    /// The numeric code.
    pub fn code(self) -> u8 {
        self.0
    }

    /// The conventional name.
    pub fn name(self) -> &'static str {
        Self::NAMES[usize::from(self.0).min(23)]
    }
}

/// What goes in the MSG part of a syslog message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyslogMessage {
    /// The CEF line (for SIEMs that parse CEF-over-syslog).
    Cef,
    /// A one-line human summary.
    Text,
}

/// The header fields and choices of RFC 5424 output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyslogOptions {
    /// Facility (severity follows the verdict).
    pub facility: Facility,
    /// HOSTNAME.
    pub hostname: String,
    /// APP-NAME.
    pub app_name: String,
    /// PROCID.
    pub procid: String,
    /// MSG content.
    pub message: SyslogMessage,
    /// The product version CEF messages carry.
    pub product_version: String,
}

impl Default for SyslogOptions {
    /// `local0`, this host's name, `bulkhead`, this process's id, CEF messages.
    fn default() -> Self {
        SyslogOptions {
            facility: Facility::LOCAL0,
            hostname: local_hostname(),
            app_name: "bulkhead".into(),
            procid: std::process::id().to_string(),
            message: SyslogMessage::Cef,
            product_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

// ---- aggregation and rate limiting ------------------------------------------------------

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: f64, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket { rate: rate_per_sec.max(0.0), burst, tokens: burst, last: now }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// How the [`Aggregator`] folds and limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AggregatorConfig {
    /// Observations of one flow within this window make one event.
    pub window: Duration,
    /// Events emitted per second, sustained.
    pub rate_per_sec: f64,
    /// Events that may be emitted at once after a quiet spell.
    pub burst: u32,
    /// Flows tracked in one window; observations of further flows are counted in
    /// `table_full` and dropped.
    pub max_flows: usize,
}

impl Default for AggregatorConfig {
    /// A 1 s window, 100 events/s with bursts of 200, 10 000 flows a window.
    fn default() -> Self {
        AggregatorConfig { window: Duration::from_secs(1), rate_per_sec: 100.0, burst: 200, max_flows: 10_000 }
    }
}

/// The aggregator's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggregatorStats {
    /// Observations recorded.
    pub observed: u64,
    /// Events emitted.
    pub emitted: u64,
    /// Events the rate limit suppressed.
    pub suppressed: u64,
    /// Observations dropped because the window's flow table was full.
    pub table_full: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    src_ip: IpAddr,
    dst_ip: IpAddr,
    src_port: u16,
    dst_port: u16,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    protocol: u8,
    vlan: Option<u16>,
    src_segment: String,
    dst_segment: String,
    verdict: EventVerdict,
    rule: Option<String>,
}

/// Folds observations into one event per flow (5-tuple, ICMP type and code, VLAN,
/// segments, verdict, rule) and window, and rate-limits the events. The same 5-tuple on
/// two VLANs is two flows (in two segment pairs, perhaps two tenants), so two events.
#[derive(Debug)]
pub struct Aggregator {
    config: AggregatorConfig,
    flows: HashMap<FlowKey, Event>,
    window_start: Instant,
    bucket: TokenBucket,
    stats: AggregatorStats,
}

impl Aggregator {
    /// An empty aggregator whose first window starts at `now`.
    pub fn new(config: AggregatorConfig, now: Instant) -> Aggregator {
        Aggregator {
            config,
            flows: HashMap::new(),
            window_start: now,
            bucket: TokenBucket::new(config.rate_per_sec, config.burst, now),
            stats: AggregatorStats::default(),
        }
    }

    /// Records an observation: `obs.packets` and `obs.bytes` are added to its flow's
    /// event of this window, `first_seen`/`last_seen` widened; other fields are taken
    /// from the latest observation.
    pub fn record(&mut self, obs: Event) {
        self.stats.observed += 1;
        let key = FlowKey {
            src_ip: obs.src_ip,
            dst_ip: obs.dst_ip,
            src_port: obs.src_port,
            dst_port: obs.dst_port,
            icmp_type: obs.icmp_type,
            icmp_code: obs.icmp_code,
            protocol: obs.protocol,
            vlan: obs.vlan,
            src_segment: obs.src_segment.clone(),
            dst_segment: obs.dst_segment.clone(),
            verdict: obs.verdict,
            rule: obs.rule.clone(),
        };
        if let Some(e) = self.flows.get_mut(&key) {
            let (packets, bytes) = (e.packets.saturating_add(obs.packets), e.bytes.saturating_add(obs.bytes));
            let (first, last) = (e.first_seen.min(obs.first_seen), e.last_seen.max(obs.last_seen));
            *e = obs;
            e.packets = packets;
            e.bytes = bytes;
            e.first_seen = first;
            e.last_seen = last;
        } else if self.flows.len() < self.config.max_flows {
            self.flows.insert(key, obs);
        } else {
            self.stats.table_full += 1;
        }
    }

    /// When the window has ended at `now`: the window's events that the rate limit lets
    /// through (denies first, then by packets, most first), each stamped with the
    /// current time; a new window starts. Before that: nothing.
    pub fn poll(&mut self, now: Instant) -> Vec<Event> {
        if now.saturating_duration_since(self.window_start) < self.config.window {
            return Vec::new();
        }
        self.flush(now)
    }

    /// Ends the window now (at shutdown) and returns its events, rate-limited.
    pub fn flush(&mut self, now: Instant) -> Vec<Event> {
        self.window_start = now;
        let mut events: Vec<Event> = self.flows.drain().map(|(_, e)| e).collect();
        events.sort_by(|a, b| {
            (b.verdict == EventVerdict::Deny)
                .cmp(&(a.verdict == EventVerdict::Deny))
                .then(b.packets.cmp(&a.packets))
                .then(a.first_seen.cmp(&b.first_seen))
        });
        let wall = SystemTime::now();
        let mut out = Vec::with_capacity(events.len());
        for mut e in events {
            if self.bucket.try_take(now) {
                e.time = wall;
                out.push(e);
            } else {
                self.stats.suppressed += 1;
            }
        }
        self.stats.emitted += out.len() as u64;
        out
    }

    /// Its counters.
    pub fn stats(&self) -> AggregatorStats {
        self.stats
    }
}

// ---- sinks ------------------------------------------------------------------------------

/// Where a sink writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Standard output, one message a line.
    Stdout,
    /// A file, appended to (created if missing), one message a line.
    File(PathBuf),
    /// Syslog over UDP: one datagram per message (RFC 5426).
    SyslogUdp(SocketAddr),
    /// Syslog over TCP: RFC 6587 octet-counting framing (`LEN SP MSG`), reconnecting
    /// after failures at most once a second.
    SyslogTcp(SocketAddr),
}

/// How a sink writes each event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// [`Event::to_json`].
    Json,
    /// [`Event::to_cef`].
    Cef,
    /// [`Event::to_syslog`].
    Syslog(SyslogOptions),
}

/// A sink's set-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkConfig {
    /// Where.
    pub target: Target,
    /// How.
    pub format: Format,
    /// Events queued for the sink thread at most; more are counted in `queue_full`.
    pub capacity: usize,
}

/// A sink's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Messages written (handed to the kernel).
    pub sent: u64,
    /// Events refused because the queue was full.
    pub queue_full: u64,
    /// Messages lost to write or connection failures.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct SinkCounters {
    sent: AtomicU64,
    queue_full: AtomicU64,
    failed: AtomicU64,
}

/// A sink that could not start.
#[derive(Debug)]
pub struct SinkError(pub String);

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SinkError {}

/// A running sink: a thread fed by a bounded channel. Dropping it (or [`EventSink::close`])
/// writes what is queued and stops the thread.
#[derive(Debug)]
pub struct EventSink {
    tx: Option<Sender<Event>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<SinkCounters>,
}

/// How long a connect or write to a syslog receiver may take.
const NET_TIMEOUT: Duration = Duration::from_millis(500);
/// Least time between TCP reconnection attempts.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

enum Writer {
    Stdout,
    File(std::fs::File),
    Udp(UdpSocket),
    Tcp { addr: SocketAddr, stream: Option<TcpStream>, last_attempt: Option<Instant> },
}

impl Writer {
    fn open(target: &Target) -> Result<Writer, SinkError> {
        Ok(match target {
            Target::Stdout => Writer::Stdout,
            Target::File(path) => Writer::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| SinkError(format!("cannot open event file {}: {e}", path.display())))?,
            ),
            Target::SyslogUdp(addr) => {
                let local: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
                let socket = UdpSocket::bind(local)
                    .and_then(|s| s.connect(addr).map(|_| s))
                    .map_err(|e| SinkError(format!("cannot open a UDP socket to syslog receiver {addr}: {e}")))?;
                let _ = socket.set_write_timeout(Some(NET_TIMEOUT));
                Writer::Udp(socket)
            }
            Target::SyslogTcp(addr) => Writer::Tcp { addr: *addr, stream: None, last_attempt: None },
        })
    }

    /// Writes one message; `Err` when it was lost.
    fn write(&mut self, msg: &str) -> std::io::Result<()> {
        match self {
            Writer::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(msg.as_bytes())?;
                out.write_all(b"\n")?;
                out.flush()
            }
            Writer::File(f) => {
                let mut line = Vec::with_capacity(msg.len() + 1);
                line.extend_from_slice(msg.as_bytes());
                line.push(b'\n');
                f.write_all(&line)
            }
            Writer::Udp(s) => s.send(msg.as_bytes()).map(|_| ()),
            Writer::Tcp { addr, stream, last_attempt } => {
                if stream.is_none() {
                    if last_attempt.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
                        return Err(std::io::Error::new(std::io::ErrorKind::NotConnected, "waiting to reconnect"));
                    }
                    *last_attempt = Some(Instant::now());
                    let s = TcpStream::connect_timeout(addr, NET_TIMEOUT)?;
                    s.set_write_timeout(Some(NET_TIMEOUT))?;
                    let _ = s.set_nodelay(true);
                    *stream = Some(s);
                }
                let framed = format!("{} {msg}", msg.len());
                let result = match stream.as_mut() {
                    Some(s) => s.write_all(framed.as_bytes()),
                    None => Err(std::io::Error::new(std::io::ErrorKind::NotConnected, "not connected")),
                };
                if result.is_err() {
                    *stream = None;
                }
                result
            }
        }
    }
}

impl EventSink {
    /// Opens the target (a file is opened now, so a bad path is refused here; a TCP
    /// receiver is connected to lazily and may come up later) and starts the thread.
    pub fn start(config: SinkConfig) -> Result<EventSink, SinkError> {
        let mut writer = Writer::open(&config.target)?;
        let (tx, rx) = bounded::<Event>(config.capacity.max(1));
        let counters = Arc::new(SinkCounters::default());
        let format = config.format.clone();
        let thread = {
            let counters = counters.clone();
            let target = config.target.clone();
            std::thread::Builder::new()
                .name("bulkhead-events".into())
                .spawn(move || {
                    let mut last_error: Option<Instant> = None;
                    for event in rx.iter() {
                        let msg = match &format {
                            Format::Json => event.to_json(),
                            Format::Cef => event.to_cef(env!("CARGO_PKG_VERSION")),
                            Format::Syslog(opts) => event.to_syslog(opts),
                        };
                        match writer.write(&msg) {
                            Ok(()) => {
                                counters.sent.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                counters.failed.fetch_add(1, Ordering::Relaxed);
                                // One log line a minute at most, not one per event.
                                let due = match last_error {
                                    Some(t) => t.elapsed() >= Duration::from_secs(60),
                                    None => true,
                                };
                                if due {
                                    last_error = Some(Instant::now());
                                    log::warn!("event sink {target:?}: message lost: {e}");
                                }
                            }
                        }
                    }
                })
                .map_err(|e| SinkError(format!("cannot start the event sink thread: {e}")))?
        };
        Ok(EventSink { tx: Some(tx), thread: Some(thread), counters })
    }

    /// Queues `event` without waiting; `false` (and counted) when the queue is full.
    pub fn submit(&self, event: Event) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Its counters.
    pub fn stats(&self) -> SinkStats {
        SinkStats {
            sent: self.counters.sent.load(Ordering::Relaxed),
            queue_full: self.counters.queue_full.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
        }
    }

    /// Writes what is queued, stops the thread and returns the final counters.
    pub fn close(mut self) -> SinkStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EventSink {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests;
