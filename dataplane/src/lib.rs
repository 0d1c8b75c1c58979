//! bulkhead's packet engine.
//!
//! The layers, bottom up (see `docs/architecture.md`):
//! - [`dpdk`]: the one module that holds `unsafe`; safe owners of EAL, mempools, mbufs,
//!   ports and lcores.
//! - [`packet`]: zero-copy parsing of a frame into a small [`packet::PacketMeta`].
//! - [`policy`]: the compiled, immutable segmentation [`policy::Policy`] and its classifier.
//! - [`conntrack`]: the per-worker connection-tracking table (flows, TCP state,
//!   timeouts, fragments).
//! - [`counters`]: per-worker counters; every drop reason is declared once there.
//! - [`worker`]: the run-to-completion poll loop that ties them together.
//!
//! Nothing here knows about YAML, files or HTTP: that is the `mgmt` crate's job.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod conntrack;
pub mod counters;
pub mod dpdk;
pub mod packet;
pub mod policy;
pub mod worker;
