//! Every ISA available on this machine against the scalar reference kernels.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use omen_simd::{scalar, Isa, IsaError, Kernels};
use proptest::prelude::*;

/// Every kernel table this machine can run, scalar included (so that the
/// scalar-only path of `OMEN_ISA=scalar` exercises the same assertions).
fn tables() -> Vec<Kernels> {
    Isa::available()
        .into_iter()
        .map(|isa| Kernels::for_isa(isa).unwrap())
        .collect()
}

/// Lengths that hit every loop boundary of every ISA: empty, one, around one
/// register (4, 8, 16 lanes), around the unrolled blocks, and long odd tails.
fn edge_lengths() -> Vec<usize> {
    let mut v = vec![0, 1, 2, 3];
    for lanes in [4usize, 8, 16] {
        for k in [1, 2, 4] {
            let m = lanes * k;
            v.extend([m - 1, m, m + 1]);
        }
    }
    v.extend([25, 50, 96, 127, 128, 129, 1000 + 7, 1536 + 5]);
    v.sort_unstable();
    v.dedup();
    v
}

/// Tolerance for a sum of `n` products whose absolute values add up to `mag`:
/// f32 summation error grows with the length and the magnitude of the terms, not
/// with the (possibly cancelled) result.
fn tol(n: usize, mag: f64) -> f64 {
    (1e-5 + 2e-7 * n as f64) * (1.0 + mag)
}

fn abs_dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 * *y as f64).abs())
        .sum()
}

fn l2_f64(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum()
}

/// A positive dimension, biased to the edge lengths.
fn dim_strategy(max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![prop::sample::select(edge_lengths()), 1usize..max]
        .prop_filter("dim > 0", |d| *d > 0)
}

fn check_close(what: &str, isa: Isa, n: usize, got: f32, want: f32, mag: f64) {
    assert!(
        got.is_finite() == want.is_finite(),
        "{what} [{isa}] n={n}: got {got}, want {want}"
    );
    let err = (got as f64 - want as f64).abs();
    assert!(
        err <= tol(n, mag),
        "{what} [{isa}] n={n}: got {got}, want {want}, |diff| {err} > {}",
        tol(n, mag)
    );
}

fn check_pair(k: &Kernels, a: &[f32], b: &[f32]) {
    let n = a.len().min(b.len());
    let (a2, b2) = (&a[..n], &b[..n]);
    let l2_mag = l2_f64(a2, b2);
    check_close(
        "l2_sq",
        k.isa(),
        n,
        k.l2_sq(a, b),
        scalar::l2_sq(a, b),
        l2_mag,
    );
    check_close(
        "dot",
        k.isa(),
        n,
        k.dot(a, b),
        scalar::dot(a, b),
        abs_dot(a2, b2),
    );
    // Cosine is a ratio in [0, 2]: its error is relative to 1, not to the norms.
    check_close(
        "cosine",
        k.isa(),
        n,
        k.cosine(a, b),
        scalar::cosine(a, b),
        1.0,
    );
}

fn vec_strategy(len: usize, scale: f32) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-scale..scale, len)
}

