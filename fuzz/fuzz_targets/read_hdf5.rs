//! Bytes into the ann-benchmarks HDF5 reader (`omen_datasets::hdf5::read_hdf5`, which
//! wraps libhdf5 through hdf5-metno): never a panic; a success holds only finite
//! values with consistent shapes; errors are `Corruption` or `Io`.
//!
//! Random bytes rarely pass HDF5's signature, so with the first byte's low bit
//! set the input is a patch over a small valid file written by `write_hdf5`
//! (offset, then bytes to overwrite, optionally a new length): the fuzzer then
//! explores damaged real files, which is what a user's corrupted download looks
//! like. A crash inside libhdf5 itself is a finding about reading untrusted HDF5.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omen_core::{Error, Metric};
use omen_datasets::{Dataset, Vectors};
use std::path::PathBuf;
use std::sync::OnceLock;

struct Fixture {
    dir: tempfile::TempDir,
    valid: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let base = Vectors::new(3, (0..30).map(|i| i as f32 * 0.5).collect()).unwrap();
        let queries = Vectors::new(3, vec![1.0, 2.0, 3.0, 0.5, 0.25, 0.125]).unwrap();
        let ds = Dataset::new("fuzz", Metric::L2, base, queries, None).unwrap();
        let path = dir.path().join("valid.hdf5");
        omen_datasets::hdf5::write_hdf5(&path, &ds).unwrap();
        let valid = std::fs::read(&path).unwrap();
        Fixture { dir, valid }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 1 && rest.len() >= 4 {
        let mut b = f.valid.clone();
        let off = u16::from_le_bytes([rest[0], rest[1]]) as usize % b.len();
        let newlen = rest[2];
        for (i, &x) in rest[4..].iter().enumerate() {
            if off + i < b.len() {
                b[off + i] = x;
            }
        }
        if mode & 2 == 2 {
            let cut = (newlen as usize * b.len()) / 256;
            b.truncate(cut.max(1));
        }
        b
    } else {
        rest.to_vec()
    };
    let path: PathBuf = f.dir.path().join("input.hdf5");
    std::fs::write(&path, &bytes).unwrap();
    match omen_datasets::hdf5::read_hdf5(&path) {
        Ok(ds) => {
            assert_eq!(ds.base.dim(), ds.queries.dim());
            assert!(ds.base.data().iter().all(|x| x.is_finite()));
            assert!(ds.queries.data().iter().all(|x| x.is_finite()));
        }
        Err(Error::Corruption { .. } | Error::Io { .. }) => {}
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
});
