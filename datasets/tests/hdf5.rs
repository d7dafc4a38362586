//! ann-benchmarks HDF5 (feature `hdf5`): our own round trip, a file written by
//! h5py the way ann-benchmarks writes it, and bad files.
#![cfg(feature = "hdf5")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omen_core::{Error, Metric};
use omen_datasets::hdf5::{read_hdf5, write_hdf5};
use omen_datasets::*;
use std::path::Path;

fn small(metric: Metric) -> Dataset {
    let base = generate(
        300,
        12,
        &Distribution::GaussianMixture {
            clusters: 5,
            spread: 0.3,
        },
        1,
        false,
    )
    .unwrap();
    let queries = generate(
        15,
        12,
        &Distribution::Gaussian {
            mean: 0.0,
            std_dev: 1.0,
        },
        2,
        false,
    )
    .unwrap();
    Dataset::new("small", metric, base, queries, None)
        .unwrap()
        .with_ground_truth(10)
        .unwrap()
}

#[test]
fn round_trip_keeps_vectors_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    for metric in [Metric::L2, Metric::Cosine, Metric::InnerProduct] {
        let ds = small(metric);
        let p = dir.path().join(format!("small-{metric}.hdf5"));
        write_hdf5(&p, &ds).unwrap();
        let back = read_hdf5(&p).unwrap();
        assert_eq!(back.metric, metric);
        assert_eq!(back.name, format!("small-{metric}"));
        let bits = |v: &Vectors| v.data().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.base), bits(&ds.base));
        assert_eq!(bits(&back.queries), bits(&ds.queries));
        assert_eq!((back.base.dim(), back.queries.rows()), (12, 15));
        let (g, h) = (
            ds.ground_truth.as_ref().unwrap(),
            back.ground_truth.as_ref().unwrap(),
        );
        assert_eq!(g.ids(), h.ids());
        // Distances are recomputed on read; they agree with the flat index's.
        for (a, b) in g.distances().iter().zip(h.distances()) {
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                "{metric}: {a} vs {b}"
            );
        }
        // Dataset::open dispatches on the extension.
        assert_eq!(Dataset::open(&p).unwrap().base, ds.base);
    }
}

