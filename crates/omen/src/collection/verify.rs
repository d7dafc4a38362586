//! `verify`: every checksum of the collection directory and every live id
//! against the storage and the index, without changing anything.

use crate::durable::files::{self};
use crate::durable::{io_err, parse_wal_name, segment_crc, wal, wal_name, VerifyReport};
use omen_core::sync::{lock, read};
use omen_core::{Error, Result};
use std::path::{Path, PathBuf};

use super::Collection;
use crate::registry;

impl Collection {
    /// Checks every checksum of the collection's files (durable collections) and
    /// the agreement of the id map, the storage and the index: every live id's
    /// slot holds a finite vector, and the index holds exactly the live slots.
    /// Writers wait while it runs. Errors: `Corruption` naming what disagrees.
    pub fn verify(&self) -> Result<VerifyReport> {
        let _w = lock(&self.writer);
        let mut report = VerifyReport {
            rows: self.storage.len(),
            ..VerifyReport::default()
        };
        let here = self
            .dir()
            .map_or_else(|| PathBuf::from("<memory>"), Path::to_path_buf);
        {
            // No indexer step in flight, retired slots out: the index holds exactly
            // the live slots below the watermark.
            let _g = lock(&self.indexing.index_lock);
            self.indexing.drain_retired(&*self.index);
            let ids = read(&self.ids);
            let w = ids.indexed();
            let live = ids.live();
            report.live = live.len();
            report.unindexed_rows = ids.tail_rows();
            let mut below = 0usize;
            for (id, slot) in &live {
                let Some(v) = self.storage.get(*slot) else {
                    return Err(Error::corruption(
                        &here,
                        0,
                        format!(
                            "id {id:?} names slot {slot}, beyond the {} stored rows",
                            report.rows
                        ),
                    ));
                };
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(Error::corruption(
                        &here,
                        0,
                        format!("id {id:?}: non-finite vector"),
                    ));
                }
                if *slot >= w {
                    if self.index.contains(*slot) {
                        return Err(Error::corruption(
                            &here,
                            0,
                            format!("id {id:?} (slot {slot}) is in the index above the indexed mark {w}"),
                        ));
                    }
                    continue;
                }
                below += 1;
                if !self.index.contains(*slot) {
                    return Err(Error::corruption(
                        &here,
                        0,
                        format!("id {id:?} (slot {slot}) is missing from the index"),
                    ));
                }
            }
            if self.index.len() != below {
                return Err(Error::corruption(
                    &here,
                    0,
                    format!(
                        "the index holds {} slots for {below} live ids below the indexed mark {w}",
                        self.index.len(),
                    ),
                ));
            }
        }
        let Some(d) = &self.durable else {
            return Ok(report);
        };
        // The files, as on disk now (buffered log records are flushed first).
        d.queue.flush(false).inspect_err(|e| d.poison(e))?;
        let fs = &*d.fs;
        let dir = &d.dir;
        let mpath = dir.join("MANIFEST");
        let m = files::parse_manifest(&fs.read(&mpath).map_err(io_err(&mpath))?, &mpath)?;
        report.files += 1;
        for seg in &m.segments {
            match &seg.file {
                Some(name) => {
                    let path = dir.join(name);
                    files::parse_segment(
                        &fs.read(&path).map_err(io_err(&path))?,
                        &path,
                        m.dim,
                        seg,
                    )?;
                }
                None => {
                    let crc = segment_crc(&*self.storage, seg);
                    if crc != seg.crc {
                        return Err(Error::corruption(
                            dir.join("vectors"),
                            0,
                            format!(
                                "rows {}..{} fail their checksum",
                                seg.first_row,
                                seg.first_row + seg.rows
                            ),
                        ));
                    }
                }
            }
            report.files += 1;
        }
        let ipath = dir.join(&m.ids_file);
        let entries = files::parse_ids(&fs.read(&ipath).map_err(io_err(&ipath))?, &ipath, m.rows)?;
        // The index file holds the live slots below the checkpoint's watermark.
        let indexed = m.indexed.unwrap_or(m.rows);
        let below = entries
            .iter()
            .filter(|(_, s)| u64::from(*s) < indexed)
            .count() as u64;
        report.files += 1;
        if let Some(name) = &m.index_file {
            let path = dir.join(name);
            let bytes = fs.read(&path).map_err(io_err(&path))?;
            let kind = registry::lookup(&m.index)
                .map_err(|e| Error::corruption(&mpath, 24, e.to_string()))?;
            let n = kind.load(&bytes, &path)?.len();
            if n as u64 != below {
                return Err(Error::corruption(
                    &path,
                    0,
                    format!(
                        "index file holds {n} slots, the checkpoint {below} live ids below its indexed mark {indexed}"
                    ),
                ));
            }
            report.files += 1;
        }
        let mut gens: Vec<u64> = fs
            .list(dir)
            .map_err(io_err(dir))?
            .iter()
            .filter_map(|n| parse_wal_name(n))
            .filter(|&g| g >= m.wal_gen)
            .collect();
        gens.sort_unstable();
        let mut next = m.last_seq + 1;
        for (i, &g) in gens.iter().enumerate() {
            let path = dir.join(wal_name(g));
            let bytes = fs.read(&path).map_err(io_err(&path))?;
            let scan = wal::scan(&bytes, &path, m.dim, g, next, i + 1 == gens.len())?;
            next += scan.records.len() as u64;
            report.log_records += scan.records.len() as u64;
            report.files += 1;
        }
        Ok(report)
    }
}
