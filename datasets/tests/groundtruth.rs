//! Exact ground truth against a scalar reference, the cache and its invalidation,
//! and dataset directories.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omen_core::simd::Kernels;
use omen_core::{Error, Metric};
use omen_datasets::*;

fn data(rows: usize, dim: usize, seed: u64) -> Vectors {
    generate(
        rows,
        dim,
        &Distribution::Gaussian {
            mean: 0.0,
            std_dev: 1.0,
        },
        seed,
        false,
    )
    .unwrap()
}

/// Brute force with the scalar kernels, sorted by (distance, id).
fn reference(base: &Vectors, queries: &Vectors, metric: Metric, k: usize) -> Vec<Vec<(u32, f32)>> {
    let kern = Kernels::scalar();
    queries
        .iter_rows()
        .map(|q| {
            let mut all: Vec<(u32, f32)> = base
                .iter_rows()
                .enumerate()
                .map(|(i, b)| (i as u32, metric.distance(&kern, q, b)))
                .collect();
            all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            all.truncate(k);
            all
        })
        .collect()
}

#[test]
fn flat_ground_truth_matches_brute_force() {
    let base = data(3000, 24, 1);
    let queries = generate(
        40,
        24,
        &Distribution::Gaussian {
            mean: 0.0,
            std_dev: 1.0,
        },
        2,
        false,
    )
    .unwrap();
    for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
        let gt = compute_ground_truth(&base, &queries, metric, 25).unwrap();
        assert_eq!((gt.k(), gt.queries()), (25, 40));
        let want = reference(&base, &queries, metric, 25);
        for (q, w) in want.iter().enumerate() {
            let ids = gt.query_ids(q).unwrap();
            let ds = gt.query_distances(q).unwrap();
            for (j, &(id, d)) in w.iter().enumerate() {
                let tol = 1e-4 * d.abs().max(1.0);
                assert!(
                    (ds[j] - d).abs() <= tol,
                    "{metric} q{q} rank {j}: {} vs {d}",
                    ds[j]
                );
                // Ids agree except where two distances are within rounding.
                if ids[j] != id {
                    let other = w.iter().find(|e| e.0 == ids[j]).map(|e| e.1);
                    assert!(
                        other.is_some_and(|o| (o - d).abs() <= tol),
                        "{metric} q{q} rank {j}: id {} vs {id}",
                        ids[j]
                    );
                }
            }
        }
    }
}

#[test]
fn ground_truth_refuses_bad_input() {
    let base = data(10, 4, 1);
    let q = data(2, 4, 2);
    assert!(matches!(
        compute_ground_truth(&base, &q, Metric::L2, 0),
        Err(Error::InvalidParameter { name: "k", .. })
    ));
    assert!(matches!(
        compute_ground_truth(&base, &q, Metric::L2, 11),
        Err(Error::InvalidParameter { name: "k", .. })
    ));
    assert!(matches!(
        compute_ground_truth(&base, &data(2, 5, 2), Metric::L2, 3),
        Err(Error::DimensionMismatch {
            expected: 4,
            got: 5
        })
    ));
    let nan = Matrix::new(4, vec![0.0, f32::NAN, 0.0, 0.0]).unwrap();
    assert!(matches!(
        compute_ground_truth(&base, &nan, Metric::L2, 3),
        Err(Error::NonFinite {
            row: 0,
            component: 1,
            ..
        })
    ));
}

