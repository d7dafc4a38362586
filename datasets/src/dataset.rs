//! The [`Dataset`] type, format detection, and the dataset directory layout.

use crate::bigann::{ivecs_neighbors, parse_fbin, parse_groundtruth_bin, parse_u8bin};
use crate::checksum::Checksum;
use crate::groundtruth::{cached_ground_truth, complete_ground_truth, compute_ground_truth};
use crate::groundtruth::{load_cache, store_ground_truth, CacheStatus};
use crate::io::{read_file, write_file};
use crate::matrix::{GroundTruth, NeighborTable, Vectors};
use crate::npy::parse_npy;
use crate::texmex::{parse_bvecs, parse_fvecs, parse_ivecs};
use omen_core::{Error, Metric, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A file format, detected from the file name's extension.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// TEXMEX `.fvecs`.
    Fvecs,
    /// TEXMEX `.ivecs` (ground-truth ids).
    Ivecs,
    /// TEXMEX `.bvecs` (read as floats).
    Bvecs,
    /// big-ann-benchmarks `.fbin`.
    Fbin,
    /// big-ann-benchmarks `.ibin` / `.bin` ground truth (ids, optionally distances).
    Ibin,
    /// big-ann-benchmarks `.u8bin` (read as floats).
    U8bin,
    /// NumPy `.npy` (2-D float32, C order).
    Npy,
    /// ann-benchmarks `.hdf5` / `.h5`.
    Hdf5,
}

impl Format {
    /// The format of `path` by its extension (case-insensitive); `InvalidParameter`
    /// for an unknown one.
    pub fn from_path(path: &Path) -> Result<Format> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        Ok(match ext.as_str() {
            "fvecs" => Format::Fvecs,
            "ivecs" => Format::Ivecs,
            "bvecs" => Format::Bvecs,
            "fbin" => Format::Fbin,
            "ibin" | "bin" => Format::Ibin,
            "u8bin" => Format::U8bin,
            "npy" => Format::Npy,
            "hdf5" | "h5" => Format::Hdf5,
            _ => {
                return Err(Error::invalid_param(
                    "path",
                    format!(
                        "{}: unknown extension {ext:?} (fvecs, ivecs, bvecs, fbin, ibin, u8bin, npy, hdf5)",
                        path.display()
                    ),
                ))
            }
        })
    }
}

/// Parses vector bytes in `format`; returns them with the byte offset of the field
/// that declares the dimension (for dimension-mismatch errors).
fn parse_vectors(bytes: &[u8], path: &Path, format: Format) -> Result<(Vectors, u64)> {
    match format {
        Format::Fvecs => Ok((parse_fvecs(bytes, path)?, 0)),
        Format::Bvecs => Ok((parse_bvecs(bytes, path)?.to_f32(), 0)),
        Format::Fbin => Ok((parse_fbin(bytes, path)?, 4)),
        Format::U8bin => Ok((parse_u8bin(bytes, path)?.to_f32(), 4)),
        // The shape lives in the header, which starts after the length field.
        Format::Npy => Ok((parse_npy(bytes, path)?, if bytes[6] == 1 { 10 } else { 12 })),
        Format::Ivecs | Format::Ibin | Format::Hdf5 => Err(Error::invalid_param(
            "path",
            format!(
                "{}: {format:?} does not hold base or query vectors",
                path.display()
            ),
        )),
    }
}

/// Reads base or query vectors from `path`, choosing the reader by extension
/// (`.fvecs`, `.bvecs`, `.fbin`, `.u8bin`, `.npy`; byte vectors become floats).
/// An ann-benchmarks `.hdf5` file gives its `train` vectors; `FILE.hdf5:NAME`
/// names another 2-D dataset of the file (`FILE.hdf5:test` for the queries).
pub fn load_vectors(path: impl AsRef<Path>) -> Result<Vectors> {
    let path = path.as_ref();
    if let Some((file, member)) = hdf5_member(path) {
        return crate::hdf5::read_vectors(file, member);
    }
    let format = Format::from_path(path)?;
    if matches!(format, Format::Ivecs | Format::Ibin | Format::Hdf5) {
        return parse_vectors(&[], path, format).map(|(v, _)| v);
    }
    parse_vectors(&read_file(path)?, path, format).map(|(v, _)| v)
}

/// `(file, dataset)` when `path` is an HDF5 file (its `train`) or
/// `FILE.hdf5:NAME` / `FILE.h5:NAME` (dataset NAME of FILE).
fn hdf5_member(path: &Path) -> Option<(&Path, &str)> {
    if matches!(Format::from_path(path), Ok(Format::Hdf5)) {
        return Some((path, "train"));
    }
    let (file, member) = path.to_str()?.rsplit_once(':')?;
    let file = Path::new(file);
    let is_h5 = matches!(Format::from_path(file), Ok(Format::Hdf5));
    (is_h5 && !member.is_empty() && !member.contains('/')).then_some((file, member))
}

