//! Applies arbitrary operation sequences to an `omen::Collection` and to a model
//! (a `BTreeMap` and a brute-force search in f64); both must give the same answers
//! (errors included) and nothing may panic.
//!
//! The first input bytes fix the dimension (1..=8) and the metric; ids come from a
//! three-letter alphabet so that collisions are common, with rare empty, NUL and
//! over-long ids; vector components are mostly small, sometimes raw f32 bit
//! patterns (huge, tiny, subnormal) and sometimes NaN or ±infinity.
#![no_main]

use arbitrary::{Arbitrary, Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use omen::{
    Collection, CollectionConfig, Error, Metric, SearchParams, MAX_ID_LEN, MAX_SQUARED_NORM,
};
use omen_core::validate::normalize_into;
use std::collections::{BTreeMap, HashSet};

const MAX_OPS: usize = 64;
const MAX_BATCH: usize = 6;

#[derive(Debug)]
struct Input {
    dim: usize,
    metric: Metric,
    ops: Vec<Op>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> ArbResult<Self> {
        let dim = usize::from(u.arbitrary::<u8>()? % 8) + 1;
        let metric = match u.arbitrary::<u8>()? % 3 {
            0 => Metric::L2,
            1 => Metric::InnerProduct,
            _ => Metric::Cosine,
        };
        let mut ops = Vec::new();
        while ops.len() < MAX_OPS && !u.is_empty() {
            ops.push(Op::arbitrary(u)?);
        }
        Ok(Input { dim, metric, ops })
    }
}

/// An id: one to three letters of `abc`; a few byte values give the invalid ones.
#[derive(Debug, Clone)]
struct Id(String);

impl<'a> Arbitrary<'a> for Id {
    fn arbitrary(u: &mut Unstructured<'a>) -> ArbResult<Self> {
        let sel: u8 = u.arbitrary()?;
        let s = match sel {
            0 => String::new(),
            1 => "a\0".to_string(),
            2 => "a".repeat(MAX_ID_LEN + 1),
            3 => "b".repeat(MAX_ID_LEN),
            _ => {
                let len = usize::from(sel % 3) + 1;
                let mut s = String::new();
                for _ in 0..len {
                    s.push(*u.choose(&['a', 'b', 'c'])?);
                }
                s
            }
        };
        Ok(Id(s))
    }
}

/// Components of a vector; its length is decided against the dimension when the
/// op is applied (usually exactly `dim`).
#[derive(Debug, Clone)]
struct Vector {
    len_sel: u8,
    values: Vec<f32>,
}

impl<'a> Arbitrary<'a> for Vector {
    fn arbitrary(u: &mut Unstructured<'a>) -> ArbResult<Self> {
        let len_sel: u8 = u.arbitrary()?;
        let n = usize::from(u.arbitrary::<u8>()? % 11);
        let mut values = Vec::with_capacity(n);
        for _ in 0..n {
            let tag: u8 = u.arbitrary()?;
            let v = match tag {
                0..=199 => f32::from(u.arbitrary::<i8>()?) / 8.0,
                200..=239 => f32::from_bits(u.arbitrary()?),
                240 => f32::NAN,
                241 => f32::INFINITY,
                242 => f32::NEG_INFINITY,
                243 => -0.0,
                244 => f32::MIN_POSITIVE,
                245 => f32::from_bits(1),
                246 => 6.0e18,
                247 => -1.0e19,
                _ => 0.0,
            };
            values.push(v);
        }
        Ok(Vector { len_sel, values })
    }
}

impl Vector {
    fn get(&self, dim: usize) -> Vec<f32> {
        let len = if self.len_sel < 240 {
            dim
        } else {
            usize::from(self.len_sel - 240) % (dim + 3)
        };
        (0..len)
            .map(|i| self.values.get(i).copied().unwrap_or(0.0))
            .collect()
    }
}

#[derive(Debug, Arbitrary)]
enum Op {
    Insert(Id, Vector),
    InsertBatch(Vec<(Id, Vector)>, u8),
    Upsert(Id, Vector),
    Delete(Id),
    Get(Id),
    Search(Vector, u8),
    SearchFiltered(Vector, u8, u8),
    SearchBatch(Vec<Vector>, u8),
}

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

/// `k` from a byte: mostly 1..=5, sometimes 0 (invalid) or more than any collection.
fn k_of(b: u8) -> usize {
    match b {
        0..=9 => 0,
        10..=19 => 1000,
        _ => usize::from(b % 5) + 1,
    }
}

fn check_id(id: &str) -> Result<(), ErrKind> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.contains('\0') {
        return Err(ErrKind::InvalidId);
    }
    Ok(())
}

struct Model {
    dim: usize,
    metric: Metric,
    map: BTreeMap<String, Vec<f32>>,
}

type Ranked = Vec<(String, f64, f64)>;

impl Model {
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
        self.map
            .remove(id)
            .map(drop)
            .ok_or_else(|| ErrKind::Unknown(id.to_string()))
    }

    fn rank(&self, q: &[f32], k: usize, allow: &dyn Fn(&str) -> bool) -> Ranked {
        let mut all: Ranked = self
            .map
            .iter()
            .filter(|(id, _)| allow(id))
            .map(|(id, v)| {
                let (d, s) = distance(self.metric, q, v);
                (id.clone(), d, s)
            })
            .collect();
        all.sort_by(|a, b| a.1.total_cmp(&b.1));
        all.truncate(k);
        all
    }

    fn search(&self, q: &[f32], k: usize, allow: &dyn Fn(&str) -> bool) -> Result<Ranked, ErrKind> {
        if k == 0 {
            return Err(ErrKind::Param("k"));
        }
        let q = self.vector(q)?;
        Ok(self.rank(&q, k, allow))
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
        Ok(rows.iter().map(|q| self.rank(q, k, &|_| true)).collect())
    }
}

