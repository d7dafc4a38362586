//! Bytes into the runbook parser (`omen_bench::runbook`, big-ann-benchmarks'
//! streaming YAML): never a panic, never an allocation the input's size does not
//! justify (YAML aliases, which the loader would expand by copying, and deep
//! nesting are refused before loading); a runbook that parses is replayed over a
//! dataset of 1,000 rows, which either refuses it naming a step or accounts for
//! every tag consistently.
//!
//! With the first byte's low bit set, the rest is spliced into a valid runbook
//! (after its first line), so the fuzzer spends its time on steps rather than on
//! YAML syntax.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omen_bench::runbook::{parse, LiveSet};
use std::path::Path;

const VALID: &str = "glove-50:\n  max_pts: 600\n  1: {operation: insert, start: 0, end: 500}\n  2: {operation: search}\n  3: {operation: delete, start: 0, end: 100}\n  4: {operation: replace, tags_start: 100, tags_end: 200, ids_start: 600, ids_end: 700}\n  5: {operation: search}\n";

fuzz_target!(|data: &[u8]| {
    let text = match data.split_first() {
        Some((flag, rest)) if flag & 1 == 1 => {
            let (head, tail) = VALID.split_at(VALID.find('\n').map_or(0, |i| i + 1));
            format!("{head}{}{tail}", String::from_utf8_lossy(rest))
        }
        _ => String::from_utf8_lossy(data).into_owned(),
    };
    let Ok(rb) = parse(&text, Path::new("fuzz.yaml"), "glove-50") else {
        return;
    };
    let n = 1000;
    let Ok(replay) = rb.check(n) else {
        return;
    };
    // A checked runbook replays without going out of bounds, and its counts
    // agree with the live set's.
    let mut live = LiveSet::new(n);
    let mut most = 0;
    for s in &rb.steps {
        live.apply(&s.op);
        most = most.max(live.len());
    }
    assert_eq!(live.len(), replay.final_live);
    assert_eq!(live.live().len(), replay.final_live);
    assert_eq!(most, replay.max_live);
    assert!(replay.searches >= 1);
    if let Some(m) = rb.max_pts {
        assert!(most <= m);
    }
});
