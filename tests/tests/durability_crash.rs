//! Crash-point enumeration and I/O error injection for the durable collection.
//!
//! Every workload is a short, seeded list of operations on a `dim = 4` L2
//! collection over a [`SimFs`], and has a model: the id → vector map after the
//! first `k` operations. The suites:
//!
//! * **Crash points.** The workload (the `create` included) is run once to count
//!   its file-system operations `K`; then, for every `N` in `0..=K`, it is run on
//!   a fresh disk that dies at operation `N` (the workload stops at the first
//!   error: the process is dead), and for every [`CrashMode::all`] the crash image
//!   is opened. It must open (once `create` returned); its state must be the
//!   model's after `k` operations with `acked <= k <= acked + 1` (the operation
//!   that failed may or may not have become durable); exact searches must agree
//!   with brute force over that state; [`Collection::verify`] must pass; and
//!   opening the image a second time must give the same state. A crash inside
//!   `create` must leave a directory that either opens empty or has no
//!   `MANIFEST` and accepts a new `create`.
//! * **Faults.** For every `N` in `0..=K`, EIO and ENOSPC, once and forever: the
//!   workload runs to its end on a disk that fails operation `N` (and later ones,
//!   forever). After the first failed operation every later write and checkpoint
//!   must fail with [`Error::Poisoned`] (the collection refuses writes until it is
//!   reopened). Then the faults are cleared and the collection is reopened both on
//!   the same disk (the page cache intact) and on its power-cut image: each must
//!   hold the model's state after `k` operations, `acked <= k <= acked + 1`, and
//!   accept a new write.
//!
//! * **Crash during recovery.** For images whose recovery writes (a torn tail
//!   truncated, files removed), a crash at every operation of the recovery must
//!   leave an image that opens to the same state.
//!
//! Every workload runs under [`Durability::PerWrite`] and
//! [`Durability::GroupCommit`] with the flat and the HNSW index, over memory
//! storage and over mmap storage (whose chunk files are created, grown, written,
//! synced and mapped through the simulated disk too, with 4-row first chunks so
//! that the workloads cross chunk boundaries; see [`MMAP_CHUNK_ROWS`]). Dedicated tests:
//! a failed log fsync poisons the collection until it is reopened; `create` never
//! replaces an existing collection when the disk fails while it looks; an HNSW
//! graph saved after a repair loads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use omen::fs::{CrashMode, FaultKind, FaultPersistence, FileSystem, SimFs};
use omen::{
    Collection, CollectionConfig, Durability, DurableOptions, Error, IndexSpec, IndexingMode,
    Metric, SearchParams, StorageKind,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DIM: usize = 4;
const DIR: &str = "/db";
const SEARCH_K: usize = 5;
/// Random crash images per crash point beyond the one of `CrashMode::all`
/// (fewer in an unoptimised build, which is ~10 times slower).
const EXTRA_RANDOM_SEEDS: u64 = if cfg!(debug_assertions) { 1 } else { 5 };
/// Rows in the first chunk file of an mmap collection: chunks of 4, 8, 16 and 32
/// rows, so that every workload creates chunk files while it runs (and each
/// stays a few KiB on the simulated disk, which keeps files in memory and copies
/// them into every crash image).
const MMAP_CHUNK_ROWS: usize = 4;

// ---------------------------------------------------------------------------
// The model.

/// One operation of a workload.
#[derive(Clone, Debug)]
enum Op {
    Insert(String, Vec<f32>),
    InsertBatch(Vec<String>, Vec<f32>),
    Upsert(String, Vec<f32>),
    Delete(String),
    Checkpoint,
    Sync,
    /// Index up to this many rows of the unindexed tail (manual indexing).
    Index(usize),
}

impl Op {
    /// Whether the operation changes the collection (a poisoned collection must
    /// refuse it with `Poisoned`).
    fn is_write(&self) -> bool {
        !matches!(self, Op::Sync | Op::Index(_))
    }
}

type State = BTreeMap<String, Vec<f32>>;

fn apply(state: &mut State, op: &Op) {
    match op {
        Op::Insert(id, v) | Op::Upsert(id, v) => {
            state.insert(id.clone(), v.clone());
        }
        Op::InsertBatch(ids, rows) => {
            for (id, row) in ids.iter().zip(rows.chunks_exact(DIM)) {
                state.insert(id.clone(), row.to_vec());
            }
        }
        Op::Delete(id) => {
            state.remove(id);
        }
        Op::Checkpoint | Op::Sync | Op::Index(_) => {}
    }
}

/// `states[k]`: the model's state after the first `k` operations.
fn model_states(ops: &[Op]) -> Vec<State> {
    let mut out = vec![State::new()];
    let mut s = State::new();
    for op in ops {
        apply(&mut s, op);
        out.push(s.clone());
    }
    out
}

/// Runs one operation on the collection.
fn exec(c: &Collection, op: &Op) -> omen::Result<()> {
    match op {
        Op::Insert(id, v) => c.insert(id, v),
        Op::InsertBatch(ids, rows) => c.insert_batch(ids, rows),
        Op::Upsert(id, v) => c.upsert(id, v),
        Op::Delete(id) => c.delete(id),
        Op::Checkpoint => c.checkpoint().map(|_| ()),
        Op::Sync => c.sync(),
        Op::Index(n) => c.index_pending(*n).map(|_| ()),
    }
}

// ---------------------------------------------------------------------------
// Workloads.

/// A seeded generator of valid operations (it tracks the live ids).
struct Gen {
    rng: StdRng,
    live: Vec<String>,
    next: usize,
    ops: Vec<Op>,
}

impl Gen {
    fn new(seed: u64) -> Gen {
        Gen {
            rng: StdRng::seed_from_u64(seed),
            live: Vec::new(),
            next: 0,
            ops: Vec::new(),
        }
    }

    fn vector(&mut self) -> Vec<f32> {
        (0..DIM).map(|_| self.rng.gen_range(-1.0f32..1.0)).collect()
    }

    fn fresh_id(&mut self) -> String {
        self.next += 1;
        format!("id-{:03}", self.next)
    }

    fn insert(&mut self) -> &mut Self {
        let id = self.fresh_id();
        let v = self.vector();
        self.live.push(id.clone());
        self.ops.push(Op::Insert(id, v));
        self
    }

    fn inserts(&mut self, n: usize) -> &mut Self {
        for _ in 0..n {
            self.insert();
        }
        self
    }

    fn batch(&mut self, n: usize) -> &mut Self {
        let ids: Vec<String> = (0..n).map(|_| self.fresh_id()).collect();
        let rows: Vec<f32> = (0..n).flat_map(|_| self.vector()).collect();
        self.live.extend(ids.iter().cloned());
        self.ops.push(Op::InsertBatch(ids, rows));
        self
    }

    /// Upserts a live id (a new one if none is live).
    fn upsert(&mut self) -> &mut Self {
        let id = if self.live.is_empty() {
            let id = self.fresh_id();
            self.live.push(id.clone());
            id
        } else {
            let i = self.rng.gen_range(0..self.live.len());
            self.live[i].clone()
        };
        let v = self.vector();
        self.ops.push(Op::Upsert(id, v));
        self
    }

    /// Upserts an id that is not live (an insert through `upsert`).
    fn upsert_new(&mut self) -> &mut Self {
        let id = self.fresh_id();
        let v = self.vector();
        self.live.push(id.clone());
        self.ops.push(Op::Upsert(id, v));
        self
    }

    fn delete(&mut self) -> &mut Self {
        if !self.live.is_empty() {
            let i = self.rng.gen_range(0..self.live.len());
            let id = self.live.swap_remove(i);
            self.ops.push(Op::Delete(id));
        }
        self
    }

    /// Deletes a live id and inserts it again with a new vector.
    fn reinsert(&mut self) -> &mut Self {
        if !self.live.is_empty() {
            let i = self.rng.gen_range(0..self.live.len());
            let id = self.live[i].clone();
            let v = self.vector();
            self.ops.push(Op::Delete(id.clone()));
            self.ops.push(Op::Insert(id, v));
        }
        self
    }

    /// A random write: insert, upsert or delete.
    fn mixed(&mut self, n: usize) -> &mut Self {
        for _ in 0..n {
            match self.rng.gen_range(0..10) {
                0..=4 => self.insert(),
                5..=7 => self.upsert(),
                _ => self.delete(),
            };
        }
        self
    }

    fn checkpoint(&mut self) -> &mut Self {
        self.ops.push(Op::Checkpoint);
        self
    }

    fn sync(&mut self) -> &mut Self {
        self.ops.push(Op::Sync);
        self
    }

    fn index(&mut self, n: usize) -> &mut Self {
        self.ops.push(Op::Index(n));
        self
    }

    fn take(&mut self) -> Vec<Op> {
        std::mem::take(&mut self.ops)
    }
}

struct Workload {
    name: &'static str,
    ops: Vec<Op>,
    /// The automatic checkpoint threshold.
    checkpoint_log_bytes: u64,
}

fn workload(name: &str) -> Workload {
    let seed = 0x0_3e4
        ^ name
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31) ^ u64::from(b));
    let mut g = Gen::new(seed);
    let mut checkpoint_log_bytes = u64::MAX;
    let (name, ops): (&'static str, Vec<Op>) = match name {
        "inserts" => ("inserts", g.inserts(16).take()),
        "upserts" => {
            g.inserts(5);
            for _ in 0..8 {
                g.upsert();
            }
            ("upserts", g.upsert_new().upsert_new().upsert().take())
        }
        "deletes" => {
            g.inserts(6).delete().delete().insert().delete();
            ("deletes", g.reinsert().insert().delete().reinsert().take())
        }
        "batch" => {
            g.inserts(2).batch(5).delete().upsert().batch(3).delete();
            g.insert().batch(4).upsert().delete();
            ("batch", g.take())
        }
        "checkpoint" => {
            g.inserts(4).upsert().delete().checkpoint();
            ("checkpoint", g.insert().upsert().delete().batch(2).take())
        }
        "two-checkpoints" => {
            g.inserts(4).delete().checkpoint();
            g.upsert().insert().delete().batch(2).checkpoint();
            (
                "two-checkpoints",
                g.insert().upsert().delete().sync().take(),
            )
        }
        "auto-checkpoints" => {
            // ~56-byte records: an automatic checkpoint every four writes.
            checkpoint_log_bytes = 200;
            g.inserts(4).mixed(12).batch(3).mixed(4);
            ("auto-checkpoints", g.take())
        }
        "indexer" => {
            // Manual indexing: checkpoints cut with part of the rows indexed, and
            // upserts and deletes on both sides of the indexed mark.
            g.inserts(3).batch(6).index(4).checkpoint();
            g.upsert().delete().upsert().index(3).batch(3).checkpoint();
            (
                "indexer",
                g.insert().upsert().delete().index(2).insert().take(),
            )
        }
        other => panic!("no workload {other:?}"),
    };
    assert!(
        (10..=40).contains(&ops.len()),
        "{name}: {} operations",
        ops.len()
    );
    Workload {
        name,
        ops,
        checkpoint_log_bytes,
    }
}

