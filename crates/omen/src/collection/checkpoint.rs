//! Checkpoints: the cut taken under the writer lock, the files written, the
//! manifest committed by rename, and the automatic and closing checkpoints.

use crate::durable::files::{self, Manifest, Segment};
use crate::durable::{
    create_wal, io_err, parse_wal_name, read_only_error, row_blocks, wal, write_file,
    CheckpointInfo, Durable, CLOSE_CHECKPOINT_LOG_BYTES, CLOSE_CHECKPOINT_ROWS,
};
use omen_core::sync::{lock, read, write};
use omen_core::{Error, Result, SlotId};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Collection;

/// The state a checkpoint saves, taken with the writer lock held.
pub(super) struct Cut {
    rows: u64,
    live: Vec<(Arc<str>, SlotId)>,
    index: Option<Vec<u8>>,
    /// The indexed watermark: the index holds exactly the live slots below it.
    indexed: u64,
    last_seq: u64,
    wal_gen: u64,
}

impl Collection {
    /// Rows the indexer added since the last checkpoint: index work a reopen
    /// would redo.
    pub(super) fn indexed_since_checkpoint(&self, d: &Durable) -> u64 {
        let m = read(&d.manifest);
        if m.index_file.is_none() && d.index_kind.file_extension().is_none() {
            // An index that saves nothing (flat) is rebuilt from the live slots
            // on reopen whatever a checkpoint holds, so its "index work" is never
            // worth a checkpoint.
            return 0;
        }
        let saved = m.indexed.unwrap_or(0);
        drop(m);
        u64::from(read(&self.ids).indexed()).saturating_sub(saved)
    }

    /// Whether the last checkpoint misses enough to be worth a checkpoint on
    /// close: at least [`CLOSE_CHECKPOINT_ROWS`] rows indexed since it (index work
    /// a reopen would redo) or [`CLOSE_CHECKPOINT_LOG_BYTES`] of log. Less stays in
    /// the log: replaying it costs no index work, and a few rows index at once.
    pub(super) fn worth_saving_on_close(&self, d: &Durable) -> bool {
        d.queue.since_checkpoint() >= CLOSE_CHECKPOINT_LOG_BYTES
            || self.indexed_since_checkpoint(d) >= CLOSE_CHECKPOINT_ROWS
    }

    /// Writes a checkpoint now: the vectors added since the last one, the id map
    /// and the index's state, atomically; then truncates the log (older
    /// generations are removed). Writers are held off only while the state is cut
    /// (the old log is synced and the index's bytes copied); searches never wait.
    /// Errors: `InvalidParameter` for an in-memory collection, `Poisoned`, `Io`
    /// (which poisons the collection: reopen it).
    pub fn checkpoint(&self) -> Result<CheckpointInfo> {
        let d = self.durable()?;
        if d.read_only {
            return Err(read_only_error(&d.dir));
        }
        let _one = lock(&d.checkpointing);
        if d.is_poisoned() {
            return Err(d.poisoned_error());
        }
        let gen = d.next_gen.fetch_add(1, Ordering::Relaxed);
        let sink = create_wal(&*d.fs, &d.dir, self.dim, gen).inspect_err(|e| d.poison(e))?;
        let cut = {
            let _w = lock(&self.writer);
            d.queue
                .rotate(sink, wal::WAL_HEADER as u64)
                .inspect_err(|e| d.poison(e))?;
            self.cut(d.queue.next_seq() - 1, gen)
        };
        self.commit_checkpoint(d, gen, cut)
            .inspect_err(|e| d.poison(e))
    }

    /// Stops the indexer, writes a checkpoint if the last one misses enough to be
    /// worth one (1,024 rows indexed since it, or 1 MiB of log), flushes and
    /// syncs the log and stops the flusher; errors are reported here rather than
    /// lost in `Drop` (which only syncs the log). Rows not yet indexed stay in the
    /// checkpoint as unindexed rows: the next open searches them exactly and
    /// indexes them.
    pub fn close(mut self) -> Result<()> {
        self.stop_indexer();
        let saved = match &self.durable {
            Some(d) if !d.read_only && !d.is_poisoned() && self.worth_saving_on_close(d) => {
                self.checkpoint().map(|_| ())
            }
            _ => Ok(()),
        };
        let closed = match self.durable.take() {
            Some(d) => d.close(),
            None => Ok(()),
        };
        saved.and(closed)
    }

