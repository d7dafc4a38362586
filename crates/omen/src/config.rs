use crate::indexer::IndexingMode;
use crate::registry::StorageKind;
use omen_core::{IndexSpec, Metric};

/// What a [`Collection`](crate::Collection) is made of: its dimension, metric, index and storage.
///
/// ```
/// use omen::{CollectionConfig, HnswParams, Metric, StorageKind};
///
/// let collection = CollectionConfig::new(3, Metric::Cosine)
///     .index(HnswParams::new().with_m(8))
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
    /// The index to build: a registered kind and its build parameters.
    pub index: IndexSpec,
    /// The storage to keep vectors in.
    pub storage: StorageKind,
    /// How writes reach the index of an in-memory collection (default
    /// [`IndexingMode::Inline`]); a durable collection takes its mode from
    /// [`DurableOptions::indexing`](crate::DurableOptions::indexing).
    pub indexing: IndexingMode,
}

impl CollectionConfig {
    /// A configuration with the default index (flat, exact) and storage
    /// ([`StorageKind::Memory`]).
    pub fn new(dim: usize, metric: Metric) -> Self {
        CollectionConfig {
            dim,
            metric,
            index: crate::registry::FLAT.spec(),
            storage: StorageKind::default(),
            indexing: IndexingMode::Inline,
        }
    }

    /// Sets how writes reach the index of an in-memory collection.
    pub fn indexing(mut self, mode: IndexingMode) -> Self {
        self.indexing = mode;
        self
    }

    /// Sets the index: an [`IndexSpec`], or a kind's typed parameters
    /// (`HnswParams`, `IvfPqParams`), or a kind with its defaults (`&FLAT`).
    pub fn index(mut self, index: impl Into<IndexSpec>) -> Self {
        self.index = index.into();
        self
    }

    /// Sets the storage.
    pub fn storage(mut self, storage: StorageKind) -> Self {
        self.storage = storage;
        self
    }
}
