//! Round trips of every format and the errors of bad files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omen_core::Error;
use omen_datasets::*;
use std::path::Path;

fn vectors(rows: usize, dim: usize) -> Vectors {
    // Values with awkward bit patterns: negatives, subnormals, large exponents.
    let data = (0..rows * dim)
        .map(|i| {
            let x = (i as f32 * 0.7311).sin() * 10f32.powi((i % 7) as i32 - 3);
            if i % 11 == 5 {
                f32::MIN_POSITIVE / 4.0
            } else {
                x
            }
        })
        .collect();
    Matrix::new(dim, data).unwrap()
}

fn assert_bits_eq(a: &Vectors, b: &Vectors) {
    assert_eq!((a.rows(), a.dim()), (b.rows(), b.dim()));
    let ab: Vec<u32> = a.data().iter().map(|x| x.to_bits()).collect();
    let bb: Vec<u32> = b.data().iter().map(|x| x.to_bits()).collect();
    assert_eq!(ab, bb);
}

/// Asserts a `Corruption` at `offset` whose detail contains `needle`.
#[track_caller]
fn assert_corrupt<T: std::fmt::Debug>(r: omen_core::Result<T>, offset: u64, needle: &str) {
    match r {
        Err(Error::Corruption {
            offset: o, detail, ..
        }) => {
            assert_eq!(o, offset, "offset (detail: {detail})");
            assert!(detail.contains(needle), "{detail:?} lacks {needle:?}");
        }
        other => panic!("expected Corruption at {offset}, got {other:?}"),
    }
}

#[test]
fn fvecs_round_trip_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    for (rows, dim) in [(1, 1), (3, 7), (100, 50)] {
        let v = vectors(rows, dim);
        let p = dir.path().join(format!("v{rows}.fvecs"));
        write_fvecs(&p, &v).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().len() as usize,
            rows * (4 + 4 * dim)
        );
        assert_bits_eq(&read_fvecs(&p).unwrap(), &v);
        assert_bits_eq(&load_vectors(&p).unwrap(), &v);
    }
}

#[test]
fn ivecs_and_bvecs_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let iv = Matrix::new(3, vec![0, -1, i32::MAX, i32::MIN, 7, 8]).unwrap();
    write_ivecs(dir.path().join("a.ivecs"), &iv).unwrap();
    assert_eq!(read_ivecs(dir.path().join("a.ivecs")).unwrap(), iv);
    let bv = Matrix::new(4, (0..=255u8).collect()).unwrap();
    write_bvecs(dir.path().join("a.bvecs"), &bv).unwrap();
    assert_eq!(read_bvecs(dir.path().join("a.bvecs")).unwrap(), bv);
    // Byte vectors load as floats of the same values.
    let f = load_vectors(dir.path().join("a.bvecs")).unwrap();
    assert_eq!(f.row(1).unwrap(), &[4.0, 5.0, 6.0, 7.0]);
}

#[test]
fn bin_formats_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let v = vectors(33, 9);
    write_fbin(dir.path().join("a.fbin"), &v).unwrap();
    let bytes = std::fs::read(dir.path().join("a.fbin")).unwrap();
    assert_eq!(&bytes[..8], &[33, 0, 0, 0, 9, 0, 0, 0]);
    assert_bits_eq(&read_fbin(dir.path().join("a.fbin")).unwrap(), &v);
    assert_bits_eq(&load_vectors(dir.path().join("a.fbin")).unwrap(), &v);

    let iv = Matrix::new(2, vec![1, -2, 3, i32::MIN]).unwrap();
    write_ibin(dir.path().join("a.ibin"), &iv).unwrap();
    assert_eq!(read_ibin(dir.path().join("a.ibin")).unwrap(), iv);

    let bv = Matrix::new(3, vec![0u8, 128, 255, 1, 2, 3]).unwrap();
    write_u8bin(dir.path().join("a.u8bin"), &bv).unwrap();
    assert_eq!(read_u8bin(dir.path().join("a.u8bin")).unwrap(), bv);

    // Zero rows is a valid .fbin (the header still carries the dimension).
    let empty = Matrix::<f32>::new(5, vec![]).unwrap();
    assert_eq!(
        parse_fbin(&encode_fbin(&empty).unwrap(), "e").unwrap(),
        empty
    );
}

