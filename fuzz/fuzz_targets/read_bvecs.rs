//! Arbitrary bytes into the `.bvecs` reader: never a panic; errors are
//! `Corruption` with an offset inside the input; a success re-encodes to the same
//! bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omen_core::Error;

fuzz_target!(|data: &[u8]| {
    match omen_datasets::parse_bvecs(data, "fuzz.bvecs") {
        Ok(v) => {
            assert_eq!(v.data().len(), v.rows() * v.dim());
            assert_eq!(omen_datasets::encode_bvecs(&v).unwrap(), data);
        }
        Err(Error::Corruption { offset, .. }) => assert!(offset <= data.len() as u64),
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
});
