//! Corruption sweep of a durable collection's files: every byte of every file
//! (densely sampled for large files) flipped (`^ 0xFF` and `^ 0x01`), and every
//! truncation length, each on a fresh copy of a closed collection, then
//! `Collection::open`.
//!
//! The outcome must be one of:
//! * `Err(Error::Corruption)` whose message names the damaged file (the mmap
//!   storage's row checksum names the `vectors` directory) — for damage to a
//!   checkpoint file (manifest, segment, id file, index file, chunk file) or to a
//!   log record that a later record claims durable;
//! * `Ok`, with exactly the state the damage leaves recoverable: the full state
//!   for damage checksums do not cover (record padding, unused chunk rows, rows the
//!   log replay rewrites), the full state minus the last operation for damage to the
//!   last record of the newest log (indistinguishable from a torn write), and for a
//!   truncation of the newest log the state after the records wholly inside the
//!   kept bytes (a truncated log ends like a crashed one). After `Ok`, `verify()`
//!   passes, a search returns live ids, and a second open gives the same state.
//!
//! Never a panic (each trial runs under `catch_unwind`), never another error.
//! The logs are written with `Durability::PerWrite`, so each record's
//! `synced_upto` covers the record before it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use omen::fs::{CrashMode, SimFs};
use omen::{
    Collection, CollectionConfig, Durability, DurableOptions, Error, IndexSpec, Metric, StorageKind,
};
use omen_hnsw::HnswParams;
use omen_ivfpq::IvfPqParams;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const DIM: usize = 4;

/// The live entries, sorted by id.
type State = Vec<(String, Vec<f32>)>;

fn id(i: usize) -> String {
    format!("id{i}")
}

fn v(i: usize) -> Vec<f32> {
    let x = i as f32;
    vec![x, (i * 7 % 11) as f32, 1.0 + 0.5 * x, -x / 3.0]
}

fn state(c: &Collection) -> State {
    let mut s = c.live_entries();
    s.sort_by(|a, b| a.0.cmp(&b.0));
    s
}

/// The writes after the checkpoint: one log record each.
enum Write {
    Insert(usize),
    Upsert(usize, usize),
    Delete(usize),
    Batch(Vec<usize>),
}

/// Writes a checkpointed base, checkpoints, then logs more writes. Returns the
/// states after 0, 1, … of the logged writes.
fn workload(c: &Collection) -> Vec<State> {
    for i in 0..20 {
        c.insert(&id(i), &v(i)).unwrap();
    }
    let batch: Vec<String> = (20..25).map(id).collect();
    let rows: Vec<f32> = (20..25).flat_map(v).collect();
    c.insert_batch(&batch, &rows).unwrap();
    c.upsert(&id(3), &v(103)).unwrap();
    c.delete(&id(5)).unwrap();
    c.delete(&id(7)).unwrap();
    c.checkpoint().unwrap();
    let mut states = vec![state(c)];
    let writes = [
        Write::Insert(25),
        Write::Insert(26),
        Write::Insert(27),
        Write::Insert(28),
        Write::Insert(29),
        Write::Upsert(0, 200),
        Write::Upsert(30, 30),
        Write::Delete(1),
        Write::Batch(vec![31, 32]),
        Write::Delete(20),
        Write::Upsert(31, 231),
    ];
    for w in writes {
        match w {
            Write::Insert(i) => c.insert(&id(i), &v(i)).unwrap(),
            Write::Upsert(i, j) => c.upsert(&id(i), &v(j)).unwrap(),
            Write::Delete(i) => c.delete(&id(i)).unwrap(),
            Write::Batch(is) => {
                let ids: Vec<String> = is.iter().map(|&i| id(i)).collect();
                let rows: Vec<f32> = is.iter().flat_map(|&i| v(i)).collect();
                c.insert_batch(&ids, &rows).unwrap();
            }
        }
        states.push(state(c));
    }
    states
}

/// Rows in the first chunk file of the simulated mmap collection: chunks of 4,
/// 8, 16 and 32 rows, so that the workload's 33 rows span four chunk files and
/// its checkpoint ends inside one.
const MMAP_CHUNK_ROWS: usize = 4;

