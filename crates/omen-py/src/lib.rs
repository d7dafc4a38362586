//! `omen._omen`: the extension module behind the `omen` Python package.
//!
//! Two classes (and `omen.Filter`, a row filter for `Index` searches):
//! - [`PyCollection`] (`omen.Collection`): a durable collection in a directory
//!   (write-ahead log, checkpoints, string ids), the engine a user runs;
//! - [`PyIndex`] (`omen.Index`): an index over in-memory storage with integer
//!   labels (the row numbers, in insertion order), for benchmarks beside hnswlib
//!   and FAISS; its searches take a row filter (`filter=`: an array of one
//!   bool or uint8 per row, or a [`PyFilter`] (`omen.Filter`) built from one),
//!   a bitset that the engine's `SlotFilter` reads.
//!
//! Every input is checked by the engine before anything changes; its errors
//! become `ValueError` (bad input), `KeyError` (unknown id), `OSError` (I/O,
//! lock) or `omen.CorruptionError` (a damaged file: the message names the file
//! and byte offset). Arrays of any real dtype are converted to float32; other
//! dtypes are a `TypeError`. The GIL is released while the engine builds,
//! writes or searches.

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use omen::{registry, Collection, CollectionConfig, Durability, DurableOptions, StorageKind};
use omen_core::validate::{check_finite, normalize_into};
use omen_core::{
    Error, Metric, Neighbor, ParamValue, Params, SearchParams, SearchRequest, SearchScratch,
    SlotBitmap, SlotFilter, VectorIndex, VectorStorage,
};
use pyo3::create_exception;
use pyo3::exceptions::{PyKeyError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyRange, PyString, PyTuple};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

create_exception!(
    omen,
    CorruptionError,
    PyOSError,
    "A damaged file: the message names the file and the byte offset."
);

/// The engine's error as a Python exception, with the engine's message.
fn py_err(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::Corruption { .. } => CorruptionError::new_err(msg),
        Error::Io { .. } | Error::Locked { .. } | Error::Poisoned { .. } => PyOSError::new_err(msg),
        Error::UnknownId { .. } => PyKeyError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

fn closed() -> PyErr {
    PyValueError::new_err("the collection is closed")
}

// ---------------------------------------------------------------------------
// Arrays in

/// A C-contiguous float32 view of `obj`: the array itself when it already is
/// one, otherwise numpy's conversion of it (any real dtype; `TypeError` for
/// complex, object, string, bool or other dtypes).
fn f32_array<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    if let Ok(a) = obj.cast::<PyArrayDyn<f32>>() {
        if a.is_c_contiguous() {
            return Ok(a.clone());
        }
    }
    let py = obj.py();
    let np = py.import("numpy")?;
    let arr = np.call_method1("asarray", (obj,))?;
    let dtype = arr.getattr("dtype")?;
    let kind: String = dtype.getattr("kind")?.extract()?;
    if !matches!(kind.as_str(), "f" | "i" | "u") {
        return Err(PyTypeError::new_err(format!(
            "{what}: expected an array of real numbers, got dtype {}",
            dtype.str()?
        )));
    }
    let kwargs = PyDict::new(py);
    kwargs.set_item("dtype", np.getattr("float32")?)?;
    let conv = np.call_method("ascontiguousarray", (arr,), Some(&kwargs))?;
    Ok(conv.cast_into::<PyArrayDyn<f32>>()?)
}

/// `obj` as rows of width `dim`: a 2-D array (n, dim), or a 1-D array of `dim`
/// values as one row. Returns the array (kept alive by the caller) and `n`.
fn rows_of<'py>(
    obj: &Bound<'py, PyAny>,
    dim: usize,
    what: &str,
) -> PyResult<(Bound<'py, PyArrayDyn<f32>>, usize)> {
    let a = f32_array(obj, what)?;
    let shape = a.shape().to_vec();
    let (n, width) = match shape.as_slice() {
        [w] => (1, *w),
        [n, w] => (*n, *w),
        _ => {
            return Err(PyValueError::new_err(format!(
                "{what}: expected a 2-D array (n, {dim}) or a 1-D array of {dim} values, got shape {shape:?}"
            )))
        }
    };
    if width != dim {
        return Err(PyValueError::new_err(format!(
            "{what}: {}",
            Error::DimensionMismatch {
                expected: dim,
                got: width
            }
        )));
    }
    Ok((a, n))
}

/// One query: a 1-D array of `dim` values or a (1, dim) array.
fn one_query<'py>(obj: &Bound<'py, PyAny>, dim: usize) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let (a, n) = rows_of(obj, dim, "query")?;
    if n != 1 {
        return Err(PyValueError::new_err(format!(
            "query: expected one vector, got {n} rows (use search_batch)"
        )));
    }
    Ok(a)
}

fn slice<'a>(a: &'a numpy::PyReadonlyArrayDyn<'_, f32>) -> PyResult<&'a [f32]> {
    a.as_slice()
        .map_err(|e| PyValueError::new_err(format!("array is not contiguous: {e}")))
}

