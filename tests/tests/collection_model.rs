//! Model-based property test of `omen::Collection`: random sequences of
//! operations, valid and invalid, give the same answers as a `BTreeMap` plus a
//! brute-force search written here in f64.
//!
//! The model predicts every error (variant and its key fields) from the documented
//! check order: id, dimension, finiteness, zero vector (cosine) or norm bound
//! (L2, IP), then duplicates; for searches k, dimension, finiteness, zero/norm.
//! Search results are compared rank by rank on distance with a tolerance, and
//! every returned id must be live with a model distance equal to the reported one,
//! so near-ties may come back in either order.

use omen::{
    Collection, CollectionConfig, Error, Metric, SearchParams, MAX_ID_LEN, MAX_SQUARED_NORM,
};
use omen_core::validate::normalize_into;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashSet};

/// Model hits: id, f64 distance, and the magnitude f32 rounding scales with.
type Ranked = Vec<(String, f64, f64)>;

const IDS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

#[derive(Clone, Debug)]
enum Op {
    Insert(String, Vec<f32>),
    InsertBatch(Vec<String>, Vec<f32>),
    Upsert(String, Vec<f32>),
    Delete(String),
    Get(String),
    Search(Vec<f32>, usize),
    SearchFiltered(Vec<f32>, usize, u8),
    SearchBatch(Vec<f32>, usize),
}

/// What an error is, in the fields a caller acts on.
#[derive(Clone, Debug, PartialEq)]
enum ErrKind {
    Dim { expected: usize, got: usize },
    NonFinite { row: usize, component: usize },
    Zero { row: usize },
    InvalidId,
    Duplicate(String),
    Unknown(String),
    Param(&'static str),
    Other(String),
}

fn kind(e: &Error) -> ErrKind {
    match e {
        Error::DimensionMismatch { expected, got } => ErrKind::Dim {
            expected: *expected,
            got: *got,
        },
        Error::NonFinite { row, component, .. } => ErrKind::NonFinite {
            row: *row,
            component: *component,
        },
        Error::ZeroVector { row } => ErrKind::Zero { row: *row },
        Error::InvalidId { .. } => ErrKind::InvalidId,
        Error::DuplicateId { id } => ErrKind::Duplicate(id.clone()),
        Error::UnknownId { id } => ErrKind::Unknown(id.clone()),
        Error::InvalidParameter { name, .. } => ErrKind::Param(name),
        other => ErrKind::Other(other.to_string()),
    }
}

fn id_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        24 => (0..IDS.len()).prop_map(|i| IDS[i].to_string()),
        1 => Just(String::new()),
        1 => Just("nul\0id".to_string()),
        1 => Just("x".repeat(MAX_ID_LEN + 1)),
    ]
}

fn value() -> impl Strategy<Value = f32> {
    // Half-steps make exact ties common; the range keeps f32 rounding well inside
    // the tolerance.
    prop_oneof![
        3 => (-4i32..=4).prop_map(|x| x as f32 * 0.5),
        2 => -10.0f32..10.0,
    ]
}

/// A vector for a collection of width `dim`: usually valid, sometimes each kind
/// of invalid.
fn vector(dim: usize) -> impl Strategy<Value = Vec<f32>> {
    let bad = prop_oneof![Just(f32::NAN), Just(f32::INFINITY), Just(f32::NEG_INFINITY)];
    prop_oneof![
        24 => proptest::collection::vec(value(), dim),
        1 => proptest::collection::vec(value(), (dim + 1)..=(dim + 2)),
        1 => proptest::collection::vec(value(), 0..dim),
        1 => (proptest::collection::vec(value(), dim), 0..dim, bad).prop_map(|(mut v, i, b)| {
            v[i] = b;
            v
        }),
        1 => Just(vec![0.0; dim]),
        1 => (proptest::collection::vec(value(), dim), 0..dim).prop_map(|(mut v, i)| {
            v[i] = 1e20;
            v
        }),
    ]
}

