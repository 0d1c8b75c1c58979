//! Fuzz target: arbitrary bytes as a sequence of frames through the parser, the
//! classifier (checked against the reference evaluator) and connection tracking, the
//! way the worker judges them. See `harness/packet.rs` for the input format.
#![no_main]

#[path = "../harness/packet.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