    /// The state to checkpoint. Called with the writer lock held; waits for the
    /// indexer's step in flight, so that the index holds exactly the current
    /// slots below the watermark it records.
    pub(super) fn cut(&self, last_seq: u64, wal_gen: u64) -> Cut {
        let _g = lock(&self.indexing.index_lock);
        self.indexing.drain_retired(&*self.index);
        let (live, indexed) = {
            let ids = read(&self.ids);
            (ids.live(), ids.indexed())
        };
        Cut {
            rows: self.storage.len() as u64,
            live,
            index: self.index.persist(),
            indexed: u64::from(indexed),
            last_seq,
            wal_gen,
        }
    }

    /// Writes checkpoint `gen` of `cut` and commits it (the manifest rename).
    pub(super) fn commit_checkpoint(
        &self,
        d: &Durable,
        gen: u64,
        cut: Cut,
    ) -> Result<CheckpointInfo> {
        let fs = &*d.fs;
        let dir = &d.dir;
        let prev = Arc::clone(&read(&d.manifest));
        let mut segments = prev.segments.clone();
        let mut written = 0u64;
        if cut.rows > prev.rows {
            let (first, end) = (prev.rows, cut.rows);
            let blocks = row_blocks(&*self.storage, first, end);
            let got: usize = blocks.iter().map(|b| b.len() / self.dim).sum();
            if got as u64 != end - first {
                return Err(Error::CapacityExceeded {
                    what: format!("storage lost row {}", first + got as u64),
                });
            }
            if d.storage_kind.persists_rows() {
                self.storage.flush()?;
                let crc = files::rows_crc(&mut blocks.iter().copied());
                segments.push(Segment {
                    file: None,
                    first_row: first,
                    rows: end - first,
                    crc,
                });
            } else {
                let (bytes, crc) = files::encode_segment(self.dim, first, &blocks);
                let name = format!("vectors-{gen:08}.seg");
                write_file(fs, &dir.join(&name), &bytes)?;
                written += bytes.len() as u64;
                segments.push(Segment {
                    file: Some(name),
                    first_row: first,
                    rows: end - first,
                    crc,
                });
            }
        }
        let ids_file = format!("ids-{gen:08}.ids");
        let ids = files::encode_ids(&cut.live);
        write_file(fs, &dir.join(&ids_file), &ids)?;
        written += ids.len() as u64;
        let index_file = match &cut.index {
            Some(bytes) => {
                let ext = d.index_kind.file_extension().unwrap_or("index");
                let name = format!("index-{gen:08}.{ext}");
                write_file(fs, &dir.join(&name), bytes)?;
                written += bytes.len() as u64;
                Some(name)
            }
            None => None,
        };
        let manifest = Manifest {
            gen,
            dim: self.dim,
            metric: prev.metric.clone(),
            index: prev.index.clone(),
            index_params: prev.index_params.clone(),
            index_file,
            storage: prev.storage.clone(),
            rows: cut.rows,
            segments,
            ids_file,
            live: cut.live.len() as u64,
            last_seq: cut.last_seq,
            wal_gen: cut.wal_gen,
            indexed: Some(cut.indexed.min(cut.rows)),
        };
        let bytes = files::encode_manifest(&manifest);
        let tmp = dir.join("MANIFEST.tmp");
        write_file(fs, &tmp, &bytes)?;
        // The entries of the files the manifest names must be durable before the
        // rename that commits it can be: a directory need not persist its
        // operations in order.
        fs.sync_dir(dir).map_err(io_err(dir))?;
        let path = dir.join("MANIFEST");
        fs.rename(&tmp, &path).map_err(io_err(&path))?;
        fs.sync_dir(dir).map_err(io_err(dir))?;
        written += bytes.len() as u64;
        let info = CheckpointInfo {
            gen,
            rows: manifest.rows,
            live: manifest.live,
            last_seq: manifest.last_seq,
            indexed: manifest.indexed.unwrap_or(manifest.rows),
            bytes_written: written,
        };
        *write(&d.manifest) = Arc::new(manifest);
        // Committed. What the old checkpoint and the replaced logs used is garbage
        // now; a failure to remove it is harmless (the next open removes it).
        let mut removed = false;
        if let Ok(names) = fs.list(dir) {
            for name in names {
                let old_log = parse_wal_name(&name).is_some_and(|g| g < cut.wal_gen);
                let old_file =
                    name == prev.ids_file || prev.index_file.as_deref() == Some(name.as_str());
                if (old_log || old_file) && fs.remove_file(&dir.join(&name)).is_ok() {
                    removed = true;
                }
            }
        }
        if removed {
            let _ = fs.sync_dir(dir);
        }
        Ok(info)
    }
}
