use std::path::PathBuf;

/// Result alias used across Omen.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Omen, as variants a caller can act on.
///
/// Input errors (`DimensionMismatch`, `NonFinite`, `ZeroVector`, `InvalidId`,
/// `DuplicateId`, `UnknownId`, `InvalidParameter`) are returned before anything is
/// changed: the operation had no effect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A vector or query has the wrong number of components.
    #[error("dimension mismatch: expected {expected}, got {got}")]
    DimensionMismatch {
        /// The collection's or index's dimension.
        expected: usize,
        /// The length that was passed.
        got: usize,
    },
    /// A vector or query holds NaN or ±infinity.
    #[error("non-finite value {value} at row {row}, component {component}")]
    NonFinite {
        /// Row within the batch (0 for a single vector).
        row: usize,
        /// Component index within the row.
        component: usize,
        /// The offending value.
        value: f32,
    },
    /// A zero vector cannot be normalised for the cosine metric.
    #[error("zero vector at row {row} cannot be normalised for the cosine metric")]
    ZeroVector {
        /// Row within the batch (0 for a single vector).
        row: usize,
    },
    /// An external id is empty or longer than the documented limit.
    #[error("invalid id: {reason}")]
    InvalidId {
        /// Why it was refused.
        reason: String,
    },
    /// An insert named an id that is already present.
    #[error("duplicate id {id:?}")]
    DuplicateId {
        /// The id.
        id: String,
    },
    /// A delete or lookup named an id that is not present.
    #[error("unknown id {id:?}")]
    UnknownId {
        /// The id.
        id: String,
    },
    /// A slot number that the storage or index does not hold.
    #[error("unknown slot {slot}")]
    UnknownSlot {
        /// The slot.
        slot: u32,
    },
    /// An index was asked to add a slot it already holds.
    #[error("slot {slot} is already in the index")]
    SlotExists {
        /// The slot.
        slot: u32,
    },
    /// A parameter is out of range (k = 0, nprobe > nlist, ...).
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A storage or index reached its maximum size.
    #[error("capacity exceeded: {what}")]
    CapacityExceeded {
        /// What ran out.
        what: String,
    },
    /// A file's contents are damaged or not what they claim to be.
    #[error("corruption in {} at byte {offset}: {detail}", file.display())]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damage (or of the record holding it).
        offset: u64,
        /// What was found.
        detail: String,
    },
    /// An I/O error, with the path it concerned when known.
    #[error("I/O error{}: {source}", path.as_ref().map(|p| format!(" on {}", p.display())).unwrap_or_default())]
    Io {
        /// The file or directory, when known.
        path: Option<PathBuf>,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Another process (or another open collection in this one) holds the
    /// directory's lock.
    #[error("{} is locked by another open of it (its LOCK file is held): a writer excludes every other open; read-only opens exclude only a writer", path.display())]
    Locked {
        /// The collection directory.
        path: PathBuf,
    },
    /// An earlier failure (such as a failed write or fsync of the log) left durable
    /// state uncertain; writes are refused until the collection is reopened.
    #[error("collection is poisoned by an earlier failure ({cause}); reopen it")]
    Poisoned {
        /// What failed first: the operation, the file and the OS error.
        cause: String,
    },
}

impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Error::Io { path: None, source }
    }
}

impl Error {
    /// An I/O error on a known path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: Some(path.into()),
            source,
        }
    }

    /// A corruption error.
    pub fn corruption(file: impl Into<PathBuf>, offset: u64, detail: impl Into<String>) -> Self {
        Error::Corruption {
            file: file.into(),
            offset,
            detail: detail.into(),
        }
    }

    /// An invalid-parameter error.
    pub fn invalid_param(name: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidParameter {
            name,
            reason: reason.into(),
        }
    }
}
