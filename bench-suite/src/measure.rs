//! What the durability benchmark (`omen bench durability`) and its indexing
//! section share: the durability mode they measure, the
//! ingest loop, medians and the targets they check.

use omen::{Collection, Durability};
use omen_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// A target of the issue, checked against a figure of this run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TargetCheck {
    /// The target in words.
    pub target: String,
    /// The figure measured, in words.
    pub measured: String,
    /// Whether it was met.
    pub met: bool,
}

/// Group commit as the collection's default (sync as soon as a record waits).
pub fn group_commit() -> Durability {
    Durability::default()
}

/// The median (NaN for none).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Rows per `insert_batch` call of [`ingest`].
pub const BATCH: usize = 1_000;
/// Batches a single pipelined writer keeps submitted ahead of its oldest
/// acknowledgement (a bulk loader's natural window: the log syncs one group while
/// the next batches are validated and applied).
pub const PIPELINE: usize = 4;

/// Inserts every row in batches of [`BATCH`]: one writer pipelines with
/// `insert_batch_deferred` (up to [`PIPELINE`] batches submitted before it waits
/// for the oldest one's acknowledgement); several writers each call `insert_batch`.
/// Then `sync()`; returns seconds.
pub fn ingest(
    c: &Collection,
    rows: &[f32],
    ids: &[String],
    dim: usize,
    writers: usize,
) -> Result<f64> {
    let batches: Vec<(usize, &[f32])> = rows
        .chunks(BATCH * dim)
        .enumerate()
        .map(|(b, r)| (b * BATCH, r))
        .collect();
    let t = Instant::now();
    if writers <= 1 {
        // Pipelined: up to PIPELINE batches are submitted ahead of the oldest
        // acknowledgement, so later batches are validated, logged and applied
        // while earlier ones sync; each counts only once its ticket's wait returned.
        let mut pending = std::collections::VecDeque::with_capacity(PIPELINE);
        for &(first, r) in &batches {
            if pending.len() == PIPELINE {
                if let Some(p) = pending.pop_front() {
                    omen::WriteTicket::wait(p)?;
                }
            }
            pending.push_back(c.insert_batch_deferred(&ids[first..first + r.len() / dim], r)?);
        }
        for p in pending {
            p.wait()?;
        }
    } else {
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| -> Result<()> {
            let hs: Vec<_> = (0..writers)
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(&(first, r)) = batches.get(i) else {
                                return Ok(());
                            };
                            c.insert_batch(&ids[first..first + r.len() / dim], r)?;
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join()
                    .map_err(|_| Error::invalid_param("writer", "a writer thread panicked"))??;
            }
            Ok(())
        })?;
    }
    c.sync()?;
    Ok(t.elapsed().as_secs_f64())
}

/// [`ingest`] from one pipelined writer.
pub fn ingest_rows(c: &Collection, rows: &[f32], ids: &[String], dim: usize) -> Result<f64> {
    ingest(c, rows, ids, dim, 1)
}