fn k_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 1usize..6, 1 => Just(0usize), 1 => Just(100usize)]
}

fn op(dim: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (id_strategy(), vector(dim)).prop_map(|(i, v)| Op::Insert(i, v)),
        2 => proptest::collection::vec((id_strategy(), vector(dim)), 0..4).prop_map(|rows| {
            let ids = rows.iter().map(|r| r.0.clone()).collect();
            Op::InsertBatch(ids, rows.into_iter().flat_map(|r| r.1).collect())
        }),
        3 => (id_strategy(), vector(dim)).prop_map(|(i, v)| Op::Upsert(i, v)),
        3 => id_strategy().prop_map(Op::Delete),
        2 => id_strategy().prop_map(Op::Get),
        4 => (vector(dim), k_strategy()).prop_map(|(q, k)| Op::Search(q, k)),
        1 => (vector(dim), k_strategy(), any::<u8>()).prop_map(|(q, k, m)| Op::SearchFiltered(q, k, m)),
        1 => (proptest::collection::vec(vector(dim), 0..3), k_strategy())
            .prop_map(|(qs, k)| Op::SearchBatch(qs.concat(), k)),
    ]
}

/// A BTreeMap of stored vectors (normalised under cosine) and a brute-force search.
struct Model {
    dim: usize,
    metric: Metric,
    map: BTreeMap<String, Vec<f32>>,
}

fn check_id(id: &str) -> Result<(), ErrKind> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.contains('\0') {
        return Err(ErrKind::InvalidId);
    }
    Ok(())
}

impl Model {
    /// Finiteness, then zero / norm; returns the row as stored.
    fn row(&self, v: &[f32], row: usize) -> Result<Vec<f32>, ErrKind> {
        if let Some(component) = v.iter().position(|x| !x.is_finite()) {
            return Err(ErrKind::NonFinite { row, component });
        }
        if self.metric == Metric::Cosine {
            if v.iter().all(|&x| x == 0.0) {
                return Err(ErrKind::Zero { row });
            }
            let mut out = Vec::new();
            normalize_into(v, &mut out, row).map_err(|e| kind(&e))?;
            Ok(out)
        } else {
            let sq: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
            if sq > MAX_SQUARED_NORM {
                return Err(ErrKind::Param("vector"));
            }
            Ok(v.to_vec())
        }
    }

    fn vector(&self, v: &[f32]) -> Result<Vec<f32>, ErrKind> {
        if v.len() != self.dim {
            return Err(ErrKind::Dim {
                expected: self.dim,
                got: v.len(),
            });
        }
        self.row(v, 0)
    }

    fn insert(&mut self, id: &str, v: &[f32]) -> Result<(), ErrKind> {
        check_id(id)?;
        let v = self.vector(v)?;
        if self.map.contains_key(id) {
            return Err(ErrKind::Duplicate(id.to_string()));
        }
        self.map.insert(id.to_string(), v);
        Ok(())
    }

    fn insert_batch(&mut self, ids: &[String], rows: &[f32]) -> Result<(), ErrKind> {
        if !rows.len().is_multiple_of(self.dim) {
            return Err(ErrKind::Dim {
                expected: self.dim,
                got: rows.len() % self.dim,
            });
        }
        if rows.len() / self.dim != ids.len() {
            return Err(ErrKind::Param("ids"));
        }
        let mut seen = HashSet::new();
        let mut staged = Vec::new();
        for (i, (id, row)) in ids.iter().zip(rows.chunks_exact(self.dim)).enumerate() {
            check_id(id)?;
            let v = self.row(row, i)?;
            if self.map.contains_key(id) || !seen.insert(id) {
                return Err(ErrKind::Duplicate(id.clone()));
            }
            staged.push((id.clone(), v));
        }
        self.map.extend(staged);
        Ok(())
    }

    fn upsert(&mut self, id: &str, v: &[f32]) -> Result<(), ErrKind> {
        check_id(id)?;
        let v = self.vector(v)?;
        self.map.insert(id.to_string(), v);
        Ok(())
    }