// ---------------------------------------------------------------------------
// Running and checking.

struct Setup {
    w: Workload,
    states: Vec<State>,
    durability: Durability,
    index: IndexSpec,
    storage: StorageKind,
    indexing: IndexingMode,
    queries: Vec<Vec<f32>>,
}

impl Setup {
    fn new(name: &str, durability: Durability, index: IndexSpec) -> Setup {
        Setup::with_storage(name, durability, index, StorageKind::Memory)
    }

    fn with_storage(
        name: &str,
        durability: Durability,
        index: IndexSpec,
        storage: StorageKind,
    ) -> Setup {
        let w = workload(name);
        let states = model_states(&w.ops);
        let mut rng = StdRng::seed_from_u64(7);
        let queries = (0..3)
            .map(|_| (0..DIM).map(|_| rng.gen_range(-1.2f32..1.2)).collect())
            .collect();
        // The indexer workload indexes by hand; the others run the default
        // background indexer.
        let indexing = if name == "indexer" {
            IndexingMode::Manual
        } else {
            IndexingMode::background()
        };
        Setup {
            w,
            states,
            durability,
            index,
            storage,
            indexing,
            queries,
        }
    }

    fn label(&self) -> String {
        format!(
            "{} / {} / {} / {}",
            self.w.name,
            self.durability.label(),
            self.index.name(),
            self.storage
        )
    }

