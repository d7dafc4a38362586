//! Arbitrary bytes into the collection-snapshot parser: never a panic; errors are
//! `Corruption` with an offset inside the input; a success holds only valid ids and
//! finite vectors of the header's dimension.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omen_core::Error;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    match omen::snapshot::parse_snapshot(data, Path::new("fuzz.omen")) {
        Ok((h, records)) => {
            assert_eq!(records.len() as u64, h.count);
            for (id, v) in &records {
                assert!(!id.is_empty() && id.len() <= omen::MAX_ID_LEN);
                assert_eq!(v.len(), h.dim);
                assert!(v.iter().all(|x| x.is_finite()));
            }
        }
        Err(Error::Corruption { offset, .. }) => assert!(offset <= data.len() as u64),
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
});