#[test]
fn groundtruth_bin_round_trip_and_ids_only() {
    let gt = GroundTruth::new(
        3,
        vec![5, 1, 9, 0, 2, 4],
        vec![0.5, 1.0, 1.5, -0.25, 0.0, 3.0],
    )
    .unwrap();
    let bytes = encode_groundtruth_bin(&gt).unwrap();
    assert_eq!(bytes.len(), 8 + 6 * 8);
    let t = parse_groundtruth_bin(&bytes, "gt.ibin").unwrap();
    assert_eq!((t.k, &t.ids[..]), (3, gt.ids()));
    let d: Vec<u32> = t.distances.unwrap().iter().map(|x| x.to_bits()).collect();
    let e: Vec<u32> = gt.distances().iter().map(|x| x.to_bits()).collect();
    assert_eq!(d, e);
    // The ids-only variant (an .ibin of ids).
    let t = parse_groundtruth_bin(&bytes[..8 + 24], "gt.ibin").unwrap();
    assert_eq!(t.ids, gt.ids());
    assert!(t.distances.is_none());
}

#[test]
fn npy_round_trip_every_version() {
    let v = vectors(17, 5);
    for version in [NpyVersion::V1, NpyVersion::V2, NpyVersion::V3] {
        let bytes = encode_npy(&v, version).unwrap();
        let data_start = bytes.len() - 17 * 5 * 4;
        assert_eq!(data_start % 64, 0, "{version:?}: data 64-aligned");
        assert_eq!(
            bytes[6],
            match version {
                NpyVersion::V1 => 1,
                NpyVersion::V2 => 2,
                _ => 3,
            }
        );
        assert_bits_eq(&parse_npy(&bytes, "a.npy").unwrap(), &v);
    }
    let dir = tempfile::tempdir().unwrap();
    write_npy(dir.path().join("a.npy"), &v).unwrap();
    assert_bits_eq(&load_vectors(dir.path().join("a.npy")).unwrap(), &v);
}

/// A header as NumPy itself writes it (version 1.0, 64-byte aligned, Python 2-era
/// long suffixes accepted), built by hand rather than by our encoder.
#[test]
fn npy_reads_numpy_style_headers() {
    let mut h = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }".to_vec();
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(b' ');
    }
    h.push(b'\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(h.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&h);
    for x in [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0] {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    let v = parse_npy(&bytes, "n.npy").unwrap();
    assert_eq!((v.rows(), v.dim()), (2, 3));
    assert_eq!(v.row(1).unwrap(), &[4.0, 5.0, 6.0]);
    // Keys in another order, double quotes, no trailing comma.
    let h2 = br#"{"shape": (2, 3), "fortran_order": False, "descr": "<f4"}"#;
    let mut b2 = b"\x93NUMPY\x02\x00".to_vec();
    b2.extend_from_slice(&(h2.len() as u32).to_le_bytes());
    b2.extend_from_slice(h2);
    b2.extend_from_slice(&bytes[bytes.len() - 24..]);
    assert_eq!(parse_npy(&b2, "n.npy").unwrap(), v);
}

fn npy_with_header(dict: &str) -> Vec<u8> {
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    bytes.extend_from_slice(dict.as_bytes());
    bytes.extend_from_slice(&[0u8; 24]);
    bytes
}

#[test]
fn npy_refuses_other_dtypes_fortran_order_and_bad_shapes() {
    let ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    assert!(parse_npy(&npy_with_header(ok), "x.npy").is_ok());
    let cases = [
        (
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }",
            "'<f4'",
        ),
        (
            "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }",
            "not supported",
        ),
        (
            "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }",
            "big-endian",
        ),
        (
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
            "Fortran",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }",
            "2-D",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }",
            "2-D",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (24, 0), }",
            "dimension 0",
        ),
        ("{'descr': '<f4', 'fortran_order': False}", "'shape'"),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)",
            "malformed",
        ),
        ("['descr']", "malformed"),
    ];
    for (dict, needle) in cases {
        assert_corrupt(parse_npy(&npy_with_header(dict), "x.npy"), 10, needle);
    }
}