    fn options(&self, fs: &SimFs) -> DurableOptions {
        DurableOptions::default()
            .durability(self.durability)
            .checkpoint_log_bytes(self.w.checkpoint_log_bytes)
            .indexing(self.indexing)
            .mmap_chunk_rows(MMAP_CHUNK_ROWS)
            .fs(Arc::new(fs.clone()))
    }

    fn config(&self) -> CollectionConfig {
        CollectionConfig::new(DIM, Metric::L2)
            .index(self.index.clone())
            .storage(self.storage)
    }

    fn create(&self, fs: &SimFs) -> omen::Result<Collection> {
        Collection::create(Path::new(DIR), &self.config(), self.options(fs))
    }

    fn open(&self, fs: &SimFs) -> omen::Result<Collection> {
        Collection::open(Path::new(DIR), self.options(fs))
    }

    /// Runs the whole workload on a fresh disk with no faults; returns the
    /// operation count (the final drop included).
    fn count_ops(&self) -> u64 {
        let fs = SimFs::new();
        let c = self.create(&fs).unwrap();
        for (i, op) in self.w.ops.iter().enumerate() {
            exec(&c, op).unwrap_or_else(|e| panic!("{}: op {i} {op:?}: {e}", self.label()));
        }
        assert_eq!(
            &snapshot(&c, &self.label()),
            self.states.last().unwrap(),
            "{}: no crash",
            self.label()
        );
        drop(c);
        let k = fs.op_count();
        let c = self.open(&fs.crash_image(CrashMode::DropUnsynced)).unwrap();
        assert_eq!(&snapshot(&c, &self.label()), self.states.last().unwrap());
        k
    }

    /// Checks a recovered collection: its state is `states[k]` for some `k` in
    /// `lo..=hi`; exact searches agree with brute force; `verify` passes. Returns
    /// `k`.
    fn check_recovered(&self, c: &Collection, lo: usize, hi: usize, ctx: &str) -> usize {
        let hi = hi.min(self.states.len() - 1);
        let got = snapshot(c, ctx);
        let Some(k) = (lo..=hi).find(|&k| self.states[k] == got) else {
            let near = (0..self.states.len())
                .filter(|&k| self.states[k] == got)
                .collect::<Vec<_>>();
            panic!(
                "{ctx}: recovered state matches no prefix in {lo}..={hi} (it matches prefixes {near:?})\n\
                 recovered: {got:?}\n\
                 expected (k = {lo}): {:?}",
                self.states[lo]
            );
        };
        check_search(c, &self.states[k], &self.queries, ctx);
        c.verify()
            .unwrap_or_else(|e| panic!("{ctx}: verify after recovery: {e}"));
        k
    }
}

