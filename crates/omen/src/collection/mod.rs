use crate::config::CollectionConfig;
mod checkpoint;
#[cfg(test)]
#[cfg(not(loom))]
mod durable_tests;
mod journal;
mod open;
mod verify;

use crate::durable::wal::Op;
use crate::idmap::IdMap;
use crate::indexer::{self, IndexingMode, Shared};
use foldhash::HashSet;
use omen_core::simd::{Isa, Kernels};
use omen_core::sync::{lock, read, write, Mutex, RwLock};
use omen_core::validate::{check_finite, check_id, check_vector, normalize_into};
use omen_core::{
    Error, IndexStats, Metric, Neighbor, Result, SearchParams, SearchRequest, SearchScratch,
    SlotId, VectorIndex, VectorStorage,
};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// The largest squared Euclidean norm accepted for a vector or query under the
/// `L2` and `InnerProduct` metrics (about 4.3e37, a norm of about 6.5e18).
///
/// Finite vectors can still have distances that overflow f32: `1e20²` is infinite,
/// and a dot product can then be `inf - inf = NaN`, which would sort ahead of every
/// real distance. With both norms at most this bound, `|a - b|² ≤ 2(|a|² + |b|²)`
/// and `|a·b| ≤ |a||b|` stay below `f32::MAX / 2`, so every distance is finite.
/// Under the cosine metric vectors are normalised (in f64) and the bound does not
/// apply.
pub const MAX_SQUARED_NORM: f64 = (f32::MAX / 8.0) as f64;

/// Index searches a query runs without holding the id-map lock before it holds
/// it (see `Collection::search_one`).
const OPTIMISTIC_ATTEMPTS: usize = 3;

/// The instruction set the distance kernels use in this process.
pub fn isa() -> Isa {
    Kernels::best().isa()
}

/// One search result: the id and its distance to the query (smaller is closer).
///
/// The id is shared with the collection's id map (an `Arc` clone, no copy of the
/// string), so a search allocates nothing per hit.
pub type Hit = (Arc<str>, f32);

/// A write applied but not yet acknowledged; see
/// [`Collection::insert_batch_deferred`].
#[must_use = "the write is acknowledged (durable) only once `wait` returns Ok"]
#[derive(Debug)]
pub struct WriteTicket<'a> {
    collection: &'a Collection,
    /// The log record to wait for, if any.
    seq: Option<u64>,
}

impl WriteTicket<'_> {
    /// Waits until the write is durable (as the collection's durability mode
    /// defines it), then runs an automatic checkpoint if one is due. Errors:
    /// `Poisoned` if the log failed meanwhile (the write may or may not survive a
    /// crash), or the checkpoint's errors.
    pub fn wait(self) -> Result<()> {
        self.collection.commit(self.seq)
    }
}

/// Counters describing a collection; see [`Collection::stats`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CollectionStats {
    /// Live ids.
    pub len: usize,
    /// Slots in the storage, live or not (storage is append-only).
    pub storage_slots: usize,
    /// Storage slots that no longer hold a live id: deleted, overwritten by an
    /// upsert, or left by a failed write. Reclaimed by a future compaction.
    pub tombstones: usize,
    /// Bytes held by the index's own structures.
    pub index_memory_bytes: usize,
    /// Bytes held for vectors by the storage.
    pub storage_memory_bytes: usize,
    /// Approximate bytes held by the id map (hash table, slot table, id text).
    pub id_map_memory_bytes: usize,
    /// The index's counters (searches, distance computations).
    pub index: IndexStats,
    /// Rows written but not yet indexed (searched exactly meanwhile).
    pub unindexed_rows: usize,
    /// How writes reach the index.
    pub indexing: IndexingMode,
}

