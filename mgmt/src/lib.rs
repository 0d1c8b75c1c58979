//! The control plane of bulkhead as a library: configuration loading and validation
//! ([`config`]), policy checks ([`lint`]) and packet explanations ([`explain`]).
//! The `bulkhead` binary wires its subcommands to [`lint::check_command`] and
//! [`explain::explain_command`]. Counters go out as Prometheus metrics ([`export`]),
//! decisions as security events ([`events`]), and the running appliance answers on a
//! control socket ([`control`]).
#![deny(unsafe_code)]

pub mod config;
pub mod control;
pub mod events;
pub mod export;
pub mod explain;
pub mod learn;
pub mod lint;
pub mod preflight;
pub mod run;
pub mod stats;
