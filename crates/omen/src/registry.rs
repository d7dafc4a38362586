//! The registry of index kinds and the storage kinds: the one place that lists
//! them by name.
//!
//! The engine (create, open, checkpoint, verify), the CLI, the bench config and
//! the Python package find an index kind here by the name a user or a manifest
//! gives, and hand it key/value [`Params`]; nothing else matches on kind names.
//! The built-in kinds are [`FLAT`], [`HNSW`], [`IVFPQ`] and [`QG`]; a program (or a test)
//! adds its own with [`register`] before creating or opening a collection of
//! that kind. See `docs/ADDING_AN_INDEX.md`.

use omen_core::{Error, IndexKind, IndexSpec, ParamValue, Params, Result};
use std::sync::RwLock;

pub use omen_flat::{FlatKind, FLAT};
pub use omen_hnsw::{HnswKind, HNSW};
pub use omen_ivfpq::{IvfPqKind, IVFPQ};
pub use omen_qg::{QgKind, QG};

/// The kinds every build has, in the order help texts list them.
static BUILT_IN: [&'static dyn IndexKind; 4] = [&FLAT, &HNSW, &IVFPQ, &QG];

/// Kinds added at run time. A plain `std` lock: registration is rare, and the
/// loom models never register.
static ADDED: RwLock<Vec<&'static dyn IndexKind>> = RwLock::new(Vec::new());

fn added() -> Vec<&'static dyn IndexKind> {
    match ADDED.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

/// The kind a collection gets when its configuration names none (flat: exact).
pub fn default_kind() -> &'static dyn IndexKind {
    &FLAT
}

/// Every registered kind: the built-in ones, then those [`register`]ed.
pub fn kinds() -> Vec<&'static dyn IndexKind> {
    let mut v: Vec<&'static dyn IndexKind> = BUILT_IN.to_vec();
    v.extend(added());
    v
}

/// The registered names, comma-separated (for error messages and help).
pub fn names() -> String {
    kinds()
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adds `kind` to the registry. Registering the same value again is a no-op;
/// another kind under a registered name is `InvalidParameter`, as is a name
/// that is empty or not lowercase ASCII letters, digits, `_` and `-`.
pub fn register(kind: &'static dyn IndexKind) -> Result<()> {
    let name = kind.name();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid {
        return Err(Error::invalid_param(
            "index",
            format!("kind name {name:?}: expected 1 to 64 of a-z, 0-9, _ and -"),
        ));
    }
    let mut g = match ADDED.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let same = |k: &&'static dyn IndexKind| {
        std::ptr::addr_eq(*k as *const dyn IndexKind, kind as *const dyn IndexKind)
    };
    if BUILT_IN.iter().chain(g.iter()).any(same) {
        return Ok(());
    }
    if BUILT_IN.iter().chain(g.iter()).any(|k| k.name() == name) {
        return Err(Error::invalid_param(
            "index",
            format!("an index kind named {name:?} is already registered"),
        ));
    }
    g.push(kind);
    Ok(())
}

/// The kind registered as `name`, or `InvalidParameter` naming the registered
/// ones.
pub fn lookup(name: &str) -> Result<&'static dyn IndexKind> {
    kinds()
        .into_iter()
        .find(|k| k.name() == name)
        .ok_or_else(|| {
            Error::invalid_param(
                "index",
                format!("unknown index kind {name:?}; registered: {}", names()),
            )
        })
}

/// The kind `name` with build parameters `params`, its keys checked (values are
/// checked when the index is created).
pub fn spec(name: &str, params: &Params) -> Result<IndexSpec> {
    let kind = lookup(name)?;
    Ok(IndexSpec::new(kind, kind.check_build_keys(params)?))
}

/// `params` as a JSON object (integers, numbers, flags and text kept apart).
pub fn params_to_json(params: &Params) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
    params
        .iter()
        .map(|(k, v)| {
            let v = match v {
                ParamValue::Int(i) => {
                    if let Ok(x) = i64::try_from(*i) {
                        Value::from(x)
                    } else if let Ok(x) = u64::try_from(*i) {
                        Value::from(x)
                    } else {
                        Value::from(i.to_string())
                    }
                }
                ParamValue::Float(f) => Value::from(*f),
                ParamValue::Bool(b) => Value::from(*b),
                ParamValue::Str(s) => Value::from(s.as_str()),
                _ => Value::from(v.to_string()),
            };
            (k.to_owned(), v)
        })
        .collect()
}