/// A set of vectors named by string ids, over one storage and one index.
///
/// # Semantics
/// * Ids are non-empty UTF-8 strings of at most [`MAX_ID_LEN`] bytes without NUL
///   (NUL is reserved as a separator for on-disk formats and the command line).
/// * Every write validates all of its input first and changes nothing when it
///   returns an input error: wrong dimension ([`Error::DimensionMismatch`]), NaN
///   or infinity ([`Error::NonFinite`]), a zero vector under cosine
///   ([`Error::ZeroVector`]), a squared norm over [`MAX_SQUARED_NORM`] under L2 or
///   inner product ([`Error::InvalidParameter`] named `vector`), a bad id
///   ([`Error::InvalidId`]), an id already present or repeated within a batch
///   ([`Error::DuplicateId`]), an unknown id on delete ([`Error::UnknownId`]).
/// * Under [`Metric::Cosine`] vectors are normalised on insert and queries on
///   search; reported distances are cosine distances and [`get`](Self::get)
///   returns the stored, normalised vector.
/// * Storage is append-only: an upsert writes a new slot and a delete only hides
///   the old one. Such slots are counted as [`CollectionStats::tombstones`]; their
///   space is reclaimed by a future compaction.
///
/// # Concurrency
/// All methods take `&self` and a `Collection` is `Send + Sync`: share it with an
/// `Arc` or scoped threads. Searches run concurrently with each other and with
/// writes; writes are serialised by a mutex. A write is visible to every search
/// that starts after it returned, and each search answers for one consistent
/// state (see [`search_with`](Self::search_with)).
///
/// The protocol: a new slot is appended to the storage, recorded in the id map
/// (not yet current), added to the index, and only then made current for its
/// id, in the same id-map step that retires the slot it replaces; retired slots
/// leave the index afterwards. So every current slot is always in the index. A
/// search runs the index without holding the id-map lock and maps slots to ids
/// afterwards, retrying if the map changed in between (after a few tries it
/// holds the read lock across the index search), and over-fetches to skip the
/// few indexed slots that are not current. The loom models in `loom_tests.rs`
/// check this protocol.
pub struct Collection {
    pub(crate) dim: usize,
    pub(crate) metric: Metric,
    pub(crate) storage: Arc<dyn VectorStorage>,
    pub(crate) index: Arc<dyn VectorIndex>,
    pub(crate) ids: Arc<RwLock<IdMap>>,
    /// How writes reach the index (see [`IndexingMode`]).
    pub(crate) mode: IndexingMode,
    /// What the indexer shares with writers and waiters.
    pub(crate) indexing: Arc<Shared>,
    /// The background indexer thread, if one runs.
    indexer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Serialises writers; holds their reusable normalisation buffer.
    pub(crate) writer: Mutex<Vec<f32>>,
    scratch_pool: Mutex<Vec<QueryScratch>>,
    /// Scratch sets kept for reuse: twice the cores, since a graph index's visited
    /// marks grow with the collection. More concurrent searches than this
    /// allocate their own and drop them.
    max_pooled: usize,
    /// The write-ahead log and checkpoints of a collection opened from a
    /// directory; `None` for an in-memory one.
    pub(crate) durable: Option<crate::durable::Durable>,
}

/// Per-search working memory, pooled so that a warmed-up search allocates only
/// its result.
#[derive(Default)]
struct QueryScratch {
    scratch: SearchScratch,
    /// The normalised query (cosine).
    query: Vec<f32>,
    neighbors: Vec<Neighbor>,
}

impl fmt::Debug for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collection")
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .field("storage", &self.storage.name())
            .field("index", &self.index.name())
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl CollectionConfig {
    /// Creates an empty collection; see [`Collection::new`].
    pub fn build(&self) -> Result<Collection> {
        Collection::new(self)
    }
}

impl Collection {
    /// Creates an empty collection as `config` describes.
    ///
    /// Errors: `InvalidParameter` for a zero dimension, or whatever the chosen
    /// backends refuse.
    pub fn new(config: &CollectionConfig) -> Result<Collection> {
        let dim = config.dim;
        check_dim(dim)?;
        if config.storage.needs_directory() {
            return Err(Error::invalid_param(
                "storage",
                format!(
                    "{} storage lives in a collection directory: use Collection::create",
                    config.storage
                ),
            ));
        }
        let storage: Box<dyn VectorStorage> = Box::new(omen_storage::MemoryStorage::new(dim)?);
        let index = new_index(config)?;
        let mut c = Collection::with_backends(dim, config.metric, storage, index)?;
        c.set_mode(config.indexing);
        Ok(c)
    }
}

/// The empty index `config` names (through its kind: the registry's).
pub(crate) fn new_index(config: &CollectionConfig) -> Result<Box<dyn VectorIndex>> {
    check_dim(config.dim)?;
    config.index.create(config.dim, config.metric)
}

impl Collection {
    /// Creates an empty collection over any storage and index.
    ///
    /// Both must be empty and have width `dim`; the index must use `metric`, or,
    /// for [`Metric::Cosine`], may use [`Metric::InnerProduct`] (the collection
    /// normalises, so `1 - a·b` is the cosine distance). Otherwise
    /// `InvalidParameter`.
    pub fn with_backends(
        dim: usize,
        metric: Metric,
        storage: Box<dyn VectorStorage>,
        index: Box<dyn VectorIndex>,
    ) -> Result<Collection> {
        check_dim(dim)?;
        if storage.dim() != dim {
            return Err(Error::invalid_param(
                "storage",
                format!("storage has dimension {}, expected {dim}", storage.dim()),
            ));
        }
        if index.dim() != dim {
            return Err(Error::invalid_param(
                "index",
                format!("index has dimension {}, expected {dim}", index.dim()),
            ));
        }
        let metric_ok = index.metric() == metric || index.metric() == metric.index_metric();
        if !metric_ok {
            return Err(Error::invalid_param(
                "index",
                format!(
                    "index uses metric {}, the collection {metric}",
                    index.metric()
                ),
            ));
        }
        if !storage.is_empty() || !index.is_empty() {
            return Err(Error::invalid_param(
                "backends",
                "storage and index must be empty: a collection cannot adopt vectors without ids",
            ));
        }
        Ok(Collection::assemble(
            dim,
            metric,
            Arc::from(storage),
            Arc::from(index),
            IdMap::default(),
        ))
    }