fn check_k(k: usize) -> PyResult<()> {
    if k == 0 {
        return Err(py_err(Error::invalid_param("k", "must be at least 1")));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Row filters

/// Which rows a filtered search may return: one bit per label, copied out of
/// the caller's mask while the GIL is held, so the search reads its own copy.
/// A label past the mask (a row added by another thread after the mask was
/// checked) is not allowed.
struct RowMask {
    bits: SlotBitmap,
    len: usize,
}

impl RowMask {
    /// The mask of `bytes`: row i allowed iff `bytes[i] != 0`. Eight bytes at a
    /// time (about 0.2 ms per million rows): each byte's "nonzero" lands in
    /// its top bit, and one multiply gathers the eight top bits into a byte.
    fn pack(bytes: &[u8]) -> RowMask {
        const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
        const ONES: u64 = 0x0101_0101_0101_0101;
        // Bit 8j of the masked value times this lands on bit 56 + j, with no
        // two terms on one bit (so no carries).
        const GATHER: u64 = 0x0102_0408_1020_4080;
        let word = |c: &[u8]| {
            let mut w = 0u64;
            for (i, e) in c.chunks_exact(8).enumerate() {
                let mut le = [0u8; 8];
                le.copy_from_slice(e);
                let x = u64::from_le_bytes(le);
                let top = (((x & LOW7) + LOW7) | x) >> 7 & ONES;
                w |= (top.wrapping_mul(GATHER) >> 56) << (8 * i);
            }
            w
        };
        let mut chunks = bytes.chunks_exact(64);
        let mut words: Vec<u64> = chunks.by_ref().map(word).collect();
        if !chunks.remainder().is_empty() {
            let mut last = [0u8; 64];
            last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
            words.push(word(&last));
        }
        RowMask {
            bits: SlotBitmap::from_words(words),
            len: bytes.len(),
        }
    }

    fn allowed(&self) -> usize {
        self.bits.count()
    }
}

const FILTER_EXPECTED: &str =
    "filter: expected an omen.Filter or a 1-D numpy array of dtype bool or uint8 with one entry per row";

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

/// A 1-D numpy array of dtype bool or uint8 as a [`RowMask`] (any length).
/// Another object or dtype is a `TypeError`, another shape a `ValueError`.
/// Strided arrays are read as they are.
fn mask_of_array(obj: &Bound<'_, PyAny>) -> PyResult<RowMask> {
    let Ok(arr) = obj.cast::<numpy::PyUntypedArray>() else {
        return Err(PyTypeError::new_err(format!(
            "{FILTER_EXPECTED}, got {}",
            type_name(obj)
        )));
    };
    let dtype = arr.dtype();
    let kind: String = dtype.getattr("kind")?.extract()?;
    let itemsize: usize = dtype.getattr("itemsize")?.extract()?;
    if !(kind == "b" || (kind == "u" && itemsize == 1)) {
        return Err(PyTypeError::new_err(format!(
            "{FILTER_EXPECTED}, got dtype {}",
            dtype.str()?
        )));
    }
    let shape = arr.shape().to_vec();
    if shape.len() != 1 {
        return Err(PyValueError::new_err(format!(
            "{FILTER_EXPECTED}, got shape {shape:?}"
        )));
    }
    // A bool array is read through a uint8 view: its bytes are taken as they
    // are (any nonzero byte allows the row), never assumed to be 0 or 1.
    let bytes = if kind == "b" {
        arr.call_method1("view", ("uint8",))?
    } else {
        arr.clone().into_any()
    };
    let bytes = bytes.cast_into::<PyArray1<u8>>()?;
    let ro = bytes.readonly();
    Ok(match ro.as_slice() {
        Ok(s) => RowMask::pack(s),
        Err(_) => RowMask::pack(&ro.as_array().iter().copied().collect::<Vec<u8>>()),
    })
}

/// The `filter` keyword of `Index.search` / `search_batch`: `None`, an
/// [`PyFilter`] (its mask, shared), or an array as [`mask_of_array`] takes
/// (copied now). Either must have one entry per row of the index (`rows`).
fn row_mask(obj: Option<&Bound<'_, PyAny>>, rows: usize) -> PyResult<Option<Arc<RowMask>>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    let mask = match obj.cast::<PyFilter>() {
        Ok(f) => Arc::clone(&f.get().mask),
        Err(_) => Arc::new(mask_of_array(obj)?),
    };
    if mask.len != rows {
        return Err(PyValueError::new_err(format!(
            "filter: {} entries for an index of {rows} rows (one entry per row is needed)",
            mask.len
        )));
    }
    Ok(Some(mask))
}

/// The filter as the engine takes it.
/// (A [`SlotBitmap`]: a selective filter's exact scan visits only its set bits.)
fn slot_filter(mask: &Option<Arc<RowMask>>) -> Option<&dyn SlotFilter> {
    mask.as_deref().map(|m| &m.bits as &dyn SlotFilter)
}

/// Filter(mask): a row filter built once from a 1-D numpy array of dtype bool
/// or uint8 (row i allowed iff mask[i] != 0) and reused by many searches
/// (`Index.search(..., filter=f)`): the array is copied into a bitset here, so
/// a search given a Filter copies nothing, where one given an array copies it
/// each call (about 0.2 ms per million rows). Later changes to the array do
/// not reach the Filter.
#[pyclass(name = "Filter", module = "omen", frozen)]
struct PyFilter {
    mask: Arc<RowMask>,
    allowed: usize,
}

#[pymethods]
impl PyFilter {
    #[new]
    fn new(mask: &Bound<'_, PyAny>) -> PyResult<Self> {
        let mask = mask_of_array(mask)?;
        let allowed = mask.allowed();
        Ok(PyFilter {
            mask: Arc::new(mask),
            allowed,
        })
    }

    /// Rows the filter allows.
    #[getter]
    fn allowed(&self) -> usize {
        self.allowed
    }

    /// Rows the filter covers (allowed or not).
    fn __len__(&self) -> usize {
        self.mask.len
    }

    fn __repr__(&self) -> String {
        format!(
            "omen.Filter(len={}, allowed={})",
            self.mask.len, self.allowed
        )
    }
}

// ---------------------------------------------------------------------------
// Parameters (keyword arguments)

/// Keyword arguments as parameters for the registry: ints, floats and bools
/// (a `TypeError` for anything else). The index kind checks the keys and values.
fn kwargs_params(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Params> {
    let mut p = Params::new();
    if let Some(kw) = kwargs {
        for (k, v) in kw.iter() {
            let name: String = k.extract()?;
            let value =
                if v.is_instance_of::<pyo3::types::PyBool>() {
                    ParamValue::Bool(v.extract()?)
                } else if v.is_instance_of::<pyo3::types::PyInt>() {
                    ParamValue::Int(v.extract::<i128>().map_err(|_| {
                        PyValueError::new_err(format!("{name}: integer out of range"))
                    })?)
                } else if v.is_instance_of::<pyo3::types::PyFloat>() {
                    ParamValue::Float(v.extract()?)
                } else {
                    return Err(PyTypeError::new_err(format!(
                        "{name}: expected an int, float or bool, got {}",
                        v.repr().map(|r| r.to_string()).unwrap_or_default()
                    )));
                };
            p.set(&name, value);
        }
    }
    Ok(p)
}

/// Parameters as a Python dict (ints, floats, bools, strings).
fn params_dict<'py>(py: Python<'py>, p: &Params) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in p.iter() {
        match v {
            ParamValue::Int(i) => d.set_item(k, *i)?,
            ParamValue::Float(f) => d.set_item(k, *f)?,
            ParamValue::Bool(b) => d.set_item(k, *b)?,
            other => d.set_item(k, other.to_string())?,
        }
    }
    Ok(d)
}

