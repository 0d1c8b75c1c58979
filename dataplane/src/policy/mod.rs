//! The segmentation policy: a validated specification ([`spec`]) compiled into an
//! immutable [`Policy`] that classifies packets.
//!
//! TODO(policy helper): LPM tables, rule index, `Policy::compile`, `Policy::classify`.

pub mod spec;
