//! `omen db`: a collection kept in a directory.
//!
//! A directory holds `omen.json` (dimension, metric, index and storage settings)
//! and `snapshot.omen`, every live id with its vector (format in
//! `docs/FORMAT.md`). Each command loads the snapshot (rebuilding the index from
//! the vectors), acts, and — for writes — saves a new snapshot atomically before
//! exiting. Until the write-ahead log lands this is the whole durability story: a
//! crash mid-command leaves the previous snapshot.

use clap::Subcommand;
use omen::{Collection, CollectionConfig, IndexKind, Metric, SearchParams};
use omen_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

const CONFIG: &str = "omen.json";
const SNAPSHOT: &str = "snapshot.omen";
const FORMAT: &str = "omen-db/1";

/// `omen db ...`
#[derive(Subcommand)]
pub enum DbCommand {
    /// Create an empty collection directory.
    Create {
        /// The directory (created; must not already hold a collection).
        dir: PathBuf,
        /// Vector width.
        #[arg(long)]
        dim: usize,
        /// l2 | ip | cosine.
        #[arg(long)]
        metric: String,
        /// flat | hnsw | ivfpq.
        #[arg(long, default_value = "flat")]
        index: String,
        /// memory (mmap arrives with durable storage).
        #[arg(long, default_value = "memory")]
        storage: String,
        /// HNSW: links per node (layer 0 has 2M).
        #[arg(long, default_value_t = 16)]
        m: usize,
        /// HNSW: beam width while building.
        #[arg(long, default_value_t = 200)]
        ef_construction: usize,
        /// IVF-PQ: inverted lists.
        #[arg(long, default_value_t = 256)]
        nlist: usize,
        /// IVF-PQ: sub-quantizers (must divide the dimension).
        #[arg(long)]
        pq_m: Option<usize>,
        /// IVF-PQ: bits per code, 4 or 8.
        #[arg(long, default_value_t = 4)]
        nbits: u32,
        /// IVF-PQ: vectors held before it trains itself.
        #[arg(long)]
        train_size: Option<usize>,
    },
    /// Import every row of FILE (fvecs, fbin, npy, ...), all or nothing.
    Import {
        /// The collection directory.
        dir: PathBuf,
        /// Vectors file.
        file: PathBuf,
        /// One id per line; by default each row's number in FILE.
        #[arg(long)]
        ids: Option<PathBuf>,
    },
    /// Insert one vector.
    Insert {
        /// The collection directory.
        dir: PathBuf,
        /// Its id.
        #[arg(long)]
        id: String,
        /// Comma-separated components.
        #[arg(long, allow_hyphen_values = true)]
        vector: String,
        /// Replace the vector if the id exists.
        #[arg(long)]
        upsert: bool,
    },
    /// Delete one id.
    Delete {
        /// The collection directory.
        dir: PathBuf,
        /// The id.
        #[arg(long)]
        id: String,
    },
    /// Print one id's stored vector.
    Get {
        /// The collection directory.
        dir: PathBuf,
        /// The id.
        #[arg(long)]
        id: String,
    },
    /// Search for the k nearest ids of every row of a query file.
    Search {
        /// The collection directory.
        dir: PathBuf,
        /// Query vectors file.
        #[arg(long)]
        queries: PathBuf,
        /// Neighbours per query.
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        /// HNSW beam width.
        #[arg(long)]
        ef: Option<usize>,
        /// IVF lists probed.
        #[arg(long)]
        nprobe: Option<usize>,
        /// One JSON line per query.
        #[arg(long)]
        json: bool,
    },
    /// Sizes, settings and the SIMD ISA.
    Stats {
        /// The collection directory.
        dir: PathBuf,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check every checksum and that ids, storage and index agree; exits non-zero
    /// with a corruption message when they do not.
    Verify {
        /// The collection directory.
        dir: PathBuf,
    },
}

/// `omen.json`.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct DbConfig {
    format: String,
    dim: usize,
    metric: String,
    index: String,
    storage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hnsw: Option<HnswSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ivfpq: Option<IvfPqSettings>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct HnswSettings {
    m: usize,
    ef_construction: usize,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct IvfPqSettings {
    nlist: usize,
    m: usize,
    nbits: u32,
    train_size: usize,
}

impl DbConfig {
    fn metric(&self, path: &Path) -> Result<Metric> {
        self.metric
            .parse()
            .map_err(|_| Error::corruption(path, 0, format!("unknown metric {:?}", self.metric)))
    }

    fn collection_config(&self, path: &Path) -> Result<CollectionConfig> {
        let metric = self.metric(path)?;
        let index = match (self.index.as_str(), &self.hnsw, &self.ivfpq) {
            ("flat", _, _) => IndexKind::Flat,
            ("hnsw", Some(h), _) => IndexKind::Hnsw(
                omen_hnsw::HnswParams::new()
                    .with_m(h.m)
                    .with_ef_construction(h.ef_construction),
            ),
            ("ivfpq", _, Some(p)) => IndexKind::IvfPq(
                omen_ivfpq::IvfPqParams::new(p.nlist, p.m)
                    .with_nbits(p.nbits)
                    .with_train_size(p.train_size),
            ),
            (other, _, _) => {
                return Err(Error::corruption(
                    path,
                    0,
                    format!("index {other:?} without its settings"),
                ))
            }
        };
        if self.storage != "memory" {
            return Err(Error::invalid_param(
                "storage",
                format!("{:?}: this build has the memory storage only", self.storage),
            ));
        }
        Ok(CollectionConfig::new(self.dim, metric).index(index))
    }
}

fn read_config(dir: &Path) -> Result<DbConfig> {
    let path = dir.join(CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let cfg: DbConfig = serde_json::from_str(&text).map_err(|e| {
        let offset = text
            .lines()
            .take(e.line().saturating_sub(1))
            .map(|l| l.len() + 1)
            .sum::<usize>()
            + e.column().saturating_sub(1);
        Error::corruption(&path, offset as u64, e.to_string())
    })?;
    if cfg.format != FORMAT {
        return Err(Error::corruption(
            &path,
            0,
            format!("format {:?}, expected {FORMAT:?}", cfg.format),
        ));
    }
    Ok(cfg)
}

/// Opens the collection in `dir`: its settings, then its snapshot.
fn open(dir: &Path) -> Result<(DbConfig, Collection)> {
    let cfg = read_config(dir)?;
    let c = cfg.collection_config(&dir.join(CONFIG))?.build()?;
    c.load_snapshot(&dir.join(SNAPSHOT))?;
    Ok((cfg, c))
}

fn save(dir: &Path, c: &Collection) -> Result<()> {
    c.save_snapshot(&dir.join(SNAPSHOT))
}

fn parse_vector(s: &str) -> Result<Vec<f32>> {
    s.split(',')
        .enumerate()
        .map(|(i, x)| {
            x.trim()
                .parse::<f32>()
                .map_err(|e| Error::invalid_param("vector", format!("component {i} ({x:?}): {e}")))
        })
        .collect()
}

fn search_params(ef: Option<usize>, nprobe: Option<usize>) -> SearchParams {
    let mut p = SearchParams::new();
    if let Some(ef) = ef {
        p = p.with_ef(ef);
    }
    if let Some(n) = nprobe {
        p = p.with_nprobe(n);
    }
    p
}

pub fn run(c: DbCommand) -> Result<()> {
    match c {
        DbCommand::Create {
            dir,
            dim,
            metric,
            index,
            storage,
            m,
            ef_construction,
            nlist,
            pq_m,
            nbits,
            train_size,
        } => {
            let cfg_path = dir.join(CONFIG);
            if cfg_path.exists() {
                return Err(Error::invalid_param(
                    "dir",
                    format!("{} already holds a collection", dir.display()),
                ));
            }
            let cfg = DbConfig {
                format: FORMAT.into(),
                dim,
                metric: metric.parse::<Metric>()?.name().into(),
                hnsw: (index == "hnsw").then_some(HnswSettings { m, ef_construction }),
                ivfpq: (index == "ivfpq").then(|| {
                    // Default sub-quantizers: the largest divisor of dim giving ≤ 2 dims each.
                    let pm = pq_m.unwrap_or_else(|| {
                        (1..=dim)
                            .rev()
                            .find(|d| dim % d == 0 && dim / d >= 2)
                            .unwrap_or(1)
                    });
                    IvfPqSettings {
                        nlist,
                        m: pm,
                        nbits,
                        train_size: train_size.unwrap_or((39 * nlist).max(1024)),
                    }
                }),
                index,
                storage,
            };
            // Building an empty collection checks every setting before anything is written.
            let col = cfg.collection_config(&cfg_path)?.build()?;
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let json = serde_json::to_string_pretty(&cfg)
                .map_err(|e| Error::invalid_param("config", e.to_string()))?;
            save(&dir, &col)?;
            std::fs::write(&cfg_path, json).map_err(|e| Error::io(&cfg_path, e))?;
            println!(
                "created {} (dim {dim}, {}, {} index, {} storage)",
                dir.display(),
                cfg.metric,
                cfg.index,
                cfg.storage
            );
            Ok(())
        }
        DbCommand::Import { dir, file, ids } => {
            let (_, col) = open(&dir)?;
            let v = omen_datasets::load_vectors(&file)?;
            let names: Vec<String> = match ids {
                Some(p) => {
                    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
                    let names: Vec<String> = text.lines().map(str::to_string).collect();
                    if names.len() != v.rows() {
                        return Err(Error::invalid_param(
                            "ids",
                            format!(
                                "{} has {} lines for {} rows in {}",
                                p.display(),
                                names.len(),
                                v.rows(),
                                file.display()
                            ),
                        ));
                    }
                    names
                }
                None => (0..v.rows()).map(|i| i.to_string()).collect(),
            };
            let t = Instant::now();
            col.insert_batch(&names, v.data())?;
            let secs = t.elapsed().as_secs_f64();
            save(&dir, &col)?;
            println!(
                "imported {} vectors in {secs:.2} s ({:.0} vectors/s, storage + index insert, excluding the snapshot write); {} live",
                v.rows(),
                v.rows() as f64 / secs.max(1e-9),
                col.len()
            );
            Ok(())
        }
        DbCommand::Insert {
            dir,
            id,
            vector,
            upsert,
        } => {
            let (_, col) = open(&dir)?;
            let v = parse_vector(&vector)?;
            if upsert {
                col.upsert(&id, &v)?;
            } else {
                col.insert(&id, &v)?;
            }
            save(&dir, &col)?;
            println!("inserted {id}");
            Ok(())
        }
        DbCommand::Delete { dir, id } => {
            let (_, col) = open(&dir)?;
            col.delete(&id)?;
            save(&dir, &col)?;
            println!("deleted {id}");
            Ok(())
        }
        DbCommand::Get { dir, id } => {
            let (_, col) = open(&dir)?;
            let v = col.get(&id).ok_or(Error::UnknownId { id: id.clone() })?;
            println!(
                "{}",
                v.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            Ok(())
        }
        DbCommand::Search {
            dir,
            queries,
            k,
            ef,
            nprobe,
            json,
        } => {
            let (_, col) = open(&dir)?;
            let q = omen_datasets::load_vectors(&queries)?;
            let params = search_params(ef, nprobe);
            let mut out = std::io::stdout().lock();
            for (i, row) in q.iter_rows().enumerate() {
                let hits = col.search_with(row, k, &params)?;
                let line = if json {
                    serde_json::json!({
                        "query": i,
                        "ids": hits.iter().map(|h| h.0.as_str()).collect::<Vec<_>>(),
                        "distances": hits.iter().map(|h| h.1).collect::<Vec<_>>(),
                    })
                    .to_string()
                } else {
                    let s: Vec<String> = hits
                        .iter()
                        .map(|(id, d)| format!("{id} ({d:.4})"))
                        .collect();
                    format!("query {i}: {}", s.join(", "))
                };
                match writeln!(out, "{line}") {
                    Ok(()) => {}
                    // The reader went away (`| head`): stop quietly, as Unix tools do.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                    Err(e) => return Err(Error::io("<stdout>", e)),
                }
            }
            Ok(())
        }
        DbCommand::Stats { dir, json } => {
            let (cfg, col) = open(&dir)?;
            let s = col.stats();
            let snap = std::fs::metadata(dir.join(SNAPSHOT))
                .map(|m| m.len())
                .unwrap_or(0);
            let out = serde_json::json!({
                "dir": dir.display().to_string(),
                "dim": cfg.dim,
                "metric": cfg.metric,
                "index": cfg.index,
                "storage": cfg.storage,
                "len": s.len,
                "storage_slots": s.storage_slots,
                "tombstones": s.tombstones,
                "index_memory_bytes": s.index_memory_bytes,
                "storage_memory_bytes": s.storage_memory_bytes,
                "snapshot_bytes": snap,
                "simd_isa": col.isa().name(),
            });
            if json {
                println!("{out}");
            } else if let Some(m) = out.as_object() {
                for (k, v) in m {
                    println!("{k}: {v}");
                }
            }
            Ok(())
        }
        DbCommand::Verify { dir } => {
            let cfg = read_config(&dir)?;
            let snap = dir.join(SNAPSHOT);
            // Every checksum and record first, without building anything.
            let (h, records) = omen::snapshot::read_snapshot(&snap)?;
            let metric = cfg.metric(&dir.join(CONFIG))?;
            if h.dim != cfg.dim || h.metric != metric {
                return Err(Error::corruption(
                    &snap,
                    12,
                    format!(
                        "snapshot is dim {} {}, {} says dim {} {}",
                        h.dim, h.metric, CONFIG, cfg.dim, metric
                    ),
                ));
            }
            // Then the agreement of id map, storage and index.
            let (_, col) = open(&dir)?;
            if col.len() as u64 != h.count {
                return Err(Error::corruption(
                    &snap,
                    20,
                    format!(
                        "{} records but {} live ids after loading",
                        h.count,
                        col.len()
                    ),
                ));
            }
            let mut exact = SearchParams::exhaustive();
            exact.exhaustive = true;
            for (i, (id, v)) in records.iter().enumerate() {
                if col.get(id).as_deref() != Some(v.as_slice()) && metric != Metric::Cosine {
                    return Err(Error::corruption(
                        &snap,
                        32,
                        format!("record {i} ({id}): stored vector differs after loading"),
                    ));
                }
            }
            // Each of a sample of ids must be found by the index as its own nearest
            // neighbour (exhaustive search).
            let step = (records.len() / 200).max(1);
            for (id, v) in records.iter().step_by(step) {
                let hits = col.search_with(v, 1, &exact)?;
                let d0 = hits.first().map_or(f32::INFINITY, |h| h.1);
                let own = col
                    .search_with(v, 16, &exact)?
                    .iter()
                    .any(|h| &h.0 == id && h.1 <= d0 + 1e-5);
                if !own {
                    return Err(Error::corruption(
                        &snap,
                        32,
                        format!("id {id}: the index does not return it for its own vector"),
                    ));
                }
            }
            println!(
                "{}: ok ({} ids, dim {}, {}, checksums valid, index agrees)",
                dir.display(),
                h.count,
                h.dim,
                h.metric
            );
            Ok(())
        }
    }
}