    /// A collection over loaded parts, unchecked (the caller checked them).
    /// The indexing mode starts as [`IndexingMode::Inline`] with no thread; see
    /// [`set_mode`](Self::set_mode).
    pub(crate) fn assemble(
        dim: usize,
        metric: Metric,
        storage: Arc<dyn VectorStorage>,
        index: Arc<dyn VectorIndex>,
        ids: IdMap,
    ) -> Collection {
        let indexing = Arc::new(Shared::new(ids.published(), ids.indexed()));
        Collection {
            dim,
            metric,
            storage,
            index,
            ids: Arc::new(RwLock::new(ids)),
            mode: IndexingMode::Inline,
            indexing,
            indexer_thread: Mutex::new(None),
            writer: Mutex::new(Vec::new()),
            scratch_pool: Mutex::new(Vec::new()),
            max_pooled: std::thread::available_parallelism().map_or(8, |n| 2 * n.get()),
            durable: None,
        }
    }

    /// Sets how writes reach the index, starting the background indexer if the
    /// mode asks for one (where a thread cannot be started, and under loom, the
    /// mode becomes [`IndexingMode::Manual`]). Only called before the collection
    /// is shared.
    pub(crate) fn set_mode(&mut self, mode: IndexingMode) {
        self.mode = mode;
        // What is unindexed now (a reopened collection's tail) is recovery's.
        self.indexing.set_recovered_end(read(&self.ids).published());
        if let IndexingMode::Background { .. } = mode {
            match self.spawn_indexer() {
                Some(h) => *lock(&self.indexer_thread) = Some(h),
                None => self.mode = IndexingMode::Manual,
            }
        }
    }

    #[cfg(not(loom))]
    fn spawn_indexer(&self) -> Option<std::thread::JoinHandle<()>> {
        let storage = Arc::clone(&self.storage);
        let index = Arc::clone(&self.index);
        let ids = Arc::clone(&self.ids);
        let shared = Arc::clone(&self.indexing);
        // The indexer's own pool, of as many threads as the global one, at a lower
        // scheduling priority: writers and searches (on the global pool and the
        // callers' threads) come first, and the index is built with whatever the
        // cores have left.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(rayon::current_num_threads())
            .thread_name(|i| format!("omen-indexer-{i}"))
            .start_handler(|_| indexer::lower_priority())
            .build()
            .ok()?;
        std::thread::Builder::new()
            .name("omen-indexer".into())
            .spawn(move || {
                indexer::lower_priority();
                while shared.wait_for_work() {
                    let stepped = pool.install(|| {
                        indexer::step(&*storage, &*index, &ids, &shared, indexer::CHUNK)
                    });
                    if let Err(e) = stepped {
                        shared.fail(e.to_string());
                        return;
                    }
                }
            })
            .ok()
    }

    #[cfg(loom)]
    fn spawn_indexer(&self) -> Option<std::thread::JoinHandle<()>> {
        None
    }

    /// Stops the background indexer (if any) and waits for its current step.
    pub(crate) fn stop_indexer(&self) {
        self.indexing.shutdown();
        if let Some(h) = lock(&self.indexer_thread).take() {
            let _ = h.join();
        }
    }

    /// How writes reach the index.
    pub fn indexing_mode(&self) -> IndexingMode {
        self.mode
    }

    /// Rows written but not yet in the index (live or not): searches scan them
    /// exactly until the indexer has added them.
    pub fn unindexed_rows(&self) -> usize {
        read(&self.ids).tail_rows()
    }

    /// Adds up to `max_rows` unindexed rows to the index on the calling thread;
    /// returns how many rows the watermark moved (0 when nothing was pending).
    /// Safe beside a background indexer (they take turns).
    pub fn index_pending(&self, max_rows: usize) -> Result<usize> {
        self.check_indexer()?;
        let before = read(&self.ids).indexed();
        let mut moved = 0usize;
        while moved < max_rows {
            let chunk = (max_rows - moved).min(indexer::CHUNK as usize) as SlotId;
            match indexer::step(
                &*self.storage,
                &*self.index,
                &self.ids,
                &self.indexing,
                chunk,
            ) {
                Ok(true) => moved = (read(&self.ids).indexed() - before) as usize,
                Ok(false) => break,
                Err(e) => {
                    self.indexing.fail(e.to_string());
                    return Err(e);
                }
            }
        }
        Ok(moved)
    }

    /// Returns once every row written before the call is in the index: waits for
    /// the background indexer, or (inline and manual modes) indexes them on the
    /// calling thread. Errors: the indexer's failure.
    pub fn wait_indexed(&self) -> Result<()> {
        self.check_indexer()?;
        let end = read(&self.ids).published();
        if matches!(self.mode, IndexingMode::Background { .. }) {
            return self.indexing.wait_indexed(end);
        }
        while read(&self.ids).indexed() < end {
            if self.index_pending(usize::MAX)? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Errors with the indexer's failure, if it failed.
    pub(crate) fn check_indexer(&self) -> Result<()> {
        match self.indexing.failure() {
            Some(why) => Err(indexer::indexing_failed(&why)),
            None => Ok(()),
        }
    }

    /// Back-pressure: waits while the unindexed tail is at its bound.
    fn wait_for_room(&self, rows: usize) {
        if let IndexingMode::Background { max_tail } = self.mode {
            self.indexing.wait_for_room(rows, max_tail);
        }
    }

    /// Width of every vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The metric distances are measured with.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The instruction set the distance kernels use (same as [`crate::isa`]).
    pub fn isa(&self) -> Isa {
        isa()
    }

    /// The index's short name (`flat`, ...).
    pub fn index_name(&self) -> &'static str {
        self.index.name()
    }

    /// The index's build parameters by name, defaults included.
    pub fn index_params(&self) -> omen_core::Params {
        self.index.build_params()
    }

    /// The storage's short name (`memory`, ...).
    pub fn storage_name(&self) -> &'static str {
        self.storage.name()
    }

