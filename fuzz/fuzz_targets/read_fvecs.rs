//! Arbitrary bytes into the `.fvecs` reader: never a panic; an error is always
//! `Corruption` naming the file with an offset inside it; a success holds only
//! finite values and re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omen_core::Error;

fuzz_target!(|data: &[u8]| {
    match omen_datasets::parse_fvecs(data, "fuzz.fvecs") {
        Ok(v) => {
            assert_eq!(v.data().len(), v.rows() * v.dim());
            assert!(v.data().iter().all(|x| x.is_finite()));
            assert_eq!(omen_datasets::encode_fvecs(&v).unwrap(), data);
        }
        Err(Error::Corruption { offset, .. }) => assert!(offset <= data.len() as u64),
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
});