/// Reads ground-truth neighbour ids (and distances, when the file has them) by
/// extension: `.ivecs`, or `.ibin`/`.bin` in big-ann-benchmarks' layout.
pub fn load_neighbors(path: impl AsRef<Path>) -> Result<NeighborTable> {
    let path = path.as_ref();
    match Format::from_path(path)? {
        Format::Ivecs => ivecs_neighbors(&parse_ivecs(&read_file(path)?, path)?, path),
        Format::Ibin => parse_groundtruth_bin(&read_file(path)?, path),
        other => Err(Error::invalid_param(
            "path",
            format!("{}: {other:?} does not hold ground truth", path.display()),
        )),
    }
}

/// Base vectors, queries, metric and (optionally) exact ground truth.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Name for reports (`glove-50-angular`, `synthetic-default`, ...).
    pub name: String,
    /// The metric the ground truth was computed with and indexes should use.
    pub metric: Metric,
    /// The vectors to index.
    pub base: Vectors,
    /// The query vectors, of the same width.
    pub queries: Vectors,
    /// Exact nearest neighbours of each query among `base`, if known.
    pub ground_truth: Option<GroundTruth>,
}

/// `dataset.json` in a dataset directory.
#[derive(Serialize, Deserialize)]
struct DirMeta {
    name: String,
    metric: String,
    base: String,
    queries: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
}

/// File name of a dataset directory's description.
pub const DATASET_META: &str = "dataset.json";

impl Dataset {
    /// A dataset from parts. Errors: `DimensionMismatch` if base and queries differ
    /// in width; `InvalidParameter` if the ground truth does not have one row per
    /// query or names an id outside the base.
    pub fn new(
        name: impl Into<String>,
        metric: Metric,
        base: Vectors,
        queries: Vectors,
        ground_truth: Option<GroundTruth>,
    ) -> Result<Dataset> {
        if base.dim() != queries.dim() {
            return Err(Error::DimensionMismatch {
                expected: base.dim(),
                got: queries.dim(),
            });
        }
        if let Some(gt) = &ground_truth {
            if gt.queries() != queries.rows() {
                return Err(Error::invalid_param(
                    "ground_truth",
                    format!("{} rows for {} queries", gt.queries(), queries.rows()),
                ));
            }
            if let Some(&id) = gt.ids().iter().find(|&&id| id as usize >= base.rows()) {
                return Err(Error::invalid_param(
                    "ground_truth",
                    format!("id {id} is outside the base ({} rows)", base.rows()),
                ));
            }
        }
        Ok(Dataset {
            name: name.into(),
            metric,
            base,
            queries,
            ground_truth,
        })
    }

    /// Loads a dataset from separate files, each format chosen by extension. Ground
    /// truth (`.ivecs`, `.ibin`) without distances gets them computed.
    ///
    /// Errors: those of the readers; `Corruption` naming the query file and the
    /// offset of its dimension field when its width differs from the base's;
    /// `Corruption` naming the ground-truth file for a wrong query count or an id
    /// outside the base.
    pub fn from_files(
        name: impl Into<String>,
        metric: Metric,
        base: impl AsRef<Path>,
        queries: impl AsRef<Path>,
        ground_truth: Option<&Path>,
    ) -> Result<Dataset> {
        let (base_path, query_path) = (base.as_ref(), queries.as_ref());
        let base = load_vectors(base_path)?;
        let bytes = read_file(query_path)?;
        let (queries, dim_offset) =
            parse_vectors(&bytes, query_path, Format::from_path(query_path)?)?;
        drop(bytes);
        if queries.dim() != base.dim() {
            return Err(Error::corruption(
                query_path,
                dim_offset,
                format!(
                    "queries have dimension {} but the base ({}) has {}",
                    queries.dim(),
                    base_path.display(),
                    base.dim()
                ),
            ));
        }
        let ground_truth = match ground_truth {
            Some(p) => Some(complete_ground_truth(
                load_neighbors(p)?,
                &base,
                &queries,
                metric,
            )?),
            None => None,
        };
        Dataset::new(name, metric, base, queries, ground_truth)
    }

    /// Opens a dataset directory (see [`save`](Self::save)) or an
    /// ann-benchmarks `.hdf5` file. In a directory the cached ground
    /// truth is loaded when it matches the vectors, and left out when it is missing
    /// or stale (see [`ensure_ground_truth`](Self::ensure_ground_truth)).
    pub fn open(path: impl AsRef<Path>) -> Result<Dataset> {
        let path = path.as_ref();
        if path.is_dir() {
            return Self::open_dir(path);
        }
        match Format::from_path(path)? {
            Format::Hdf5 => Self::open_hdf5(path),
            other => Err(Error::invalid_param(
                "path",
                format!(
                    "{}: a dataset is a directory with {DATASET_META} or an .hdf5 file, not {other:?}; \
                     use Dataset::from_files for separate files",
                    path.display()
                ),
            )),
        }
    }

    fn open_hdf5(path: &Path) -> Result<Dataset> {
        crate::hdf5::read_hdf5(path)
    }

