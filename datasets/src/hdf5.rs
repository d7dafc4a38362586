//! ann-benchmarks HDF5 files, in pure Rust: read with `hdf5-reader`, written with
//! `hdf5-writer` (no libhdf5, no C code, in the default build).
//!
//! Layout, as ann-benchmarks writes it with h5py: 2-D datasets `train` (base),
//! `test` (queries), `neighbors` (integer ids, one row per query) and `distances`
//! (float32), and a string attribute `distance` on the root (`euclidean`,
//! `angular`, ...; see [`Metric`]'s `FromStr`). Files without `neighbors` load with
//! no ground truth. Contiguous and chunked datasets are read, with the deflate
//! (gzip), shuffle and Fletcher-32 filters; `train`/`test` may be float32 or
//! float64 (converted), `neighbors` any integer type.
//!
//! Distances: ann-benchmarks stores Euclidean distances unsquared, while Omen's L2
//! is squared. The reader therefore recomputes the ground-truth distances from the
//! vectors with [`Metric::distance`] (so they are in Omen's convention and agree
//! with what the indexes return); the writer writes them back in ann-benchmarks'
//! convention (square roots for L2).
//!
//! **Untrusted files.** Every size the file declares is checked against the file's
//! length before anything is allocated for it: a dataset may not decode to more
//! than [`MAX_EXPANSION`] times the file's bytes (deflate's largest ratio is about
//! 1,032:1, so no honest file comes near it), which bounds every read, chunk and
//! the caller's buffers by the input. Damage is `Corruption` naming the file, at
//! the byte offset of the bad value (contiguous datasets), of the dataset's
//! object header, or the one the decoder reports (0 where none is known), with
//! the dataset and what was wrong; the `read_hdf5` fuzz target holds this.

use crate::matrix::{Matrix, NeighborTable, Vectors};
use crate::Dataset;
use hdf5_reader as h5r;
use hdf5_writer as h5w;
use omen_core::{Error, Metric, Result};
use std::path::Path;

/// How many times the file's size a dataset may decode to (see the module docs).
pub const MAX_EXPANSION: u64 = 1100;

fn corrupt(path: &Path, offset: u64, detail: impl Into<String>) -> Error {
    Error::corruption(path, offset, detail)
}

/// The byte offset a decoder error names, if any (through its context chain).
fn error_offset(e: &h5r::error::Error) -> u64 {
    match e {
        h5r::error::Error::UnexpectedEof { offset, .. } => *offset,
        h5r::error::Error::OffsetOutOfBounds(o) => *o,
        h5r::error::Error::Context { source, .. } => error_offset(source),
        _ => 0,
    }
}

fn h5err(path: &Path, what: &str, e: h5r::error::Error) -> Error {
    if let h5r::error::Error::Io(io) = e {
        return Error::io(path, io);
    }
    corrupt(path, error_offset(&e), format!("{what}: {e}"))
}

/// An open file and the most bytes one of its datasets may decode to.
struct Reader<'a> {
    path: &'a Path,
    file: h5r::Hdf5File,
    budget: u64,
}