/// Distance in f64 under omen's conventions, with the magnitude f32 rounding in
/// the kernels scales with.
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

fn same_hits(model: &Model, q: &[f32], got: &[omen::Hit], want: &Ranked) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    let qn = model.vector(q).expect("the model accepted this query");
    let mut seen = HashSet::new();
    for (i, ((gid, gd), (_, wd, ws))) in got.iter().zip(want).enumerate() {
        assert!(
            close(*gd, *wd, *ws),
            "rank {i}: {gd} vs {wd}: {got:?} vs {want:?}"
        );
        let v = model
            .map
            .get(&**gid)
            .unwrap_or_else(|| panic!("rank {i}: {gid:?} is not live"));
        let (d, s) = distance(model.metric, &qn, v);
        assert!(close(*gd, d, s), "rank {i}: {gid:?} at {gd}, model {d}");
        assert!(seen.insert(gid.clone()), "{gid:?} returned twice: {got:?}");
    }
}

fn same_outcome<T: std::fmt::Debug, U: std::fmt::Debug>(
    op: &Op,
    got: &omen::Result<T>,
    want: &Result<U, ErrKind>,
) {
    match (got, want) {
        (Ok(_), Ok(_)) => {}
        (Err(g), Err(w)) => assert_eq!(&kind(g), w, "{op:?}"),
        _ => panic!("{op:?}: collection {got:?}, model {want:?}"),
    }
}

fn run(input: Input) {
    let Input { dim, metric, ops } = input;
    let c: Collection = CollectionConfig::new(dim, metric)
        .build()
        .expect("a valid config");
    let mut m = Model {
        dim,
        metric,
        map: BTreeMap::new(),
    };
    let params = SearchParams::default();
    for op in &ops {
        match op {
            Op::Insert(id, v) => {
                let v = v.get(dim);
                same_outcome(op, &c.insert(&id.0, &v), &m.insert(&id.0, &v));
            }
            Op::InsertBatch(rows, shape) => {
                let rows = &rows[..rows.len().min(MAX_BATCH)];
                let mut ids: Vec<String> = rows.iter().map(|r| r.0 .0.clone()).collect();
                let flat: Vec<f32> = rows.iter().flat_map(|r| r.1.get(dim)).collect();
                // Now and then one id too many or too few.
                match shape {
                    0 => ids.push("c".into()),
                    1 => {
                        ids.pop();
                    }
                    _ => {}
                }
                same_outcome(
                    op,
                    &c.insert_batch(&ids, &flat),
                    &m.insert_batch(&ids, &flat),
                );
            }
            Op::Upsert(id, v) => {
                let v = v.get(dim);
                same_outcome(op, &c.upsert(&id.0, &v), &m.upsert(&id.0, &v));
            }
            Op::Delete(id) => same_outcome(op, &c.delete(&id.0), &m.delete(&id.0)),
            Op::Get(id) => {
                let (got, want) = (c.get(&id.0), m.map.get(&id.0).cloned());
                // Bitwise: the collection stores exactly what the model computed.
                let bits = |v: &Option<Vec<f32>>| {
                    v.as_ref()
                        .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
                };
                assert_eq!(bits(&got), bits(&want), "get {:?}", id.0);
                assert_eq!(c.contains(&id.0), m.map.contains_key(&id.0));
            }
            Op::Search(q, k) => {
                let (q, k) = (q.get(dim), k_of(*k));
                let got = c.search(&q, k);
                let want = m.search(&q, k, &|_| true);
                same_outcome(op, &got, &want);
                if let (Ok(g), Ok(w)) = (&got, &want) {
                    same_hits(&m, &q, g, w);
                }
            }
            Op::SearchFiltered(q, k, first) => {
                let (q, k) = (q.get(dim), k_of(*k));
                let first = ['a', 'b', 'c'][usize::from(*first % 3)];
                let allow = |id: &str| !id.starts_with(first);
                let got = c.search_filtered(&q, k, &params, allow);
                let want = m.search(&q, k, &allow);
                same_outcome(op, &got, &want);
                if let (Ok(g), Ok(w)) = (&got, &want) {
                    same_hits(&m, &q, g, w);
                }
            }
            Op::SearchBatch(qs, k) => {
                let qs: Vec<f32> = qs.iter().take(4).flat_map(|q| q.get(dim)).collect();
                let k = k_of(*k);
                let got = c.search_batch_with(&qs, k, &params);
                let want = m.search_batch(&qs, k);
                same_outcome(op, &got, &want);
                if let (Ok(g), Ok(w)) = (&got, &want) {
                    assert_eq!(g.len(), w.len());
                    for ((q, g), w) in qs.chunks_exact(dim).zip(g).zip(w) {
                        same_hits(&m, q, g, w);
                    }
                }
            }
        }
        assert_eq!(c.len(), m.map.len(), "len after {op:?}");
    }
    let st = c.stats();
    assert_eq!(st.len, m.map.len());
    assert_eq!(st.tombstones, st.storage_slots - st.len);
}

fuzz_target!(|input: Input| run(input));
