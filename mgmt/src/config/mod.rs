//! The configuration loader: one YAML file -> a validated [`Config`].
//!
//! The file holds the policy (`segments`, `rules`, `default`, `intra_segment`,
//! `unmatched`, `non_ip`) and, optionally, the `appliance` section that `bulkhead run`
//! needs. Every key is documented in `docs/policy.md`.
//!
//! Loading is strict and all-or-nothing: unknown keys, wrong types and invalid values
//! are refused, and a refused file yields exactly one [`ConfigError`], which displays
//! as one line `FILE: FIELD.PATH: what is wrong`. Nothing here panics on input.
//!
//! How: the `config` crate reads the YAML into its value tree, and serde deserializes
//! that into the raw types of [`schema`] through `serde_path_to_error`, which keeps the
//! field path of type errors (`config` alone writes keys as `rules[0]ports`, or none).
//! Then [`validate`] turns the raw types into the dataplane's
//! [`PolicySpec`](dataplane::policy::spec::PolicySpec) and an [`ApplianceConfig`].
//! The `config` crate keeps key case as written (0.14), and its lax conversions (floats
//! rounded to integers, `"yes"` read as true) cannot bite: every leaf is read as a
//! [`schema::Scalar`] and converted here.

mod error;
pub mod schema;
mod validate;

use std::path::Path;

use dataplane::policy::spec::PolicySpec;

pub use error::ConfigError;
use error::FieldError;
pub use validate::{
    has_ports, parse_protocol, protocol_name, MAX_NAME_LEN, PROTOCOL_NAMES, RESERVED_SEGMENT_NAMES,
};

/// Files larger than this are refused before they are read (a 1,000,000-rule policy
/// is roughly 100 MiB of YAML).
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Most segments a policy may hold (segment ids are 16 bits; the rest is headroom for
/// the dataplane).
pub const MAX_SEGMENTS: usize = 65_000;

/// Most rules a policy may hold.
pub const MAX_RULES: usize = 1_000_000;

/// A loaded, validated configuration file.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file name as given, for messages.
    pub file: String,
    /// The `appliance:` section, if the file has one (`bulkhead run` requires it;
    /// `check` and `explain` ignore it beyond validating it).
    pub appliance: Option<ApplianceConfig>,
    /// The policy. Segment `i` and rule `i` are `segments[i]` and `rules[i]` of the file.
    pub policy: PolicySpec,
}

/// The `appliance:` section, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ApplianceConfig {
    /// Ports in file order; names are unique, devices are unique.
    pub ports: Vec<PortConfig>,
    /// Pairs of indices into `ports`. Every port is in exactly one pair.
    pub pairs: Vec<[usize; 2]>,
    /// Lcore ids that run workers: non-empty, no duplicates, file order.
    pub workers: Vec<u32>,
    /// Core the management thread is pinned to; never one of `workers`.
    pub management_core: Option<u32>,
    /// The packet buffer pool.
    pub mempool: MempoolConfig,
    /// Descriptor ring sizes, each a power of two.
    pub descriptors: DescriptorConfig,
    /// `false`: run the EAL with `--no-huge` (virtual devices, test-beds).
    pub hugepages: bool,
    /// EAL memory (`-m`) in MiB; 0 means sized from the mempool, see
    /// [`ApplianceConfig::effective_memory_mb`].
    pub memory_mb: u32,
    /// Extra EAL arguments, appended verbatim.
    pub eal_args: Vec<String>,
    /// Connection tracking (`appliance.conntrack`); `None` when disabled.
    pub conntrack: Option<dataplane::conntrack::Config>,
    /// Management endpoints (`appliance.management`).
    pub management: ManagementConfig,
    /// Security events (`appliance.events`).
    pub events: EventsConfig,
}

/// `appliance.management`: where operators reach the running appliance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagementConfig {
    /// Prometheus `/metrics` listen address (default `127.0.0.1:9464`); `None`: off.
    pub metrics: Option<std::net::SocketAddr>,
    /// Control socket path (default: see `control::default_socket_path`); `None`: off.
    pub control_socket: Option<std::path::PathBuf>,
    /// Reload the policy when the configuration file changes (default true).
    pub watch: bool,
}