impl<'a> Reader<'a> {
    fn open(path: &'a Path) -> Result<Reader<'a>> {
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        let budget = len.saturating_mul(MAX_EXPANSION).saturating_add(1 << 16);
        let cap = usize::try_from(budget).unwrap_or(usize::MAX);
        let options = h5r::OpenOptions::default()
            .with_max_read_bytes(cap)
            .with_max_chunk_bytes(cap.min(h5r::DEFAULT_MAX_CHUNK_BYTES))
            .with_max_object_header_bytes(cap.min(h5r::DEFAULT_MAX_OBJECT_HEADER_BYTES));
        let file = h5r::Hdf5File::open_with_options(path, options)
            .map_err(|e| h5err(path, "not an HDF5 file", e))?;
        Ok(Reader { path, file, budget })
    }

    fn dataset(&self, name: &str) -> Result<h5r::Dataset> {
        self.file
            .dataset(name)
            .map_err(|e| h5err(self.path, &format!("no dataset {name:?}"), e))
    }

    fn has_dataset(&self, name: &str) -> Result<bool> {
        Ok(self.dataset_names()?.iter().any(|d| d == name))
    }

    /// The names of the root group's datasets.
    fn dataset_names(&self) -> Result<Vec<String>> {
        let root = self
            .file
            .root_group()
            .map_err(|e| h5err(self.path, "cannot read the root group", e))?;
        let (_, datasets) = root
            .member_names()
            .map_err(|e| h5err(self.path, "cannot list the root group", e))?;
        Ok(datasets)
    }

    /// Where a contiguous dataset's values start in the file (`None` for compact
    /// and chunked layouts, whose values are not one run of the file).
    fn contiguous_address(&self, ds: &h5r::Dataset) -> Option<u64> {
        let header = self.file.get_or_parse_header(ds.address()).ok()?;
        header.messages.iter().find_map(|m| match m {
            h5r::messages::HdfMessage::DataLayout(l) => match l.layout {
                h5r::messages::layout::DataLayout::Contiguous { address, .. } => Some(address),
                _ => None,
            },
            _ => None,
        })
    }

    /// The (rows, columns) of a 2-D dataset whose `elem`-byte elements fit the
    /// budget.
    fn shape2(&self, ds: &h5r::Dataset, name: &str, elem: u64) -> Result<(usize, usize)> {
        let shape = ds.shape();
        let bad = |why: &str| corrupt(self.path, ds.address(), format!("dataset {name:?}: {why}"));
        let &[rows, cols] = shape else {
            return Err(bad(&format!("shape {shape:?}, not (rows, columns)")));
        };
        let bytes = rows
            .checked_mul(cols)
            .and_then(|n| n.checked_mul(elem))
            .ok_or_else(|| bad(&format!("shape {shape:?} overflows")))?;
        if bytes > self.budget {
            return Err(bad(&format!(
                "shape {shape:?} of {elem}-byte values is {bytes} bytes, more than {MAX_EXPANSION} \
                 times the file's size: the file is damaged"
            )));
        }
        let rows = usize::try_from(rows).map_err(|_| bad("too many rows"))?;
        let cols = usize::try_from(cols).map_err(|_| bad("too many columns"))?;
        Ok((rows, cols))
    }

    /// Reads a 2-D float dataset (float32, or float64 converted), checking every
    /// value; a NaN or infinity is `Corruption` naming its row and component.
    fn matrix(&self, name: &str) -> Result<Vectors> {
        let ds = self.dataset(name)?;
        let read = |e| h5err(self.path, &format!("cannot read {name:?}"), e);
        let size = match ds.dtype() {
            h5r::Datatype::FloatingPoint { size, .. } if *size == 4 || *size == 8 => *size,
            other => {
                return Err(corrupt(
                    self.path,
                    ds.address(),
                    format!("dataset {name:?} holds {other:?}, not float32 or float64 vectors"),
                ))
            }
        };
        let (rows, dim) = self.shape2(&ds, name, u64::from(size))?;
        if dim == 0 || dim > crate::MAX_DIM {
            return Err(corrupt(
                self.path,
                ds.address(),
                format!(
                    "dataset {name:?} has {dim} columns; 1 to {} expected",
                    crate::MAX_DIM
                ),
            ));
        }
        let data: Vec<f32> = if size == 4 {
            let mut data = vec![0f32; rows * dim];
            ds.read_into(&mut data).map_err(read)?;
            data
        } else {
            let mut wide = vec![0f64; rows * dim];
            ds.read_into(&mut wide).map_err(read)?;
            wide.into_iter().map(|x| x as f32).collect()
        };
        if let Some(i) = data.iter().position(|x| !x.is_finite()) {
            // The value's own offset when the dataset is one run of the file, its
            // object header's otherwise.
            let offset = self
                .contiguous_address(&ds)
                .map_or(ds.address(), |a| a + i as u64 * u64::from(size));
            return Err(corrupt(
                self.path,
                offset,
                format!(
                    "non-finite value (or a float64 beyond float32's range) in {name:?} at \
                     row {}, component {}",
                    i / dim,
                    i % dim
                ),
            ));
        }
        Matrix::new(dim, data)
    }

    /// Reads a 2-D integer dataset of ids below `n` as u32.
    fn ids(&self, name: &str) -> Result<(usize, Vec<u32>)> {
        let ds = self.dataset(name)?;
        let (size, signed) = match ds.dtype() {
            h5r::Datatype::FixedPoint { size, signed, .. } if matches!(size, 1 | 2 | 4 | 8) => {
                (*size, *signed)
            }
            other => {
                return Err(corrupt(
                    self.path,
                    ds.address(),
                    format!("dataset {name:?} holds {other:?}, not integer ids"),
                ))
            }
        };
        let (queries, k) = self.shape2(&ds, name, u64::from(size))?;
        if k == 0 {
            return Err(corrupt(
                self.path,
                ds.address(),
                format!("dataset {name:?} has k = 0"),
            ));
        }
        let read = |e| h5err(self.path, &format!("cannot read {name:?}"), e);
        let n = queries * k;
        let wide: Vec<i128> = match (size, signed) {
            (1, true) => read_ints::<i8>(&ds, n).map_err(read)?,
            (1, false) => read_ints::<u8>(&ds, n).map_err(read)?,
            (2, true) => read_ints::<i16>(&ds, n).map_err(read)?,
            (2, false) => read_ints::<u16>(&ds, n).map_err(read)?,
            (4, true) => read_ints::<i32>(&ds, n).map_err(read)?,
            (4, false) => read_ints::<u32>(&ds, n).map_err(read)?,
            (8, true) => read_ints::<i64>(&ds, n).map_err(read)?,
            _ => read_ints::<u64>(&ds, n).map_err(read)?,
        };
        let ids = wide
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                u32::try_from(id).map_err(|_| {
                    corrupt(
                        self.path,
                        self.contiguous_address(&ds)
                            .map_or(ds.address(), |a| a + i as u64 * u64::from(size)),
                        format!("{name:?} holds id {id} at query {}, rank {}", i / k, i % k),
                    )
                })
            })
            .collect::<Result<Vec<u32>>>()?;
        Ok((k, ids))
    }

    fn metric(&self) -> Result<Metric> {
        let root = self
            .file
            .root_group()
            .map_err(|e| h5err(self.path, "cannot read the root group", e))?;
        let attr = root
            .attribute("distance")
            .map_err(|e| h5err(self.path, "no attribute \"distance\"", e))?;
        let text = attr
            .read_string()
            .map_err(|e| h5err(self.path, "attribute \"distance\" is not a string", e))?;
        text.trim_end_matches('\0').parse().map_err(|_| {
            corrupt(
                self.path,
                0,
                format!("unsupported distance {text:?} (euclidean, angular, ip)"),
            )
        })
    }
}

