//! ann-benchmarks HDF5 files (feature `hdf5`).
//!
//! Layout, as ann-benchmarks writes it with h5py: 2-D datasets `train` (base),
//! `test` (queries), `neighbors` (int32 ids, one row per query) and `distances`
//! (float32), and a string attribute `distance` on the root (`euclidean`,
//! `angular`, ...; see [`Metric`]'s `FromStr`). Files without `neighbors` load with
//! no ground truth.
//!
//! Distances: ann-benchmarks stores Euclidean distances unsquared, while Omen's L2
//! is squared. The reader therefore recomputes the ground-truth distances from the
//! vectors with [`Metric::distance`] (so they are in Omen's convention and agree
//! with what the indexes return); the writer writes them back in ann-benchmarks'
//! convention (square roots for L2).

use crate::matrix::{Matrix, NeighborTable, Vectors};
use crate::Dataset;
use hdf5_metno as h5;
use omen_core::{Error, Metric, Result};
use std::path::Path;

fn corrupt(path: &Path, detail: impl Into<String>) -> Error {
    Error::corruption(path, 0, detail)
}

fn h5err(path: &Path, what: &str, e: h5::Error) -> Error {
    corrupt(path, format!("{what}: {e}"))
}

/// Reads a 2-D float dataset, checking every value; a NaN or infinity is
/// `Corruption` at its byte offset when the dataset is stored contiguously (at the
/// dataset's start otherwise).
fn read_matrix_f32(file: &h5::File, path: &Path, name: &str) -> Result<Vectors> {
    let ds = file
        .dataset(name)
        .map_err(|e| h5err(path, &format!("no dataset {name:?}"), e))?;
    let shape = ds.shape();
    if shape.len() != 2 || shape[1] == 0 || shape[1] > crate::MAX_DIM {
        return Err(corrupt(
            path,
            format!(
                "dataset {name:?} has shape {shape:?}; (rows, dim) with 1 <= dim <= {} expected",
                crate::MAX_DIM
            ),
        ));
    }
    let elem = ds.dtype().map(|t| t.size()).unwrap_or(4) as u64;
    let data: Vec<f32> = ds
        .read_raw::<f32>()
        .map_err(|e| h5err(path, &format!("cannot read {name:?} as float32"), e))?;
    if data.len() != shape[0] * shape[1] {
        return Err(corrupt(
            path,
            format!(
                "dataset {name:?} returned {} values for shape {shape:?}",
                data.len()
            ),
        ));
    }
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        let base = ds.offset().unwrap_or(0);
        return Err(Error::corruption(
            path,
            base + i as u64 * elem,
            format!(
                "non-finite value in {name:?} at row {}, component {}",
                i / shape[1],
                i % shape[1]
            ),
        ));
    }
    Matrix::new(shape[1], data)
}

fn read_metric(file: &h5::File, path: &Path) -> Result<Metric> {
    let attr = file
        .attr("distance")
        .map_err(|e| h5err(path, "no attribute \"distance\"", e))?;
    // Bytes, never `as_str`: hdf5-metno's string types build their `&str` with
    // `from_utf8_unchecked` over whatever the file holds, so a damaged attribute
    // would be an invalid `str` (undefined behaviour; the read_hdf5 fuzz target
    // found it). The bytes are checked here instead.
    let bytes = attr
        .read_scalar::<h5::types::VarLenUnicode>()
        .map(|s| s.as_bytes().to_vec())
        .or_else(|_| {
            attr.read_scalar::<h5::types::VarLenAscii>()
                .map(|s| s.as_bytes().to_vec())
        })
        .or_else(|_| {
            attr.read_scalar::<h5::types::FixedAscii<64>>()
                .map(|s| s.as_bytes().to_vec())
        })
        .map_err(|e| h5err(path, "attribute \"distance\" is not a string", e))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| corrupt(path, format!("attribute \"distance\" is not UTF-8: {e}")))?;
    text.parse().map_err(|_| {
        corrupt(
            path,
            format!("unsupported distance {text:?} (euclidean, angular, ip)"),
        )
    })
}