fn sim_opts(fs: &SimFs) -> DurableOptions {
    DurableOptions::default()
        .durability(Durability::PerWrite)
        .checkpoint_log_bytes(u64::MAX)
        .mmap_chunk_rows(MMAP_CHUNK_ROWS)
        .fs(Arc::new(fs.clone()))
}

fn real_opts() -> DurableOptions {
    DurableOptions::default()
        .durability(Durability::PerWrite)
        .checkpoint_log_bytes(u64::MAX)
}

/// Where an open-and-check failed.
#[derive(Debug)]
enum Fail {
    Open(Error),
    /// Open succeeded but a later check did not.
    After(String),
}

/// Opens, checks `verify` and a search, closes, opens again and compares.
fn open_and_check(dir: &Path, opts: &dyn Fn() -> DurableOptions) -> Result<State, Fail> {
    let c = Collection::open(dir, opts()).map_err(Fail::Open)?;
    let st = state(&c);
    // The sweep's logs are small: a larger count is an arithmetic wrap.
    let truncated = c.recovery_info().map_or(0, |r| r.truncated_bytes);
    if truncated > 1 << 20 {
        return Err(Fail::After(format!(
            "recovery reports {truncated} truncated bytes"
        )));
    }
    c.verify()
        .map_err(|e| Fail::After(format!("verify after a successful open: {e}")))?;
    let hits = c
        .search(&v(1), 5)
        .map_err(|e| Fail::After(format!("search: {e}")))?;
    if hits.len() != st.len().min(5) {
        return Err(Fail::After(format!(
            "search returned {} hits for {} live ids",
            hits.len(),
            st.len()
        )));
    }
    if let Some((h, _)) = hits
        .iter()
        .find(|(h, _)| !st.iter().any(|(i, _)| **i == **h))
    {
        return Err(Fail::After(format!("search returned {h:?}, not live")));
    }
    c.close().map_err(|e| Fail::After(format!("close: {e}")))?;
    let again = Collection::open(dir, opts())
        .map_err(|e| Fail::After(format!("second open failed: {e}")))?;
    if state(&again) != st {
        return Err(Fail::After("second open gave a different state".into()));
    }
    Ok(st)
}

/// What a trial may produce.
#[derive(Clone, Copy, Debug)]
struct Allowed {
    /// `Ok` with `states[i]`.
    ok: Option<usize>,
    /// `Err(Corruption)` naming the file.
    corrupt: bool,
}

/// A durable file's layout, for predicting outcomes.
enum Kind {
    /// A checkpoint file: any damage is detected (or harmless).
    Checkpoint,
    /// The newest log holding records (only logs without records may follow it):
    /// its records' `[start, body end, padded end)`.
    NewestLog(Vec<(usize, usize, usize)>),
    /// A file no manifest names (an unfinished checkpoint's): removed by open.
    Garbage,
    /// An mmap chunk file: bytes in `[from, to)` are rows the log replay rewrites
    /// or that hold nothing; damage there is harmless. A chunk the checkpoint's
    /// rows do not reach (`needed: false`) is not read by open and is recreated
    /// when the replay reaches it: any damage to it is harmless.
    Chunk {
        harmless: std::ops::Range<usize>,
        needed: bool,
    },
}

fn log_records(bytes: &[u8]) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut at = 32;
    while at + 24 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let body_end = at + 24 + len;
        let end = body_end + (8 - (24 + len) % 8) % 8;
        assert!(end <= bytes.len(), "the sweep's log parser disagrees");
        out.push((at, body_end, end));
        at = end;
    }
    assert_eq!(at, bytes.len());
    out
}

impl Kind {
    fn flip(&self, off: usize, full: usize) -> Allowed {
        match self {
            Kind::Checkpoint => Allowed {
                ok: Some(full),
                corrupt: true,
            },
            Kind::Chunk { harmless, needed } if !needed || harmless.contains(&off) => Allowed {
                ok: Some(full),
                corrupt: false,
            },
            Kind::Chunk { .. } => Allowed {
                ok: None,
                corrupt: true,
            },
            Kind::Garbage => Allowed {
                ok: Some(full),
                corrupt: false,
            },
            Kind::NewestLog(recs) => {
                let n = recs.len();
                match recs.iter().position(|&(s, _, e)| (s..e).contains(&off)) {
                    // The header of a log without records: a new log whose header
                    // write was torn; it is rewritten.
                    None if n == 0 => Allowed {
                        ok: Some(full),
                        corrupt: false,
                    },
                    // The header, with records after it.
                    None => Allowed {
                        ok: None,
                        corrupt: true,
                    },
                    // Padding is not checksummed and not read.
                    Some(k) if off >= recs[k].1 => Allowed {
                        ok: Some(full),
                        corrupt: false,
                    },
                    Some(k) if k + 1 == n => Allowed {
                        ok: Some(full - 1),
                        corrupt: false,
                    },
                    Some(_) => Allowed {
                        ok: None,
                        corrupt: true,
                    },
                }
            }
        }
    }

