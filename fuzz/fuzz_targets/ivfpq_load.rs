//! Arbitrary bytes into `IvfPqIndex::from_bytes`: never a panic; every error is
//! `Corruption` with an offset inside the input; a success re-serialises to the
//! same bytes.
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
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
    }
    match IvfPqIndex::from_bytes(&bytes, Path::new("fuzz.ivfpq")) {
        Ok(index) => assert_eq!(
            index.to_bytes(),
            bytes,
            "a loaded index must re-serialise identically"
        ),
        Err(Error::Corruption { offset, .. }) => assert!(offset <= bytes.len() as u64),
        Err(e) => panic!("loading returned a non-corruption error: {e}"),
    }
});
