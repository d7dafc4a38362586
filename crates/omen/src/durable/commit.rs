//! The log's commit queue: records are appended to a buffer under a lock and
//! handed to the file in order by one flusher at a time; a write is acknowledged
//! once a sync covers its sequence number.
//!
//! * Appends happen with the collection's writer lock held, so sequence numbers
//!   follow the order in which writes are applied.
//! * At most one flush owns the sink at a time (it is taken out of the state while
//!   the I/O runs, so writers keep appending to a fresh buffer), so the file holds
//!   records in sequence order.
//! * `durable_seq` only grows, and only after a sync that covered every record up
//!   to it returned: a writer that waits for `durable_seq >= seq` is acknowledged
//!   only when its record, and every earlier one, is on disk.
//! * A failed write or sync poisons the queue for good: every waiter and every
//!   later append gets [`Error::Poisoned`] (the caller reopens, and recovery
//!   decides from the file what survived).
//!
//! The loom model in `crates/omen/src/loom_tests.rs` checks the acknowledgement
//! order with two writers and a flusher.

use omen_core::sync::{lock, wait, Condvar, Mutex, MutexGuard};
use omen_core::{Error, Result};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where flushed bytes go: the current log file.
pub(crate) trait LogSink: Send {
    /// Appends bytes.
    fn write(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything written durable.
    fn sync(&mut self) -> io::Result<()>;
    /// The file, for error messages.
    fn path(&self) -> Option<&Path> {
        None
    }
}

/// A log file and its path.
pub(crate) struct LogFile {
    pub(crate) path: PathBuf,
    pub(crate) file: Box<dyn omen_fs::WritableFile>,
}

impl LogSink for LogFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }
}

/// The largest flush buffer kept for reuse: one huge batch does not pin its
/// memory for the collection's lifetime.
const MAX_SPARE: usize = 32 << 20;

/// When the flusher thread syncs.
#[derive(Copy, Clone, Debug)]
pub(crate) struct GroupPolicy {
    /// Sync once this many records wait.
    pub max_records: u64,
    /// Sync once this many bytes wait (a large batch need not wait for company).
    pub max_bytes: usize,
    /// Sync once the oldest waiting record is this old; `None`: as soon as any
    /// record waits (the loom models use this, as loom does not model time).
    pub max_delay: Option<Duration>,
}

struct State<S> {
    /// The log file; `None` while a flush has it out.
    sink: Option<S>,
    buf: Vec<u8>,
    /// The buffer of the previous flush, emptied, for the next one to take over:
    /// writers then append into memory that is already allocated and faulted in
    /// instead of growing a fresh vector (with page faults) after every flush.
    spare: Vec<u8>,
    buf_records: u64,
    first_pending: Option<Instant>,
    next_seq: u64,
    /// Every record up to this one is durable.
    durable_seq: u64,
    /// Bytes handed to the sink (file length).
    file_len: u64,
    /// Bytes known durable.
    durable_len: u64,
    /// Bytes appended since the last checkpoint (for the automatic trigger).
    since_checkpoint: u64,
    failed: Option<String>,
    shutdown: bool,
}

/// The commit queue over a sink `S`.
pub(crate) struct CommitQueue<S> {
    state: Mutex<State<S>>,
    /// The flusher waits here for work.
    work: Condvar,
    /// Waiters for durability, and for the sink to come back, wait here.
    done: Condvar,
}

