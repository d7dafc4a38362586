//! The registry of index kinds: every built-in kind and a fourth one defined
//! here, registered at run time, pass the kind suite (index conformance, key
//! refusal, saved state and the durable round trip: create, import,
//! checkpoint, reopen, search, verify) with nothing kind-specific outside this
//! file.

use omen::registry;
use omen_core::simd::Kernels;
use omen_core::{
    Error, IndexKind, IndexStats, Metric, Neighbor, ParamSpec, Params, Result, SearchParams,
    SearchRequest, SearchScratch, SearchStats, SlotId, TopK, VectorIndex, VectorStorage,
};
use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

#[test]
fn built_in_kinds_pass_the_kind_suite() {
    omen_tests::kind_suite(&omen::FLAT, &Params::new());
    omen_tests::kind_suite(
        &omen::HNSW,
        &Params::new().with("m", 8).with("ef_construction", 64),
    );
    omen_tests::kind_suite(
        &omen::IVFPQ,
        // No `m`: the kind picks one that divides each dimension the suite uses.
        &Params::new().with("nlist", 8).with("train_size", 256),
    );
}

/// A fourth index, as small as an index can be: a scan over a set of slots.
/// It takes one build parameter (`cap`, the most slots it holds) and one
/// search knob (`batch`, slots scored per pass: speed only, never the answer),
/// and comes in two kinds:
/// one that saves its slot set to a file, and one that saves nothing and is
/// rebuilt from the live slots on reopen.
struct TinyKind {
    name: &'static str,
    saves: bool,
}

static TINY_SAVED: TinyKind = TinyKind {
    name: "tiny-saved",
    saves: true,
};
static TINY_REBUILT: TinyKind = TinyKind {
    name: "tiny-rebuilt",
    saves: false,
};

const BUILD: &[ParamSpec] = &[ParamSpec::new("cap", "the most slots held [unbounded]")];
const SEARCH: &[ParamSpec] = &[ParamSpec::new("batch", "slots scored per pass [64]")];
const MAGIC: &[u8; 8] = b"TINYIDX1";

impl IndexKind for TinyKind {
    fn name(&self) -> &'static str {
        self.name
    }
    fn description(&self) -> &'static str {
        "a scan over a set of slots (a test of the registry)"
    }
    fn build_params(&self) -> &'static [ParamSpec] {
        BUILD
    }
    fn search_params(&self) -> &'static [ParamSpec] {
        SEARCH
    }
    fn create(&self, dim: usize, metric: Metric, params: &Params) -> Result<Box<dyn VectorIndex>> {
        params.check_keys(&format!("{} build", self.name), BUILD)?;
        let cap = params.usize("cap")?.unwrap_or(usize::MAX);
        if dim == 0 || cap == 0 {
            return Err(Error::invalid_param(
                "cap",
                "dim and cap must be at least 1",
            ));
        }
        Ok(Box::new(TinyIndex {
            kind: if self.saves {
                &TINY_SAVED
            } else {
                &TINY_REBUILT
            },
            dim,
            metric,
            cap,
            slots: RwLock::new(BTreeSet::new()),
            searches: AtomicU64::new(0),
            distances: AtomicU64::new(0),
        }))
    }
    fn file_extension(&self) -> Option<&'static str> {
        self.saves.then_some("tiny")
    }
    fn load(&self, bytes: &[u8], file: &Path) -> Result<Box<dyn VectorIndex>> {
        // MAGIC, dim u32, metric u8, cap u64, count u64, then count slots u32.
        let bad = |at: usize, what: &str| Error::corruption(file, at as u64, what.to_string());
        if bytes.len() < 29 || &bytes[..8] != MAGIC {
            return Err(bad(0, "not a tiny index"));
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or([0; 8]));
        let metric = match bytes[12] {
            0 => Metric::L2,
            1 => Metric::InnerProduct,
            2 => Metric::Cosine,
            _ => return Err(bad(12, "unknown metric")),
        };
        let count = u64_at(21);
        if (bytes.len() - 29) as u64 != count.saturating_mul(4) {
            return Err(bad(21, "slot count does not match the length"));
        }
        let params = Params::new().with("cap", u64_at(13));
        let index = self.create(u32_at(8) as usize, metric, &params)?;
        let tiny = TinyIndex {
            kind: self_kind(self.saves),
            dim: index.dim(),
            metric,
            cap: usize::try_from(u64_at(13)).unwrap_or(usize::MAX),
            slots: RwLock::new((0..count as usize).map(|i| u32_at(29 + 4 * i)).collect()),
            searches: AtomicU64::new(0),
            distances: AtomicU64::new(0),
        };
        if tiny.len() as u64 != count {
            return Err(bad(29, "a slot appears twice"));
        }
        Ok(Box::new(tiny))
    }
}

