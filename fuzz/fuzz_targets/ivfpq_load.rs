//! Arbitrary bytes into `IvfPqIndex::from_bytes`: never a panic; every error is
//! `Corruption` with an offset inside the input; a success in the current format
//! version re-serialises to the same bytes (an older version re-serialises to a
//! file that loads to the same index).
//!
//! The CRC would stop almost every input at the trailer check, so when the first
//! byte is odd the rest of the input gets a freshly computed CRC appended: the
//! fuzzer then reaches the structural validation behind it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omen_core::Error;
use omen_ivfpq::IvfPqIndex;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        let crc = omen_core::codec::crc32(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
    }
    let file = Path::new("fuzz.ivfpq");
    match IvfPqIndex::from_bytes(&bytes, file) {
        Ok(index) => {
            let again = index.to_bytes();
            if bytes[8..12] == again[8..12] {
                assert_eq!(again, bytes, "a loaded index must re-serialise identically");
            } else {
                let reloaded =
                    IvfPqIndex::from_bytes(&again, file).expect("re-serialised index loads");
                assert_eq!(
                    reloaded.to_bytes(),
                    again,
                    "an upgraded index must re-serialise identically"
                );
            }
        }
        Err(Error::Corruption { offset, .. }) => assert!(offset <= bytes.len() as u64),
        Err(e) => panic!("loading returned a non-corruption error: {e}"),
    }
});