impl<S: LogSink> CommitQueue<S> {
    /// A queue writing to `sink`, a file already `file_len` bytes long (all
    /// durable), whose next record gets sequence number `next_seq`.
    pub(crate) fn new(sink: S, file_len: u64, next_seq: u64) -> Self {
        CommitQueue {
            state: Mutex::new(State {
                sink: Some(sink),
                buf: Vec::new(),
                spare: Vec::new(),
                buf_records: 0,
                first_pending: None,
                next_seq,
                durable_seq: next_seq.saturating_sub(1),
                file_len,
                durable_len: file_len,
                since_checkpoint: 0,
                failed: None,
                shutdown: false,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
        }
    }

    /// Appends one record, encoded by `encode(buf, seq, synced_upto)`; returns
    /// its sequence number. Poisoned queues refuse.
    pub(crate) fn append(&self, encode: impl FnOnce(&mut Vec<u8>, u64, u64)) -> Result<u64> {
        let mut st = lock(&self.state);
        if let Some(cause) = &st.failed {
            return Err(Error::Poisoned {
                cause: cause.clone(),
            });
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let before = st.buf.len();
        let synced_upto = st.durable_len;
        encode(&mut st.buf, seq, synced_upto);
        st.since_checkpoint += (st.buf.len() - before) as u64;
        st.buf_records += 1;
        if st.first_pending.is_none() {
            st.first_pending = Some(Instant::now());
        }
        drop(st);
        self.work.notify_one();
        Ok(seq)
    }

    /// Bytes buffered but not yet handed to the file.
    pub(crate) fn buffered_bytes(&self) -> usize {
        lock(&self.state).buf.len()
    }

    /// Bytes of log written since the last [`reset_checkpoint_counter`](Self::reset_checkpoint_counter).
    pub(crate) fn since_checkpoint(&self) -> u64 {
        lock(&self.state).since_checkpoint
    }

    /// The sequence number the next record gets.
    pub(crate) fn next_seq(&self) -> u64 {
        lock(&self.state).next_seq
    }

    /// Whether an earlier failure poisoned the queue.
    pub(crate) fn is_poisoned(&self) -> bool {
        lock(&self.state).failed.is_some()
    }

    /// What poisoned the queue, if anything did.
    pub(crate) fn failure(&self) -> Option<String> {
        lock(&self.state).failed.clone()
    }

    /// Waits until record `seq` is durable.
    pub(crate) fn wait_durable(&self, seq: u64) -> Result<()> {
        let mut st = lock(&self.state);
        loop {
            if st.durable_seq >= seq {
                return Ok(());
            }
            if let Some(cause) = &st.failed {
                return Err(Error::Poisoned {
                    cause: cause.clone(),
                });
            }
            st = wait(&self.done, st);
        }
    }

    /// Writes everything buffered to the file and, with `sync`, makes it durable.
    /// Waits for a flush in progress first.
    pub(crate) fn flush(&self, sync: bool) -> Result<()> {
        let st = lock(&self.state);
        let st = self.flush_locked(st, sync)?;
        drop(st);
        Ok(())
    }

    fn flush_locked<'a>(
        &'a self,
        mut st: MutexGuard<'a, State<S>>,
        sync: bool,
    ) -> Result<MutexGuard<'a, State<S>>> {
        loop {
            if let Some(msg) = &st.failed {
                return Err(Error::Io {
                    path: None,
                    source: io::Error::other(format!("the log failed earlier: {msg}")),
                });
            }
            if st.sink.is_some() {
                break;
            }
            st = wait(&self.done, st);
        }
        let need_sync = sync && (st.durable_len < st.file_len + st.buf.len() as u64);
        if st.buf.is_empty() && !need_sync {
            return Ok(st);
        }
        let spare = std::mem::take(&mut st.spare);
        let data = std::mem::replace(&mut st.buf, spare);
        let last = st.next_seq - 1;
        st.buf_records = 0;
        st.first_pending = None;
        let Some(mut sink) = st.sink.take() else {
            return Ok(st);
        };
        drop(st);
        let path = sink.path().map(Path::to_path_buf);
        let mut r = if data.is_empty() {
            Ok(())
        } else {
            sink.write(&data)
        };
        if r.is_ok() && need_sync {
            r = sink.sync();
        }
        let mut st = lock(&self.state);
        st.sink = Some(sink);
        let out = match r {
            Ok(()) => {
                st.file_len += data.len() as u64;
                if need_sync {
                    st.durable_len = st.file_len;
                    st.durable_seq = last;
                }
                Ok(())
            }
            Err(e) => {
                let what = if need_sync && !data.is_empty() {
                    "writing and syncing"
                } else if need_sync {
                    "syncing"
                } else {
                    "writing"
                };
                st.failed = Some(match &path {
                    Some(p) => format!("{what} the log {}: {e}", p.display()),
                    None => format!("{what} the log: {e}"),
                });
                Err(Error::Io { path, source: e })
            }
        };
        // Keep the allocation for a later flush to hand to the writers.
        let mut data = data;
        data.clear();
        if data.capacity() > MAX_SPARE {
            data = Vec::new();
        }
        if st.buf.capacity() < data.capacity() && st.buf.is_empty() {
            std::mem::swap(&mut st.buf, &mut data);
        }
        if st.spare.capacity() < data.capacity() {
            st.spare = data;
        }
        drop(st);
        self.done.notify_all();
        out.map(|()| lock(&self.state))
    }

    /// Syncs everything buffered, then replaces the sink with `sink` (a new log
    /// file, `file_len` bytes long and durable). Returns the old one. The caller
    /// holds the collection's writer lock, so nothing is appended meanwhile.
    pub(crate) fn rotate(&self, sink: S, file_len: u64) -> Result<S> {
        let mut st = lock(&self.state);
        loop {
            st = self.flush_locked(st, true)?;
            if st.buf.is_empty() {
                break;
            }
        }
        let old = st.sink.replace(sink);
        st.file_len = file_len;
        st.durable_len = file_len;
        st.since_checkpoint = 0;
        old.ok_or_else(|| Error::Io {
            path: None,
            source: io::Error::other("log file missing during rotation"),
        })
    }

    /// Runs the group-commit flusher until [`shutdown`](Self::shutdown) (after a
    /// final flush) or a failure.
    pub(crate) fn run_flusher(&self, policy: GroupPolicy) {
        let mut st = lock(&self.state);
        loop {
            if st.failed.is_some() || (st.shutdown && st.buf_records == 0) {
                return;
            }
            if st.buf_records == 0 {
                st = wait(&self.work, st);
                continue;
            }
            let due = st.shutdown
                || st.buf_records >= policy.max_records
                || st.buf.len() >= policy.max_bytes
                || match (policy.max_delay, st.first_pending) {
                    (None, _) | (_, None) => true,
                    (Some(d), Some(t)) => t.elapsed() >= d,
                };
            if !due {
                let left = match (policy.max_delay, st.first_pending) {
                    (Some(d), Some(t)) => d.saturating_sub(t.elapsed()),
                    _ => Duration::ZERO,
                };
                st = wait_timeout(&self.work, st, left);
                continue;
            }
            st = match self.flush_locked(st, true) {
                Ok(st) => st,
                Err(_) => return,
            };
        }
    }

    /// Asks the flusher to flush what is left and stop.
    pub(crate) fn shutdown(&self) {
        lock(&self.state).shutdown = true;
        self.work.notify_all();
    }
}

#[cfg(not(loom))]
fn wait_timeout<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>, d: Duration) -> MutexGuard<'a, T> {
    match cv.wait_timeout(g, d) {
        Ok((g, _)) => g,
        Err(p) => p.into_inner().0,
    }
}

#[cfg(loom)]
fn wait_timeout<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>, _d: Duration) -> MutexGuard<'a, T> {
    wait(cv, g)
}