fn self_kind(saves: bool) -> &'static TinyKind {
    if saves {
        &TINY_SAVED
    } else {
        &TINY_REBUILT
    }
}

struct TinyIndex {
    kind: &'static TinyKind,
    dim: usize,
    metric: Metric,
    cap: usize,
    slots: RwLock<BTreeSet<SlotId>>,
    searches: AtomicU64,
    distances: AtomicU64,
}

impl TinyIndex {
    fn set(&self) -> std::sync::RwLockReadGuard<'_, BTreeSet<SlotId>> {
        self.slots.read().unwrap_or_else(|p| p.into_inner())
    }
    fn batch(params: &SearchParams) -> Result<usize> {
        params.knobs().check_keys("tiny search", SEARCH)?;
        let batch = params.knobs().usize("batch")?.unwrap_or(64);
        if batch == 0 {
            return Err(Error::invalid_param("batch", "must be at least 1"));
        }
        Ok(batch)
    }
}

impl VectorIndex for TinyIndex {
    fn name(&self) -> &'static str {
        self.kind.name
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn metric(&self) -> Metric {
        self.metric
    }
    fn add(&self, storage: &dyn VectorStorage, slots: Range<SlotId>) -> Result<()> {
        omen_core::validate::check_storage_dim(self.dim, storage)?;
        omen_core::validate::check_published(storage, &slots)?;
        let mut set = self.slots.write().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.clone().find(|s| set.contains(s)) {
            return Err(Error::SlotExists { slot: s });
        }
        if set.len() + slots.len() > self.cap {
            return Err(Error::CapacityExceeded {
                what: format!("a tiny index of cap {}", self.cap),
            });
        }
        set.extend(slots);
        Ok(())
    }
    fn remove(&self, slot: SlotId) -> Result<()> {
        let mut set = self.slots.write().unwrap_or_else(|p| p.into_inner());
        if set.remove(&slot) {
            Ok(())
        } else {
            Err(Error::UnknownSlot { slot })
        }
    }
    fn contains(&self, slot: SlotId) -> bool {
        self.set().contains(&slot)
    }
    fn len(&self) -> usize {
        self.set().len()
    }
    fn check_search_params(&self, params: &SearchParams) -> Result<()> {
        Self::batch(params).map(|_| ())
    }
    fn search_unchecked(
        &self,
        storage: &dyn VectorStorage,
        req: &SearchRequest<'_>,
        _scratch: &mut SearchScratch,
        out: &mut Vec<Neighbor>,
    ) -> Result<SearchStats> {
        let batch = Self::batch(req.params)?;
        let kernels = Kernels::best();
        let mut top = TopK::new(req.k);
        let mut n = 0u64;
        let slots: Vec<SlotId> = self
            .set()
            .iter()
            .copied()
            .filter(|&s| req.allows(s))
            .collect();
        for pass in slots.chunks(batch) {
            for &s in pass {
                let Some(row) = storage.get(s) else { continue };
                top.push(Neighbor::new(
                    s,
                    self.metric.distance(kernels, req.query, row),
                ));
                n += 1;
            }
        }
        top.drain_sorted_into(out);
        self.searches.fetch_add(1, Ordering::Relaxed);
        self.distances.fetch_add(n, Ordering::Relaxed);
        Ok(SearchStats {
            distance_computations: n,
        })
    }
    fn memory_bytes(&self) -> usize {
        self.len() * 16
    }
    fn stats(&self) -> IndexStats {
        IndexStats {
            searches: self.searches.load(Ordering::Relaxed),
            search_distance_computations: self.distances.load(Ordering::Relaxed),
            build_distance_computations: 0,
        }
    }
    fn build_params(&self) -> Params {
        if self.cap == usize::MAX {
            Params::new()
        } else {
            Params::new().with("cap", self.cap)
        }
    }
    fn persist(&self) -> Option<Vec<u8>> {
        if !self.kind.saves {
            return None;
        }
        let set = self.set();
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&(self.dim as u32).to_le_bytes());
        b.push(match self.metric {
            Metric::L2 => 0,
            Metric::InnerProduct => 1,
            _ => 2,
        });
        b.extend_from_slice(&(self.cap as u64).to_le_bytes());
        b.extend_from_slice(&(set.len() as u64).to_le_bytes());
        for s in set.iter() {
            b.extend_from_slice(&s.to_le_bytes());
        }
        Some(b)
    }
}