/// The parameters a manifest's `index_params` holds; `Err` names a value that
/// is not a number, flag or text.
pub fn params_from_json(
    map: &serde_json::Map<String, serde_json::Value>,
) -> std::result::Result<Params, String> {
    use serde_json::Value;
    let mut p = Params::new();
    for (k, v) in map {
        match v {
            Value::Bool(b) => p.set(k, *b),
            Value::String(s) => p.set(k, s.as_str()),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    p.set(k, i)
                } else if let Some(u) = n.as_u64() {
                    p.set(k, u)
                } else if let Some(f) = n.as_f64() {
                    p.set(k, f)
                } else {
                    return Err(format!("index parameter {k:?} is not a number"));
                }
            }
            _ => {
                return Err(format!(
                    "index parameter {k:?} is not a number, flag or text"
                ))
            }
        }
    }
    Ok(p)
}

/// Where a collection keeps its vectors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageKind {
    /// The chunked in-memory arena ([`omen_storage::MemoryStorage`]). In a
    /// durable collection its rows are saved to segment files at each checkpoint.
    #[default]
    Memory,
    /// Memory-mapped chunk files in the collection directory
    /// ([`omen_storage::MmapStorage`]); only for durable collections
    /// ([`Collection::create`](crate::Collection::create)). Its rows persist in
    /// its own files: a checkpoint flushes them and records their checksum.
    Mmap,
}

impl StorageKind {
    /// Every storage kind.
    pub const ALL: [StorageKind; 2] = [StorageKind::Memory, StorageKind::Mmap];

    /// Its name in manifests, flags and reports.
    pub fn name(self) -> &'static str {
        match self {
            StorageKind::Memory => omen_storage::MemoryStorage::NAME,
            // `MmapStorage::NAME`, which the loom build cannot name.
            StorageKind::Mmap => omen_storage::MMAP_STORAGE_NAME,
        }
    }

    /// The kind called `name`, or `InvalidParameter` naming the valid ones.
    pub fn from_name(name: &str) -> Result<StorageKind> {
        StorageKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                Error::invalid_param(
                    "storage",
                    format!(
                        "unknown storage {name:?}; valid: {}",
                        StorageKind::ALL.map(StorageKind::name).join(", ")
                    ),
                )
            })
    }

    /// Whether its rows persist in its own files (a checkpoint flushes them and
    /// records their checksum) rather than in the checkpoint's segment files.
    pub fn persists_rows(self) -> bool {
        matches!(self, StorageKind::Mmap)
    }

    /// Whether it needs a collection directory (cannot back an in-memory
    /// collection).
    pub fn needs_directory(self) -> bool {
        matches!(self, StorageKind::Mmap)
    }
}

impl std::fmt::Display for StorageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for StorageKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        StorageKind::from_name(s)
    }
}

#[cfg(test)]
#[cfg(not(loom))]
mod tests {
    use super::*;

    #[test]
    fn built_in_kinds_are_found_by_name_and_unknown_ones_are_refused() {
        for name in ["flat", "hnsw", "ivfpq", "qg"] {
            assert_eq!(lookup(name).unwrap().name(), name);
        }
        let e = lookup("diskann").unwrap_err().to_string();
        assert!(e.contains("registered: flat, hnsw, ivfpq, qg"), "{e}");
        assert!(register(&HNSW).is_ok());
        assert_eq!(kinds().iter().filter(|k| k.name() == "hnsw").count(), 1);
        let e = spec("hnsw", &Params::new().with("nlist", 3)).unwrap_err();
        assert!(e.to_string().contains("hnsw build"), "{e}");
        assert_eq!(StorageKind::from_name("mmap").unwrap(), StorageKind::Mmap);
        assert!(StorageKind::from_name("disk").is_err());
    }
}