/// `appliance.events`: where security events go and how fast.
#[derive(Clone, Debug, PartialEq)]
pub struct EventsConfig {
    /// Sinks; none means events are counted but not written.
    pub sinks: Vec<crate::events::SinkConfig>,
    /// Aggregation and rate limit.
    pub aggregator: crate::events::AggregatorConfig,
}

impl ApplianceConfig {
    /// The EAL memory to ask for, in MiB: `memory_mb` if set, else about 4 KiB per
    /// mbuf (an mbuf with its 2 KiB data room and headers, rounded up generously for
    /// `--no-huge` page granularity) plus 64 MiB for the EAL, rings and tables.
    pub fn effective_memory_mb(&self) -> u32 {
        if self.memory_mb != 0 {
            return self.memory_mb;
        }
        let mbufs_mb = (u64::from(self.mempool.mbufs) * 4096).div_ceil(1024 * 1024);
        u32::try_from(mbufs_mb + 64).unwrap_or(u32::MAX)
    }

    /// The index of the port named `name`.
    pub fn port_index(&self, name: &str) -> Option<usize> {
        self.ports.iter().position(|p| p.name == name)
    }
}

/// `appliance.ports[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    /// Unique name, used in pairs, counters and logs.
    pub name: String,
    /// The DPDK device behind it.
    pub device: Device,
}

/// A DPDK device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Device {
    /// A PCI address, normalised to `DDDD:BB:DD.F` (e.g. `0000:03:00.0`).
    Pci(String),
    /// A virtual device string, e.g. `net_af_packet0,iface=bh-west`, as written.
    Vdev(String),
}

impl Device {
    /// The device as DPDK names it.
    pub fn as_str(&self) -> &str {
        match self {
            Device::Pci(s) | Device::Vdev(s) => s,
        }
    }

    /// The EAL arguments that make this device available: `-a ADDR` or `--vdev STR`.
    pub fn eal_args(&self) -> [String; 2] {
        match self {
            Device::Pci(s) => ["-a".to_string(), s.clone()],
            Device::Vdev(s) => ["--vdev".to_string(), s.clone()],
        }
    }
}

/// `appliance.mempool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Number of mbufs (default 8191; best a power of two minus one).
    pub mbufs: u32,
    /// Per-lcore cache size (default 256; at most 512 and at most 2/3 of `mbufs`).
    pub cache: u32,
}

/// `appliance.descriptors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescriptorConfig {
    /// Receive ring size (default 1024).
    pub rx: u16,
    /// Transmit ring size (default 1024).
    pub tx: u16,
}