    /// Number of live ids.
    pub fn len(&self) -> usize {
        read(&self.ids).len()
    }

    /// Whether no id is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `id` is live.
    pub fn contains(&self, id: &str) -> bool {
        read(&self.ids).contains(id)
    }

    /// The stored vector of `id` (normalised under cosine), or `None` if `id` is
    /// not live.
    pub fn get(&self, id: &str) -> Option<Vec<f32>> {
        let ids = read(&self.ids);
        let slot = ids.slot(id)?;
        self.storage.get(slot).map(<[f32]>::to_vec)
    }

    /// Every live id with a copy of its stored vector, in write order. Holds the id
    /// map's read lock while copying.
    pub fn live_entries(&self) -> Vec<(String, Vec<f32>)> {
        let ids = read(&self.ids);
        ids.live()
            .into_iter()
            .filter_map(|(id, slot)| Some((id.to_string(), self.storage.get(slot)?.to_vec())))
            .collect()
    }

    /// Counters: live ids, storage slots, tombstones, memory, index counters.
    pub fn stats(&self) -> CollectionStats {
        let (len, id_map_memory_bytes, unindexed_rows) = {
            let ids = read(&self.ids);
            (ids.len(), ids.memory_bytes(), ids.tail_rows())
        };
        let storage_slots = self.storage.len();
        CollectionStats {
            len,
            storage_slots,
            tombstones: storage_slots.saturating_sub(len),
            index_memory_bytes: self.index.memory_bytes(),
            storage_memory_bytes: self.storage.memory_bytes(),
            id_map_memory_bytes,
            index: self.index.stats(),
            unindexed_rows,
            indexing: self.mode,
        }
    }

    /// Inserts a new id. Errors (nothing changed): `InvalidId`,
    /// `DimensionMismatch`, `NonFinite`, `ZeroVector` (cosine), `InvalidParameter`
    /// (norm over [`MAX_SQUARED_NORM`]), `DuplicateId`, checked in that order;
    /// backend errors (`CapacityExceeded`, `Io`).
    pub fn insert(&self, id: &str, vector: &[f32]) -> Result<()> {
        self.wait_for_room(1);
        let ticket = {
            let mut buf = lock(&self.writer);
            self.check_writable()?;
            check_id(id)?;
            check_vector(vector, self.dim, 0)?;
            let row = self.prepare_row(vector, 0, &mut buf)?;
            if read(&self.ids).contains(id) {
                return Err(Error::DuplicateId { id: id.to_owned() });
            }
            let ticket = self.log(Op::Insert, &[id], row)?;
            let applied = self.apply_rows(&[Arc::from(id)], row);
            self.after_apply(applied, ticket)?
        };
        self.commit(ticket)
    }

    /// Inserts many new ids at once: `ids[i]` names row `i` of `rows`, a row-major
    /// array of `ids.len() * dim` floats.
    ///
    /// All or nothing: every id and row is validated before anything is written,
    /// and one bad id or row rejects the whole batch. Errors:
    /// `DimensionMismatch` if `rows.len()` is not a multiple of the dimension,
    /// `InvalidParameter` (`ids`) if the row count differs from `ids.len()`; then,
    /// row by row, the errors of [`insert`](Self::insert) (with the row number),
    /// `DuplicateId` also for an id repeated within the batch. An empty batch does
    /// nothing.
    ///
    /// ```
    /// # use omen::{CollectionConfig, Metric};
    /// let c = CollectionConfig::new(2, Metric::L2).build()?;
    /// c.insert_batch(&["a", "b"], &[0.0, 1.0, 2.0, 3.0])?;
    /// assert_eq!(c.get("b"), Some(vec![2.0, 3.0]));
    /// # Ok::<(), omen::Error>(())
    /// ```
    pub fn insert_batch<S: AsRef<str>>(&self, ids: &[S], rows: &[f32]) -> Result<()> {
        self.insert_batch_deferred(ids, rows)?.wait()
    }

