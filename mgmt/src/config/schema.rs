//! The raw YAML schema: what serde reads before anything is checked.
//!
//! Every struct denies unknown keys. Leaves are [`Scalar`]s rather than typed numbers
//! or enums, so that `validate` can say exactly what is wrong in the user's words
//! ("port 70000 is out of range 0-65535") instead of serde's ("invalid value: integer
//! `70000`, expected u16"), and so that nothing is coerced silently (the `config` crate
//! would round `1.5` to an integer and read the string `"yes"` as a boolean).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// One YAML scalar, as written.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer (decimal, or `0x`/`0o` as YAML reads them).
    Int(i128),
    /// A floating-point number.
    Float(f64),
    /// A string, quoted or plain.
    Str(String),
}

impl Scalar {
    /// How the value reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Scalar::Null => "nothing (null)".to_string(),
            Scalar::Bool(b) => format!("the boolean {b}"),
            Scalar::Int(i) => format!("the integer {i}"),
            Scalar::Float(f) => format!("the number {f}"),
            Scalar::Str(s) => format!("the string {s:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a single value (a number or a string)")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Scalar, E> {
        // Beyond i128 it is out of every range we accept; keep its digits for the message.
        Ok(i128::try_from(v).map_or_else(|_| Scalar::Str(v.to_string()), Scalar::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// The whole file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with keys appliance, segments, rules, default, intra_segment, unmatched, non_ip"
)]
pub struct RawFile {
    pub appliance: Option<RawAppliance>,
    pub segments: Option<Vec<RawSegment>>,
    pub rules: Option<Vec<RawRule>>,
    pub default: Option<Scalar>,
    pub intra_segment: Option<Scalar>,
    pub unmatched: Option<Scalar>,
    pub non_ip: Option<RawNonIp>,
}

impl RawFile {
    /// True when the file set nothing at all (empty, or only comments).
    pub fn is_empty(&self) -> bool {
        self.appliance.is_none()
            && self.segments.is_none()
            && self.rules.is_none()
            && self.default.is_none()
            && self.intra_segment.is_none()
            && self.unmatched.is_none()
            && self.non_ip.is_none()
    }
}

/// `segments[i]`.
#[derive(Debug, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a segment: a mapping with keys name, cidrs, vlans, mode"
)]
pub struct RawSegment {
    pub name: Scalar,
    pub cidrs: Option<Vec<Scalar>>,
    pub vlans: Option<Vec<Scalar>>,
    pub mode: Option<Scalar>,
}

/// `rules[i]`.
#[derive(Debug, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a rule: a mapping with keys name, from, to, protocol, ports, source_ports, icmp_types, action, log"
)]
pub struct RawRule {
    pub name: Scalar,
    pub from: Scalar,
    pub to: Scalar,
    pub protocol: Option<Scalar>,
    pub ports: Option<Vec<Scalar>>,
    pub source_ports: Option<Vec<Scalar>>,
    pub icmp_types: Option<Vec<Scalar>>,
    pub action: Scalar,
    pub log: Option<Scalar>,
}

/// `non_ip`.
#[derive(Debug, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with keys arp, neighbor_discovery, llc, ethertypes"
)]
pub struct RawNonIp {
    pub arp: Option<Scalar>,
    pub neighbor_discovery: Option<Scalar>,
    pub llc: Option<Scalar>,
    pub ethertypes: Option<Vec<Scalar>>,
}

/// `appliance`.
#[derive(Debug, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with keys ports, pairs, workers, management_core, mempool, descriptors, hugepages, memory_mb, eal_args, conntrack, management, events"
)]
pub struct RawAppliance {
    pub ports: Option<Vec<RawPort>>,
    pub pairs: Option<Vec<Vec<Scalar>>>,
    pub workers: Option<Vec<Scalar>>,
    pub management_core: Option<Scalar>,
    pub mempool: Option<RawMempool>,
    pub descriptors: Option<RawDescriptors>,
    pub hugepages: Option<Scalar>,
    pub memory_mb: Option<Scalar>,
    pub eal_args: Option<Vec<Scalar>>,
    pub conntrack: Option<RawConntrack>,
    pub management: Option<RawManagement>,
    pub events: Option<RawEvents>,
}

/// `appliance.management`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with keys metrics, control_socket, watch")]
pub struct RawManagement {
    pub metrics: Option<Scalar>,
    pub control_socket: Option<Scalar>,
    pub watch: Option<Scalar>,
}

/// `appliance.events`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with keys sinks, rate_per_sec, burst, window_ms")]
pub struct RawEvents {
    pub sinks: Option<Vec<RawSink>>,
    pub rate_per_sec: Option<Scalar>,
    pub burst: Option<Scalar>,
    pub window_ms: Option<Scalar>,
}

/// `appliance.events.sinks[i]`.
#[derive(Debug, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a sink: a mapping with keys type, path, transport, address, format, facility"
)]
pub struct RawSink {
    #[serde(rename = "type")]
    pub kind: Scalar,
    pub path: Option<Scalar>,
    pub transport: Option<Scalar>,
    pub address: Option<Scalar>,
    pub format: Option<Scalar>,
    pub facility: Option<Scalar>,
}

/// `appliance.conntrack`.
#[derive(Debug, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with keys enabled, capacity, fragments, tcp, on_full, on_policy_change, timeouts"
)]
pub struct RawConntrack {
    pub enabled: Option<Scalar>,
    pub capacity: Option<Scalar>,
    pub fragments: Option<Scalar>,
    pub tcp: Option<Scalar>,
    pub on_full: Option<Scalar>,
    pub on_policy_change: Option<Scalar>,
    pub timeouts: Option<RawTimeouts>,
}

/// `appliance.conntrack.timeouts` (seconds).
#[derive(Debug, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with keys tcp_syn, tcp_established, tcp_fin, tcp_closed, udp, udp_stream, icmp, other, fragment"
)]
pub struct RawTimeouts {
    pub tcp_syn: Option<Scalar>,
    pub tcp_established: Option<Scalar>,
    pub tcp_fin: Option<Scalar>,
    pub tcp_closed: Option<Scalar>,
    pub udp: Option<Scalar>,
    pub udp_stream: Option<Scalar>,
    pub icmp: Option<Scalar>,
    pub other: Option<Scalar>,
    pub fragment: Option<Scalar>,
}

/// `appliance.ports[i]`.
#[derive(Debug, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a port: a mapping with keys name, device"
)]
pub struct RawPort {
    pub name: Scalar,
    pub device: Scalar,
}

/// `appliance.mempool`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with keys mbufs, cache")]
pub struct RawMempool {
    pub mbufs: Option<Scalar>,
    pub cache: Option<Scalar>,
}

/// `appliance.descriptors`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with keys rx, tx")]
pub struct RawDescriptors {
    pub rx: Option<Scalar>,
    pub tx: Option<Scalar>,
}
