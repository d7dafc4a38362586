//! Arbitrary bytes into the `.npy` reader: never a panic; errors are `Corruption`
//! with an offset inside the input; a success holds only finite values, and
//! re-encoding it and reading that back gives the same matrix.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omen_core::Error;
use omen_datasets::NpyVersion;

fuzz_target!(|data: &[u8]| {
    match omen_datasets::parse_npy(data, "fuzz.npy") {
        Ok(v) => {
            assert_eq!(v.data().len(), v.rows() * v.dim());
            assert!(v.data().iter().all(|x| x.is_finite()));
            for version in [NpyVersion::V1, NpyVersion::V3] {
                let bytes = omen_datasets::encode_npy(&v, version).unwrap();
                assert_eq!(omen_datasets::parse_npy(&bytes, "again.npy").unwrap(), v);
            }
        }
        Err(Error::Corruption { offset, .. }) => assert!(offset <= data.len() as u64),
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
});