    /// [`insert_batch`](Self::insert_batch) without waiting for the
    /// acknowledgement: the batch is validated, logged and applied (searches see
    /// it), and the returned ticket's [`wait`](WriteTicket::wait) returns once it
    /// is durable (at once in per-write mode, where it already is, and for an
    /// in-memory collection). A bulk loader submits the next batch before waiting
    /// for the previous one, so that its next batch's work overlaps the log's
    /// sync. Until `wait` returns Ok the batch is not acknowledged: a crash may
    /// lose it.
    pub fn insert_batch_deferred<S: AsRef<str>>(
        &self,
        ids: &[S],
        rows: &[f32],
    ) -> Result<WriteTicket<'_>> {
        self.wait_for_room(ids.len());
        let mut row_buf = lock(&self.writer);
        self.check_writable()?;
        let dim = self.dim;
        if !rows.len().is_multiple_of(dim) {
            return Err(Error::DimensionMismatch {
                expected: dim,
                got: rows.len() % dim,
            });
        }
        let n = rows.len() / dim;
        if n != ids.len() {
            return Err(Error::invalid_param(
                "ids",
                format!("{} ids for {n} rows", ids.len()),
            ));
        }
        if n == 0 {
            return Ok(WriteTicket {
                collection: self,
                seq: None,
            });
        }
        // The normalised copy of a batch is per call: kept in the writer it would
        // pin the largest batch's memory for good.
        let mut normalised = Vec::new();
        if self.metric.normalizes() {
            normalised.reserve_exact(rows.len());
        }
        {
            let map = read(&self.ids);
            let mut seen: HashSet<&str> =
                HashSet::with_capacity_and_hasher(n, foldhash::fast::RandomState::default());
            for (i, (id, row)) in ids.iter().zip(rows.chunks_exact(dim)).enumerate() {
                let id = id.as_ref();
                check_id(id)?;
                check_finite(row, i)?;
                let row = self.prepare_row(row, i, &mut row_buf)?;
                if map.contains(id) || !seen.insert(id) {
                    return Err(Error::DuplicateId { id: id.to_owned() });
                }
                if self.metric.normalizes() {
                    normalised.extend_from_slice(row);
                }
            }
        }
        let to_store: &[f32] = if self.metric.normalizes() {
            &normalised
        } else {
            rows
        };
        let names: Vec<Arc<str>> = ids.iter().map(|id| Arc::from(id.as_ref())).collect();
        let ticket = self.log(Op::Insert, &names, to_store)?;
        let applied = self.apply_rows(&names, to_store);
        let seq = self.after_apply(applied, ticket)?;
        drop(row_buf);
        Ok(WriteTicket {
            collection: self,
            seq,
        })
    }

    /// Inserts `id`, or replaces its vector if it is live. Errors (nothing
    /// changed) as [`insert`](Self::insert), except that an existing id is not an
    /// error.
    ///
    /// The new vector goes to a new slot; the old slot becomes a tombstone. A
    /// concurrent search sees either the old or the new vector, never both and
    /// never neither.
    pub fn upsert(&self, id: &str, vector: &[f32]) -> Result<()> {
        self.wait_for_room(1);
        let ticket = {
            let mut buf = lock(&self.writer);
            self.check_writable()?;
            check_id(id)?;
            check_vector(vector, self.dim, 0)?;
            let row = self.prepare_row(vector, 0, &mut buf)?;
            let ticket = self.log(Op::Upsert, &[id], row)?;
            // publish_new switches the id from the old slot to the new one in one
            // step, after the new one is in the index, and only then retires the
            // old one.
            let applied = self.apply_rows(&[Arc::from(id)], row);
            self.after_apply(applied, ticket)?
        };
        self.commit(ticket)
    }

    /// Removes a live id. Errors (nothing changed): `InvalidId` for an id that
    /// could never be valid, `UnknownId` if it is not live. Its slot becomes a
    /// tombstone.
    pub fn delete(&self, id: &str) -> Result<()> {
        let ticket = {
            let _w = lock(&self.writer);
            self.check_writable()?;
            check_id(id)?;
            if !read(&self.ids).contains(id) {
                return Err(Error::UnknownId { id: id.to_owned() });
            }
            let ticket = self.log(Op::Delete, &[id], &[])?;
            let applied = self.apply_delete(id);
            self.after_apply(applied, ticket)?
        };
        self.commit(ticket)
    }

    /// Appends validated, prepared rows for `names` and publishes them (insert,
    /// batch insert, upsert; replay uses it too).
    pub(crate) fn apply_rows(&self, names: &[Arc<str>], rows: &[f32]) -> Result<()> {
        let n = names.len();
        let slots = if n == 1 {
            let slot = self.storage.append(rows)?;
            slot..slot_end(slot, 1)?
        } else {
            self.storage.append_batch(rows)?
        };
        if slots.len() != n {
            // A storage breaking its contract; the rows it wrote stay dead.
            return Err(Error::CapacityExceeded {
                what: format!("storage appended {} rows of {n}", slots.len()),
            });
        }
        self.publish_new(names, slots)
    }

    /// Removes a live id (delete; replay uses it too). `UnknownId` if not live.
    pub(crate) fn apply_delete(&self, id: &str) -> Result<()> {
        let (slot, indexed) = {
            let mut ids = write(&self.ids);
            let Some(slot) = ids.remove_id(id) else {
                return Err(Error::UnknownId { id: id.to_owned() });
            };
            ids.kill(slot);
            (slot, slot < ids.indexed())
        };
        // A slot in the unindexed tail is the indexer's to skip or remove.
        if indexed {
            self.indexing.retire(&*self.index, slot);
        }
        Ok(())
    }

    /// Checks search parameters without searching: `InvalidParameter` for a
    /// knob the index does not take (naming those it does) or a value out of
    /// range, as a search with them would fail.
    pub fn check_search_params(&self, params: &SearchParams) -> Result<()> {
        self.index.check_search_params(params)
    }

    /// The `k` nearest live ids to `query` with the index's default parameters;
    /// see [`search_with`](Self::search_with).
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        self.search_with(query, k, &SearchParams::default())
    }

    /// The `k` nearest live ids to `query` as `(id, distance)`, closest first
    /// (ties in slot order: by when the vector was written). Fewer than `k` only when fewer are
    /// live. Errors: `InvalidParameter` (`k` = 0, or a zero parameter),
    /// `DimensionMismatch`, `NonFinite`, `ZeroVector` (cosine), `InvalidParameter`
    /// (`vector`: norm over [`MAX_SQUARED_NORM`]), in that order.
    ///
    /// Allocates only the result once this collection's scratch pool has warmed
    /// up. A search concurrent with writes answers for the collection as it was
    /// at one instant between its start and its return: never a deleted id, never
    /// an id twice, never both versions of an upserted id, never fewer than
    /// `min(k, len)` hits.
    pub fn search_with(&self, query: &[f32], k: usize, params: &SearchParams) -> Result<Vec<Hit>> {
        SearchRequest::new(query, k, params).validate(self.dim)?;
        self.index.check_search_params(params)?;
        let mut qs = self.take_scratch();
        let result = self.search_one(query, k, params, &mut qs);
        self.return_scratch(qs);
        result
    }

    /// Like [`search_with`](Self::search_with), returning only ids for which
    /// `filter` returns `true` (still `k` of them when that many pass).
    ///
    /// The id map stays read-locked for the whole search, so writers wait for it;
    /// `filter` must not call back into this collection.
    pub fn search_filtered<F>(
        &self,
        query: &[f32],
        k: usize,
        params: &SearchParams,
        filter: F,
    ) -> Result<Vec<Hit>>
    where
        F: Fn(&str) -> bool + Sync,
    {
        SearchRequest::new(query, k, params).validate(self.dim)?;
        self.index.check_search_params(params)?;
        let mut qs = self.take_scratch();
        let result = self.search_filtered_one(query, k, params, &filter, &mut qs);
        self.return_scratch(qs);
        result
    }

    /// [`search_batch_with`](Self::search_batch_with) with the index's default
    /// parameters.
    pub fn search_batch(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<Hit>>> {
        self.search_batch_with(queries, k, &SearchParams::default())
    }

    /// Answers many queries at once, in parallel: `queries` is row-major, one
    /// query per `dim` floats; returns one result list per query, as
    /// [`search_with`](Self::search_with) would. All queries are validated first
    /// (errors name the row); `DimensionMismatch` if `queries.len()` is not a
    /// multiple of the dimension. Under concurrent writes each query answers for
    /// one consistent state, not necessarily the same one for all queries.
    ///
    /// The index may use a tiled kernel here that sums in another order than the
    /// single-query path, so distances can differ from [`search_with`]'s in the
    /// last bits and exact near-ties may swap places.
    ///
    /// [`search_with`]: Self::search_with
    pub fn search_batch_with(
        &self,
        queries: &[f32],
        k: usize,
        params: &SearchParams,
    ) -> Result<Vec<Vec<Hit>>> {
        let dim = self.dim;
        if k == 0 {
            return Err(Error::invalid_param("k", "must be at least 1"));
        }
        if !queries.len().is_multiple_of(dim) {
            return Err(Error::DimensionMismatch {
                expected: dim,
                got: queries.len() % dim,
            });
        }
        self.index.check_search_params(params)?;
        let mut normalised = Vec::new();
        let mut row_buf = Vec::new();
        for (i, q) in queries.chunks_exact(dim).enumerate() {
            check_finite(q, i)?;
            let q = self.prepare_row(q, i, &mut row_buf)?;
            if self.metric.normalizes() {
                normalised.extend_from_slice(q);
            }
        }
        let qs: &[f32] = if self.metric.normalizes() {
            &normalised
        } else {
            queries
        };
        let fetch = self.first_fetch(k);
        let (version, w) = {
            let ids = read(&self.ids);
            (ids.version(), ids.indexed())
        };
        let mut raw = Vec::new();
        self.index
            .search_batch(&*self.storage, qs, fetch, params, None, &mut raw)?;
        let mut out = Vec::with_capacity(raw.len());
        let mut redo = Vec::new();
        {
            let ids = read(&self.ids);
            let unchanged = ids.version() == version;
            for (i, neighbors) in raw.iter().enumerate() {
                let (hits, complete) = map_hits(&ids, neighbors, k, fetch, w);
                // See search_one for why an unchanged map makes the hits exact.
                if !(unchanged && complete) {
                    redo.push(i);
                }
                out.push(hits);
            }
            // The unindexed tail, scanned exactly for every query answered here.
            if unchanged && ids.published() > w {
                use rayon::prelude::*;
                let ids: &IdMap = &ids;
                out.par_iter_mut()
                    .zip(qs.par_chunks_exact(dim))
                    .for_each(|(hits, q)| {
                        let h = std::mem::take(hits);
                        *hits = self.merge_tail(ids, w, q, k, None, h);
                    });
            }
        }
        // A write landed during the batch, or too many hits were not current:
        // those queries run alone, each answering for one consistent state.
        for i in redo {
            let q = &queries[i * dim..(i + 1) * dim];
            out[i] = self.search_with(q, k, params)?;
        }
        Ok(out)
    }

    fn search_filtered_one(
        &self,
        query: &[f32],
        k: usize,
        params: &SearchParams,
        filter: &(dyn Fn(&str) -> bool + Sync),
        qs: &mut QueryScratch,
    ) -> Result<Vec<Hit>> {
        let QueryScratch {
            scratch,
            query: qbuf,
            neighbors,
        } = qs;
        let q = self.prepare_row(query, 0, qbuf)?;
        let ids = read(&self.ids);
        let map: &IdMap = &ids;
        let w = map.indexed();
        // Non-current slots, and slots the indexer adds past the watermark while
        // this runs (the tail scan covers them), are filtered out inside the index,
        // so no retry is needed.
        let allow = |slot: SlotId| slot < w && map.current_id(slot).is_some_and(|id| filter(id));
        let req = SearchRequest::new(q, k, params).with_filter(&allow);
        self.index
            .search(&*self.storage, &req, scratch, neighbors)?;
        let hits: Vec<Hit> = neighbors
            .iter()
            .filter_map(|n| {
                map.current_id(n.slot)
                    .map(|id| (Arc::clone(id), n.distance))
            })
            .take(k)
            .collect();
        Ok(self.merge_tail(map, w, q, k, Some(filter), hits))
    }

    fn search_one(
        &self,
        query: &[f32],
        k: usize,
        params: &SearchParams,
        qs: &mut QueryScratch,
    ) -> Result<Vec<Hit>> {
        let QueryScratch {
            scratch,
            query: qbuf,
            neighbors,
        } = qs;
        let q = self.prepare_row(query, 0, qbuf)?;
        // Invariant kept by the writers: every current slot is in the index (a slot
        // becomes current only after `index.add`, and leaves the index only after it
        // stopped being current). So if the id map did not change while the index
        // was searched, mapping its hits gives an exact answer, provided enough
        // hits: non-current slots in the index (at most one per upsert or delete,
        // a whole batch while it is published) are skipped, so ask for one more
        // than `k` when the index may hold any (see `first_fetch`) and for more
        // again if that was not enough.
        //
        // The first attempts run the index search without the id-map lock, so
        // writers are never held up by searches; if the map keeps changing under
        // them, the last attempts hold the read lock across the search.
        let mut fetch = self.first_fetch(k);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let hold = attempt > OPTIMISTIC_ATTEMPTS;
            let held = hold.then(|| read(&self.ids));
            let (version, w) = match &held {
                Some(ids) => (ids.version(), ids.indexed()),
                None => {
                    let ids = read(&self.ids);
                    (ids.version(), ids.indexed())
                }
            };
            let req = SearchRequest::new(q, fetch, params);
            self.index
                .search(&*self.storage, &req, scratch, neighbors)?;
            let ids = match held {
                Some(ids) => ids,
                None => read(&self.ids),
            };
            if ids.version() != version {
                continue;
            }
            let (hits, complete) = map_hits(&ids, neighbors, k, fetch, w);
            if complete {
                return Ok(self.merge_tail(&ids, w, q, k, None, hits));
            }
            fetch = fetch.saturating_add(neighbors.len() - hits.len());
        }
    }

    /// Checks the value constraints of a row whose length and finiteness are
    /// already checked, and returns what to store or search with: `row` itself, or
    /// its normalised copy in `buf` under cosine.
    fn prepare_row<'a>(
        &self,
        row: &'a [f32],
        i: usize,
        buf: &'a mut Vec<f32>,
    ) -> Result<&'a [f32]> {
        if self.metric.normalizes() {
            normalize_into(row, buf, i)?;
            Ok(buf)
        } else {
            check_norm(row, i)?;
            Ok(row)
        }
    }

    /// Publishes freshly appended slots for `names`: inline, by adding them to
    /// the index and then making them current; otherwise by making them current
    /// at once and leaving them to the indexer (they are in the unindexed tail).
    fn publish_new(&self, names: &[Arc<str>], slots: Range<SlotId>) -> Result<()> {
        if self.mode == IndexingMode::Inline {
            return self.publish_inline(names, slots);
        }
        let mut retire = Vec::new();
        {
            let mut ids = write(&self.ids);
            let w = ids.indexed();
            for (name, slot) in names.iter().zip(slots.clone()) {
                ids.record(slot, Arc::clone(name));
                // An upsert: the old slot dies in the same step; if it is indexed it
                // leaves the index now, else the indexer skips or removes it.
                if let Some(old) = ids.make_current(name, slot) {
                    ids.kill(old);
                    if old < w {
                        retire.push(old);
                    }
                }
            }
        }
        for old in retire {
            self.indexing.retire(&*self.index, old);
        }
        self.indexing.published(slots.end);
        Ok(())
    }

    /// The inline protocol: a slot is current only once the index holds it, so
    /// the tail stays empty. On failure the slots are left dead.
    fn publish_inline(&self, names: &[Arc<str>], slots: Range<SlotId>) -> Result<()> {
        let _g = lock(&self.indexing.index_lock);
        self.indexing.drain_retired(&*self.index);
        {
            let mut ids = write(&self.ids);
            for (name, slot) in names.iter().zip(slots.clone()) {
                ids.record(slot, Arc::clone(name));
            }
        }
        self.indexing.published(slots.end);
        if let Err(e) = self.index.add(&*self.storage, slots.clone()) {
            let mut ids = write(&self.ids);
            for slot in slots {
                ids.kill(slot);
            }
            return Err(e);
        }
        // Ids that were live (an upsert) switch to their new slot here; their old
        // slots die in the same step and leave the index after it.
        let mut replaced = Vec::new();
        let end = slots.end;
        {
            let mut ids = write(&self.ids);
            for (name, slot) in names.iter().zip(slots) {
                if let Some(old) = ids.make_current(name, slot) {
                    ids.kill(old);
                    replaced.push(old);
                }
            }
            ids.set_indexed(end);
        }
        for old in replaced {
            indexer::remove(&*self.index, old);
        }
        self.indexing.indexed_to(end);
        Ok(())
    }

    /// Merges the `k` nearest current slots of the unindexed tail `[w, published)`
    /// into `hits` (the index's answer below `w`, closest first), keeping `k`. On
    /// equal distances the index's hit goes first: its slot is smaller.
    fn merge_tail(
        &self,
        ids: &IdMap,
        w: SlotId,
        q: &[f32],
        k: usize,
        keep: Option<&(dyn Fn(&str) -> bool + Sync)>,
        hits: Vec<Hit>,
    ) -> Vec<Hit> {
        if ids.published() <= w {
            return hits;
        }
        let mut tail = Vec::new();
        indexer::scan_tail(
            &*self.storage,
            self.index.metric(),
            ids,
            w,
            q,
            k,
            keep,
            &mut tail,
        );
        if tail.is_empty() {
            return hits;
        }
        let mut out = Vec::with_capacity(k.min(hits.len() + tail.len()));
        let mut a = hits.into_iter().peekable();
        let mut b = tail.into_iter().peekable();
        while out.len() < k {
            let take_index = match (a.peek(), b.peek()) {
                (Some(h), Some(&(d, _))) => h.1 <= d,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_index {
                if let Some(h) = a.next() {
                    out.push(h);
                }
            } else if let Some((d, slot)) = b.next() {
                if let Some(id) = ids.current_id(slot) {
                    out.push((Arc::clone(id), d));
                }
            }
        }
        out
    }

    /// How many hits to ask the index for first: `k` when it holds exactly as
    /// many slots as there are live ids (so every slot it holds is current, the
    /// usual state of a collection not being written), else `k + 1` to absorb a
    /// tombstone without a second search. Either is correct: a hit that is not
    /// current leaves the answer short of `k` with the index not exhausted, which
    /// `map_hits` reports as incomplete and the caller asks again. The extra hit
    /// is not free: IVF-PQ re-ranks `fetch × rerank_factor` candidates.
    fn first_fetch(&self, k: usize) -> usize {
        if self.index.len() == read(&self.ids).len() {
            k
        } else {
            k.saturating_add(1)
        }
    }

    fn take_scratch(&self) -> QueryScratch {
        lock(&self.scratch_pool).pop().unwrap_or_default()
    }

    fn return_scratch(&self, qs: QueryScratch) {
        let mut pool = lock(&self.scratch_pool);
        if pool.len() < self.max_pooled {
            pool.push(qs);
        }
    }
}

