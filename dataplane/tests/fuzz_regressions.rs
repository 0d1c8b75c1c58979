//! Ring 1: replays the inputs under `tests/regressions/packet/` through the `packet`
//! fuzz target's harness (`fuzz/harness/packet.rs`, compiled here as a module), so a
//! crash that fuzzing found stays fixed. Add a crashing input by copying the artifact
//! from `fuzz/artifacts/packet/` into that folder under a name that says what it was.

#[path = "../../fuzz/harness/packet.rs"]
mod harness;

use std::path::Path;

#[test]
fn packet_fuzz_regressions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions/packet");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !matches!(p.extension(), Some(x) if x == "md"))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no regression input in {}", dir.display());
    for input in &inputs {
        let data = std::fs::read(input).unwrap();
        eprintln!("{}", input.display());
        harness::run(&data);
    }
}