fn read_ints<T: h5r::H5Type + Copy + Default + Into<i128>>(
    ds: &h5r::Dataset,
    n: usize,
) -> h5r::error::Result<Vec<i128>> {
    let mut v = vec![T::default(); n];
    ds.read_into(&mut v)?;
    Ok(v.into_iter().map(Into::into).collect())
}

/// Reads one 2-D float dataset of an HDF5 file (`train` or `test` of an
/// ann-benchmarks file) as vectors, with the checks [`read_hdf5`] applies.
pub fn read_vectors(path: impl AsRef<Path>, name: &str) -> Result<Vectors> {
    let path = path.as_ref();
    let r = Reader::open(path)?;
    let names = r.dataset_names()?;
    if !names.iter().any(|n| n == name) {
        return Err(Error::invalid_param(
            "path",
            format!(
                "{} has no dataset {name:?}; it holds {}",
                path.display(),
                names.join(", ")
            ),
        ));
    }
    r.matrix(name)
}

/// Reads an ann-benchmarks HDF5 file. The dataset is named after the file stem.
///
/// Errors: `Io` if the file cannot be read; `Corruption` for a file that is not
/// HDF5, lacks `train`/`test` or the `distance` attribute, has an unknown metric,
/// mismatched shapes, non-finite values, ids outside the base, or declares more
/// data than its size can hold.
pub fn read_hdf5(path: impl AsRef<Path>) -> Result<Dataset> {
    let path = path.as_ref();
    let r = Reader::open(path)?;
    let metric = r.metric()?;
    let base = r.matrix("train")?;
    let queries = r.matrix("test")?;
    if queries.dim() != base.dim() {
        return Err(corrupt(
            path,
            0,
            format!(
                "\"test\" has dimension {} but \"train\" has {}",
                queries.dim(),
                base.dim()
            ),
        ));
    }
    let ground_truth = if r.has_dataset("neighbors")? {
        let (k, ids) = r.ids("neighbors")?;
        if ids.len() / k != queries.rows() {
            return Err(corrupt(
                path,
                0,
                format!(
                    "\"neighbors\" has {} rows for {} queries",
                    ids.len() / k,
                    queries.rows()
                ),
            ));
        }
        let table = NeighborTable {
            k,
            ids,
            distances: None,
            source: None,
        };
        let gt =
            crate::complete_ground_truth(table, &base, &queries, metric).map_err(|e| match e {
                Error::Corruption { detail, .. } => {
                    corrupt(path, 0, format!("\"neighbors\": {detail}"))
                }
                e => e,
            })?;
        Some(gt)
    } else {
        None
    };
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Dataset::new(name, metric, base, queries, ground_truth)
}