/// Maps index hits below the watermark `w` to current ids, keeping at most `k`
/// (hits at or above `w` were indexed after the search began; the tail scan
/// covers them). Complete when `k` hits were found or the index returned fewer
/// than `fetch` (it had no more).
fn map_hits(
    ids: &IdMap,
    neighbors: &[Neighbor],
    k: usize,
    fetch: usize,
    w: SlotId,
) -> (Vec<Hit>, bool) {
    let mut hits = Vec::with_capacity(k.min(neighbors.len()));
    for n in neighbors {
        if hits.len() == k {
            break;
        }
        if n.slot >= w {
            continue;
        }
        if let Some(id) = ids.current_id(n.slot) {
            hits.push((Arc::clone(id), n.distance));
        }
    }
    let complete = hits.len() == k || neighbors.len() < fetch;
    (hits, complete)
}

fn check_dim(dim: usize) -> Result<()> {
    if dim == 0 {
        return Err(Error::invalid_param("dim", "must be at least 1"));
    }
    Ok(())
}

/// Squared norm in f64, summed in order (the model tests repeat this exactly).
///
/// Fast path: the SIMD f32 dot product of the row with itself. Its relative
/// error is far below 1e-3 for any row the f32 sum does not overflow, so a result
/// under half the bound decides the question without the exact f64 sum; only
/// rows near the bound (or overflowing f32) take the exact path.
fn check_norm(v: &[f32], row: usize) -> Result<()> {
    let fast = Kernels::best().dot(v, v);
    if fast.is_finite() && f64::from(fast) < MAX_SQUARED_NORM / 2.0 {
        return Ok(());
    }
    let sq: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    if sq > MAX_SQUARED_NORM {
        return Err(Error::invalid_param(
            "vector",
            format!("row {row}: squared norm {sq:e} exceeds {MAX_SQUARED_NORM:e}; distances would overflow f32"),
        ));
    }
    Ok(())
}

fn slot_end(slot: SlotId, n: u32) -> Result<SlotId> {
    slot.checked_add(n).ok_or_else(|| Error::CapacityExceeded {
        what: "slot numbers".into(),
    })
}

impl Drop for Collection {
    fn drop(&mut self) {
        self.stop_indexer();
    }
}