/// The collection's live entries as a map (no id twice).
fn snapshot(c: &Collection, ctx: &str) -> State {
    let entries = c.live_entries();
    let n = entries.len();
    let map: State = entries.into_iter().collect();
    assert_eq!(map.len(), n, "{ctx}: an id is live twice");
    assert_eq!(c.len(), n, "{ctx}: len() disagrees with live_entries()");
    map
}

fn l2(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = f64::from(*x) - f64::from(*y);
            d * d
        })
        .sum()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-4 * (1.0 + a.abs().max(b.abs()))
}

/// Exact search agrees with brute force over `state`: as many hits as expected,
/// distinct live ids, each with its true distance, and the distances rank by rank
/// those of the model (so ties may come back in either order).
fn check_search(c: &Collection, state: &State, queries: &[Vec<f32>], ctx: &str) {
    for q in queries {
        let got = c
            .search_with(q, SEARCH_K, &SearchParams::exhaustive())
            .unwrap_or_else(|e| panic!("{ctx}: search: {e}"));
        let mut want: Vec<(&String, f64)> = state.iter().map(|(id, v)| (id, l2(q, v))).collect();
        want.sort_by(|a, b| a.1.total_cmp(&b.1));
        want.truncate(SEARCH_K);
        assert_eq!(
            got.len(),
            want.len(),
            "{ctx}: search {q:?} returned {got:?}, expected {want:?}"
        );
        let mut seen = std::collections::HashSet::new();
        for (rank, ((id, d), (_, wd))) in got.iter().zip(&want).enumerate() {
            assert!(seen.insert(id), "{ctx}: search returned {id:?} twice");
            let v = state
                .get(&**id)
                .unwrap_or_else(|| panic!("{ctx}: search returned {id:?}, which is not live"));
            assert!(
                close(f64::from(*d), l2(q, v)),
                "{ctx}: {id:?} reported at distance {d}, its vector is at {}",
                l2(q, v)
            );
            assert!(
                close(f64::from(*d), *wd),
                "{ctx}: rank {rank} at distance {d}, brute force has {wd}: got {got:?}, want {want:?}"
            );
        }
    }
}

/// Runs `f(i)` for every `i` in `0..n` on `threads` threads.
fn par_for(n: usize, threads: usize, f: impl Fn(usize) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                f(i);
            });
        }
    });
}

/// Threads for an enumeration: group commit waits on its timer (1 ms a write),
/// so it runs wider than the CPU count.
fn threads_for(d: Durability) -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    match d {
        Durability::GroupCommit { .. } => cpus.max(2) * 4,
        _ => cpus,
    }
}

fn group_commit() -> Durability {
    Durability::GroupCommit {
        max_records: 3,
        max_delay: Duration::from_millis(1),
    }
}

fn hnsw() -> IndexSpec {
    omen_hnsw::HnswParams::default().into()
}

/// A crash inside `create` (or a fault there): the directory must open as an
/// empty collection, or hold no `MANIFEST` and accept a new `create`.
fn check_failed_create(s: &Setup, img: &SimFs, ctx: &str) {
    match s.open(img) {
        Ok(c) => {
            s.check_recovered(&c, 0, 0, ctx);
        }
        Err(e) => {
            // No MANIFEST, or not even the directory (a crash at its creation).
            let missing = match &e {
                Error::InvalidParameter { .. } => true,
                Error::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
                _ => false,
            };
            assert!(
                missing,
                "{ctx}: a create that failed left a directory that fails to open with {e:?}"
            );
            assert!(
                !img.file_names().iter().any(|p| p.ends_with("MANIFEST")),
                "{ctx}: open failed with {e} though a MANIFEST exists"
            );
            let c = s
                .create(img)
                .unwrap_or_else(|e| panic!("{ctx}: create again after a failed create: {e}"));
            s.check_recovered(&c, 0, 0, ctx);
            c.insert("again", &[1.0; DIM])
                .unwrap_or_else(|e| panic!("{ctx}: a write after the second create: {e}"));
        }
    }
}

// ---------------------------------------------------------------------------
// Crash-point enumeration.