/// The index spec a kind name and keyword arguments describe (the kind's
/// defaults, as `omen db create`'s).
fn index_spec(kind: &str, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<omen::IndexSpec> {
    registry::spec(kind, &kwargs_params(kwargs)?).map_err(py_err)
}

/// Search keyword arguments for a collection, checked by its index.
fn search_params_for(c: &Collection, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<SearchParams> {
    let p = SearchParams::from_knobs(kwargs_params(kwargs)?);
    c.check_search_params(&p).map_err(py_err)?;
    Ok(p)
}

/// Search keyword arguments, checked by `index` (a key it does not take is a
/// `ValueError` naming those it does).
fn search_params(
    index: &dyn VectorIndex,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<SearchParams> {
    let p = SearchParams::from_knobs(kwargs_params(kwargs)?);
    index.check_search_params(&p).map_err(py_err)?;
    Ok(p)
}

fn parse_metric(metric: &str) -> PyResult<Metric> {
    metric.parse::<Metric>().map_err(py_err)
}

// ---------------------------------------------------------------------------
// Thread pools

/// A rayon pool of `threads` threads (kept for reuse), or `None` for rayon's
/// global pool (one thread per core).
fn pool(threads: Option<usize>) -> PyResult<Option<Arc<rayon::ThreadPool>>> {
    let Some(n) = threads else { return Ok(None) };
    if n == 0 {
        return Err(py_err(Error::invalid_param(
            "threads",
            "must be at least 1",
        )));
    }
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(p) = pools.get(&n) {
        return Ok(Some(Arc::clone(p)));
    }
    let p = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| py_err(Error::invalid_param("threads", e.to_string())))?,
    );
    pools.insert(n, Arc::clone(&p));
    Ok(Some(p))
}

fn run_in<T: Send>(pool: Option<&rayon::ThreadPool>, f: impl FnOnce() -> T + Send) -> T {
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}

// ---------------------------------------------------------------------------
// omen.Index

/// Per-search working memory, pooled.
#[derive(Default)]
struct Scratch {
    scratch: SearchScratch,
    neighbors: Vec<Neighbor>,
    query: Vec<f32>,
}

/// An index over in-memory storage with integer labels: `add` appends rows,
/// which get the next labels in order (0, 1, 2, ... over every row ever added;
/// a label is never reused, `remove` included). For benchmarks and
/// experiments: nothing is written to disk (use `Collection` for that).
#[pyclass(name = "Index", module = "omen", frozen)]
struct PyIndex {
    kind: String,
    dim: usize,
    metric: Metric,
    storage: omen_storage::MemoryStorage,
    index: Box<dyn VectorIndex>,
    /// Serialises writers (append + index add) so labels stay contiguous.
    writer: Mutex<()>,
    scratch: Mutex<Vec<Scratch>>,
}

impl PyIndex {
    /// Checks `rows` (n × dim, finite) and returns what to store: the rows, or
    /// their normalised copy under cosine.
    fn prepare<'a>(&self, rows: &'a [f32], buf: &'a mut Vec<f32>) -> Result<&'a [f32], Error> {
        let dim = self.dim;
        if self.metric.normalizes() {
            buf.clear();
            buf.reserve(rows.len());
            let mut one = Vec::with_capacity(dim);
            for (i, r) in rows.chunks_exact(dim).enumerate() {
                check_finite(r, i)?;
                normalize_into(r, &mut one, i)?;
                buf.extend_from_slice(&one);
            }
            Ok(buf)
        } else {
            for (i, r) in rows.chunks_exact(dim).enumerate() {
                check_finite(r, i)?;
                check_norm(r, i)?;
            }
            Ok(rows)
        }
    }

    fn search_one(
        &self,
        q: &[f32],
        k: usize,
        params: &SearchParams,
        filter: Option<&dyn SlotFilter>,
    ) -> Result<Vec<Neighbor>, Error> {
        let mut s = self
            .scratch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default();
        let r = (|| {
            let Scratch {
                scratch,
                neighbors,
                query,
            } = &mut s;
            let q = if self.metric.normalizes() {
                check_finite(q, 0)?;
                normalize_into(q, query, 0)?;
                &query[..]
            } else {
                check_finite(q, 0)?;
                q
            };
            let mut req = SearchRequest::new(q, k, params);
            req.filter = filter;
            self.index.search(&self.storage, &req, scratch, neighbors)?;
            Ok(neighbors.clone())
        })();
        let mut pool = self.scratch.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < 64 {
            pool.push(s);
        }
        r
    }
}

/// Under L2 and inner product, a vector whose squared norm overflows f32 would
/// make distances infinite: refused, as the collection does.
fn check_norm(v: &[f32], row: usize) -> Result<(), Error> {
    let sq: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    if sq > omen::MAX_SQUARED_NORM {
        return Err(Error::invalid_param(
            "vector",
            format!(
                "row {row}: squared norm {sq:e} exceeds {:e}; distances would overflow f32",
                omen::MAX_SQUARED_NORM
            ),
        ));
    }
    Ok(())
}

/// Labels (int64) and distances (float32) of one query.
type Answers1<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<f32>>);
/// Labels and distances of many queries, one row each.
type Answers2<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>);