#[test]
fn reads_an_ann_benchmarks_file_written_by_h5py() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/h5py-tiny-angular.hdf5");
    let ds = read_hdf5(&p).unwrap();
    assert_eq!(ds.metric, Metric::Cosine);
    assert_eq!(
        (ds.base.rows(), ds.base.dim(), ds.queries.rows()),
        (200, 8, 10)
    );
    let file_gt = ds.ground_truth.as_ref().unwrap();
    assert_eq!(file_gt.k(), 10);
    // numpy's exact neighbours (float64) are our flat index's: the vectors were
    // decoded correctly and the metrics agree.
    let ours = compute_ground_truth(&ds.base, &ds.queries, Metric::Cosine, 10).unwrap();
    assert_eq!(file_gt.ids(), ours.ids());
    for (a, b) in file_gt.distances().iter().zip(ours.distances()) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn bad_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let not_h5 = dir.path().join("x.hdf5");
    std::fs::write(&not_h5, b"this is not HDF5").unwrap();
    assert!(matches!(read_hdf5(&not_h5), Err(Error::Corruption { file, .. }) if file == not_h5));
    assert!(matches!(
        read_hdf5(dir.path().join("missing.hdf5")),
        Err(Error::Io { path: Some(_), .. })
    ));

    // A NaN in "train": Corruption at the value's byte offset in the file.
    let ds = small(Metric::L2);
    let p = dir.path().join("nan.hdf5");
    write_hdf5(&p, &ds).unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    let needle: Vec<u8> = ds.base.row(3).unwrap()[..2]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let at = bytes
        .windows(8)
        .position(|w| w == needle.as_slice())
        .unwrap();
    bytes[at + 4..at + 8].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    match read_hdf5(&p) {
        Err(Error::Corruption { offset, detail, .. }) => {
            assert_eq!(offset, (at + 4) as u64, "{detail}");
            assert!(detail.contains("row 3, component 1"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_parts_are_named() {
    let dir = tempfile::tempdir().unwrap();
    // No ground truth: loads without it.
    let mut ds = small(Metric::L2);
    ds.ground_truth = None;
    let p = dir.path().join("nogt.hdf5");
    write_hdf5(&p, &ds).unwrap();
    assert!(read_hdf5(&p).unwrap().ground_truth.is_none());

    // No `distance` attribute, no `test` dataset.
    let p = dir.path().join("bare.hdf5");
    {
        let f = hdf5_metno::File::create(&p).unwrap();
        f.new_dataset::<f32>()
            .shape((2, 3))
            .create("train")
            .and_then(|d| d.write_raw(&[0.0f32; 6]))
            .unwrap();
    }
    match read_hdf5(&p) {
        Err(Error::Corruption { detail, .. }) => assert!(detail.contains("distance"), "{detail}"),
        other => panic!("{other:?}"),
    }
    {
        let f = hdf5_metno::File::append(&p).unwrap();
        let v: hdf5_metno::types::VarLenUnicode = "euclidean".parse().unwrap();
        f.new_attr::<hdf5_metno::types::VarLenUnicode>()
            .create("distance")
            .and_then(|a| a.write_scalar(&v))
            .unwrap();
    }
    match read_hdf5(&p) {
        Err(Error::Corruption { detail, .. }) => assert!(detail.contains("\"test\""), "{detail}"),
        other => panic!("{other:?}"),
    }
}

/// Regressions from the `read_hdf5` fuzz target: damaged copies of a small valid
/// file (the target's patch encoding: offset, then bytes written over the file).
/// One of them made the `distance` attribute invalid UTF-8, which hdf5-metno's
/// `as_str` turns into an invalid `&str` (undefined behaviour; it panicked in
/// `Debug` formatting); the reader now checks the bytes. Each must be an error.
#[test]
fn fuzz_found_damaged_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let base = Vectors::new(3, (0..30).map(|i| i as f32 * 0.5).collect()).unwrap();
    let queries = Vectors::new(3, vec![1.0, 2.0, 3.0, 0.5, 0.25, 0.125]).unwrap();
    let ds = Dataset::new("fuzz", Metric::L2, base, queries, None).unwrap();
    let path = dir.path().join("valid.hdf5");
    write_hdf5(&path, &ds).unwrap();
    let valid = std::fs::read(&path).unwrap();
    let inputs: [&[u8]; 2] = [
        &[
            0x3d, 0x83, 0x00, 0x83, 0x00, 0x00, 0x00, 0x00, 0xee, 0xf7, 0xf9, 0x09,
        ],
        &[
            0x3d, 0x83, 0x83, 0x83, 0x83, 0x83, 0x3d, 0xf6, 0xf6, 0x44, 0x00, 0x00, 0x44, 0x00,
            0x00, 0x0a,
        ],
    ];
    let mut utf8 = 0;
    for input in inputs {
        let rest = &input[1..];
        let mut b = valid.clone();
        let off = u16::from_le_bytes([rest[0], rest[1]]) as usize % b.len();
        for (i, &x) in rest[4..].iter().enumerate() {
            if off + i < b.len() {
                b[off + i] = x;
            }
        }
        let bad = dir.path().join("bad.hdf5");
        std::fs::write(&bad, &b).unwrap();
        match read_hdf5(&bad) {
            Err(Error::Corruption { detail, .. }) => {
                utf8 += usize::from(detail.contains("UTF-8"));
            }
            Err(Error::Io { .. }) => {}
            other => panic!("damaged file read as {other:?}"),
        }
    }
    assert!(
        utf8 >= 1,
        "no input reached the UTF-8 check: the fixture's layout changed"
    );
}