    fn open_dir(dir: &Path) -> Result<Dataset> {
        let meta_path = dir.join(DATASET_META);
        let bytes = read_file(&meta_path)?;
        let meta: DirMeta = serde_json::from_slice(&bytes).map_err(|e| {
            Error::corruption(&meta_path, 0, format!("not a dataset description: {e}"))
        })?;
        let metric: Metric = meta.metric.parse().map_err(|_| {
            Error::corruption(&meta_path, 0, format!("unknown metric {:?}", meta.metric))
        })?;
        let mut ds = Dataset::from_files(
            meta.name,
            metric,
            dir.join(&meta.base),
            dir.join(&meta.queries),
            None,
        )?;
        ds.ground_truth = load_cache(dir, &ds.base, &ds.queries, metric, 1)?;
        Ok(ds)
    }

    /// Writes the dataset as a directory: `base.fbin`, `queries.fbin`,
    /// `dataset.json` (name, metric, file names, and `source` if given), and the
    /// ground truth, if any, as the cache `groundtruth.ibin` + `groundtruth.json`.
    pub fn save(&self, dir: impl AsRef<Path>, source: Option<&str>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        crate::bigann::write_fbin(dir.join("base.fbin"), &self.base)?;
        crate::bigann::write_fbin(dir.join("queries.fbin"), &self.queries)?;
        if let Some(gt) = &self.ground_truth {
            store_ground_truth(dir, &self.base, &self.queries, self.metric, gt)?;
        }
        let meta = DirMeta {
            name: self.name.clone(),
            metric: self.metric.name().to_string(),
            base: "base.fbin".into(),
            queries: "queries.fbin".into(),
            source: source.map(str::to_string),
        };
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| Error::invalid_param("dataset", e.to_string()))?;
        write_file(&dir.join(DATASET_META), &json)
    }

    /// Width of every vector.
    pub fn dim(&self) -> usize {
        self.base.dim()
    }

    /// Checksum of the base and the queries, as `crc32:xxxxxxxx` (see
    /// [`crate::checksum`]).
    pub fn checksum(&self) -> String {
        Checksum::new()
            .update(&self.base)
            .update(&self.queries)
            .finish()
    }

    /// Computes exact top-`k` ground truth with the flat index (replacing any).
    pub fn with_ground_truth(mut self, k: usize) -> Result<Dataset> {
        self.ground_truth = Some(compute_ground_truth(
            &self.base,
            &self.queries,
            self.metric,
            k,
        )?);
        Ok(self)
    }

    /// Makes sure the dataset has ground truth at least `k` deep, using (and
    /// refreshing) the cache in `dir`.
    pub fn ensure_ground_truth(&mut self, dir: impl AsRef<Path>, k: usize) -> Result<CacheStatus> {
        if let Some(gt) = &self.ground_truth {
            if gt.k() >= k {
                return Ok(CacheStatus::Hit);
            }
        }
        let (gt, status) =
            cached_ground_truth(dir.as_ref(), &self.base, &self.queries, self.metric, k)?;
        self.ground_truth = Some(gt);
        Ok(status)
    }
}

/// Where fetched datasets live: `$OMEN_DATA_DIR` if set, otherwise `datasets/data`
/// in the source tree (gitignored).
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("OMEN_DATA_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("data"),
    }
}

/// Loads a dataset by name or path, with ground truth at least `k` deep:
///
/// * `synthetic-default`: generated in memory, ground truth computed (about a
///   second);
/// * `synthetic-1m-128`: generated into `data_dir` on first use (see
///   [`crate::synthetic::SyntheticSpec::synthetic_1m_128`]);
/// * `glove-50-angular`, `glove-50-l2`, or any other name: the directory of that
///   name under `data_dir` (fetch GloVe first with `omen dataset fetch glove-50`);
/// * a path to a dataset directory or an `.hdf5` file.
///
/// Ground truth for a directory is cached there.
pub fn load_named(name: &str, data_dir: &Path, k: usize) -> Result<Dataset> {
    if name == crate::synthetic::SYNTHETIC_DEFAULT {
        return crate::synthetic::synthetic_default()?.with_ground_truth(k);
    }
    let as_path = Path::new(name);
    let dir = if as_path.exists() {
        as_path.to_path_buf()
    } else {
        data_dir.join(name)
    };
    if name == crate::synthetic::SYNTHETIC_1M_128 && !dir.exists() {
        // Generated once, then read like any fetched set.
        let spec = crate::synthetic::SyntheticSpec::synthetic_1m_128();
        spec.generate()?
            .save(&dir, Some("generated: SyntheticSpec::synthetic_1m_128"))?;
    }
    if !dir.exists() {
        let hint = if name.starts_with("glove-50") {
            " (run `cargo run --release -p omen-cli -- dataset fetch glove-50` first)"
        } else {
            ""
        };
        return Err(Error::io(
            &dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no dataset {name:?} here{hint}"),
            ),
        ));
    }
    let mut ds = Dataset::open(&dir)?;
    if dir.is_dir() {
        ds.ensure_ground_truth(&dir, k)?;
    } else if ds.ground_truth.as_ref().is_none_or(|gt| gt.k() < k) {
        ds = ds.with_ground_truth(k)?;
    }
    Ok(ds)
}