#[test]
fn a_fourth_index_registered_at_run_time_passes_the_kind_suite() {
    registry::register(&TINY_SAVED).unwrap();
    registry::register(&TINY_REBUILT).unwrap();
    // Registering again is a no-op; another kind under a taken name is refused.
    registry::register(&TINY_SAVED).unwrap();
    static IMPOSTOR: TinyKind = TinyKind {
        name: "hnsw",
        saves: false,
    };
    let e = registry::register(&IMPOSTOR).unwrap_err();
    assert!(e.to_string().contains("already registered"), "{e}");
    static BAD_NAME: TinyKind = TinyKind {
        name: "Tiny Index",
        saves: false,
    };
    assert!(registry::register(&BAD_NAME).is_err());
    assert!(registry::names().contains("tiny-saved"));
    omen_tests::kind_suite(&TINY_SAVED, &Params::new().with("cap", 100_000));
    omen_tests::kind_suite(&TINY_REBUILT, &Params::new().with("cap", 100_000));
}

/// The parameters a kind that saves nothing was created with come back on
/// reopen from the manifest: a rebuilt index keeps its `cap`.
#[test]
fn a_rebuilt_index_keeps_its_parameters_across_reopen() {
    registry::register(&TINY_REBUILT).unwrap();
    let tmp = std::env::temp_dir().join(format!("omen-registry-cap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let spec = registry::spec("tiny-rebuilt", &Params::new().with("cap", 3)).unwrap();
    let cfg = omen::CollectionConfig::new(2, Metric::L2).index(spec);
    let c = omen::Collection::create(&tmp, &cfg, omen::DurableOptions::default()).unwrap();
    c.insert_batch(&["a", "b"], &[0.0, 0.0, 1.0, 1.0]).unwrap();
    c.wait_indexed().unwrap();
    c.checkpoint().unwrap();
    c.close().unwrap();
    let c = omen::Collection::open(&tmp, omen::DurableOptions::default()).unwrap();
    assert_eq!(c.index_params().usize("cap").unwrap(), Some(3));
    // The cap came back: a third row cannot be indexed (the indexer fails and
    // refuses further writes, naming the cause).
    let hits = c
        .search_with(&[0.0, 0.0], 2, &SearchParams::new().with("batch", 1))
        .unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(&*hits[0].0, "a");
    let e = c
        .search_with(&[0.0, 0.0], 2, &SearchParams::new().with("ef", 1))
        .unwrap_err();
    assert!(
        e.to_string().contains("no key \"ef\" (valid: batch)"),
        "{e}"
    );
    drop(c);
    let _ = std::fs::remove_dir_all(&tmp);
}