fn labels_and_distances<'py>(
    py: Python<'py>,
    results: &[Vec<Neighbor>],
    k: usize,
) -> PyResult<Answers2<'py>> {
    let nq = results.len();
    let mut labels = vec![-1i64; nq * k];
    let mut dists = vec![f32::INFINITY; nq * k];
    for (i, r) in results.iter().enumerate() {
        for (j, n) in r.iter().take(k).enumerate() {
            labels[i * k + j] = i64::from(n.slot);
            dists[i * k + j] = n.distance;
        }
    }
    let shape_err = |e: numpy::ndarray::ShapeError| PyValueError::new_err(e.to_string());
    let l = Array2::from_shape_vec((nq, k), labels).map_err(shape_err)?;
    let d = Array2::from_shape_vec((nq, k), dists).map_err(shape_err)?;
    Ok((l.into_pyarray(py), d.into_pyarray(py)))
}

#[pymethods]
impl PyIndex {
    /// Index(kind, dim, metric="l2", **params)
    ///
    /// kind: a registered index kind ("flat", "hnsw", "ivfpq", "qg", ...); params:
    /// its build parameters (`omen.kinds()` lists each kind's keys).
    /// metric: "l2" (squared Euclidean), "ip" (distance 1 - dot) or "cosine".
    #[new]
    #[pyo3(signature = (kind, dim, metric = "l2", **params))]
    fn new(
        kind: &str,
        dim: usize,
        metric: &str,
        params: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let metric = parse_metric(metric)?;
        if dim == 0 {
            return Err(py_err(Error::invalid_param("dim", "must be at least 1")));
        }
        // The index computes the metric itself (queries and rows are not
        // normalised here), so cosine stays cosine.
        let spec = index_spec(kind, params)?;
        let index = spec
            .kind()
            .create(dim, metric, spec.params())
            .map_err(py_err)?;
        Ok(PyIndex {
            kind: kind.to_string(),
            dim,
            metric,
            storage: omen_storage::MemoryStorage::new(dim).map_err(py_err)?,
            index,
            writer: Mutex::new(()),
            scratch: Mutex::new(Vec::new()),
        })
    }