    fn truncate(&self, len: usize, full: usize) -> Allowed {
        match self {
            Kind::NewestLog(recs) => {
                let whole = recs.iter().filter(|r| r.1 <= len).count();
                Allowed {
                    ok: Some(full - recs.len() + whole),
                    corrupt: false,
                }
            }
            Kind::Garbage | Kind::Chunk { needed: false, .. } => Allowed {
                ok: Some(full),
                corrupt: false,
            },
            _ => Allowed {
                ok: None,
                corrupt: true,
            },
        }
    }
}

/// Every offset of a small file; for a large one every byte of the first and last
/// 512 and every 7th in between.
fn offsets(len: usize) -> Vec<usize> {
    if len <= 4096 {
        return (0..len).collect();
    }
    let mut v: Vec<usize> = (0..512).collect();
    v.extend((512..len - 512).step_by(7));
    v.extend(len - 512..len);
    v
}

/// Counts per file kind, and every failure.
#[derive(Default)]
struct Tally {
    /// kind -> (trials, ok, corruption)
    counts: BTreeMap<String, (usize, usize, usize)>,
    failures: Vec<String>,
}

impl Tally {
    fn record(
        &mut self,
        kind: &str,
        what: &str,
        name: &str,
        allowed: Allowed,
        states: &[State],
        out: std::thread::Result<Result<State, Fail>>,
    ) {
        let e = self.counts.entry(kind.to_string()).or_default();
        e.0 += 1;
        let problem = match out {
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Some(format!("PANIC: {msg}"))
            }
            Ok(Ok(st)) => {
                e.1 += 1;
                match allowed.ok {
                    Some(i) if states[i] == st => None,
                    Some(i) => Some(format!(
                        "opened with {} live ids, expected state {i} ({} live ids)",
                        st.len(),
                        states[i].len()
                    )),
                    None => Some(format!(
                        "opened (with {} live ids) where corruption was expected",
                        st.len()
                    )),
                }
            }
            Ok(Err(Fail::Open(err @ Error::Corruption { .. }))) => {
                e.2 += 1;
                let msg = err.to_string();
                if !allowed.corrupt {
                    Some(format!(
                        "corruption where state {:?} was expected: {msg}",
                        allowed.ok
                    ))
                } else if !msg.contains(name) {
                    Some(format!("corruption error does not name {name}: {msg}"))
                } else {
                    None
                }
            }
            Ok(Err(Fail::Open(err))) => Some(format!("non-corruption error: {err:?}")),
            Ok(Err(Fail::After(msg))) => Some(msg),
        };
        if let Some(p) = problem {
            self.failures.push(format!("{kind}: {what}: {p}"));
        }
    }

    fn finish(self, label: &str, started: Instant) {
        for (k, (n, ok, bad)) in &self.counts {
            eprintln!("{label}: {k:>14}: {n:6} trials, {ok:6} opened, {bad:6} corruption");
        }
        eprintln!("{label}: {:.1?}", started.elapsed());
        assert!(
            self.failures.is_empty(),
            "{label}: {} failures, first ones:\n{}",
            self.failures.len(),
            self.failures
                .iter()
                .take(30)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// The kind label of a file name: `wal`, `seg`, `ids`, `hnsw`, … or `MANIFEST`.
fn kind_label(name: &str) -> String {
    if name == "MANIFEST" {
        return name.into();
    }
    match name.rsplit_once('.') {
        Some((stem, "log")) => stem.split('-').next().unwrap_or("wal").into(),
        Some((_, ext)) => ext.into(),
        None => name.into(),
    }
}

/// A closed collection after [`workload`], as a durable disk image; with
/// `interrupted`, a further checkpoint was cut off by a crash just before its
/// manifest rename became durable (under [`CrashMode::LoseRenames`]), so the image
/// holds the old log (now an older one), the new empty log, and the new
/// checkpoint's files and `MANIFEST.tmp` that no manifest names.
fn build_image(
    dir: &Path,
    index: impl Into<IndexSpec>,
    interrupted: bool,
    storage: StorageKind,
) -> (SimFs, Vec<State>) {
    let fs = SimFs::new();
    let cfg = CollectionConfig::new(DIM, Metric::L2)
        .index(index)
        .storage(storage);
    let c = Collection::create(dir, &cfg, sim_opts(&fs)).unwrap();
    let states = workload(&c);
    // Dropped, not closed (`close` checkpoints): the image keeps its log.
    drop(c);
    let base = fs.crash_image(CrashMode::DropUnsynced);
    if !interrupted {
        return (base, states);
    }
    // The latest crash point that leaves `MANIFEST.tmp` not yet renamed.
    let mut found = None;
    for k in 1..64 {
        let img = base.crash_image(CrashMode::DropUnsynced);
        let c = Collection::open(dir, sim_opts(&img)).unwrap();
        img.crash_at(img.op_count() + k);
        if c.checkpoint().is_ok() {
            break;
        }
        drop(c);
        let crashed = img.crash_image(CrashMode::LoseRenames);
        if crashed
            .file_names()
            .iter()
            .any(|p| p.ends_with("MANIFEST.tmp"))
        {
            found = Some(crashed);
        }
    }
    (found.expect("no crash point leaves MANIFEST.tmp"), states)
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn sweep_sim(label: &str, index: impl Into<IndexSpec>, interrupted: bool) {
    sweep_sim_over(label, index, interrupted, StorageKind::Memory);
}

/// The manifest's first `"rows": N`: the rows its checkpoint covers.
fn manifest_rows(manifest: &str) -> usize {
    manifest
        .split("\"rows\": ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

fn sweep_sim_over(
    label: &str,
    index: impl Into<IndexSpec>,
    interrupted: bool,
    storage: StorageKind,
) {
    let started = Instant::now();
    let dir = Path::new("/db");
    let (base, states) = build_image(dir, index, interrupted, storage);
    let full = states.len() - 1;
    // The undamaged image opens to the full state.
    let img = base.crash_image(CrashMode::DropUnsynced);
    assert_eq!(
        open_and_check(dir, &|| sim_opts(&img)).unwrap(),
        states[full]
    );

    let mut files: Vec<PathBuf> = base
        .file_names()
        .into_iter()
        .filter(|p| file_name(p) != "LOCK")
        .collect();
    files.sort();
    let names: Vec<String> = files.iter().map(|p| file_name(p)).collect();
    let wals: Vec<&String> = names.iter().filter(|n| n.starts_with("wal-")).collect();
    assert_eq!(wals.len(), 1 + usize::from(interrupted), "files: {names:?}");
    let newest = wals.iter().max().copied().cloned().unwrap_or_default();
    // What the manifest names: the rest (an unfinished checkpoint's) is garbage.
    let manifest =
        String::from_utf8_lossy(&base.read_durable(&dir.join("MANIFEST")).unwrap()).into_owned();
    assert!(names.iter().any(|n| n.starts_with("ids-")));
    let chunks = names.iter().filter(|n| n.starts_with("chunk-")).count();
    match storage {
        StorageKind::Mmap => assert!(chunks > 1, "files: {names:?}"),
        _ => assert!(names.iter().any(|n| n.starts_with("vectors-"))),
    }
    let checkpoint_rows = manifest_rows(&manifest);
    if interrupted {
        assert!(names.iter().any(|n| n == "MANIFEST.tmp"), "{names:?}");
    }

    let mut tally = Tally::default();
    for (path, name) in files.iter().zip(&names) {
        let orig = base.read_durable(path).unwrap();
        let mut offs = offsets(orig.len());
        let mut lens = offs.clone();
        // The chunks' row checksum names the `vectors` directory, their header
        // checks the chunk file (under it).
        let mut named = name.as_str();
        let (kind, label_k) = if path.parent().is_some_and(|d| d.ends_with("vectors")) {
            let b: usize = name["chunk-".len()..name.len() - ".omv".len()]
                .parse()
                .unwrap();
            let header = omen_storage::MMAP_HEADER_BYTES;
            let first_row = MMAP_CHUNK_ROWS * ((1 << b) - 1);
            let kept = checkpoint_rows.saturating_sub(first_row);
            let harmless = header + kept * DIM * 4..orig.len();
            // Every header field and row byte; the header's zero padding sampled.
            offs = (0..64).chain((64..header).step_by(61)).collect();
            offs.extend(header..orig.len());
            lens = (0..64).step_by(3).collect();
            lens.extend((64..orig.len()).step_by(orig.len() / 97));
            lens.push(orig.len() - 1);
            named = "vectors";
            let needed = first_row < checkpoint_rows;
            (Kind::Chunk { harmless, needed }, "omv".to_string())
        } else if name.starts_with("wal-") {
            let recs = log_records(&orig);
            if interrupted && *name == newest {
                // The unfinished checkpoint's log: a header, no records.
                assert!(recs.is_empty());
                (Kind::NewestLog(recs), "wal-empty".to_string())
            } else {
                // Under `interrupted`, an older log that only an empty one
                // follows: the same tail rule applies to it.
                assert_eq!(recs.len(), full, "one record per logged write");
                (Kind::NewestLog(recs), "wal".to_string())
            }
        } else if name == "MANIFEST" || manifest.contains(&format!("\"{name}\"")) {
            (Kind::Checkpoint, kind_label(name))
        } else {
            (Kind::Garbage, format!("{} (unnamed)", kind_label(name)))
        };
        let mut trial = |bytes: &[u8], allowed: Allowed, what: String| {
            let img = base.crash_image(CrashMode::DropUnsynced);
            img.put_file(path, bytes);
            let out = catch_unwind(AssertUnwindSafe(|| open_and_check(dir, &|| sim_opts(&img))));
            tally.record(&label_k, &what, named, allowed, &states, out);
        };
        for &off in &offs {
            for x in [0xFFu8, 0x01] {
                let mut b = orig.clone();
                b[off] ^= x;
                trial(
                    &b,
                    kind.flip(off, full),
                    format!("{name} byte {off} ^ {x:#04x}"),
                );
            }
        }
        for &len in &lens {
            trial(
                &orig[..len],
                kind.truncate(len, full),
                format!("{name} truncated to {len}"),
            );
        }
    }
    tally.finish(label, started);
}

#[test]
fn corruption_sweep_flat() {
    sweep_sim("flat", &omen::FLAT, false);
}

#[test]
fn corruption_sweep_hnsw() {
    sweep_sim("hnsw", HnswParams::default(), false);
}

#[test]
fn corruption_sweep_ivfpq_trained() {
    // Trains itself at 16 slots (2 lists, 2 sub-quantizers of 4 bits).
    sweep_sim(
        "ivfpq-trained",
        IvfPqParams::new(2, 2).with_train_size(16),
        false,
    );
}

#[test]
fn corruption_sweep_ivfpq_untrained() {
    sweep_sim(
        "ivfpq-untrained",
        IvfPqParams::new(2, 2).with_train_size(0),
        false,
    );
}

#[test]
fn corruption_sweep_qg_trained() {
    // Trains its codes at 16 slots: the checkpoint holds the graph, the codebooks
    // and every code.
    sweep_sim(
        "qg-trained",
        omen_qg::QgParams::new().with_m(4).with_train_at(16),
        false,
    );
}

/// The mmap storage on the simulated disk: the same sweep, plus every row byte
/// and header field of every chunk file (created, grown and synced through the
/// simulated disk), the checkpoint ending inside the second chunk.
#[test]
fn corruption_sweep_mmap_sim() {
    sweep_sim_over("mmap-sim", HnswParams::default(), false, StorageKind::Mmap);
}

/// A checkpoint interrupted before its manifest rename: two logs (the older one
/// holding every record), and the unfinished checkpoint's files.
#[test]
fn corruption_sweep_interrupted_checkpoint() {
    sweep_sim("interrupted", HnswParams::default(), true);
}

/// Every file under `dir`, relative path -> bytes.
fn snapshot_dir(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// Puts `dir` back to `snap`: rewrites changed files, removes new ones.
fn restore_dir(dir: &Path, snap: &BTreeMap<PathBuf, Vec<u8>>) {
    let now = snapshot_dir(dir);
    for (rel, bytes) in &now {
        match snap.get(rel) {
            Some(want) if want == bytes => {}
            Some(want) => std::fs::write(dir.join(rel), want).unwrap(),
            None => std::fs::remove_file(dir.join(rel)).unwrap(),
        }
    }
    for (rel, want) in snap {
        if !now.contains_key(rel) {
            std::fs::write(dir.join(rel), want).unwrap();
        }
    }
}

/// The mmap storage on the real file system: the same sweep over the manifest,
/// log, id and index files, and a sampled one over the chunk file.
#[test]
fn corruption_sweep_mmap_real_fs() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let cfg = CollectionConfig::new(DIM, Metric::L2)
        .index(HnswParams::default())
        .storage(StorageKind::Mmap);
    let c = Collection::create(&dir, &cfg, real_opts()).unwrap();
    let states = workload(&c);
    let total_rows = c.stats().storage_slots;
    // Dropped, not closed (`close` checkpoints): the directory keeps its log.
    drop(c);
    let full = states.len() - 1;
    let snap = snapshot_dir(&dir);
    assert_eq!(open_and_check(&dir, &real_opts).unwrap(), states[full]);
    restore_dir(&dir, &snap);

    // The rows the checkpoint covers: the manifest's first `"rows": N`.
    let manifest = String::from_utf8_lossy(&snap[Path::new("MANIFEST")]).into_owned();
    let checkpoint_rows = manifest_rows(&manifest);
    assert!(checkpoint_rows > 0 && checkpoint_rows < total_rows);
    let chunk = PathBuf::from("vectors").join("chunk-00.omv");
    assert!(snap.contains_key(&chunk), "files: {:?}", snap.keys());
    let header = omen_storage::MMAP_HEADER_BYTES;
    let row_bytes = DIM * 4;
    let mut tally = Tally::default();
    for (rel, orig) in &snap {
        let name = rel.file_name().unwrap().to_string_lossy().into_owned();
        if name == "LOCK" {
            continue;
        }
        let (kind, offs, lens) = if *rel == chunk {
            // Rows from the checkpoint's on are rewritten by the replay, or unused.
            let harmless = header + checkpoint_rows * row_bytes..orig.len();
            let mut offs: Vec<usize> = (0..64).collect();
            offs.extend((64..header).step_by(61));
            offs.extend(header..header + (total_rows + 4) * row_bytes);
            offs.extend((header + (total_rows + 4) * row_bytes..orig.len() - 64).step_by(4093));
            offs.extend(orig.len() - 64..orig.len());
            let mut lens: Vec<usize> = (0..64).step_by(3).collect();
            lens.extend((64..orig.len()).step_by(orig.len() / 97));
            lens.push(orig.len() - 1);
            (
                Kind::Chunk {
                    harmless,
                    needed: true,
                },
                offs,
                lens,
            )
        } else {
            // Real fsyncs are slow, and the simulated sweeps cover every byte of
            // these: every 3rd byte here.
            let offs: Vec<usize> = (0..orig.len()).step_by(3).collect();
            if name.starts_with("wal-") {
                let recs = log_records(orig);
                assert_eq!(recs.len(), full);
                (Kind::NewestLog(recs), offs.clone(), offs)
            } else {
                (Kind::Checkpoint, offs.clone(), offs)
            }
        };
        // The row checksum of the mmap storage names the `vectors` directory.
        let named = if *rel == chunk {
            "vectors"
        } else {
            name.as_str()
        };
        let label_k = kind_label(&name);
        let mut trial = |bytes: &[u8], allowed: Allowed, what: String| {
            std::fs::write(dir.join(rel), bytes).unwrap();
            let out = catch_unwind(AssertUnwindSafe(|| open_and_check(&dir, &real_opts)));
            restore_dir(&dir, &snap);
            tally.record(&label_k, &what, named, allowed, &states, out);
        };
        for &off in &offs {
            for x in [0xFFu8, 0x01] {
                let mut b = orig.clone();
                b[off] ^= x;
                trial(
                    &b,
                    kind.flip(off, full),
                    format!("{name} byte {off} ^ {x:#04x}"),
                );
            }
        }
        for &len in &lens {
            trial(
                &orig[..len],
                kind.truncate(len, full),
                format!("{name} truncated to {len}"),
            );
        }
    }
    tally.finish("mmap", started);
}

/// Regression: a checkpoint creates (and makes durable) log `G + 1` before it
/// syncs log `G` and moves writers to the new one. A crash in between, with
/// unsynced bytes at the end of `G` (here under `Durability::None`, whose 1 MiB
/// blocks are written unsynced), left `G` with a torn tail that was no longer the
/// newest log, and open refused the collection with `Corruption`. The tail rule
/// now applies to every log that only empty logs follow.
#[test]
fn checkpoint_crash_leaves_torn_tail_on_older_log() {
    let dir = Path::new("/db");
    let opts = |fs: &SimFs| {
        DurableOptions::default()
            .durability(Durability::None)
            .checkpoint_log_bytes(u64::MAX)
            .fs(Arc::new(fs.clone()))
    };
    let dim = 256;
    let row: Vec<f32> = (0..dim).map(|i| i as f32).collect();
    // Inserts until one 1 MiB block has been written unsynced.
    let setup = || {
        let fs = SimFs::new();
        let cfg = CollectionConfig::new(dim, Metric::L2);
        let c = Collection::create(dir, &cfg, opts(&fs)).unwrap();
        let mut n = 0;
        while fs.pending_ops() == 0 {
            c.insert(&format!("x{n}"), &row).unwrap();
            n += 1;
        }
        (fs, c, n)
    };
    let mut bad = Vec::new();
    let mut torn = 0;
    // The checkpoint's first operations: the new log's create, header write,
    // sync, directory sync, then the old log's sync.
    for k in 0..6 {
        for mode in CrashMode::all(k) {
            let (fs, c, n) = setup();
            fs.crash_at(fs.op_count() + k);
            let r = c.checkpoint();
            let img = fs.crash_image(mode);
            drop(c);
            match Collection::open(dir, opts(&img)) {
                Ok(c) => {
                    // Under `None` nothing was acknowledged; what survives is a
                    // prefix of the inserts.
                    let len = c.len();
                    assert!(len <= n);
                    assert!((0..len).all(|i| c.get(&format!("x{i}")).as_deref() == Some(&row[..])));
                    c.verify().unwrap();
                    torn += usize::from(c.recovery_info().unwrap().truncated_bytes > 0);
                }
                Err(e) => bad.push(format!("crash at checkpoint op {k} ({r:?}), {mode:?}: {e}")),
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert!(
        torn > 0,
        "no crash point left a torn tail: the test lost its point"
    );
}

/// Regression (found by the `durable_open` fuzz target): a newest log cut inside
/// the zero padding after its last record made recovery compute the truncated
/// byte count as `len - valid_len` with `valid_len > len` (an overflow panic with
/// debug assertions, a wrapped count without).
#[test]
fn log_cut_inside_the_last_records_padding() {
    let dir = Path::new("/db");
    let (base, states) = build_image(dir, &omen::FLAT, false, StorageKind::Memory);
    let wal = base
        .file_names()
        .into_iter()
        .find(|p| file_name(p).starts_with("wal-"))
        .unwrap();
    let orig = base.read_durable(&wal).unwrap();
    let recs = log_records(&orig);
    let cuts: Vec<usize> = recs
        .iter()
        .flat_map(|&(_, body_end, end)| body_end..end)
        .collect();
    assert!(!cuts.is_empty(), "no record has padding");
    for cut in cuts {
        let img = base.crash_image(CrashMode::DropUnsynced);
        img.put_file(&wal, &orig[..cut]);
        let c = Collection::open(dir, sim_opts(&img)).unwrap();
        assert_eq!(
            c.recovery_info().unwrap().truncated_bytes,
            0,
            "cut at {cut}"
        );
        let whole = recs.iter().filter(|r| r.1 <= cut).count();
        assert_eq!(state(&c), states[whole], "cut at {cut}");
        c.close().unwrap();
        // The padding was restored: the log reads whole again.
        let c = Collection::open(dir, sim_opts(&img)).unwrap();
        assert_eq!(state(&c), states[whole]);
    }
}