impl Config {
    /// Reads, parses and validates the file at `path`. The file name in errors is
    /// `path` as given.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = Self::read_file(path)?;
        Self::from_bytes(&path.display().to_string(), &bytes)
    }

    /// Reads the file at `path` as [`Config::load`] does, for those who need its bytes
    /// too (the SHA-256 of a running policy is of the bytes loaded): a directory, or a
    /// file over [`MAX_FILE_BYTES`] (by its size before reading, or by what a growing
    /// file yields), is refused without reading more than the limit.
    pub fn read_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
        use std::io::Read as _;
        let file = path.display().to_string();
        let whole = |m: String| ConfigError::new(&file, "", m);
        let too_large = |len: u64| {
            whole(format!(
                "file is {} MiB, larger than the {} MiB limit",
                len.div_ceil(1024 * 1024),
                MAX_FILE_BYTES / (1024 * 1024)
            ))
        };
        let f = std::fs::File::open(path).map_err(|e| whole(format!("cannot read: {e}")))?;
        let meta = f.metadata().map_err(|e| whole(format!("cannot read: {e}")))?;
        if meta.is_dir() {
            return Err(whole("is a directory, not a file".to_string()));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(too_large(meta.len()));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        f.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| whole(format!("cannot read: {e}")))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(too_large(bytes.len() as u64));
        }
        Ok(bytes)
    }

    /// Parses and validates the bytes of a file (UTF-8 YAML); `file` names it in errors.
    pub fn from_bytes(file: &str, bytes: &[u8]) -> Result<Config, ConfigError> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            ConfigError::new(
                file,
                "",
                format!("not a YAML text file: invalid UTF-8 at byte {}", e.valid_up_to()),
            )
        })?;
        Self::from_yaml_str(file, text)
    }

    /// Parses and validates YAML text; `file` names it in errors.
    pub fn from_yaml_str(file: &str, text: &str) -> Result<Config, ConfigError> {
        let whole = |m: String| ConfigError::new(file, "", m);
        if text.trim().is_empty() {
            return Err(whole("file is empty".to_string()));
        }
        if let Some(pos) = text.find('\0') {
            return Err(whole(format!(
                "not a YAML text file: NUL byte at byte {pos}"
            )));
        }
        check_yaml_shape(text).map_err(|e| e.in_file(file))?;
        let raw = parse_raw(text).map_err(|e| e.in_file(file))?;
        if raw.is_empty() {
            return Err(whole(
                "file sets nothing (only comments or an empty mapping); a policy needs at least `segments:`"
                    .to_string(),
            ));
        }
        let (policy, appliance) = validate::validate(raw).map_err(|e| e.in_file(file))?;
        Ok(Config {
            file: file.to_string(),
            appliance,
            policy,
        })
    }
}

/// Deepest nesting of YAML collections a file may have; the `config` crate converts
/// the tree recursively.
const MAX_YAML_DEPTH: usize = 64;

/// Refuses what the `config` crate (0.14) would panic on instead of reporting: a mapping
/// key that is not a string or an integer (`~:`, `true:`, `1.5:`, `[a]:` reach an
/// `unreachable!()` in its YAML conversion), and nesting deep enough to exhaust the
/// stack in its recursive conversion. Syntax errors are left to `parse_raw`, which
/// words them.
fn check_yaml_shape(text: &str) -> Result<(), FieldError> {
    use yaml_rust2::{Yaml, YamlLoader};
    fn walk(v: &Yaml, path: &str, depth: usize) -> Result<(), FieldError> {
        if depth > MAX_YAML_DEPTH {
            // The full path would be as deep as the nesting: name the top-level key.
            let top = path.split(['.', '[']).next().unwrap_or_default();
            return Err(FieldError::new(top, format!("nested deeper than {MAX_YAML_DEPTH} levels")));
        }
        let join = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
        match v {
            Yaml::Hash(map) => {
                for (k, v) in map {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        other => {
                            let what = match other {
                                Yaml::Null => "null (`~` or nothing before the colon)".to_string(),
                                Yaml::Boolean(b) => format!("the boolean {b}"),
                                Yaml::Real(r) => format!("the number {r}"),
                                Yaml::Array(_) => "a list".to_string(),
                                Yaml::Hash(_) => "a mapping".to_string(),
                                _ => "not a plain value".to_string(),
                            };
                            return Err(FieldError::new(path, format!("a mapping key must be a name, found {what}")));
                        }
                    };
                    walk(v, &join(&key), depth + 1)?;
                }
                Ok(())
            }
            Yaml::Array(items) => {
                items.iter().enumerate().try_for_each(|(i, v)| walk(v, &format!("{path}[{i}]"), depth + 1))
            }
            _ => Ok(()),
        }
    }
    match YamlLoader::load_from_str(text) {
        Ok(docs) => docs.iter().try_for_each(|d| walk(d, "", 0)),
        Err(_) => Ok(()),
    }
}

/// YAML text -> raw schema, with the field path of any type error.
fn parse_raw(text: &str) -> Result<schema::RawFile, FieldError> {
    let built = ::config::Config::builder()
        .add_source(::config::File::from_str(text, ::config::FileFormat::Yaml))
        .build()
        .map_err(|e| FieldError::new("", describe_config_error(&e, true)))?;
    serde_path_to_error::deserialize::<_, schema::RawFile>(built).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        FieldError::new(path, describe_config_error(e.inner(), false))
    })
}