    /// The index kind ("flat", "hnsw", "ivfpq", "qg").
    #[getter]
    fn kind(&self) -> &str {
        &self.kind
    }

    /// Vector width.
    #[getter]
    fn dim(&self) -> usize {
        self.dim
    }

    /// The metric ("l2", "ip", "cosine").
    #[getter]
    fn metric(&self) -> &'static str {
        self.metric.name()
    }

    /// Whether the index is ready to encode (IVF-PQ: trained; others: always).
    #[getter]
    fn is_trained(&self) -> bool {
        self.index.is_trained()
    }

    fn __len__(&self) -> usize {
        self.index.as_ref().len()
    }

    fn __repr__(&self) -> String {
        format!(
            "omen.Index(kind={:?}, dim={}, metric={:?}, len={})",
            self.kind,
            self.dim,
            self.metric.name(),
            self.index.as_ref().len()
        )
    }

    /// train(sample): trains an IVF-PQ index's quantizers on the rows of
    /// `sample` (otherwise it trains itself once `train_size` rows were added).
    /// Other kinds need no training: ValueError.
    fn train(&self, py: Python<'_>, sample: &Bound<'_, PyAny>) -> PyResult<()> {
        let (a, _) = rows_of(sample, self.dim, "sample")?;
        let ro = a.readonly();
        let rows = slice(&ro)?;
        let mut buf = Vec::new();
        py.detach(|| {
            let rows = self.prepare(rows, &mut buf)?;
            let _w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            self.index.train(&self.storage, rows)
        })
        .map_err(py_err)
    }

    /// add(data, threads=None) -> range: appends the rows of `data` (n × dim)
    /// and indexes them on `threads` threads (default: every core). Returns
    /// their labels. The whole array is checked first; on error nothing changes.
    #[pyo3(signature = (data, threads = None))]
    fn add<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyRange>> {
        let (a, n) = rows_of(data, self.dim, "data")?;
        let ro = a.readonly();
        let rows = slice(&ro)?;
        let pool = pool(threads)?;
        let mut buf = Vec::new();
        let range = py
            .detach(|| {
                let rows = self.prepare(rows, &mut buf)?;
                let _w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
                let slots = self.storage.append_batch(rows)?;
                run_in(pool.as_deref(), || {
                    self.index.as_ref().add(&self.storage, slots.clone())
                })?;
                Ok::<_, Error>(slots)
            })
            .map_err(py_err)?;
        debug_assert_eq!(range.len(), n);
        PyRange::new(py, range.start as isize, range.end as isize)
    }

    /// remove(labels): removes the rows of `labels` (a sequence or 1-D integer
    /// array of labels `add` returned) from the index: they are never returned
    /// again; their labels are not reused. Every label is checked first: one
    /// that was never added, was removed already, or is given twice raises
    /// KeyError naming it, and nothing changes.
    fn remove(&self, py: Python<'_>, labels: Vec<i64>) -> PyResult<()> {
        py.detach(|| {
            let _w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            let index = self.index.as_ref();
            let mut seen = std::collections::HashSet::with_capacity(labels.len());
            let mut slots = Vec::with_capacity(labels.len());
            for &label in &labels {
                let slot = u32::try_from(label)
                    .ok()
                    .filter(|&s| index.contains(s) && seen.insert(s))
                    .ok_or_else(|| {
                        format!("label {label} is not in the index (never added, removed already, or given twice)")
                    })?;
                slots.push(slot);
            }
            for slot in slots {
                index.remove(slot).map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        })
        .map_err(PyKeyError::new_err)
    }

    /// search(query, k=10, *, filter=None, **params) -> (labels, distances): the
    /// k nearest rows to one query (1-D, dim values), closest first; labels are
    /// int64 (-1 past the rows there are), distances float32. params: hnsw ef;
    /// ivfpq nprobe, rerank_factor; qg ef, rerank.
    ///
    /// filter: None, an omen.Filter, or a 1-D numpy array of dtype bool or
    /// uint8, one entry per label ever added (len(index) until a remove);
    /// label i may be returned iff filter[i] != 0. Fewer than k allowed rows
    /// give fewer hits, padded with -1 / inf.
    /// Another object or dtype (TypeError), shape or length (ValueError) is
    /// refused before anything is searched. An array is copied into a bitset
    /// each call; an omen.Filter was copied once.
    #[pyo3(signature = (query, k = 10, *, filter = None, **params))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        query: &Bound<'py, PyAny>,
        k: usize,
        filter: Option<&Bound<'py, PyAny>>,
        params: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Answers1<'py>> {
        check_k(k)?;
        let p = search_params(self.index.as_ref(), params)?;
        let a = one_query(query, self.dim)?;
        let mask = row_mask(filter, self.storage.len())?;
        let ro = a.readonly();
        let q = slice(&ro)?;
        let hits = py
            .detach(|| self.search_one(q, k, &p, slot_filter(&mask)))
            .map_err(py_err)?;
        let mut labels = vec![-1i64; k];
        let mut dists = vec![f32::INFINITY; k];
        for (j, n) in hits.iter().take(k).enumerate() {
            labels[j] = i64::from(n.slot);
            dists[j] = n.distance;
        }
        Ok((
            PyArray1::from_vec(py, labels),
            PyArray1::from_vec(py, dists),
        ))
    }

    /// search_batch(queries, k=10, threads=None, *, filter=None, **params) ->
    /// (labels, distances): one row of each (nq × k) per query, through the
    /// index's batch call on `threads` threads (default: every core). filter:
    /// as for search, applied to every query.
    #[pyo3(signature = (queries, k = 10, threads = None, *, filter = None, **params))]
    fn search_batch<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
        k: usize,
        threads: Option<usize>,
        filter: Option<&Bound<'py, PyAny>>,
        params: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Answers2<'py>> {
        check_k(k)?;
        let p = search_params(self.index.as_ref(), params)?;
        let (a, _) = rows_of(queries, self.dim, "queries")?;
        let mask = row_mask(filter, self.storage.len())?;
        let ro = a.readonly();
        let qs = slice(&ro)?;
        let pool = pool(threads)?;
        let mut buf = Vec::new();
        let results = py
            .detach(|| {
                let qs = if self.metric.normalizes() {
                    self.prepare(qs, &mut buf)?
                } else {
                    for (i, r) in qs.chunks_exact(self.dim).enumerate() {
                        check_finite(r, i)?;
                    }
                    qs
                };
                let mut out = Vec::new();
                run_in(pool.as_deref(), || {
                    self.index
                        .search_batch(&self.storage, qs, k, &p, slot_filter(&mask), &mut out)
                })?;
                Ok::<_, Error>(out)
            })
            .map_err(py_err)?;
        labels_and_distances(py, &results, k)
    }

    /// Bytes held by the index's own structures (graph links, codes, lists),
    /// not the stored vectors.
    fn memory_bytes(&self) -> usize {
        self.index.as_ref().memory_bytes()
    }

    /// Bytes held by the stored vectors.
    fn storage_bytes(&self) -> usize {
        self.storage.memory_bytes()
    }
}