fn metric_attr(metric: Metric) -> &'static str {
    match metric {
        Metric::L2 => "euclidean",
        Metric::Cosine => "angular",
        // ann-benchmarks has no inner-product metric name of its own; Omen's parser
        // reads `ip` back.
        _ => "ip",
    }
}

/// Writes a dataset as an ann-benchmarks HDF5 file (`train`, `test`, and, with
/// ground truth, `neighbors` as int32 and `distances`; the root attributes
/// `distance` and `point_type` as variable-length strings, `dimension` as an
/// integer), contiguous, as h5py writes by default.
pub fn write_hdf5(path: impl AsRef<Path>, ds: &Dataset) -> Result<()> {
    let path = path.as_ref();
    let enc = |what: &str, e: h5w::Error| {
        Error::io(path, std::io::Error::other(format!("HDF5 {what}: {e}")))
    };
    let shape = |m: &Vectors| vec![m.rows() as u64, m.dim() as u64];
    let mut b = h5w::Hdf5Builder::new();
    for (name, m) in [("train", &ds.base), ("test", &ds.queries)] {
        b = b.dataset(
            h5w::DatasetBuilder::typed_data(name, shape(m), m.data()).map_err(|e| enc(name, e))?,
        );
    }
    if let Some(gt) = &ds.ground_truth {
        let ids: Vec<i32> = gt
            .ids()
            .iter()
            .map(|&id| {
                i32::try_from(id).map_err(|_| {
                    Error::invalid_param("ground_truth", format!("id {id} does not fit int32"))
                })
            })
            .collect::<Result<_>>()?;
        let distances: Vec<f32> = match ds.metric {
            Metric::L2 => gt.distances().iter().map(|d| d.max(0.0).sqrt()).collect(),
            _ => gt.distances().to_vec(),
        };
        let s = vec![gt.queries() as u64, gt.k() as u64];
        b = b
            .dataset(
                h5w::DatasetBuilder::typed_data("neighbors", s.clone(), &ids)
                    .map_err(|e| enc("neighbors", e))?,
            )
            .dataset(
                h5w::DatasetBuilder::typed_data("distances", s, &distances)
                    .map_err(|e| enc("distances", e))?,
            );
    }
    b = b
        .attribute(
            h5w::AttributeBuilder::vlen_strings("distance", &[metric_attr(ds.metric)])
                .map_err(|e| enc("distance attribute", e))?,
        )
        .attribute(
            h5w::AttributeBuilder::vlen_strings("point_type", &["float"])
                .map_err(|e| enc("point_type attribute", e))?,
        )
        .attribute(
            h5w::AttributeBuilder::scalar("dimension", ds.base.dim() as i64)
                .map_err(|e| enc("dimension attribute", e))?,
        );
    let bytes = b
        .into_plan()
        .and_then(|p| p.encode(h5w::WriteOptions::default()))
        .map_err(|e| enc("encoding", e))?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}