/// Reads an ann-benchmarks HDF5 file. The dataset is named after the file stem.
///
/// Errors: `Io` if the file cannot be read; `Corruption` for a file that is not
/// HDF5, lacks `train`/`test` or the `distance` attribute, has an unknown metric,
/// mismatched shapes, non-finite values, or ids outside the base.
pub fn read_hdf5(path: impl AsRef<Path>) -> Result<Dataset> {
    let path = path.as_ref();
    std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let file = h5::File::open(path).map_err(|e| h5err(path, "not an HDF5 file", e))?;
    let metric = read_metric(&file, path)?;
    let base = read_matrix_f32(&file, path, "train")?;
    let queries = read_matrix_f32(&file, path, "test")?;
    if queries.dim() != base.dim() {
        return Err(corrupt(
            path,
            format!(
                "\"test\" has dimension {} but \"train\" has {}",
                queries.dim(),
                base.dim()
            ),
        ));
    }
    let ground_truth = if file.link_exists("neighbors") {
        let ds = file
            .dataset("neighbors")
            .map_err(|e| h5err(path, "cannot open \"neighbors\"", e))?;
        let shape = ds.shape();
        if shape.len() != 2 || shape[1] == 0 {
            return Err(corrupt(path, format!("\"neighbors\" has shape {shape:?}")));
        }
        let raw: Vec<i64> = ds
            .read_raw::<i64>()
            .map_err(|e| h5err(path, "cannot read \"neighbors\" as integers", e))?;
        let mut ids = Vec::with_capacity(raw.len());
        for (i, &id) in raw.iter().enumerate() {
            let id = u32::try_from(id).map_err(|_| {
                corrupt(
                    path,
                    format!(
                        "\"neighbors\" holds id {id} at query {}, rank {}",
                        i / shape[1],
                        i % shape[1]
                    ),
                )
            })?;
            ids.push(id);
        }
        let table = NeighborTable {
            k: shape[1],
            ids,
            distances: None,
            source: None,
        };
        let gt =
            crate::complete_ground_truth(table, &base, &queries, metric).map_err(|e| match e {
                Error::Corruption { detail, .. } => {
                    corrupt(path, format!("\"neighbors\": {detail}"))
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
/// ground truth, `neighbors` and `distances`; the `distance` attribute).
pub fn write_hdf5(path: impl AsRef<Path>, ds: &Dataset) -> Result<()> {
    let path = path.as_ref();
    let io =
        |what: &str, e: h5::Error| Error::io(path, std::io::Error::other(format!("{what}: {e}")));
    let file = h5::File::create(path).map_err(|e| io("cannot create", e))?;
    for (name, m) in [("train", &ds.base), ("test", &ds.queries)] {
        file.new_dataset::<f32>()
            .shape((m.rows(), m.dim()))
            .create(name)
            .and_then(|d| d.write_raw(m.data()))
            .map_err(|e| io(name, e))?;
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
        file.new_dataset::<i32>()
            .shape((gt.queries(), gt.k()))
            .create("neighbors")
            .and_then(|d| d.write_raw(&ids))
            .map_err(|e| io("neighbors", e))?;
        file.new_dataset::<f32>()
            .shape((gt.queries(), gt.k()))
            .create("distances")
            .and_then(|d| d.write_raw(&distances))
            .map_err(|e| io("distances", e))?;
    }
    let metric: h5::types::VarLenUnicode = metric_attr(ds.metric)
        .parse()
        .map_err(|e| Error::invalid_param("metric", format!("{e}")))?;
    file.new_attr::<h5::types::VarLenUnicode>()
        .create("distance")
        .and_then(|a| a.write_scalar(&metric))
        .map_err(|e| io("distance attribute", e))?;
    file.flush().map_err(|e| io("flush", e))?;
    Ok(())
}