// ---------------------------------------------------------------------------
// omen.Collection

fn durability(name: &str) -> PyResult<Durability> {
    match name {
        "group" => Ok(DurableOptions::default().durability),
        "per-write" | "per_write" => Ok(Durability::PerWrite),
        "none" => Ok(Durability::None),
        other => Err(PyValueError::new_err(format!(
            "unknown durability {other:?}; valid: group, per-write, none"
        ))),
    }
}

/// A durable collection in a directory: string ids, a write-ahead log and
/// checkpoints; every acknowledged write survives a crash (under the
/// "group" and "per-write" durability modes).
#[pyclass(name = "Collection", module = "omen", frozen)]
struct PyCollection {
    inner: RwLock<Option<Collection>>,
    dir: PathBuf,
}

impl PyCollection {
    fn with<T>(&self, f: impl FnOnce(&Collection) -> PyResult<T>) -> PyResult<T> {
        let g = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        match g.as_ref() {
            Some(c) => f(c),
            None => Err(closed()),
        }
    }

    fn wrap(c: Collection, dir: PathBuf) -> Self {
        PyCollection {
            inner: RwLock::new(Some(c)),
            dir,
        }
    }
}

fn ids_of(ids: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if ids.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "ids: expected a sequence of str, got one str",
        ));
    }
    let mut out = Vec::new();
    for item in ids.try_iter()? {
        let item = item?;
        let s: String = item.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "ids: expected str, got {}",
                item.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        out.push(s);
    }
    Ok(out)
}

fn hits_list<'py>(py: Python<'py>, hits: &[omen::Hit]) -> PyResult<Bound<'py, PyList>> {
    let items: Vec<Bound<'py, PyTuple>> = hits
        .iter()
        .map(|(id, d)| {
            PyTuple::new(
                py,
                [
                    PyString::new(py, id).into_any(),
                    d.into_pyobject(py)?.into_any(),
                ],
            )
        })
        .collect::<PyResult<_>>()?;
    PyList::new(py, items)
}

#[pymethods]
impl PyCollection {
    /// Collection.create(dir, dim, metric="l2", index="flat", storage="memory",
    /// durability="group", **params): a new, empty durable collection in `dir`
    /// (created if missing; refused if it already holds one). index: a
    /// registered kind (default flat); params: its build parameters
    /// (`omen.kinds()` lists each kind's keys).
    #[staticmethod]
    #[pyo3(signature = (dir, dim, metric = "l2", index = None, storage = None, durability = "group", **params))]
    #[allow(clippy::too_many_arguments)]
    fn create(
        py: Python<'_>,
        dir: PathBuf,
        dim: usize,
        metric: &str,
        index: Option<&str>,
        storage: Option<&str>,
        durability: &str,
        params: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let metric = parse_metric(metric)?;
        let kind = index_spec(index.unwrap_or(registry::default_kind().name()), params)?;
        let storage = match storage {
            Some(name) => StorageKind::from_name(name).map_err(py_err)?,
            None => StorageKind::default(),
        };
        let options = DurableOptions::default().durability(self::durability(durability)?);
        let config = CollectionConfig::new(dim, metric)
            .index(kind)
            .storage(storage);
        // An in-memory twin checks every setting before the directory is touched.
        config
            .clone()
            .storage(StorageKind::Memory)
            .build()
            .map_err(py_err)?;
        let c = py
            .detach(|| Collection::create(&dir, &config, options))
            .map_err(py_err)?;
        Ok(Self::wrap(c, dir))
    }