#[test]
fn npy_refuses_bad_magic_version_and_truncation() {
    let good = encode_npy(&vectors(4, 3), NpyVersion::V1).unwrap();
    assert_corrupt(parse_npy(b"NUMPY\x01\x00", "x.npy"), 0, "magic");
    let mut v9 = good.clone();
    v9[6] = 9;
    assert_corrupt(parse_npy(&v9, "x.npy"), 6, "version 9.0");
    assert_corrupt(parse_npy(&good[..9], "x.npy"), 8, "header length");
    assert_corrupt(parse_npy(&good[..40], "x.npy"), 8, "past the end");
    // Data cut in the middle of row 2 (rows are 12 bytes).
    let data = (good.len() - 48) as u64;
    assert_eq!(data % 64, 0);
    assert_corrupt(
        parse_npy(&good[..data as usize + 30], "x.npy"),
        data + 24,
        "truncated",
    );
    let mut long = good.clone();
    long.push(0);
    assert_corrupt(parse_npy(&long, "x.npy"), data + 48, "trailing");
}

#[test]
fn absurd_header_counts_are_refused_before_allocating() {
    // 4 billion rows of dimension 65536 would be a petabyte; the file has 8 bytes.
    let mut h = Vec::new();
    h.extend_from_slice(&u32::MAX.to_le_bytes());
    h.extend_from_slice(&65_536u32.to_le_bytes());
    assert_corrupt(parse_fbin(&h, "x.fbin"), 8, "truncated");
    assert_corrupt(parse_groundtruth_bin(&h, "gt.ibin"), 8, "truncated");
    let npy = npy_with_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551615, 65536), }",
    );
    assert_corrupt(parse_npy(&npy, "x.npy"), 10 + 82, "truncated");
    // Dimension beyond MAX_DIM.
    let mut h = Vec::new();
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&(MAX_DIM as u32 + 1).to_le_bytes());
    assert_corrupt(parse_fbin(&h, "x.fbin"), 4, "out of range");
    assert_corrupt(
        parse_fvecs(&(1i32 << 30).to_le_bytes(), "x.fvecs"),
        0,
        "out of range",
    );
    assert_corrupt(
        parse_fvecs(&(-3i32).to_le_bytes(), "x.fvecs"),
        0,
        "out of range",
    );
}

#[test]
fn fvecs_errors_name_the_offset() {
    let good = encode_fvecs(&vectors(3, 4)).unwrap(); // rows of 20 bytes
    assert_corrupt(parse_fvecs(&[], "x.fvecs"), 0, "empty");
    assert_corrupt(parse_fvecs(&good[..3], "x.fvecs"), 0, "truncated");
    assert_corrupt(parse_fvecs(&good[..47], "x.fvecs"), 40, "row 2 has 7 of 20");
    let mut bad_dim = good.clone();
    bad_dim[20..24].copy_from_slice(&5i32.to_le_bytes());
    // Row 1 now claims 5 components: the file still parses as rows of 20 bytes, and
    // row 1's header is the culprit.
    assert_corrupt(
        parse_fvecs(&bad_dim, "x.fvecs"),
        20,
        "row 1 declares dimension 5",
    );
    let mut nan = good.clone();
    nan[20 + 4 + 8..20 + 4 + 12].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_corrupt(parse_fvecs(&nan, "x.fvecs"), 32, "row 1, component 2");
    let mut inf = good;
    inf[56..60].copy_from_slice(&f32::NEG_INFINITY.to_le_bytes());
    assert_corrupt(parse_fvecs(&inf, "x.fvecs"), 56, "row 2, component 3");
}