    fn delete(&mut self, id: &str) -> Result<(), ErrKind> {
        check_id(id)?;
        match self.map.remove(id) {
            Some(_) => Ok(()),
            None => Err(ErrKind::Unknown(id.to_string())),
        }
    }

    /// Every live id with its f64 distance and a tolerance scale, closest first.
    fn rank(&self, q: &[f32], allow: impl Fn(&str) -> bool) -> Ranked {
        let mut all: Ranked = self
            .map
            .iter()
            .filter(|(id, _)| allow(id))
            .map(|(id, v)| {
                let (d, scale) = distance(self.metric, q, v);
                (id.clone(), d, scale)
            })
            .collect();
        all.sort_by(|a, b| a.1.total_cmp(&b.1));
        all
    }

    fn search(&self, q: &[f32], k: usize, allow: impl Fn(&str) -> bool) -> Result<Ranked, ErrKind> {
        if k == 0 {
            return Err(ErrKind::Param("k"));
        }
        let q = self.vector(q)?;
        let mut r = self.rank(&q, allow);
        r.truncate(k);
        Ok(r)
    }

    fn search_batch(&self, qs: &[f32], k: usize) -> Result<Vec<Ranked>, ErrKind> {
        if k == 0 {
            return Err(ErrKind::Param("k"));
        }
        if !qs.len().is_multiple_of(self.dim) {
            return Err(ErrKind::Dim {
                expected: self.dim,
                got: qs.len() % self.dim,
            });
        }
        let rows: Vec<Vec<f32>> = qs
            .chunks_exact(self.dim)
            .enumerate()
            .map(|(i, q)| self.row(q, i))
            .collect::<Result<_, _>>()?;
        Ok(rows
            .iter()
            .map(|q| {
                let mut r = self.rank(q, |_| true);
                r.truncate(k);
                r
            })
            .collect())
    }
}

/// Distance under omen's conventions (L2 squared, IP and cosine as `1 - a·b` on
/// the stored, normalised vectors), in f64, with the magnitude that f32 rounding
/// in the kernels scales with.
fn distance(metric: Metric, q: &[f32], v: &[f32]) -> (f64, f64) {
    match metric {
        Metric::L2 => {
            let d: f64 = q
                .iter()
                .zip(v)
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                .sum();
            (d, d)
        }
        _ => {
            let dot: f64 = q
                .iter()
                .zip(v)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let abs: f64 = q
                .iter()
                .zip(v)
                .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
                .sum();
            (1.0 - dot, abs)
        }
    }
}

fn close(got: f32, want: f64, scale: f64) -> bool {
    (f64::from(got) - want).abs() <= 1e-5 * (1.0 + scale)
}

/// Compares a result list with the model's: same length; at every rank the same
/// distance within tolerance; every id live, distinct, at its own model distance.
fn same_hits(model: &Model, q: &[f32], got: &[omen::Hit], want: &Ranked) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{} hits, model has {}: {got:?} vs {want:?}",
            got.len(),
            want.len()
        ));
    }
    let qn = model.vector(q).map_err(|e| format!("{e:?}"))?;
    let mut seen = HashSet::new();
    for (i, ((gid, gd), (_, wd, ws))) in got.iter().zip(want).enumerate() {
        if !close(*gd, *wd, *ws) {
            return Err(format!(
                "rank {i}: distance {gd} vs model {wd}: {got:?} vs {want:?}"
            ));
        }
        let Some(v) = model.map.get(&**gid) else {
            return Err(format!("rank {i}: id {gid:?} is not live"));
        };
        let (d, s) = distance(model.metric, &qn, v);
        if !close(*gd, d, s) {
            return Err(format!(
                "rank {i}: {gid:?} reported at {gd}, model distance {d}"
            ));
        }
        if !seen.insert(gid.clone()) {
            return Err(format!("id {gid:?} returned twice: {got:?}"));
        }
    }
    Ok(())
}

