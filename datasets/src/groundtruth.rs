//! Exact ground truth with the project's flat index, and its on-disk cache.
//!
//! The cache is two files in the dataset's directory: `groundtruth.ibin`
//! (big-ann-benchmarks' layout: ids then distances) and `groundtruth.json`, which
//! records the metric, the depth `k`, the checksums of the base and the queries it
//! was computed from, and the checksum of `groundtruth.ibin` itself. A cache whose
//! metadata does not match the vectors it is asked for (a regenerated split, other
//! queries, another metric, a smaller `k`) or whose file does not match its
//! checksum is stale and is recomputed.

use crate::bigann::{encode_groundtruth_bin, parse_groundtruth_bin};
use crate::checksum::{checksum_bytes, checksum_vectors};
use crate::io::{read_file, write_file};
use crate::matrix::{GroundTruth, NeighborTable, Vectors};
use omen_core::simd::Kernels;
use omen_core::{Error, Metric, Result, SearchParams, VectorIndex, VectorStorage};
use omen_flat::FlatIndex;
use omen_storage::MemoryStorage;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// File name of the cached ground truth in a dataset directory.
pub const GROUNDTRUTH_FILE: &str = "groundtruth.ibin";
/// File name of the cache's metadata in a dataset directory.
pub const GROUNDTRUTH_META: &str = "groundtruth.json";

const CACHE_FORMAT: u32 = 1;

fn check_shapes(base: &Vectors, queries: &Vectors) -> Result<()> {
    if base.dim() != queries.dim() {
        return Err(Error::DimensionMismatch {
            expected: base.dim(),
            got: queries.dim(),
        });
    }
    Ok(())
}

/// Exact `k` nearest neighbours of every query among `base`, closest first (ties
/// by id), with the flat index's batched search over an in-memory storage.
///
/// Errors: `DimensionMismatch` if the widths differ, `InvalidParameter` if `k` is 0
/// or larger than the base, `NonFinite` for a NaN or infinite value.
pub fn compute_ground_truth(
    base: &Vectors,
    queries: &Vectors,
    metric: Metric,
    k: usize,
) -> Result<GroundTruth> {
    check_shapes(base, queries)?;
    if k == 0 || k > base.rows() {
        return Err(Error::invalid_param(
            "k",
            format!("must be in 1..={} (the base size), got {k}", base.rows()),
        ));
    }
    base.check_finite()?;
    queries.check_finite()?;
    let storage = MemoryStorage::new(base.dim())?;
    let slots = storage.append_batch(base.data())?;
    let index = FlatIndex::new(base.dim(), metric)?;
    index.add(&storage, slots)?;
    let mut out = Vec::new();
    index.search_batch(
        &storage,
        queries.data(),
        k,
        &SearchParams::exhaustive(),
        None,
        &mut out,
    )?;
    let mut ids = Vec::with_capacity(queries.rows() * k);
    let mut distances = Vec::with_capacity(queries.rows() * k);
    for (q, list) in out.iter().enumerate() {
        if list.len() != k {
            return Err(Error::invalid_param(
                "k",
                format!(
                    "flat search returned {} neighbours for query {q}, expected {k}",
                    list.len()
                ),
            ));
        }
        for n in list {
            ids.push(n.slot);
            distances.push(n.distance);
        }
    }
    GroundTruth::new(k, ids, distances)
}

/// Completes a neighbour table read from a file into a [`GroundTruth`]: checks its
/// query count and every id against the vectors, and computes the distances
/// (under `metric`, with [`Metric::distance`]) when the file had none.
///
/// Errors: `Corruption` naming the file and the offset of an id that is out of
/// range, or of the header when the query count differs.
pub fn complete_ground_truth(
    table: NeighborTable,
    base: &Vectors,
    queries: &Vectors,
    metric: Metric,
) -> Result<GroundTruth> {
    check_shapes(base, queries)?;
    if table.queries() != queries.rows() {
        let (file, _) = table.id_location(0);
        return Err(Error::corruption(
            file,
            0,
            format!(
                "ground truth has {} queries, the query file {}",
                table.queries(),
                queries.rows()
            ),
        ));
    }
    if let Some(i) = table.ids.iter().position(|&id| id as usize >= base.rows()) {
        let (file, offset) = table.id_location(i);
        return Err(Error::corruption(
            file,
            offset,
            format!(
                "id {} (query {}, rank {}) is not below the base size {}",
                table.ids[i],
                i / table.k,
                i % table.k,
                base.rows()
            ),
        ));
    }
    let distances = match table.distances {
        Some(d) => d,
        None => {
            let kernels = Kernels::best();
            table
                .ids
                .iter()
                .enumerate()
                .map(|(i, &id)| {
                    let q = queries.row(i / table.k).unwrap_or(&[]);
                    let b = base.row(id as usize).unwrap_or(&[]);
                    metric.distance(kernels, q, b)
                })
                .collect()
        }
    };
    GroundTruth::new(table.k, table.ids, distances)
}