#[test]
fn fbin_errors_name_the_offset() {
    let good = encode_fbin(&vectors(3, 4)).unwrap(); // rows of 16 bytes after 8
    assert_corrupt(parse_fbin(&good[..2], "x.fbin"), 0, "row count");
    assert_corrupt(parse_fbin(&good[..6], "x.fbin"), 4, "dimension");
    assert_corrupt(
        parse_fbin(&good[..8 + 20], "x.fbin"),
        8 + 16,
        "row 1 is incomplete",
    );
    let mut zero_dim = good.clone();
    zero_dim[4..8].copy_from_slice(&0u32.to_le_bytes());
    assert_corrupt(parse_fbin(&zero_dim, "x.fbin"), 4, "dimension 0");
    let mut more = good.clone();
    more.extend_from_slice(&[0; 4]);
    assert_corrupt(parse_fbin(&more, "x.fbin"), 8 + 48, "4 trailing bytes");
    let mut nan = good;
    nan[8 + 16 * 2 + 4..8 + 16 * 2 + 8].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_corrupt(parse_fbin(&nan, "x.fbin"), 44, "row 2, component 1");
    // The file name in the error is the one given.
    match parse_fbin(&[1], "some/where.fbin") {
        Err(Error::Corruption { file, .. }) => assert_eq!(file, Path::new("some/where.fbin")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn groundtruth_bin_errors_name_the_offset() {
    let gt = GroundTruth::new(2, vec![1, 2, 3, 4], vec![0.1, 0.2, 0.3, 0.4]).unwrap();
    let good = encode_groundtruth_bin(&gt).unwrap(); // 8 + 16 ids + 16 distances
    assert_corrupt(
        parse_groundtruth_bin(&good[..8 + 10], "g.ibin"),
        8 + 8,
        "truncated",
    );
    assert_corrupt(
        parse_groundtruth_bin(&good[..8 + 16 + 12], "g.ibin"),
        8 + 16 + 8,
        "truncated distances",
    );
    let mut more = good.clone();
    more.push(0);
    assert_corrupt(parse_groundtruth_bin(&more, "g.ibin"), 40, "trailing");
    let mut neg = good.clone();
    neg[8 + 12..8 + 16].copy_from_slice(&(-1i32).to_le_bytes());
    assert_corrupt(
        parse_groundtruth_bin(&neg, "g.ibin"),
        20,
        "negative id -1 for query 1, rank 1",
    );
    let mut nan = good;
    nan[8 + 16 + 4..8 + 16 + 8].copy_from_slice(&f32::INFINITY.to_le_bytes());
    assert_corrupt(parse_groundtruth_bin(&nan, "g.ibin"), 28, "non-finite");
}

#[test]
fn writers_refuse_what_readers_would_refuse() {
    let nan = Matrix::new(2, vec![1.0, f32::NAN]).unwrap();
    assert!(matches!(
        encode_fbin(&nan),
        Err(Error::NonFinite {
            row: 0,
            component: 1,
            ..
        })
    ));
    assert!(matches!(encode_fvecs(&nan), Err(Error::NonFinite { .. })));
    assert!(matches!(
        encode_npy(&nan, NpyVersion::V1),
        Err(Error::NonFinite { .. })
    ));
    let empty = Matrix::<f32>::new(2, vec![]).unwrap();
    assert!(matches!(
        encode_fvecs(&empty),
        Err(Error::InvalidParameter { .. })
    ));
    // A failed write leaves no file behind.
    let dir = tempfile::tempdir().unwrap();
    assert!(write_fbin(dir.path().join("n.fbin"), &nan).is_err());
    assert!(!dir.path().join("n.fbin").exists());
}

#[test]
fn format_is_detected_by_extension() {
    assert_eq!(
        Format::from_path(Path::new("a/b.FVECS")).unwrap(),
        Format::Fvecs
    );
    assert_eq!(
        Format::from_path(Path::new("gt.public.1K.bin")).unwrap(),
        Format::Ibin
    );
    assert_eq!(Format::from_path(Path::new("x.h5")).unwrap(), Format::Hdf5);
    assert!(matches!(
        Format::from_path(Path::new("x.csv")),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        load_vectors("does/not/exist.fbin"),
        Err(Error::Io { path: Some(_), .. })
    ));
}

#[test]
fn query_file_of_another_width_is_corruption_at_its_dimension_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_fbin(d.join("base.fbin"), &vectors(10, 8)).unwrap();
    write_fbin(d.join("q.fbin"), &vectors(2, 7)).unwrap();
    write_fvecs(d.join("q.fvecs"), &vectors(2, 7)).unwrap();
    write_npy(d.join("q.npy"), &vectors(2, 7)).unwrap();
    for (q, off) in [("q.fbin", 4), ("q.fvecs", 0), ("q.npy", 10)] {
        match Dataset::from_files(
            "x",
            omen_core::Metric::L2,
            d.join("base.fbin"),
            d.join(q),
            None,
        ) {
            Err(Error::Corruption {
                file,
                offset,
                detail,
            }) => {
                assert_eq!(file, d.join(q));
                assert_eq!(offset, off, "{q}");
                assert!(
                    detail.contains("dimension 7") && detail.contains("has 8"),
                    "{detail}"
                );
            }
            other => panic!("{q}: {other:?}"),
        }
    }
}

#[test]
fn ground_truth_files_are_checked_against_the_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = vectors(10, 4);
    let queries = vectors(2, 4);
    write_fbin(d.join("base.fbin"), &base).unwrap();
    write_fbin(d.join("q.fbin"), &queries).unwrap();
    // ivecs ground truth: ids only; distances are computed.
    write_ivecs(
        d.join("gt.ivecs"),
        &Matrix::new(3, vec![0, 1, 2, 9, 8, 7]).unwrap(),
    )
    .unwrap();
    let ds = Dataset::from_files(
        "x",
        omen_core::Metric::L2,
        d.join("base.fbin"),
        d.join("q.fbin"),
        Some(&d.join("gt.ivecs")),
    )
    .unwrap();
    let gt = ds.ground_truth.as_ref().unwrap();
    assert_eq!(gt.query_ids(1).unwrap(), &[9, 8, 7]);
    let k = omen_core::simd::Kernels::scalar();
    let want = k.l2_sq(queries.row(1).unwrap(), base.row(8).unwrap());
    assert!((gt.query_distances(1).unwrap()[1] - want).abs() <= 1e-5 * want.max(1.0));
    // An id outside the base: the offset of that id in the .ivecs file.
    write_ivecs(
        d.join("bad.ivecs"),
        &Matrix::new(3, vec![0, 1, 2, 9, 10, 7]).unwrap(),
    )
    .unwrap();
    let r = Dataset::from_files(
        "x",
        omen_core::Metric::L2,
        d.join("base.fbin"),
        d.join("q.fbin"),
        Some(&d.join("bad.ivecs")),
    );
    assert_corrupt(r, 16 + 4 + 4, "id 10 (query 1, rank 1)");
    // Wrong number of queries.
    write_ivecs(
        d.join("short.ivecs"),
        &Matrix::new(3, vec![0, 1, 2]).unwrap(),
    )
    .unwrap();
    let r = Dataset::from_files(
        "x",
        omen_core::Metric::L2,
        d.join("base.fbin"),
        d.join("q.fbin"),
        Some(&d.join("short.ivecs")),
    );
    assert_corrupt(r, 0, "1 queries");
}