fn crash_suite(
    name: &str,
    durability: Durability,
    index: IndexSpec,
    storage: StorageKind,
    seed: u64,
) {
    let started = Instant::now();
    let s = Setup::with_storage(name, durability, index, storage);
    let k_ops = s.count_ops();
    // The standard modes, and more draws of the random one: each keeps a different
    // subset of the unsynced operations.
    let mut modes = CrashMode::all(seed);
    modes.extend((1..=EXTRA_RANDOM_SEEDS).map(|i| CrashMode::KeepRandom {
        seed: seed.wrapping_mul(1000).wrapping_add(i),
    }));
    let create_failures = AtomicUsize::new(0);
    let completed = AtomicUsize::new(0);
    let images = AtomicUsize::new(0);
    let durable_failed_op = AtomicUsize::new(0);
    let n_points = k_ops as usize + 1;
    par_for(n_points, threads_for(durability), |n| {
        let ctx0 = format!("{} crash at op {n}", s.label());
        let fs = SimFs::new();
        fs.crash_at(n as u64);
        let c = match s.create(&fs) {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    matches!(e, Error::Io { .. }),
                    "{ctx0}: create failed with {e:?}, not an I/O error"
                );
                create_failures.fetch_add(1, Ordering::Relaxed);
                for &mode in &modes {
                    let img = fs.crash_image(mode);
                    check_failed_create(&s, &img, &format!("{ctx0} (in create), {mode:?}"));
                    images.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        };
        let mut acked = 0;
        for op in &s.w.ops {
            match exec(&c, op) {
                Ok(()) => acked += 1,
                Err(e) => {
                    assert!(
                        matches!(e, Error::Io { .. } | Error::Poisoned { .. }),
                        "{ctx0}: op {acked} {op:?} failed with {e:?}"
                    );
                    break;
                }
            }
        }
        drop(c);
        if acked == s.w.ops.len() {
            completed.fetch_add(1, Ordering::Relaxed);
        }
        for &mode in &modes {
            let ctx = format!("{ctx0} ({acked} ops acknowledged), {mode:?}");
            let img = fs.crash_image(mode);
            let c = s
                .open(&img)
                .unwrap_or_else(|e| panic!("{ctx}: the crash image does not open: {e}"));
            let k = s.check_recovered(&c, acked, acked + 1, &ctx);
            if k > acked {
                durable_failed_op.fetch_add(1, Ordering::Relaxed);
            }
            drop(c);
            // Opening again (after the first open's repairs) gives the same state.
            let c = s
                .open(&img)
                .unwrap_or_else(|e| panic!("{ctx}: the second open fails: {e}"));
            let again = s.check_recovered(&c, k, k, &format!("{ctx}, second open"));
            assert_eq!(again, k);
            drop(c);
            images.fetch_add(1, Ordering::Relaxed);
        }
    });
    // Crashing at op K or later crashes nothing.
    assert!(completed.load(Ordering::Relaxed) >= 1, "{}", s.label());
    eprintln!(
        "crash  {:<48} {} ops, {} crash points x {} modes = {} images checked \
         ({} in create, {} where the failed op survived, {} runs finished) in {:.1?}",
        s.label(),
        s.w.ops.len(),
        n_points,
        modes.len(),
        images.load(Ordering::Relaxed),
        create_failures.load(Ordering::Relaxed),
        durable_failed_op.load(Ordering::Relaxed),
        completed.load(Ordering::Relaxed),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// Error injection.

fn fault_suite(name: &str, durability: Durability, index: IndexSpec, storage: StorageKind) {
    let started = Instant::now();
    let s = Setup::with_storage(name, durability, index, storage);
    let k_ops = s.count_ops();
    let cases: Vec<(u64, FaultKind, FaultPersistence)> = (0..=k_ops)
        .flat_map(|n| {
            [FaultKind::Eio, FaultKind::Enospc]
                .into_iter()
                .flat_map(move |k| {
                    [FaultPersistence::Once, FaultPersistence::Forever]
                        .into_iter()
                        .map(move |p| (n, k, p))
                })
        })
        .collect();
    let failed_runs = AtomicUsize::new(0);
    let create_failures = AtomicUsize::new(0);
    let problems = Mutex::new(Vec::<String>::new());
    par_for(cases.len(), threads_for(durability), |i| {
        let (n, kind, persistence) = cases[i];
        let ctx0 = format!("{} {kind:?} {persistence:?} at op {n}", s.label());
        let fs = SimFs::new();
        fs.fail_at(n, kind, persistence);
        let c = match s.create(&fs) {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    matches!(e, Error::Io { .. }),
                    "{ctx0}: create failed with {e:?}, not an I/O error"
                );
                create_failures.fetch_add(1, Ordering::Relaxed);
                fs.clear_faults();
                let img = fs.crash_image(CrashMode::DropUnsynced);
                check_failed_create(&s, &fs, &format!("{ctx0} (in create), same disk"));
                check_failed_create(&s, &img, &format!("{ctx0} (in create), power cut"));
                return;
            }
        };
        // The whole workload, going on after errors.
        let results: Vec<omen::Result<()>> = s.w.ops.iter().map(|op| exec(&c, op)).collect();
        drop(c);
        let first_err = results.iter().position(Result::is_err);
        let acked = first_err.unwrap_or(s.w.ops.len());
        if let Some(f) = first_err {
            failed_runs.fetch_add(1, Ordering::Relaxed);
            let e = results[f].as_ref().err();
            assert!(
                matches!(e, Some(Error::Io { .. } | Error::Poisoned { .. })),
                "{ctx0}: op {f} {:?} failed with {e:?}",
                s.w.ops[f]
            );
            for (j, r) in results.iter().enumerate().skip(f + 1) {
                let op = &s.w.ops[j];
                if op.is_write() && !matches!(r, Err(Error::Poisoned { .. })) {
                    problems.lock().unwrap().push(format!(
                        "{ctx0}: op {f} {:?} failed ({e:?}), yet a later op {j} {op:?} returned {r:?} (expected Poisoned)",
                        s.w.ops[f]
                    ));
                }
            }
        }
        fs.clear_faults();
        let img = fs.crash_image(CrashMode::DropUnsynced);
        for (disk, which) in [(&fs, "same disk"), (&img, "power cut")] {
            let ctx = format!("{ctx0} ({acked} ops acknowledged), reopened on the {which}");
            let c = s
                .open(disk)
                .unwrap_or_else(|e| panic!("{ctx}: does not open: {e}"));
            s.check_recovered(&c, acked, acked + 1, &ctx);
            c.insert("after-reopen", &[0.5; DIM])
                .unwrap_or_else(|e| panic!("{ctx}: a write after reopening: {e}"));
            c.close()
                .unwrap_or_else(|e| panic!("{ctx}: close after reopening: {e}"));
        }
    });
    let problems = problems.into_inner().unwrap();
    assert!(
        problems.is_empty(),
        "{} writes accepted after a failure:\n{}",
        problems.len(),
        problems.join("\n")
    );
    eprintln!(
        "faults {:<48} {} ops, {} fault points x 2 kinds x 2 persistences = {} runs \
         ({} in create, {} with a failed op) in {:.1?}",
        s.label(),
        s.w.ops.len(),
        k_ops + 1,
        cases.len(),
        create_failures.load(Ordering::Relaxed),
        failed_runs.load(Ordering::Relaxed),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// The tests: one per workload, each over both durability modes and both
// storages.

fn both_modes(name: &str, seed: u64, with_hnsw: bool) {
    for storage in StorageKind::ALL {
        for d in [Durability::PerWrite, group_commit()] {
            crash_suite(name, d, (&omen::FLAT).into(), storage, seed);
            fault_suite(name, d, (&omen::FLAT).into(), storage);
            if with_hnsw {
                crash_suite(name, d, hnsw(), storage, seed);
                fault_suite(name, d, hnsw(), storage);
            }
        }
    }
}

#[test]
fn crash_and_faults_inserts() {
    both_modes("inserts", 1, true);
}

#[test]
fn crash_and_faults_upserts() {
    both_modes("upserts", 2, true);
}

#[test]
fn crash_and_faults_deletes() {
    both_modes("deletes", 3, true);
}

#[test]
fn crash_and_faults_batch() {
    both_modes("batch", 4, true);
}

#[test]
fn crash_and_faults_checkpoint() {
    both_modes("checkpoint", 5, true);
}

#[test]
fn crash_and_faults_two_checkpoints() {
    both_modes("two-checkpoints", 6, true);
}

/// A crash at any point of a workload whose checkpoints leave rows unindexed,
/// and whose upserts and deletes fall on both sides of the indexed mark.
#[test]
fn crash_and_faults_indexer() {
    both_modes("indexer", 8, true);
}

#[test]
fn crash_and_faults_auto_checkpoints() {
    both_modes("auto-checkpoints", 7, true);
}

// ---------------------------------------------------------------------------
// A failed fsync poisons the collection until it is reopened.

/// The log's path for generation `gen`.
fn wal_path(gen: u64) -> std::path::PathBuf {
    Path::new(DIR).join(format!("wal-{gen:08}.log"))
}

#[test]
fn failed_log_fsync_poisons_until_reopen() {
    for d in [Durability::PerWrite, group_commit(), Durability::None] {
        for kind in [FaultKind::Eio, FaultKind::Enospc] {
            let ctx = format!("{} {kind:?}", d.label());
            let s = Setup::new("inserts", d, (&omen::FLAT).into());
            // Find, by trial on a healthy disk, the operations of the first insert
            // (under `None`: of the first sync).
            let fs = SimFs::new();
            let c = s.create(&fs).unwrap();
            let before = fs.op_count();
            c.insert("a", &[1.0; DIM]).unwrap();
            if d == Durability::None {
                assert_eq!(fs.op_count(), before, "{ctx}: an unsynced insert did I/O");
                c.sync().unwrap();
            }
            let ops = fs.op_count() - before;
            assert_eq!(
                ops, 2,
                "{ctx}: a synced log record is one write and one sync"
            );
            drop(c);
            // The log's sync is the second of them: the first (the write) reached
            // the file, and the record is durable only after the second.
            let fs = SimFs::new();
            let c = s.create(&fs).unwrap();
            let log = wal_path(1);
            let durable_len = fs.read_durable(&log).unwrap().len();
            fs.fail_at(fs.op_count() + 1, kind, FaultPersistence::Once);
            let r = if d == Durability::None {
                c.insert("a", &[1.0; DIM]).unwrap();
                c.sync()
            } else {
                c.insert("a", &[1.0; DIM])
            };
            assert!(
                matches!(r, Err(Error::Io { .. } | Error::Poisoned { .. })),
                "{ctx}: the write whose fsync failed returned {r:?}"
            );
            assert!(
                fs.read(&log).unwrap().len() > durable_len,
                "{ctx}: the failed operation was not the sync (nothing was written)"
            );
            assert_eq!(
                fs.read_durable(&log).unwrap().len(),
                durable_len,
                "{ctx}: the record became durable though its sync failed"
            );
            // The fault was once: the disk works again, but the collection refuses
            // every write until it is reopened.
            // The refusal says what poisoned it: the operation, the log file and
            // the OS error.
            let e = c.insert("b", &[2.0; DIM]).unwrap_err();
            assert!(matches!(e, Error::Poisoned { .. }), "{ctx}: {e:?}");
            let msg = e.to_string();
            assert!(
                msg.contains("wal-00000001.log") && msg.contains("sync"),
                "{ctx}: the poisoned error does not name the failed sync and file: {msg}"
            );
            assert!(matches!(
                c.upsert("a", &[3.0; DIM]),
                Err(Error::Poisoned { .. })
            ));
            assert!(matches!(
                c.insert_batch(&["c", "d"], &[4.0; 2 * DIM]),
                Err(Error::Poisoned { .. })
            ));
            assert!(matches!(c.checkpoint(), Err(Error::Poisoned { .. })));
            assert!(matches!(c.delete("a"), Err(Error::Poisoned { .. })));
            assert!(c.sync().is_err(), "{ctx}: sync succeeded on a failed log");
            assert!(!c.contains("b"));
            assert!(
                matches!(c.close(), Err(Error::Poisoned { .. })),
                "{ctx}: close of a poisoned collection"
            );
            // Reopened, it works: "a" was written before the failed sync, so it
            // is in the file (the page cache) and replayed.
            let c = s.open(&fs).unwrap();
            assert_eq!(c.get("a"), Some(vec![1.0; DIM]), "{ctx}");
            c.insert("b", &[2.0; DIM]).unwrap();
            c.upsert("a", &[3.0; DIM]).unwrap();
            c.checkpoint().unwrap();
            c.delete("b").unwrap();
            c.close().unwrap();
            // After a power cut, "a" (never acknowledged) may be lost, but the
            // writes after reopening are not.
            let img = fs.crash_image(CrashMode::DropUnsynced);
            let c = s.open(&img).unwrap();
            assert_eq!(c.get("a"), Some(vec![3.0; DIM]), "{ctx}");
            assert!(!c.contains("b"));
            assert_eq!(c.len(), 1);
            c.verify().unwrap();
        }
    }
}

// ---------------------------------------------------------------------------
// The HNSW graph file of a repaired index loads.

/// A repair moves the entry point to the highest *present* node, which may stand
/// below a repaired one; the loader used to demand an entry point on the top level
/// of every node, so a checkpoint of such a graph could not be opened (found by
/// the auto-checkpoint workload above).
#[test]
fn hnsw_graph_saved_after_repair_loads() {
    use omen::{VectorIndex, VectorStorage};
    let mut rng = StdRng::seed_from_u64(11);
    for seed in 0..40u64 {
        let storage = omen_storage::MemoryStorage::new(DIM).unwrap();
        let params = omen_hnsw::HnswParams::default().with_seed(seed);
        let index = omen_hnsw::HnswIndex::new(DIM, Metric::L2, params).unwrap();
        for _ in 0..20 {
            let v: Vec<f32> = (0..DIM).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let slot = storage.append(&v).unwrap();
            index.add(&storage, slot..slot + 1).unwrap();
        }
        // Remove the oldest half (the early nodes hold the high levels), repair.
        for slot in 0..11 {
            index.remove(slot).unwrap();
        }
        index.repair(&storage).unwrap();
        let bytes = index.to_bytes();
        let loaded = omen_hnsw::HnswIndex::from_bytes(&bytes, Path::new("graph.hnsw"))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(loaded.len(), 9);
        assert_eq!(
            loaded.to_bytes(),
            bytes,
            "seed {seed}: a reload changes the graph"
        );
        // The graph search (not exhaustive) starts from the entry point.
        let q = [0.1f32; DIM];
        let params = SearchParams::new();
        let req = omen_core::SearchRequest::new(&q, 5, &params);
        let mut scratch = omen_core::SearchScratch::new();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        index.search(&storage, &req, &mut scratch, &mut a).unwrap();
        loaded.search(&storage, &req, &mut scratch, &mut b).unwrap();
        assert_eq!(a.len(), 5, "seed {seed}");
        assert_eq!(a, b, "seed {seed}");
    }
}

// ---------------------------------------------------------------------------
// `create` on an existing collection, with a failing disk.

/// `create` refuses a directory that holds a collection; a disk error while it
/// looks must not make it take the directory for empty and replace the
/// collection.
#[test]
fn create_over_a_collection_refuses_even_when_the_disk_fails() {
    let s = Setup::new("inserts", Durability::PerWrite, (&omen::FLAT).into());
    let existing = |fs: &SimFs| {
        let c = s.create(fs).unwrap();
        for op in &s.w.ops[..6] {
            exec(&c, op).unwrap();
        }
        c.checkpoint().unwrap();
        for op in &s.w.ops[6..9] {
            exec(&c, op).unwrap();
        }
        c.close().unwrap();
    };
    // How many operations a refused create takes.
    let fs = SimFs::new();
    existing(&fs);
    let before = fs.op_count();
    assert!(matches!(s.create(&fs), Err(Error::InvalidParameter { .. })));
    let create_ops = fs.op_count() - before;
    for i in 0..create_ops {
        for persistence in [FaultPersistence::Once, FaultPersistence::Forever] {
            let ctx = format!("fault {persistence:?} at op {i} of the refused create");
            let fs = SimFs::new();
            existing(&fs);
            fs.fail_at(fs.op_count() + i, FaultKind::Eio, persistence);
            if let Ok(c) = s.create(&fs) {
                panic!(
                    "{ctx}: create replaced an existing collection ({} ids left)",
                    c.len()
                );
            }
            fs.clear_faults();
            let c = s.open(&fs).unwrap_or_else(|e| panic!("{ctx}: open: {e}"));
            s.check_recovered(&c, 9, 9, &ctx);
        }
    }
}

// ---------------------------------------------------------------------------
// A crash during recovery.

/// Recovery repairs the directory (truncates a torn log tail, rewrites a torn
/// log header, removes unfinished checkpoint files): a crash at any operation of
/// that must leave an image that still opens to the same state.
fn recovery_crash_suite(name: &str, storage: StorageKind, seed: u64) {
    let started = Instant::now();
    let s = Setup::with_storage(name, Durability::PerWrite, (&omen::FLAT).into(), storage);
    let k_ops = s.count_ops();
    let modes = CrashMode::all(seed);
    let checked = AtomicUsize::new(0);
    let repairs = AtomicUsize::new(0);
    par_for(k_ops as usize + 1, threads_for(Durability::PerWrite), |n| {
        let fs = SimFs::new();
        fs.crash_at(n as u64);
        let Ok(c) = s.create(&fs) else { return };
        let mut acked = 0;
        for op in &s.w.ops {
            if exec(&c, op).is_err() {
                break;
            }
            acked += 1;
        }
        drop(c);
        for &mode in &modes {
            let ctx0 = format!("{} crash at op {n}, {mode:?}", s.label());
            let img = fs.crash_image(mode);
            // A copy (everything on an image is durable), opened to count the
            // operations recovery takes and to learn the state.
            let probe = img.crash_image(CrashMode::DropUnsynced);
            let c = s.open(&probe).unwrap();
            let k = s.check_recovered(&c, acked, acked + 1, &ctx0);
            drop(c);
            let open_ops = probe.op_count();
            // Only recovery that writes is interesting: a plain open reads.
            let baseline = {
                let again = probe.crash_image(CrashMode::DropUnsynced);
                let c = s.open(&again).unwrap();
                drop(c);
                again.op_count()
            };
            if open_ops == baseline {
                continue;
            }
            repairs.fetch_add(1, Ordering::Relaxed);
            for m in 0..open_ops {
                let disk = img.crash_image(CrashMode::DropUnsynced);
                disk.crash_at(m);
                let _ = s.open(&disk);
                for &mode2 in &modes {
                    let ctx = format!("{ctx0}; recovery crashed at op {m}, {mode2:?}");
                    let after = disk.crash_image(mode2);
                    let c = s
                        .open(&after)
                        .unwrap_or_else(|e| panic!("{ctx}: does not open: {e}"));
                    s.check_recovered(&c, k, k, &ctx);
                    checked.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    eprintln!(
        "recovery-crash {:<40} {} crash points, {} images whose recovery writes, {} images after a crash in recovery checked in {:.1?}",
        s.label(),
        k_ops + 1,
        repairs.load(Ordering::Relaxed),
        checked.load(Ordering::Relaxed),
        started.elapsed()
    );
}

#[test]
fn crash_during_recovery() {
    for storage in StorageKind::ALL {
        recovery_crash_suite("two-checkpoints", storage, 21);
        // The unoptimised build checks one workload.
        if !cfg!(debug_assertions) {
            recovery_crash_suite("auto-checkpoints", storage, 22);
            recovery_crash_suite("deletes", storage, 23);
        }
    }
}