fn check<T, U>(
    op: &Op,
    got: &omen::Result<T>,
    want: &Result<U, ErrKind>,
) -> Result<(), TestCaseError>
where
    T: std::fmt::Debug,
    U: std::fmt::Debug,
{
    match (got, want) {
        (Ok(_), Ok(_)) => Ok(()),
        (Err(g), Err(w)) => {
            prop_assert_eq!(&kind(g), w, "op {:?}", op);
            Ok(())
        }
        _ => Err(TestCaseError::fail(format!(
            "op {op:?}: collection {got:?}, model {want:?}"
        ))),
    }
}

fn run(metric: Metric, dim: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let c: Collection = CollectionConfig::new(dim, metric)
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut m = Model {
        dim,
        metric,
        map: BTreeMap::new(),
    };
    let params = SearchParams::default();
    for op in &ops {
        match op {
            Op::Insert(id, v) => check(op, &c.insert(id, v), &m.insert(id, v))?,
            Op::InsertBatch(ids, rows) => {
                check(op, &c.insert_batch(ids, rows), &m.insert_batch(ids, rows))?
            }
            Op::Upsert(id, v) => check(op, &c.upsert(id, v), &m.upsert(id, v))?,
            Op::Delete(id) => check(op, &c.delete(id), &m.delete(id))?,
            Op::Get(id) => {
                prop_assert_eq!(c.get(id), m.map.get(id).cloned(), "get {:?}", id);
                prop_assert_eq!(c.contains(id), m.map.contains_key(id));
            }
            Op::Search(q, k) => {
                let got = c.search(q, *k);
                let want = m.search(q, *k, |_| true);
                check(op, &got, &want)?;
                if let (Ok(g), Ok(w)) = (&got, &want) {
                    same_hits(&m, q, g, w)
                        .map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                }
            }
            Op::SearchFiltered(q, k, mask) => {
                let allow = |id: &str| {
                    IDS.iter()
                        .position(|&x| x == id)
                        .is_some_and(|i| mask & (1 << i) != 0)
                };
                let got = c.search_filtered(q, *k, &params, allow);
                let want = m.search(q, *k, allow);
                check(op, &got, &want)?;
                if let (Ok(g), Ok(w)) = (&got, &want) {
                    same_hits(&m, q, g, w)
                        .map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                }
            }
            Op::SearchBatch(qs, k) => {
                let got = c.search_batch_with(qs, *k, &params);
                let want = m.search_batch(qs, *k);
                check(op, &got, &want)?;
                if let (Ok(g), Ok(w)) = (&got, &want) {
                    prop_assert_eq!(g.len(), w.len());
                    for ((q, g), w) in qs.chunks_exact(dim).zip(g).zip(w) {
                        same_hits(&m, q, g, w)
                            .map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                    }
                }
            }
        }
        prop_assert_eq!(c.len(), m.map.len(), "len after {:?}", op);
    }
    // The stored vectors agree id by id at the end.
    for id in IDS {
        prop_assert_eq!(c.get(id), m.map.get(id).cloned());
    }
    let st = c.stats();
    prop_assert_eq!(st.len, m.map.len());
    prop_assert_eq!(st.tombstones, st.storage_slots - st.len);
    Ok(())
}

fn case(metric: Metric) -> impl Strategy<Value = (Metric, usize, Vec<Op>)> {
    (1usize..=6).prop_flat_map(move |dim| {
        (
            Just(metric),
            Just(dim),
            proptest::collection::vec(op(dim), 1..60),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn collection_matches_model_l2((metric, dim, ops) in case(Metric::L2)) {
        run(metric, dim, ops)?;
    }

    #[test]
    fn collection_matches_model_inner_product((metric, dim, ops) in case(Metric::InnerProduct)) {
        run(metric, dim, ops)?;
    }

    #[test]
    fn collection_matches_model_cosine((metric, dim, ops) in case(Metric::Cosine)) {
        run(metric, dim, ops)?;
    }
}
