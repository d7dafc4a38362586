//! Arbitrary bytes into the `.ibin` and big-ann ground-truth readers: never a
//! panic; errors are `Corruption` with an offset inside the input; a ground truth
//! with distances re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omen_core::Error;

fuzz_target!(|data: &[u8]| {
    match omen_datasets::parse_ibin(data, "fuzz.ibin") {
        Ok(v) => assert_eq!(omen_datasets::encode_ibin(&v).unwrap(), data),
        Err(Error::Corruption { offset, .. }) => assert!(offset <= data.len() as u64),
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
    match omen_datasets::parse_groundtruth_bin(data, "fuzz-gt.ibin") {
        Ok(t) => {
            assert_eq!(t.ids.len(), t.queries() * t.k);
            if let Some(d) = t.distances {
                let gt = omen_datasets::GroundTruth::new(t.k, t.ids, d).unwrap();
                assert_eq!(omen_datasets::encode_groundtruth_bin(&gt).unwrap(), data);
            }
        }
        Err(Error::Corruption { offset, .. }) => assert!(offset <= data.len() as u64),
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
});
