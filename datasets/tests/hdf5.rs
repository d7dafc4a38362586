//! ann-benchmarks HDF5 (pure Rust, default build): our own round trip, files
//! written by h5py the way ann-benchmarks writes them (contiguous, chunked with
//! gzip and shuffle, the latest file format), bad files, and a corruption sweep.
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

/// Reading `p` is `Corruption` whose detail contains `needle`.
fn expect_corruption(p: &Path, needle: &str) {
    match read_hdf5(p) {
        Err(Error::Corruption { detail, .. }) => assert!(detail.contains(needle), "{detail}"),
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
    use hdf5_writer::{AttributeBuilder, DatasetBuilder, Hdf5Builder, WriteOptions};
    let write = |p: &Path, b: Hdf5Builder| {
        let bytes = b
            .into_plan()
            .unwrap()
            .encode(WriteOptions::default())
            .unwrap();
        std::fs::write(p, bytes).unwrap();
    };
    let train = || DatasetBuilder::typed_data("train", vec![2, 3], &[0.5f32; 6]).unwrap();
    let p = dir.path().join("bare.hdf5");
    write(&p, Hdf5Builder::new().dataset(train()));
    expect_corruption(&p, "distance");
    let distance = || AttributeBuilder::vlen_strings("distance", &["euclidean"]).unwrap();
    write(
        &p,
        Hdf5Builder::new().dataset(train()).attribute(distance()),
    );
    expect_corruption(&p, "\"test\"");
    // Integer vectors, a 1-D dataset, an unknown metric, ids past the base.
    let test = || DatasetBuilder::typed_data("test", vec![1, 3], &[1.0f32; 3]).unwrap();
    write(
        &p,
        Hdf5Builder::new()
            .dataset(DatasetBuilder::typed_data("train", vec![2, 3], &[1i32; 6]).unwrap())
            .dataset(test())
            .attribute(distance()),
    );
    expect_corruption(&p, "not float32");
    write(
        &p,
        Hdf5Builder::new()
            .dataset(DatasetBuilder::typed_data("train", vec![6], &[1f32; 6]).unwrap())
            .dataset(test())
            .attribute(distance()),
    );
    expect_corruption(&p, "shape");
    write(
        &p,
        Hdf5Builder::new()
            .dataset(train())
            .dataset(test())
            .attribute(AttributeBuilder::vlen_strings("distance", &["hamming"]).unwrap()),
    );
    expect_corruption(&p, "hamming");
    write(
        &p,
        Hdf5Builder::new()
            .dataset(train())
            .dataset(test())
            .dataset(DatasetBuilder::typed_data("neighbors", vec![1, 2], &[0i64, 7]).unwrap())
            .attribute(distance()),
    );
    expect_corruption(&p, "neighbors");
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The files `datasets/scripts/make_hdf5_fixtures.py` writes with h5py: each
/// layout reads to the same vectors (the same seed), and the file's exact
/// neighbours (numpy, float64) are our flat index's.
#[test]
fn reads_every_layout_h5py_writes() {
    let contiguous = read_hdf5(fixture("contiguous.hdf5")).unwrap();
    assert_eq!(contiguous.metric, Metric::L2);
    assert_eq!(
        (
            contiguous.base.rows(),
            contiguous.base.dim(),
            contiguous.queries.rows()
        ),
        (200, 8, 20)
    );
    for name in ["chunked-gzip.hdf5", "latest.hdf5", "no-neighbors.hdf5"] {
        let ds = read_hdf5(fixture(name)).unwrap();
        assert_eq!(ds.base, contiguous.base, "{name}");
        assert_eq!(ds.queries, contiguous.queries, "{name}");
        assert_eq!(ds.ground_truth.is_none(), name == "no-neighbors.hdf5");
    }
    for (name, metric) in [
        ("contiguous.hdf5", Metric::L2),
        ("chunked-gzip.hdf5", Metric::L2),
        ("latest.hdf5", Metric::Cosine),
    ] {
        let ds = read_hdf5(fixture(name)).unwrap();
        assert_eq!(ds.metric, metric, "{name}");
        let gt = ds.ground_truth.as_ref().unwrap();
        let ours = compute_ground_truth(&ds.base, &ds.queries, metric, 10).unwrap();
        assert_eq!(gt.ids(), ours.ids(), "{name}");
    }
}

/// Every byte of each h5py file, changed: the reader returns an error or a
/// dataset of finite vectors, never a panic (the fuzz target's property, swept
/// exhaustively over one change per byte).
#[test]
fn corruption_sweep_over_h5py_files() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.hdf5");
    let mut errors = 0usize;
    let mut tries = 0usize;
    for name in ["contiguous.hdf5", "chunked-gzip.hdf5", "latest.hdf5"] {
        let valid = std::fs::read(fixture(name)).unwrap();
        for at in (0..valid.len()).step_by(7) {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = valid.clone();
                b[at] ^= flip;
                std::fs::write(&bad, &b).unwrap();
                tries += 1;
                match read_hdf5(&bad) {
                    Ok(ds) => {
                        assert!(ds.base.data().iter().all(|x| x.is_finite()));
                        assert!(ds.queries.data().iter().all(|x| x.is_finite()));
                    }
                    Err(Error::Corruption { file, .. }) => {
                        assert_eq!(file, bad);
                        errors += 1;
                    }
                    Err(e) => panic!("{name} byte {at} ^ {flip:#x}: {e:?}"),
                }
            }
        }
    }
    // Most of a small file is metadata and values; a sweep that found no damage
    // would mean the reader ignores its input.
    assert!(errors * 10 > tries, "{errors} errors in {tries} changes");
}

/// A file that declares more data than it can hold (a forged shape) is refused
/// before anything is allocated for it.
#[test]
fn forged_sizes_are_refused_before_allocation() {
    let ds = small(Metric::L2);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("forged.hdf5");
    write_hdf5(&p, &ds).unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    // The dataspace of `train` holds its dimensions as little-endian u64s
    // (300, 12): make the row count 2^40.
    let needle: Vec<u8> = [300u64, 12].iter().flat_map(|x| x.to_le_bytes()).collect();
    let at = bytes
        .windows(16)
        .position(|w| w == needle.as_slice())
        .expect("train's dataspace");
    bytes[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    match read_hdf5(&p) {
        Err(Error::Corruption { detail, .. }) => {
            assert!(detail.contains("train"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
}

/// The `distance` attribute with bytes that are not UTF-8 (what the libhdf5
/// reader once turned into an invalid `&str`): an error naming the attribute.
#[test]
fn a_distance_attribute_that_is_not_utf8_is_an_error() {
    let mut bytes = std::fs::read(fixture("contiguous.hdf5")).unwrap();
    let at = bytes
        .windows(9)
        .position(|w| w == b"euclidean")
        .expect("the attribute's text");
    bytes[at] = 0xff;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad-utf8.hdf5");
    std::fs::write(&p, &bytes).unwrap();
    match read_hdf5(&p) {
        Err(Error::Corruption { detail, .. }) => assert!(detail.contains("distance"), "{detail}"),
        other => panic!("{other:?}"),
    }
}
