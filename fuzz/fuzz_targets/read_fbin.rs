//! Arbitrary bytes into the `.fbin` and `.u8bin` readers: never a panic (and no
//! allocation driven by a forged header: libFuzzer's -rss_limit_mb catches one);
//! errors are `Corruption` with an offset inside the input; a success re-encodes
//! to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omen_core::Error;

fuzz_target!(|data: &[u8]| {
    match omen_datasets::parse_fbin(data, "fuzz.fbin") {
        Ok(v) => {
            assert_eq!(v.data().len(), v.rows() * v.dim());
            assert!(v.data().iter().all(|x| x.is_finite()));
            assert_eq!(omen_datasets::encode_fbin(&v).unwrap(), data);
        }
        Err(Error::Corruption { offset, .. }) => assert!(offset <= data.len() as u64),
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
    match omen_datasets::parse_u8bin(data, "fuzz.u8bin") {
        Ok(v) => assert_eq!(omen_datasets::encode_u8bin(&v).unwrap(), data),
        Err(Error::Corruption { offset, .. }) => assert!(offset <= data.len() as u64),
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
});
