use crate::collection::Collection;
use crate::indexer::IndexingMode;
use omen_core::{Metric, Result};

/// Which index a [`CollectionConfig`] builds.
///
/// New index crates plug in as new variants; match with a wildcard arm.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub enum IndexKind {
    /// Exact search over every stored vector ([`omen_flat::FlatIndex`]).
    #[default]
    Flat,
    /// HNSW graph ([`omen_hnsw::HnswIndex`]).
    Hnsw(omen_hnsw::HnswParams),
    /// IVF-PQ with exact re-ranking ([`omen_ivfpq::IvfPqIndex`]); it trains itself
    /// once `train_size` vectors have been added (searches before that scan the
    /// buffered vectors exactly).
    IvfPq(omen_ivfpq::IvfPqParams),
}

impl IndexKind {
    /// A short name for reports (`flat`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            IndexKind::Flat => "flat",
            IndexKind::Hnsw(_) => "hnsw",
            IndexKind::IvfPq(_) => "ivfpq",
        }
    }
}

/// Where a [`CollectionConfig`] keeps vectors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageKind {
    /// The chunked in-memory arena ([`omen_storage::MemoryStorage`]). In a
    /// durable collection its rows are saved to segment files at each checkpoint.
    #[default]
    Memory,
    /// Memory-mapped chunk files in the collection directory
    /// ([`omen_storage::MmapStorage`]); only for durable collections
    /// ([`Collection::create`]).
    Mmap,
}

impl StorageKind {
    /// A short name for reports (`memory`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            StorageKind::Memory => "memory",
            StorageKind::Mmap => "mmap",
        }
    }
}

/// What a [`Collection`] is made of: its dimension, metric, index and storage.
///
/// ```
/// use omen::{CollectionConfig, IndexKind, Metric, StorageKind};
///
/// let collection = CollectionConfig::new(3, Metric::Cosine)
///     .index(IndexKind::Flat)
///     .storage(StorageKind::Memory)
///     .build()?;
/// collection.insert("a", &[1.0, 0.0, 0.0])?;
/// assert_eq!(collection.len(), 1);
/// # Ok::<(), omen::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CollectionConfig {
    /// Width of every vector; at least 1.
    pub dim: usize,
    /// How distance is measured.
    pub metric: Metric,
    /// The index to build.
    pub index: IndexKind,
    /// The storage to keep vectors in.
    pub storage: StorageKind,
    /// How writes reach the index of an in-memory collection (default
    /// [`IndexingMode::Inline`]); a durable collection takes its mode from
    /// [`DurableOptions::indexing`](crate::DurableOptions::indexing).
    pub indexing: IndexingMode,
}

impl CollectionConfig {
    /// A configuration with the default index ([`IndexKind::Flat`]) and storage
    /// ([`StorageKind::Memory`]).
    pub fn new(dim: usize, metric: Metric) -> Self {
        CollectionConfig {
            dim,
            metric,
            index: IndexKind::default(),
            storage: StorageKind::default(),
            indexing: IndexingMode::Inline,
        }
    }

    /// Sets how writes reach the index of an in-memory collection.
    pub fn indexing(mut self, mode: IndexingMode) -> Self {
        self.indexing = mode;
        self
    }

    /// Sets the index.
    pub fn index(mut self, index: IndexKind) -> Self {
        self.index = index;
        self
    }

    /// Sets the storage.
    pub fn storage(mut self, storage: StorageKind) -> Self {
        self.storage = storage;
        self
    }

    /// Creates an empty collection; see [`Collection::new`].
    pub fn build(&self) -> Result<Collection> {
        Collection::new(self)
    }
}
