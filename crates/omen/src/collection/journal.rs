//! The write journal of a durable collection: every write is checked, logged,
//! applied and acknowledged through these hooks.

use crate::durable::{read_only_error, wal, wal::Op, Durability, Durable, RecoveryInfo};
use omen_core::{Error, Result};
use std::path::Path;

use super::Collection;

impl Collection {
    /// Refuses writes on a poisoned collection.
    pub(crate) fn check_writable(&self) -> Result<()> {
        if let Some(d) = &self.durable {
            if d.read_only {
                return Err(read_only_error(&d.dir));
            }
            if d.is_poisoned() {
                return Err(d.poisoned_error());
            }
        }
        self.check_indexer()
    }

    /// Logs a validated write; returns the ticket to wait on.
    pub(crate) fn log<S: AsRef<str>>(
        &self,
        op: Op,
        ids: &[S],
        rows: &[f32],
    ) -> Result<Option<u64>> {
        let Some(d) = &self.durable else {
            return Ok(None);
        };
        let seq = d
            .queue
            .append(|buf, seq, synced| wal::encode(buf, seq, synced, op, ids, rows))?;
        match d.mode {
            Durability::PerWrite => {
                d.queue.flush(true).inspect_err(|e| d.poison(e))?;
                Ok(None)
            }
            Durability::GroupCommit { .. } => Ok(Some(seq)),
            Durability::None => {
                if d.queue.buffered_bytes() >= 1 << 20 {
                    d.queue.flush(false).inspect_err(|e| d.poison(e))?;
                }
                Ok(None)
            }
        }
    }

    /// After applying a logged write: a failure now leaves the log ahead of memory,
    /// so the collection refuses further writes until it is reopened (recovery
    /// then decides from the log).
    pub(crate) fn after_apply(
        &self,
        applied: Result<()>,
        ticket: Option<u64>,
    ) -> Result<Option<u64>> {
        if let Err(e) = applied {
            if let Some(d) = &self.durable {
                d.poison(&e);
            }
            return Err(e);
        }
        Ok(ticket)
    }

    /// Waits for the write's acknowledgement, then runs an automatic checkpoint
    /// if the log has grown past the threshold.
    pub(crate) fn commit(&self, ticket: Option<u64>) -> Result<()> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        if let Some(seq) = ticket {
            d.queue.wait_durable(seq)?;
        }
        if d.queue.since_checkpoint() >= d.checkpoint_bytes
            || self.indexed_since_checkpoint(d) >= d.checkpoint_indexed
        {
            if let Ok(_guard) = d.checkpointing.try_lock() {
                drop(_guard);
                self.checkpoint()?;
            }
        }
        Ok(())
    }

    /// Forces every logged write to disk (useful under [`Durability::None`]).
    pub fn sync(&self) -> Result<()> {
        let d = self.durable()?;
        d.queue.flush(true).inspect_err(|e| d.poison(e))?;
        self.storage.flush().inspect_err(|e| d.poison(e))
    }

    /// What opening found (checkpoint loaded, records replayed, bytes truncated),
    /// or `None` for an in-memory collection.
    pub fn recovery_info(&self) -> Option<&RecoveryInfo> {
        self.durable.as_ref().map(|d| &d.recovery)
    }

    /// The directory of a durable collection.
    pub fn dir(&self) -> Option<&Path> {
        self.durable.as_ref().map(|d| d.dir.as_path())
    }

    /// The durability mode, or `None` for an in-memory collection.
    pub fn durability(&self) -> Option<Durability> {
        self.durable.as_ref().map(|d| d.mode)
    }

    pub(super) fn durable(&self) -> Result<&Durable> {
        self.durable.as_ref().ok_or_else(|| {
            Error::invalid_param(
                "collection",
                "in-memory collections have no log or checkpoints",
            )
        })
    }
}
