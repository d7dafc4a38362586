//! Bytes into the ann-benchmarks HDF5 reader (`omen_datasets::hdf5::read_hdf5`,
//! pure Rust over `hdf5-reader`): never a panic, never an allocation the input's
//! size does not justify (libFuzzer's `-rss_limit_mb` and `-malloc_limit_mb` catch
//! one); a success holds only finite values with consistent shapes; errors are
//! `Corruption` or `Io`.
//!
//! Random bytes rarely pass HDF5's signature, so with the first byte's low bit set
//! the input is a patch over one of four valid files (bits 2-3 pick it): three
//! written by h5py the way ann-benchmarks writes them (contiguous; chunked with
//! gzip and shuffle; the latest file format; `datasets/tests/fixtures`) and one by
//! `write_hdf5`. The patch is an offset, then bytes to overwrite, optionally a new
//! length: the fuzzer explores damaged real files, which is what a user's corrupted
//! download looks like.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omen_core::{Error, Metric};
use omen_datasets::{Dataset, Vectors};
use std::path::PathBuf;
use std::sync::OnceLock;

struct Fixture {
    dir: tempfile::TempDir,
    valid: [Vec<u8>; 4],
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let base = Vectors::new(3, (0..30).map(|i| i as f32 * 0.5).collect()).unwrap();
        let queries = Vectors::new(3, vec![1.0, 2.0, 3.0, 0.5, 0.25, 0.125]).unwrap();
        let ds = Dataset::new("fuzz", Metric::L2, base, queries, None)
            .unwrap()
            .with_ground_truth(3)
            .unwrap();
        let path = dir.path().join("valid.hdf5");
        omen_datasets::hdf5::write_hdf5(&path, &ds).unwrap();
        let ours = std::fs::read(&path).unwrap();
        Fixture {
            dir,
            valid: [
                include_bytes!("../../datasets/tests/fixtures/contiguous.hdf5").to_vec(),
                include_bytes!("../../datasets/tests/fixtures/chunked-gzip.hdf5").to_vec(),
                include_bytes!("../../datasets/tests/fixtures/latest.hdf5").to_vec(),
                ours,
            ],
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 1 && rest.len() >= 4 {
        let mut b = f.valid[usize::from((mode >> 2) & 3)].clone();
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