    /// Collection.open(dir, durability="group"): opens the collection in `dir`
    /// (loads the last checkpoint and replays the log). OSError if another
    /// process holds it; omen.CorruptionError for a damaged file.
    #[staticmethod]
    #[pyo3(signature = (dir, durability = "group"))]
    fn open(py: Python<'_>, dir: PathBuf, durability: &str) -> PyResult<Self> {
        let options = DurableOptions::default().durability(self::durability(durability)?);
        let c = py
            .detach(|| Collection::open(&dir, options))
            .map_err(py_err)?;
        Ok(Self::wrap(c, dir))
    }

    /// The collection directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.dir.clone()
    }

    /// Vector width.
    #[getter]
    fn dim(&self) -> PyResult<usize> {
        self.with(|c| Ok(c.dim()))
    }

    /// The metric ("l2", "ip", "cosine").
    #[getter]
    fn metric(&self) -> PyResult<&'static str> {
        self.with(|c| Ok(c.metric().name()))
    }

    /// The index kind ("flat", "hnsw", "ivfpq", "qg").
    #[getter]
    fn index(&self) -> PyResult<&'static str> {
        self.with(|c| Ok(c.index_name()))
    }

    /// Whether the collection was closed.
    #[getter]
    fn closed(&self) -> bool {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    fn __len__(&self) -> PyResult<usize> {
        self.with(|c| Ok(c.len()))
    }

    fn __contains__(&self, id: &str) -> PyResult<bool> {
        self.with(|c| Ok(c.contains(id)))
    }

    fn __repr__(&self) -> String {
        match self
            .inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            Some(c) => format!(
                "omen.Collection({:?}, dim={}, metric={:?}, index={:?}, len={})",
                self.dir.display().to_string(),
                c.dim(),
                c.metric().name(),
                c.index_name(),
                c.len()
            ),
            None => format!(
                "omen.Collection({:?}, closed)",
                self.dir.display().to_string()
            ),
        }
    }

    /// insert(id, vector): adds one vector under a new id (ValueError if the
    /// id is live).
    fn insert(&self, py: Python<'_>, id: &str, vector: &Bound<'_, PyAny>) -> PyResult<()> {
        self.with(|c| {
            let a = one_query(vector, c.dim())?;
            let ro = a.readonly();
            let v = slice(&ro)?;
            py.detach(|| c.insert(id, v)).map_err(py_err)
        })
    }

    /// insert_batch(ids, vectors): adds len(ids) vectors (n × dim) as one log
    /// record; the whole batch is checked first and refused whole.
    fn insert_batch(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        vectors: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let ids = ids_of(ids)?;
        self.with(|c| {
            let (a, n) = rows_of(vectors, c.dim(), "vectors")?;
            if n != ids.len() {
                return Err(PyValueError::new_err(format!(
                    "{} ids for {n} rows",
                    ids.len()
                )));
            }
            let ro = a.readonly();
            let rows = slice(&ro)?;
            py.detach(|| c.insert_batch(&ids, rows)).map_err(py_err)
        })
    }

    /// upsert(id, vector): inserts, or replaces the vector of a live id.
    fn upsert(&self, py: Python<'_>, id: &str, vector: &Bound<'_, PyAny>) -> PyResult<()> {
        self.with(|c| {
            let a = one_query(vector, c.dim())?;
            let ro = a.readonly();
            let v = slice(&ro)?;
            py.detach(|| c.upsert(id, v)).map_err(py_err)
        })
    }

    /// delete(id): removes a live id (KeyError if it is not live).
    fn delete(&self, py: Python<'_>, id: &str) -> PyResult<()> {
        self.with(|c| py.detach(|| c.delete(id)).map_err(py_err))
    }

    /// get(id) -> numpy.ndarray | None: the stored vector (normalised under
    /// cosine), or None.
    fn get<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Option<Bound<'py, PyArray1<f32>>>> {
        self.with(|c| Ok(c.get(id).map(|v| PyArray1::from_vec(py, v))))
    }

    /// search(query, k=10, **params) -> list[(id, distance)]: the k nearest live
    /// ids, closest first. params: hnsw ef; ivfpq nprobe, rerank_factor; qg ef,
    /// rerank.
    #[pyo3(signature = (query, k = 10, **params))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        query: &Bound<'py, PyAny>,
        k: usize,
        params: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyList>> {
        check_k(k)?;
        self.with(|c| {
            let p = search_params_for(c, params)?;
            let a = one_query(query, c.dim())?;
            let ro = a.readonly();
            let q = slice(&ro)?;
            let hits = py.detach(|| c.search_with(q, k, &p)).map_err(py_err)?;
            hits_list(py, &hits)
        })
    }

    /// search_batch(queries, k=10, threads=None, **params) ->
    /// list[list[(id, distance)]]: one list per query row, through the batch
    /// path on `threads` threads (default: every core).
    #[pyo3(signature = (queries, k = 10, threads = None, **params))]
    fn search_batch<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
        k: usize,
        threads: Option<usize>,
        params: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyList>> {
        check_k(k)?;
        let pool = pool(threads)?;
        self.with(|c| {
            let p = search_params_for(c, params)?;
            let (a, _) = rows_of(queries, c.dim(), "queries")?;
            let ro = a.readonly();
            let qs = slice(&ro)?;
            let all = py
                .detach(|| run_in(pool.as_deref(), || c.search_batch_with(qs, k, &p)))
                .map_err(py_err)?;
            let lists: Vec<Bound<'py, PyList>> = all
                .iter()
                .map(|h| hits_list(py, h))
                .collect::<PyResult<_>>()?;
            PyList::new(py, lists)
        })
    }

    /// checkpoint() -> dict: writes a checkpoint now and drops the log it
    /// covers.
    fn checkpoint<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.with(|c| {
            let info = py.detach(|| c.checkpoint()).map_err(py_err)?;
            let d = PyDict::new(py);
            d.set_item("generation", info.gen)?;
            d.set_item("rows", info.rows)?;
            d.set_item("live", info.live)?;
            d.set_item("last_seq", info.last_seq)?;
            d.set_item("indexed", info.indexed)?;
            d.set_item("bytes_written", info.bytes_written)?;
            Ok(d)
        })
    }

    /// wait_indexed(): returns once every row written before the call is in
    /// the index (rows not yet indexed are searched exactly meanwhile).
    fn wait_indexed(&self, py: Python<'_>) -> PyResult<()> {
        self.with(|c| py.detach(|| c.wait_indexed()).map_err(py_err))
    }

    /// sync(): makes every write so far durable (under durability "none").
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        self.with(|c| py.detach(|| c.sync()).map_err(py_err))
    }

    /// stats() -> dict: sizes, memory, recovery facts and the SIMD ISA.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.with(|c| {
            let s = c.stats();
            let d = PyDict::new(py);
            d.set_item("len", s.len)?;
            d.set_item("dim", c.dim())?;
            d.set_item("metric", c.metric().name())?;
            d.set_item("index", c.index_name())?;
            d.set_item("index_params", params_dict(py, &c.index_params())?)?;
            d.set_item("storage", c.storage_name())?;
            d.set_item("storage_slots", s.storage_slots)?;
            d.set_item("tombstones", s.tombstones)?;
            d.set_item("index_memory_bytes", s.index_memory_bytes)?;
            d.set_item("storage_memory_bytes", s.storage_memory_bytes)?;
            d.set_item("id_map_memory_bytes", s.id_map_memory_bytes)?;
            d.set_item("unindexed_rows", s.unindexed_rows)?;
            d.set_item("indexing", s.indexing.label())?;
            if let Some(r) = c.recovery_info() {
                d.set_item("checkpoint_gen", r.checkpoint_gen)?;
                d.set_item("replayed_records", r.replayed_records)?;
                d.set_item("truncated_log_bytes", r.truncated_bytes)?;
            }
            d.set_item("simd_isa", c.isa().name())?;
            Ok(d)
        })
    }

    /// close(): flushes and closes; later calls raise ValueError. Closing twice
    /// is allowed.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = self
            .inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match taken {
            Some(c) => py.detach(|| c.close()).map_err(py_err),
            None => Ok(()),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }
}

/// The SIMD instruction set the distance kernels chose in this process.
#[pyfunction]
fn simd_isa() -> &'static str {
    omen::isa().name()
}

/// kinds(): the registered index kinds, each a dict with "name",
/// "description", and "build" / "search" dicts of key -> help line (the
/// keyword arguments `Index`, `Collection.create` and `search` take).
#[pyfunction]
fn kinds(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let out = PyList::empty(py);
    for kind in registry::kinds() {
        let d = PyDict::new(py);
        d.set_item("name", kind.name())?;
        d.set_item("description", kind.description())?;
        for (what, specs) in [
            ("build", kind.build_params()),
            ("search", kind.search_params()),
        ] {
            let keys = PyDict::new(py);
            for p in specs {
                keys.set_item(p.name, p.help)?;
            }
            d.set_item(what, keys)?;
        }
        out.append(d)?;
    }
    Ok(out)
}

#[pymodule]
fn _omen(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyIndex>()?;
    m.add_class::<PyCollection>()?;
    m.add_class::<PyFilter>()?;
    m.add("CorruptionError", m.py().get_type::<CorruptionError>())?;
    m.add_function(wrap_pyfunction!(simd_isa, m)?)?;
    m.add_function(wrap_pyfunction!(kinds, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
