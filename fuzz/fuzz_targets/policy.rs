//! Fuzz target: arbitrary text through the policy loader (YAML -> validated config ->
//! compiled policy), then a few packets through the compiled policy, checked against the
//! reference evaluator. See `harness/policy.rs`.
#![no_main]

#[path = "../harness/policy.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