/// One readable line for an error of the `config` crate or of serde through it.
fn describe_config_error(e: &::config::ConfigError, building: bool) -> String {
    use ::config::ConfigError as E;
    match e {
        E::FileParse { cause, .. } => {
            let m = strip_origin(&cause.to_string());
            match m
                .strip_prefix("invalid type: ")
                .and_then(|r| r.split_once(", expected"))
            {
                // A YAML document that is a list or a scalar, not a mapping.
                Some((found, _)) => format!(
                    "the file must be a mapping of keys (segments:, rules:, ...), found {}",
                    plain_unexpected(found)
                ),
                None => format!("not valid YAML: {m}"),
            }
        }
        E::Type {
            unexpected,
            expected,
            ..
        } => format!(
            "expected {}, found {}",
            plain_expected(expected),
            plain_unexpected(&unexpected.to_string())
        ),
        E::Message(m) => rewrite_serde_message(m),
        E::NotFound(k) => format!("missing key `{k}`"),
        other if building => format!("not valid YAML: {}", strip_origin(&other.to_string())),
        other => rewrite_serde_message(&other.to_string()),
    }
}

/// Removes the `config` crate's " for key `..`" and " in FILE" suffixes.
fn strip_origin(s: &str) -> String {
    let s = s.split(" for key `").next().unwrap_or(s);
    s.trim_end_matches(" in ").to_string()
}

fn plain_expected(e: &str) -> String {
    match e {
        "a sequence" | "sequence" => "a list".to_string(),
        "a map" | "map" => "a mapping".to_string(),
        other => other.to_string(),
    }
}

fn plain_unexpected(u: &str) -> String {
    match u {
        "sequence" => "a list".to_string(),
        "map" => "a mapping".to_string(),
        "unit value" => "nothing (null)".to_string(),
        other => other.to_string(),
    }
}

/// serde's messages in the user's words.
fn rewrite_serde_message(m: &str) -> String {
    let m = strip_origin(m);
    if let Some(rest) = m.strip_prefix("unknown field ") {
        // "unknown field `x`, expected one of `a`, `b`" / "expected `a`"
        let (key, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let expected = expected.trim_start_matches("one of ").replace('`', "");
        return if expected.is_empty() {
            format!("unknown key {key}")
        } else {
            format!("unknown key {key} (allowed here: {expected})")
        };
    }
    if let Some(rest) = m.strip_prefix("invalid length ") {
        // A list where a mapping belongs: "invalid length 3, expected a rule: ..."
        if let Some((n, expected)) = rest.split_once(", expected ") {
            return format!("expected {expected}, found a list of {n} items");
        }
    }
    if let Some(rest) = m.strip_prefix("missing field ") {
        return format!("missing key {rest}");
    }
    if let Some(rest) = m.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return format!(
                "expected {}, found {}",
                plain_expected(expected),
                plain_unexpected(found)
            );
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_read_well() {
        assert_eq!(
            rewrite_serde_message("unknown field `bogus`, expected one of `name`, `cidrs`"),
            "unknown key `bogus` (allowed here: name, cidrs)"
        );
        assert_eq!(
            rewrite_serde_message("missing field `cidrs`"),
            "missing key `cidrs`"
        );
        assert_eq!(
            rewrite_serde_message("invalid type: sequence, expected a single value"),
            "expected a single value, found a list"
        );
    }

    #[test]
    fn default_memory_is_sized_from_the_mempool() {
        let text = "appliance:\n  ports: [{name: a, device: net_null0}, {name: b, device: net_null1}]\n  pairs: [[a, b]]\n  workers: [1]\nsegments: []\n";
        let c = Config::from_yaml_str("t.yaml", text).unwrap();
        let a = c.appliance.unwrap();
        assert_eq!(a.mempool.mbufs, 8191);
        assert_eq!(a.effective_memory_mb(), 32 + 64);
    }
}