#[test]
fn cache_hits_and_is_invalidated_by_any_change() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = data(2000, 16, 1);
    let queries = data(30, 16, 2);

    let (gt, s) = cached_ground_truth(d, &base, &queries, Metric::L2, 20).unwrap();
    assert_eq!(s, CacheStatus::Missing);
    assert!(d.join(GROUNDTRUTH_FILE).exists() && d.join(GROUNDTRUTH_META).exists());
    let (again, s) = cached_ground_truth(d, &base, &queries, Metric::L2, 20).unwrap();
    assert_eq!((s, &again), (CacheStatus::Hit, &gt));
    // A shallower request is served from the deeper cache.
    let (shallow, s) = cached_ground_truth(d, &base, &queries, Metric::L2, 5).unwrap();
    assert_eq!((s, shallow), (CacheStatus::Hit, gt.truncate(5).unwrap()));

    // One query changed: stale, recomputed, and the new result is the fresh one.
    let mut q2 = queries.data().to_vec();
    q2[17] += 0.5;
    let q2 = Matrix::new(16, q2).unwrap();
    let (gt2, s) = cached_ground_truth(d, &base, &q2, Metric::L2, 20).unwrap();
    assert_eq!(s, CacheStatus::Stale);
    assert_eq!(
        gt2,
        compute_ground_truth(&base, &q2, Metric::L2, 20).unwrap()
    );
    assert_eq!(
        cached_ground_truth(d, &base, &q2, Metric::L2, 20)
            .unwrap()
            .1,
        CacheStatus::Hit
    );

    // A changed base, another metric, a deeper k: each stale.
    let mut b2 = base.data().to_vec();
    b2[0] = -b2[0];
    let b2 = Matrix::new(16, b2).unwrap();
    assert_eq!(
        cached_ground_truth(d, &b2, &q2, Metric::L2, 20).unwrap().1,
        CacheStatus::Stale
    );
    assert_eq!(
        cached_ground_truth(d, &b2, &q2, Metric::Cosine, 20)
            .unwrap()
            .1,
        CacheStatus::Stale
    );
    assert_eq!(
        cached_ground_truth(d, &b2, &q2, Metric::Cosine, 21)
            .unwrap()
            .1,
        CacheStatus::Stale
    );
    assert_eq!(
        cached_ground_truth(d, &b2, &q2, Metric::Cosine, 21)
            .unwrap()
            .1,
        CacheStatus::Hit
    );

    // A damaged ground-truth file (one id byte flipped) does not match its checksum.
    let p = d.join(GROUNDTRUTH_FILE);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[8] ^= 1;
    std::fs::write(&p, &bytes).unwrap();
    let (fixed, s) = cached_ground_truth(d, &b2, &q2, Metric::Cosine, 21).unwrap();
    assert_eq!(s, CacheStatus::Stale);
    assert_eq!(
        fixed,
        compute_ground_truth(&b2, &q2, Metric::Cosine, 21).unwrap()
    );

    // Garbage metadata: treated as stale, not an error.
    std::fs::write(d.join(GROUNDTRUTH_META), b"{not json").unwrap();
    assert_eq!(
        cached_ground_truth(d, &b2, &q2, Metric::Cosine, 21)
            .unwrap()
            .1,
        CacheStatus::Stale
    );
    // No metadata: missing.
    std::fs::remove_file(d.join(GROUNDTRUTH_META)).unwrap();
    assert_eq!(
        cached_ground_truth(d, &b2, &q2, Metric::Cosine, 21)
            .unwrap()
            .1,
        CacheStatus::Missing
    );
}

#[test]
fn dataset_directory_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("tiny");
    let ds = Dataset::new(
        "tiny",
        Metric::InnerProduct,
        data(500, 8, 1),
        data(20, 8, 2),
        None,
    )
    .unwrap()
    .with_ground_truth(10)
    .unwrap();
    ds.save(&d, Some("test")).unwrap();
    let back = Dataset::open(&d).unwrap();
    assert_eq!(back, ds);
    assert_eq!(back.checksum(), ds.checksum());
    // load_named by path finds it with its cached ground truth.
    let named = load_named(d.to_str().unwrap(), dir.path(), 10).unwrap();
    assert_eq!(named.ground_truth, ds.ground_truth);
    // By name under the data directory.
    let named = load_named("tiny", dir.path(), 5).unwrap();
    assert_eq!(named.ground_truth.unwrap().k(), 10);

    // Replace the queries behind the cache's back: the stale ground truth is dropped
    // on open, and recomputed by load_named.
    write_fbin(d.join("queries.fbin"), &data(20, 8, 3)).unwrap();
    let back = Dataset::open(&d).unwrap();
    assert!(back.ground_truth.is_none());
    let named = load_named("tiny", dir.path(), 10).unwrap();
    assert_eq!(
        named.ground_truth.unwrap(),
        compute_ground_truth(&named.base, &named.queries, Metric::InnerProduct, 10).unwrap()
    );

    assert!(matches!(
        load_named("glove-50-nowhere", dir.path(), 10),
        Err(Error::Io { .. })
    ));
}

#[test]
fn checksums_see_every_value_and_the_shape() {
    let a = data(100, 8, 1);
    let mut v = a.data().to_vec();
    v[799] = f32::from_bits(v[799].to_bits() ^ 1);
    let b = Matrix::new(8, v).unwrap();
    assert_ne!(checksum_vectors(&a), checksum_vectors(&b));
    let reshaped = Matrix::new(16, a.data().to_vec()).unwrap();
    assert_ne!(checksum_vectors(&a), checksum_vectors(&reshaped));
    assert_eq!(checksum_vectors(&a), checksum_vectors(&a.clone()));
    assert!(checksum_vectors(&a).starts_with("crc32:"));
}

#[test]
fn synthetic_default_ground_truth_is_quick_and_exact() {
    let t = std::time::Instant::now();
    let ds = synthetic_default().unwrap().with_ground_truth(100).unwrap();
    let elapsed = t.elapsed();
    let gt = ds.ground_truth.as_ref().unwrap();
    assert_eq!((gt.queries(), gt.k()), (1000, 100));
    // Spot-check query 0 against the scalar reference.
    let q0 = Matrix::new(64, ds.queries.row(0).unwrap().to_vec()).unwrap();
    let want = reference(&ds.base, &q0, Metric::L2, 100);
    let got: Vec<u32> = gt.query_ids(0).unwrap().to_vec();
    let same = want[0].iter().filter(|(id, _)| got.contains(id)).count();
    assert!(same >= 99, "{same}");
    eprintln!("synthetic-default: generated + top-100 ground truth in {elapsed:.2?}");
}
