//! Opening a durable collection: create, open (load the checkpoint, replay the
//! log, remove what no manifest names) and the index loading they share.

use crate::durable::files::{self, Manifest};
use crate::durable::{
    create_wal, io_err, lock_dir, parse_wal_name, segment_crc, wal, wal::Op, wal_name, Durable,
    DurableOptions, LogFile, ReadOnlyLog, RecoveryInfo,
};
use omen_core::sync::read;
use omen_core::{Error, IndexKind, Metric, Result, SlotId, VectorIndex, VectorStorage};
use omen_fs::FileSystem;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{new_index, Collection};
use crate::config::CollectionConfig;
use crate::idmap::IdMap;
use crate::indexer::IndexingMode;
use crate::registry::{self, StorageKind};

impl Collection {
    /// Creates a durable collection in `dir` (created if missing; refused with
    /// `InvalidParameter` if it already holds a collection) and opens it. The
    /// directory is locked for this process until the collection is dropped.
    ///
    /// ```
    /// use omen::{Collection, CollectionConfig, DurableOptions, Metric};
    /// let dir = std::env::temp_dir().join(format!("omen-doc-create-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// {
    ///     let c = Collection::create(&dir, &CollectionConfig::new(2, Metric::L2), DurableOptions::default())?;
    ///     c.insert("a", &[1.0, 2.0])?;
    /// } // dropped: the directory is unlocked
    /// let c = Collection::open(&dir, DurableOptions::default())?;
    /// assert_eq!(c.get("a"), Some(vec![1.0, 2.0]));
    /// # drop(c); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), omen::Error>(())
    /// ```
    pub fn create(
        dir: &Path,
        config: &CollectionConfig,
        options: DurableOptions,
    ) -> Result<Collection> {
        if options.read_only {
            return Err(Error::invalid_param(
                "read_only",
                "a collection cannot be created read-only",
            ));
        }
        let mode = options.indexing;
        let fs = Arc::clone(&options.fs);
        fs.create_dir_all(dir).map_err(io_err(dir))?;
        let guard = lock_dir(&*fs, dir, false)?;
        // Not `exists`: it answers `false` on an I/O error, and this collection
        // would then replace the one there.
        let names = fs.list(dir).map_err(io_err(dir))?;
        if names.iter().any(|n| n == "MANIFEST") {
            return Err(Error::invalid_param(
                "dir",
                format!("{} already holds a collection", dir.display()),
            ));
        }
        let dim = config.dim;
        // Refuse a kind that a reopen could not find by name.
        let kind = registry::lookup(config.index.name())?;
        let storage: Box<dyn VectorStorage> = match config.storage {
            StorageKind::Memory => Box::new(omen_storage::MemoryStorage::new(dim)?),
            StorageKind::Mmap => {
                let vectors = dir.join("vectors");
                // Chunk files left by an earlier create that did not finish.
                mmap_remove(&*fs, &vectors)?;
                mmap_create(Arc::clone(&fs), &vectors, dim, options.mmap_chunk_rows)?
            }
        };
        let index = new_index(config)?;
        let mut c = Collection::with_backends(dim, config.metric, storage, index)?;
        let sink = create_wal(&*fs, dir, dim, 1)?;
        let manifest = Manifest {
            gen: 0,
            dim,
            metric: files::metric_name(config.metric).into(),
            index: kind.name().into(),
            index_params: Some(registry::params_to_json(
                &kind.check_build_keys(config.index.params())?,
            )),
            index_file: None,
            storage: config.storage.name().into(),
            rows: 0,
            segments: Vec::new(),
            ids_file: String::new(),
            live: 0,
            last_seq: 0,
            wal_gen: 1,
            indexed: Some(0),
        };
        c.durable = Some(Durable::new(
            dir,
            options,
            sink,
            manifest,
            wal::WAL_HEADER as u64,
            1,
            2,
            guard,
            RecoveryInfo::default(),
            (kind, config.storage),
        ));
        // Checkpoint 1: the empty state, so that a manifest always exists.
        if let Some(d) = &c.durable {
            let cut = c.cut(0, 1);
            c.commit_checkpoint(d, 1, cut)?;
        }
        c.set_mode(mode);
        Ok(c)
    }