/// What [`cached_ground_truth`] did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheStatus {
    /// A valid cache was read.
    Hit,
    /// There was no cache; it was computed and written.
    Missing,
    /// The cache did not match the vectors, metric or depth; it was recomputed.
    Stale,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct CacheMeta {
    format: u32,
    metric: String,
    k: usize,
    base_rows: usize,
    queries_rows: usize,
    dim: usize,
    base_checksum: String,
    queries_checksum: String,
    groundtruth_checksum: String,
}

/// Reads the cached ground truth in `dir` if it was computed from exactly these
/// vectors under `metric` with depth at least `k`; `None` if missing or stale.
/// Returns it cut to depth `k`.
pub fn load_cached_ground_truth(
    dir: &Path,
    base: &Vectors,
    queries: &Vectors,
    metric: Metric,
    k: usize,
) -> Result<Option<GroundTruth>> {
    match load_cache(dir, base, queries, metric, k)? {
        Some(gt) if gt.k() > k => gt.truncate(k).map(Some),
        other => Ok(other),
    }
}

/// The valid cache at its full depth (at least `min_k`), or `None`.
pub(crate) fn load_cache(
    dir: &Path,
    base: &Vectors,
    queries: &Vectors,
    metric: Metric,
    min_k: usize,
) -> Result<Option<GroundTruth>> {
    let meta_path = dir.join(GROUNDTRUTH_META);
    let gt_path = dir.join(GROUNDTRUTH_FILE);
    let Ok(meta_bytes) = std::fs::read(&meta_path) else {
        return Ok(None);
    };
    let Ok(meta) = serde_json::from_slice::<CacheMeta>(&meta_bytes) else {
        return Ok(None);
    };
    if meta.format != CACHE_FORMAT
        || meta.metric != metric.name()
        || meta.k < min_k
        || meta.base_rows != base.rows()
        || meta.queries_rows != queries.rows()
        || meta.dim != base.dim()
        || meta.base_checksum != checksum_vectors(base)
        || meta.queries_checksum != checksum_vectors(queries)
    {
        return Ok(None);
    }
    let Ok(bytes) = read_file(&gt_path) else {
        return Ok(None);
    };
    if checksum_bytes(&bytes) != meta.groundtruth_checksum {
        return Ok(None);
    }
    let table = parse_groundtruth_bin(&bytes, &gt_path)?;
    if table.distances.is_none() || table.k != meta.k {
        return Ok(None);
    }
    complete_ground_truth(table, base, queries, metric).map(Some)
}

/// Writes `gt` as the cache in `dir` for these vectors and metric.
pub fn store_ground_truth(
    dir: &Path,
    base: &Vectors,
    queries: &Vectors,
    metric: Metric,
    gt: &GroundTruth,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let meta_path = dir.join(GROUNDTRUTH_META);
    // Remove the metadata first: a crash between the two writes then leaves no
    // metadata (a miss), never metadata that vouches for the wrong file.
    match std::fs::remove_file(&meta_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&meta_path, e)),
    }
    let bytes = encode_groundtruth_bin(gt)?;
    write_file(&dir.join(GROUNDTRUTH_FILE), &bytes)?;
    let meta = CacheMeta {
        format: CACHE_FORMAT,
        metric: metric.name().to_string(),
        k: gt.k(),
        base_rows: base.rows(),
        queries_rows: queries.rows(),
        dim: base.dim(),
        base_checksum: checksum_vectors(base),
        queries_checksum: checksum_vectors(queries),
        groundtruth_checksum: checksum_bytes(&bytes),
    };
    let json = serde_json::to_vec_pretty(&meta)
        .map_err(|e| Error::invalid_param("ground_truth", e.to_string()))?;
    write_file(&meta_path, &json)
}

/// The exact top-`k` for these vectors: from the cache in `dir` when it is valid,
/// otherwise computed with the flat index and written there.
pub fn cached_ground_truth(
    dir: &Path,
    base: &Vectors,
    queries: &Vectors,
    metric: Metric,
    k: usize,
) -> Result<(GroundTruth, CacheStatus)> {
    let had_meta = dir.join(GROUNDTRUTH_META).exists();
    if let Some(gt) = load_cached_ground_truth(dir, base, queries, metric, k)? {
        return Ok((gt, CacheStatus::Hit));
    }
    let gt = compute_ground_truth(base, queries, metric, k)?;
    store_ground_truth(dir, base, queries, metric, &gt)?;
    let status = if had_meta {
        CacheStatus::Stale
    } else {
        CacheStatus::Missing
    };
    Ok((gt, status))
}