/// A length (biased to the edge cases) and two vectors of it.
fn pair_strategy(scale: f32) -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    let lens = edge_lengths();
    prop_oneof![prop::sample::select(lens), 0usize..300]
        .prop_flat_map(move |n| (vec_strategy(n, scale), vec_strategy(n, scale)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn one_to_one_matches_scalar((a, b) in pair_strategy(10.0)) {
        for k in tables() {
            check_pair(&k, &a, &b);
        }
    }

    #[test]
    fn one_to_one_large_magnitude((a, b) in pair_strategy(1e15)) {
        for k in tables() {
            check_pair(&k, &a, &b);
        }
    }

    #[test]
    fn one_to_one_unequal_lengths_use_the_shorter(
        (a, b) in pair_strategy(10.0),
        cut in 0usize..40,
    ) {
        let short = &b[..b.len().saturating_sub(cut)];
        for k in tables() {
            check_pair(&k, &a, short);
            check_pair(&k, short, &a);
        }
    }

    #[test]
    fn one_to_many_matches_scalar(
        // dim 0 has its own rule (the whole output is filled): `empty_query_fills_the_output`.
        (dim, rows) in (dim_strategy(100), 0usize..11)
            .prop_flat_map(|(dim, n)| (Just(dim), vec_strategy(dim * (n + 1), 10.0))),
        extra_out in 0usize..3,
        short_out in 0usize..3,
    ) {
        let (query, rows) = rows.split_at(dim);
        let nrows = rows.len() / dim.max(1);
        // The output may be longer than the rows (the extra slots stay untouched) or
        // shorter (only the rows that fit are computed).
        let out_len = (nrows + extra_out).saturating_sub(short_out);
        type Many = fn(&Kernels, &[f32], &[f32], &mut [f32]);
        type One = fn(&[f32], &[f32]) -> f32;
        let cases: [(&str, Many, One); 3] = [
            ("l2_sq_many", |k, q, r, o| k.l2_sq_many(q, r, o), scalar::l2_sq),
            ("dot_many", |k, q, r, o| k.dot_many(q, r, o), scalar::dot),
            ("cosine_many", |k, q, r, o| k.cosine_many(q, r, o), scalar::cosine),
        ];
        for k in tables() {
            for (name, many, one) in cases {
                let mut out = vec![f32::NAN; out_len];
                many(&k, query, rows, &mut out);
                for (j, &got) in out.iter().enumerate() {
                    if j < nrows {
                        let r = &rows[j * dim..(j + 1) * dim];
                        let mag = if name == "cosine_many" {
                            1.0
                        } else {
                            abs_dot(query, r) + l2_f64(query, r)
                        };
                        check_close(name, k.isa(), dim, got, one(query, r), mag);
                    } else {
                        prop_assert!(got.is_nan(), "{name} [{}] wrote past the rows: {j}", k.isa());
                    }
                }
            }
        }
    }

    #[test]
    fn scattered_rows_match_scalar_and_one_to_many(
        (dim, rows) in (prop_oneof![Just(0usize), dim_strategy(100)], 0usize..11)
            .prop_flat_map(|(dim, n)| (Just(dim), vec_strategy(dim * (n + 1), 10.0))),
        // Per row: 0 keeps it whole, 1..=3 cuts that many floats off, 4 adds 3;
        // half the cases keep every row whole.
        shapes in prop::collection::vec(0usize..5, 11),
        all_whole in any::<bool>(),
        extra_out in 0usize..3,
        short_out in 0usize..3,
    ) {
        let (query, block) = rows.split_at(dim);
        let nrows = block.len() / dim.max(1);
        let nrows = if dim == 0 { shapes.len() % 7 } else { nrows };
        // Rows scattered over separate allocations, some shorter or longer than
        // the query (the distance then covers the shorter length).
        let owned: Vec<Vec<f32>> = (0..nrows)
            .map(|j| {
                let mut r = block.get(j * dim..(j + 1) * dim).unwrap_or(&[]).to_vec();
                match if all_whole { 0 } else { shapes[j] } {
                    0 => {}
                    4 => r.extend([1.5, -2.0, 0.25]),
                    cut => r.truncate(dim.saturating_sub(cut)),
                }
                r
            })
            .collect();
        let refs: Vec<&[f32]> = owned.iter().map(|r| r.as_slice()).collect();
        let out_len = (nrows + extra_out).saturating_sub(short_out);
        let whole = owned.iter().all(|r| r.len() == dim) && dim > 0;
        type Rows = fn(&Kernels, &[f32], &[&[f32]], &mut [f32]);
        type Many = fn(&Kernels, &[f32], &[f32], &mut [f32]);
        type One = fn(&[f32], &[f32]) -> f32;
        let cases: [(&str, Rows, Many, One); 3] = [
            ("l2_sq_rows", |k, q, r, o| k.l2_sq_rows(q, r, o), |k, q, r, o| k.l2_sq_many(q, r, o), scalar::l2_sq),
            ("dot_rows", |k, q, r, o| k.dot_rows(q, r, o), |k, q, r, o| k.dot_many(q, r, o), scalar::dot),
            ("cosine_rows", |k, q, r, o| k.cosine_rows(q, r, o), |k, q, r, o| k.cosine_many(q, r, o), scalar::cosine),
        ];
        for k in tables() {
            for (name, rows_fn, many, one) in cases {
                let mut out = vec![f32::NAN; out_len];
                rows_fn(&k, query, &refs, &mut out);
                for (j, &got) in out.iter().enumerate() {
                    if j < nrows {
                        let r = refs[j];
                        let n = r.len().min(dim);
                        let mag = if name == "cosine_rows" {
                            1.0
                        } else {
                            abs_dot(&query[..n], &r[..n]) + l2_f64(&query[..n], &r[..n])
                        };
                        check_close(name, k.isa(), n, got, one(query, r), mag);
                    } else {
                        prop_assert!(got.is_nan(), "{name} [{}] wrote past the rows: {j}", k.isa());
                    }
                }
                // Whole rows: bit for bit what the one-to-many kernel of the same ISA
                // gives for them side by side (re-ranking then agrees with the flat
                // index's scan wherever the two group rows alike).
                if whole {
                    let mut want = vec![f32::NAN; out_len];
                    many(&k, query, &block[..nrows * dim], &mut want);
                    for (j, (g, w)) in out.iter().zip(&want).enumerate().take(nrows) {
                        prop_assert_eq!(g.to_bits(), w.to_bits(), "{} [{}] row {}", name, k.isa(), j);
                    }
                }
            }
        }
    }

    #[test]
    fn tile_matches_scalar(
        (dim, nq, nr, data) in (dim_strategy(70), 0usize..14, 0usize..72).prop_flat_map(
            |(dim, nq, nr)| (Just(dim), Just(nq), Just(nr), vec_strategy(dim * (nq + nr), 10.0)),
        ),
        short_out in 0usize..2,
    ) {
        let (queries, rows) = data.split_at(dim * nq);
        // A short output drops the last query's line.
        let out_len = (nq * nr).saturating_sub(short_out * nr.max(1));
        let mut scratch = Vec::new();
        for k in tables() {
            for l2 in [true, false] {
                let mut out = vec![f32::NAN; out_len + 3];
                let mut want = vec![f32::NAN; out_len + 3];
                if l2 {
                    k.l2_sq_tile(queries, rows, dim, &mut out[..out_len], &mut scratch);
                    scalar::l2_sq_tile(queries, rows, dim, &mut want[..out_len]);
                } else {
                    k.dot_tile(queries, rows, dim, &mut out[..out_len], &mut scratch);
                    scalar::dot_tile(queries, rows, dim, &mut want[..out_len]);
                }
                for (idx, (&got, &exp)) in out.iter().zip(&want).enumerate() {
                    if exp.is_nan() {
                        prop_assert!(got.is_nan(), "[{}] l2={l2}: {got} at {idx}", k.isa());
                        continue;
                    }
                    let (i, j) = (idx / nr, idx % nr);
                    let q = &queries[i * dim..(i + 1) * dim];
                    let r = &rows[j * dim..(j + 1) * dim];
                    let mag = abs_dot(q, r) + l2_f64(q, r);
                    let name = if l2 { "l2_sq_tile" } else { "dot_tile" };
                    check_close(name, k.isa(), dim, got, exp, mag);
                }
            }
        }
    }
}

/// The tile shapes the flat index uses, with odd edges on both axes, against the
/// one-to-one kernel of the same ISA.
#[test]
fn tile_large_blocks_match_one_to_one() {
    let dim = 50;
    let (nq, nr) = (67, 1000 + 7);
    let data: Vec<f32> = (0..dim * (nq + nr))
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let (queries, rows) = data.split_at(dim * nq);
    let mut scratch = Vec::new();
    for k in tables() {
        let mut out = vec![0.0; nq * nr];
        k.dot_tile(queries, rows, dim, &mut out, &mut scratch);
        let mut l2 = vec![0.0; nq * nr];
        k.l2_sq_tile(queries, rows, dim, &mut l2, &mut scratch);
        for i in 0..nq {
            for j in 0..nr {
                let (q, r) = (
                    &queries[i * dim..(i + 1) * dim],
                    &rows[j * dim..(j + 1) * dim],
                );
                check_close(
                    "dot_tile",
                    k.isa(),
                    dim,
                    out[i * nr + j],
                    scalar::dot(q, r),
                    abs_dot(q, r),
                );
                check_close(
                    "l2_sq_tile",
                    k.isa(),
                    dim,
                    l2[i * nr + j],
                    scalar::l2_sq(q, r),
                    scalar::l2_sq(q, r) as f64,
                );
            }
        }
        // Reusing a larger scratch for a smaller tile must not read stale data.
        let mut small = vec![0.0; 3 * 5];
        k.dot_tile(
            &queries[..3 * dim],
            &rows[..5 * dim],
            dim,
            &mut small,
            &mut scratch,
        );
        for i in 0..3 {
            for j in 0..5 {
                assert_eq!(
                    small[i * 5 + j],
                    out[i * nr + j],
                    "[{}] scratch reuse",
                    k.isa()
                );
            }
        }
    }
}

#[test]
fn zero_vectors_have_cosine_distance_one() {
    for k in tables() {
        for n in edge_lengths() {
            let z = vec![0.0f32; n];
            let x: Vec<f32> = (0..n).map(|i| i as f32 + 1.0).collect();
            assert_eq!(k.cosine(&z, &x), 1.0, "[{}] n={n}", k.isa());
            assert_eq!(k.cosine(&x, &z), 1.0, "[{}] n={n}", k.isa());
            let mut out = [f32::NAN; 2];
            let rows: Vec<f32> = z.iter().chain(&x).copied().collect();
            k.cosine_many(&z, &rows, &mut out);
            assert_eq!(out, [1.0, 1.0], "[{}] n={n}", k.isa());
            if n > 0 {
                assert!(k.cosine(&x, &x).abs() < 1e-6, "[{}] n={n}", k.isa());
            }
        }
    }
}

#[test]
fn empty_query_fills_the_output() {
    for k in tables() {
        let mut out = [f32::NAN; 3];
        k.l2_sq_many(&[], &[1.0, 2.0], &mut out);
        assert_eq!(out, [0.0; 3]);
        k.dot_many(&[], &[], &mut out);
        assert_eq!(out, [0.0; 3]);
        k.cosine_many(&[], &[], &mut out);
        assert_eq!(out, [1.0; 3]);
        let mut tile = [f32::NAN; 4];
        k.dot_tile(&[1.0; 4], &[1.0; 4], 0, &mut tile, &mut Vec::new());
        assert!(tile.iter().all(|x| x.is_nan()), "dim 0 tile writes nothing");
    }
}

#[test]
fn known_values() {
    let a = [1.0f32, 2.0, 3.0];
    let b = [4.0f32, 6.0, 8.0];
    for k in tables() {
        assert_eq!(k.l2_sq(&a, &b), 9.0 + 16.0 + 25.0, "[{}]", k.isa());
        assert_eq!(k.dot(&a, &b), 4.0 + 12.0 + 24.0, "[{}]", k.isa());
        let want = 1.0 - 40.0 / (14.0f32 * 116.0).sqrt();
        assert!((k.cosine(&a, &b) - want).abs() < 1e-6, "[{}]", k.isa());
    }
}

#[test]
fn isa_names_parse() {
    for isa in Isa::PREFERENCE {
        assert_eq!(isa.name().parse::<Isa>(), Ok(isa));
        assert_eq!(isa.name().to_uppercase().parse::<Isa>(), Ok(isa));
        assert_eq!(format!(" {isa} ").parse::<Isa>(), Ok(isa));
    }
    assert_eq!("avx512f".parse::<Isa>(), Ok(Isa::Avx512));
    assert_eq!("sse9".parse::<Isa>(), Err(IsaError::Unknown("sse9".into())));
    assert!(matches!("".parse::<Isa>(), Err(IsaError::Unknown(_))));
}

#[test]
fn for_isa_of_an_unavailable_isa_is_an_error() {
    for isa in Isa::PREFERENCE {
        match Kernels::for_isa(isa) {
            Ok(k) => {
                assert!(isa.is_available());
                assert_eq!(k.isa(), isa);
            }
            Err(e) => {
                assert!(!isa.is_available());
                assert_eq!(e, IsaError::Unavailable(isa));
                assert!(e.to_string().contains(isa.name()));
            }
        }
    }
    // Whatever this machine is, one of x86 and aarch64 ISAs is missing.
    let foreign = if cfg!(target_arch = "x86_64") {
        Isa::Neon
    } else {
        Isa::Avx2
    };
    assert_eq!(
        Kernels::for_isa(foreign).unwrap_err(),
        IsaError::Unavailable(foreign)
    );
    assert!(Kernels::for_isa(Isa::Scalar).is_ok());
}

#[test]
fn best_honours_omen_isa() {
    let best = Kernels::best().isa();
    let forced = std::env::var("OMEN_ISA")
        .ok()
        .and_then(|s| s.parse::<Isa>().ok())
        .filter(|isa| isa.is_available());
    match forced {
        Some(isa) => assert_eq!(best, isa),
        None => assert_eq!(best, Isa::available()[0]),
    }
    assert!(
        std::ptr::eq(Kernels::best(), Kernels::best()),
        "chosen once and cached"
    );
}

#[cfg(target_arch = "x86_64")]
#[test]
fn x86_simd_is_available_on_x86_machines_with_it() {
    // Guards against a table silently reporting unavailable (and the SIMD tests
    // above then testing scalar against scalar).
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        assert!(Kernels::for_isa(Isa::Avx2).is_ok());
    }
    if std::arch::is_x86_feature_detected!("avx512f") {
        assert!(Kernels::for_isa(Isa::Avx512).is_ok());
    }
}