    /// Opens the durable collection in `dir`: loads its last checkpoint (without
    /// rebuilding the index) and replays the log. Errors: `Locked` if another
    /// process (or another open collection) holds it, `Corruption` naming the file
    /// and byte offset of damage, `Io`.
    pub fn open(dir: &Path, options: DurableOptions) -> Result<Collection> {
        let fs = Arc::clone(&options.fs);
        let guard = lock_dir(&*fs, dir, options.read_only)?;
        let mpath = dir.join("MANIFEST");
        let bytes = fs.read(&mpath).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::invalid_param(
                    "dir",
                    format!("{} is not an omen collection (no MANIFEST)", dir.display()),
                )
            } else {
                Error::io(&mpath, e)
            }
        })?;
        let m = files::parse_manifest(&bytes, &mpath)?;
        let metric = files::metric_from_name(&m.metric).unwrap_or(Metric::L2);
        let dim = m.dim;
        let read_only = options.read_only;
        let mode = options.indexing;
        // Every checkpointed row below this is indexed, if live (manifests
        // before version 2 indexed every row).
        let indexed = m.indexed.unwrap_or(m.rows);
        // Vectors.
        let kind =
            registry::lookup(&m.index).map_err(|e| Error::corruption(&mpath, 24, e.to_string()))?;
        let storage_kind = StorageKind::from_name(&m.storage)
            .map_err(|e| Error::corruption(&mpath, 24, e.to_string()))?;
        let storage: Box<dyn VectorStorage> = match storage_kind {
            StorageKind::Mmap => {
                let vectors = dir.join("vectors");
                let s = mmap_open(Arc::clone(&fs), &vectors, dim, m.rows as usize)?;
                for seg in &m.segments {
                    let crc = segment_crc(&*s, seg);
                    if crc != seg.crc {
                        return Err(Error::corruption(
                            &vectors,
                            0,
                            format!(
                                "rows {}..{} fail their checksum (stored {:08x}, computed {crc:08x})",
                                seg.first_row,
                                seg.first_row + seg.rows,
                                seg.crc
                            ),
                        ));
                    }
                }
                s
            }
            StorageKind::Memory => {
                let s = omen_storage::MemoryStorage::new(dim)?;
                for seg in &m.segments {
                    let Some(name) = &seg.file else { continue };
                    let path = dir.join(name);
                    let bytes = fs.read(&path).map_err(io_err(&path))?;
                    let rows = files::parse_segment(&bytes, &path, dim, seg)?;
                    s.append_batch(&rows)?;
                }
                Box::new(s)
            }
        };
        // Ids.
        let mut idmap = IdMap::with_capacity(m.live as usize, m.rows as usize);
        if !m.ids_file.is_empty() {
            let path = dir.join(&m.ids_file);
            let bytes = fs.read(&path).map_err(io_err(&path))?;
            let entries = files::parse_ids(&bytes, &path, m.rows)?;
            if entries.len() as u64 != m.live {
                return Err(Error::corruption(
                    &path,
                    16,
                    format!("{} ids, the manifest says {}", entries.len(), m.live),
                ));
            }
            for (id, slot) in entries {
                let id: Arc<str> = Arc::from(id.as_str());
                if idmap.is_recorded(slot) {
                    return Err(Error::corruption(
                        &path,
                        32,
                        format!("slot {slot} appears twice"),
                    ));
                }
                idmap.record(slot, Arc::clone(&id));
                if idmap.make_current(&id, slot).is_some() {
                    return Err(Error::corruption(
                        &path,
                        32,
                        format!("id {id:?} appears twice"),
                    ));
                }
            }
        }
        idmap.set_indexed(indexed as SlotId);
        // Index: as the checkpoint saved it (no index work).
        let index: Box<dyn VectorIndex> =
            load_index(&*fs, dir, &m, kind, metric, &*storage, &idmap, indexed)?;
        let mut c = Collection::assemble(dim, metric, Arc::from(storage), Arc::from(index), idmap);
        // Replay goes to the storage and the id map only: the indexer adds the
        // rows later (or `set_mode` below, inline).
        c.mode = IndexingMode::Manual;

        // The log.
        let mut gens: Vec<u64> = fs
            .list(dir)
            .map_err(io_err(dir))?
            .iter()
            .filter_map(|n| parse_wal_name(n))
            .collect();
        gens.sort_unstable();
        let replay: Vec<u64> = gens.iter().copied().filter(|&g| g >= m.wal_gen).collect();
        let mut info = RecoveryInfo {
            checkpoint_gen: m.gen,
            ..RecoveryInfo::default()
        };
        let mut next_seq = m.last_seq + 1;
        let mut tail_len = 0u64;
        // Whether each log has a record after its header. A checkpoint creates
        // log `G + 1` before it syncs log `G` whole and moves writers to it, so a
        // crash in between leaves `G + 1` empty and `G` with a possibly torn tail:
        // the tail rule applies to every log that only empty logs follow.
        let mut has_records = vec![true; replay.len()];
        for (i, &g) in replay.iter().enumerate().skip(1) {
            let path = dir.join(wal_name(g));
            let bytes = fs.read(&path).map_err(io_err(&path))?;
            has_records[i] = bytes.len() > wal::WAL_HEADER;
        }
        for (i, &g) in replay.iter().enumerate() {
            let last = !has_records[i + 1..].iter().any(|&r| r);
            let path = dir.join(wal_name(g));
            let bytes = fs.read(&path).map_err(io_err(&path))?;
            let scan = wal::scan(&bytes, &path, dim, g, next_seq, last)?;
            for r in &scan.records {
                c.replay(r, &path)?;
                info.replayed_records += 1;
            }
            next_seq += scan.records.len() as u64;
            if scan.torn && read_only {
                // Nothing is written: the torn bytes are ignored, not cut.
                info.truncated_bytes = (bytes.len() as u64).saturating_sub(scan.valid_len);
                tail_len = scan.valid_len;
            } else if scan.torn {
                // `valid_len` exceeds the length when only a record's padding
                // was cut (the file is then extended to it).
                info.truncated_bytes = (bytes.len() as u64).saturating_sub(scan.valid_len);
                if scan.valid_len < wal::WAL_HEADER as u64 {
                    // The header never became durable: write it again.
                    let mut f = fs.create(&path).map_err(io_err(&path))?;
                    f.write_all(&wal::file_header(dim, g))
                        .map_err(io_err(&path))?;
                    f.sync_data().map_err(io_err(&path))?;
                    tail_len = wal::WAL_HEADER as u64;
                } else {
                    fs.set_len(&path, scan.valid_len).map_err(io_err(&path))?;
                    fs.sync_file(&path).map_err(io_err(&path))?;
                    tail_len = scan.valid_len;
                }
            } else {
                tail_len = scan.valid_len;
            }
        }
        info.unindexed_rows = read(&c.ids).tail_rows() as u64;
        info.read_only = read_only;
        if read_only {
            let sink = LogFile {
                path: dir.join(wal_name(replay.last().copied().unwrap_or(m.wal_gen))),
                file: Box::new(ReadOnlyLog),
            };
            let next_gen = gens.last().copied().unwrap_or(m.wal_gen) + 1;
            c.durable = Some(Durable::new(
                dir,
                options,
                sink,
                m,
                tail_len,
                next_seq,
                next_gen,
                guard,
                info,
                (kind, storage_kind),
            ));
            c.start_indexing(mode)?;
            return Ok(c);
        }
        let (sink, active_gen) = match replay.last() {
            Some(&g) => {
                let path = dir.join(wal_name(g));
                let file = fs.open_append(&path).map_err(io_err(&path))?;
                (LogFile { path, file }, g)
            }
            None => {
                tail_len = wal::WAL_HEADER as u64;
                (create_wal(&*fs, dir, dim, m.wal_gen)?, m.wal_gen)
            }
        };
        let max_gen = gens.last().copied().unwrap_or(0).max(active_gen);
        // Files no manifest names: older logs, unfinished checkpoints.
        let keep = |name: &str| -> bool {
            name == "MANIFEST"
                || name == "LOCK"
                || name == "vectors"
                || parse_wal_name(name).is_some_and(|g| g >= m.wal_gen)
                || m.ids_file == name
                || m.index_file.as_deref() == Some(name)
                || m.segments.iter().any(|s| s.file.as_deref() == Some(name))
        };
        let removable = |name: &str| -> bool {
            name.ends_with(".tmp")
                || parse_wal_name(name).is_some()
                || name.starts_with("vectors-")
                || name.starts_with("ids-")
                || name.starts_with("index-")
        };
        for name in fs.list(dir).map_err(io_err(dir))? {
            if !keep(&name) && removable(&name) {
                let path = dir.join(&name);
                fs.remove_file(&path).map_err(io_err(&path))?;
                info.removed_files += 1;
            }
        }
        if info.removed_files > 0 {
            fs.sync_dir(dir).map_err(io_err(dir))?;
        }
        c.durable = Some(Durable::new(
            dir,
            options,
            sink,
            m,
            tail_len,
            next_seq,
            max_gen + 1,
            guard,
            info,
            (kind, storage_kind),
        ));
        c.start_indexing(mode)?;
        Ok(c)
    }

    /// After replay: sets the indexing mode; inline, the tail is indexed before
    /// `open` returns (the old way), otherwise the indexer takes it from here.
    pub(super) fn start_indexing(&mut self, mode: IndexingMode) -> Result<()> {
        self.set_mode(mode);
        if mode == IndexingMode::Inline {
            self.wait_indexed()?;
        }
        Ok(())
    }

    /// Applies one replayed record. A record that does not fit the state (an
    /// insert of a live id, a delete of an unknown one) is corruption.
    pub(super) fn replay(&self, r: &wal::Record, file: &Path) -> Result<()> {
        let bad = |what: String| Error::corruption(file, 0, format!("record {}: {what}", r.seq));
        match r.op {
            Op::Insert | Op::Upsert => {
                if r.rows.len() != r.ids.len() * self.dim {
                    return Err(bad("vector length".into()));
                }
                if r.op == Op::Insert {
                    let ids = read(&self.ids);
                    let mut seen = std::collections::HashSet::new();
                    for id in &r.ids {
                        if ids.contains(id) || !seen.insert(id.as_str()) {
                            return Err(bad(format!("inserts id {id:?}, which is already live")));
                        }
                    }
                }
                let names: Vec<Arc<str>> = r.ids.iter().map(|s| Arc::from(s.as_str())).collect();
                self.apply_rows(&names, &r.rows)
            }
            Op::Delete => {
                for id in &r.ids {
                    self.apply_delete(id)
                        .map_err(|_| bad(format!("deletes id {id:?}, which is not live")))?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(not(loom))]
fn mmap_create(
    fs: Arc<dyn FileSystem>,
    dir: &Path,
    dim: usize,
    chunk_rows: usize,
) -> Result<Box<dyn VectorStorage>> {
    Ok(Box::new(omen_storage::MmapStorage::create_in(
        fs, dir, dim, chunk_rows,
    )?))
}

#[cfg(not(loom))]
fn mmap_open(
    fs: Arc<dyn FileSystem>,
    dir: &Path,
    dim: usize,
    rows: usize,
) -> Result<Box<dyn VectorStorage>> {
    Ok(Box::new(omen_storage::MmapStorage::open_in(
        fs, dir, dim, rows,
    )?))
}

#[cfg(not(loom))]
fn mmap_remove(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    omen_storage::MmapStorage::remove_in(fs, dir)
}

/// The loom build has no mmap storage (loom does not model file I/O).
#[cfg(loom)]
fn mmap_create(
    _: Arc<dyn FileSystem>,
    _: &Path,
    _: usize,
    _: usize,
) -> Result<Box<dyn VectorStorage>> {
    Err(Error::invalid_param(
        "storage",
        "no mmap storage under loom",
    ))
}

#[cfg(loom)]
fn mmap_open(
    fs: Arc<dyn FileSystem>,
    dir: &Path,
    dim: usize,
    _: usize,
) -> Result<Box<dyn VectorStorage>> {
    mmap_create(fs, dir, dim, 1)
}

#[cfg(loom)]
fn mmap_remove(_: &dyn FileSystem, _: &Path) -> Result<()> {
    Ok(())
}

/// Loads (or, for the flat index, rebuilds) the index the manifest names and
/// checks that it holds exactly the live slots.
#[allow(clippy::too_many_arguments)]
fn load_index(
    fs: &dyn FileSystem,
    dir: &Path,
    m: &Manifest,
    kind: &'static dyn IndexKind,
    metric: Metric,
    storage: &dyn VectorStorage,
    ids: &IdMap,
    indexed: u64,
) -> Result<Box<dyn VectorIndex>> {
    let index_metric = kind.index_metric(metric);
    // The index holds the live slots below the watermark; the rest are the
    // indexer's.
    let live: Vec<SlotId> = ids
        .live()
        .into_iter()
        .map(|(_, s)| s)
        .filter(|&s| u64::from(s) < indexed)
        .collect();
    let mpath = dir.join("MANIFEST");
    let (index, path): (Box<dyn VectorIndex>, PathBuf) =
        match (&m.index_file, kind.file_extension()) {
            (Some(name), Some(_)) => {
                let path = dir.join(name);
                let bytes = fs.read(&path).map_err(io_err(&path))?;
                (kind.load(&bytes, &path)?, path)
            }
            (None, None) => {
                // It saves nothing: recreate it with its parameters and add the live
                // slots.
                let params = match &m.index_params {
                    Some(p) => registry::params_from_json(p)
                        .map_err(|e| Error::corruption(&mpath, 24, e))?,
                    None => omen_core::Params::new(),
                };
                let index = kind
                    .create(m.dim, index_metric, &params)
                    .map_err(|e| Error::corruption(&mpath, 24, format!("index parameters: {e}")))?;
                omen_core::add_slots(&*index, storage, &live)?;
                (index, mpath)
            }
            (None, Some(_)) => {
                return Err(Error::corruption(
                    &mpath,
                    24,
                    format!("a {} index without an index file", kind.name()),
                ));
            }
            (Some(name), None) => {
                return Err(Error::corruption(
                    &mpath,
                    24,
                    format!(
                        "index file {name:?} for a {} index, which saves none",
                        kind.name()
                    ),
                ));
            }
        };
    if index.dim() != m.dim || index.metric() != index_metric {
        return Err(Error::corruption(
            &path,
            0,
            format!(
                "index of dimension {} metric {}, the collection is {} {index_metric}",
                index.dim(),
                index.metric(),
                m.dim
            ),
        ));
    }
    if index.len() != live.len() || live.iter().any(|&s| !index.contains(s)) {
        return Err(Error::corruption(
            &path,
            0,
            format!(
                "the index holds {} slots, the id map {} live ids below the indexed mark {indexed}, and they differ",
                index.len(),
                live.len()
            ),
        ));
    }
    Ok(index)
}
