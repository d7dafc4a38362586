//! Input checks shared by the engine and the indexes.

use crate::error::{Error, Result};

/// Checks that `v` has `dim` components, all finite. `row` names it in the error.
pub fn check_vector(v: &[f32], dim: usize, row: usize) -> Result<()> {
    if v.len() != dim {
        return Err(Error::DimensionMismatch {
            expected: dim,
            got: v.len(),
        });
    }
    check_finite(v, row)
}

/// The longest external id accepted, in bytes of UTF-8.
pub const MAX_ID_LEN: usize = 1024;

/// Checks an external id: 1 to [`MAX_ID_LEN`] bytes of UTF-8, no NUL.
/// `InvalidId` otherwise, saying why.
pub fn check_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidId {
            reason: "empty".into(),
        });
    }
    if id.len() > MAX_ID_LEN {
        return Err(Error::InvalidId {
            reason: format!("{} bytes, more than the limit of {MAX_ID_LEN}", id.len()),
        });
    }
    if id.contains('\0') {
        return Err(Error::InvalidId {
            reason: "contains NUL".into(),
        });
    }
    Ok(())
}

/// Checks a query before any index sees it: `k` at least 1, `dim` components,
/// all finite. This is the one check of a query; an index's
/// [`search_unchecked`](crate::VectorIndex::search_unchecked) may assume it
/// passed.
pub fn check_query(query: &[f32], k: usize, dim: usize) -> Result<()> {
    if k == 0 {
        return Err(Error::invalid_param("k", "must be at least 1"));
    }
    check_vector(query, dim, 0)
}

/// Checks that every component is finite.
pub fn check_finite(v: &[f32], row: usize) -> Result<()> {
    // Fast path: one pass that the compiler vectorises; locate the culprit only on failure.
    if v.iter().all(|x| x.is_finite()) {
        return Ok(());
    }
    match v.iter().position(|x| !x.is_finite()) {
        Some(component) => Err(Error::NonFinite {
            row,
            component,
            value: v[component],
        }),
        None => Ok(()),
    }
}

/// Checks a row-major batch: a whole number of `dim`-wide rows, all finite.
pub fn check_rows(rows: &[f32], dim: usize) -> Result<usize> {
    if dim == 0 || !rows.len().is_multiple_of(dim) {
        return Err(Error::DimensionMismatch {
            expected: dim,
            got: if dim == 0 {
                rows.len()
            } else {
                rows.len() % dim
            },
        });
    }
    for (i, r) in rows.chunks_exact(dim).enumerate() {
        check_finite(r, i)?;
    }
    Ok(rows.len() / dim)
}

/// Checks that `storage` holds rows of the index's width `dim`.
pub fn check_storage_dim(dim: usize, storage: &dyn crate::VectorStorage) -> Result<()> {
    if storage.dim() != dim {
        return Err(Error::DimensionMismatch {
            expected: dim,
            got: storage.dim(),
        });
    }
    Ok(())
}

/// Checks the [`crate::VectorIndex::add`] contract that every slot of `slots` is
/// published: `UnknownSlot` naming the first one that is not.
pub fn check_published(
    storage: &dyn crate::VectorStorage,
    slots: &std::ops::Range<crate::SlotId>,
) -> Result<()> {
    let published = storage.len();
    if slots.end as usize > published {
        return Err(Error::UnknownSlot {
            slot: slots.start.max(published as crate::SlotId),
        });
    }
    Ok(())
}

/// Writes `v / |v|` into `out` (resized). Errors with `ZeroVector` for a zero vector
/// and `NonFinite` if the norm overflows.
pub fn normalize_into(v: &[f32], out: &mut Vec<f32>, row: usize) -> Result<()> {
    let sq: f64 = v.iter().map(|&x| (x as f64) * (x as f64)).sum();
    if sq == 0.0 {
        return Err(Error::ZeroVector { row });
    }
    let inv = 1.0 / sq.sqrt();
    out.clear();
    out.extend(v.iter().map(|&x| (x as f64 * inv) as f32));
    check_finite(out, row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_nan_inf_and_wrong_dim() {
        assert!(matches!(
            check_vector(&[1.0, f32::NAN], 2, 3),
            Err(Error::NonFinite {
                row: 3,
                component: 1,
                ..
            })
        ));
        assert!(matches!(
            check_vector(&[f32::INFINITY], 1, 0),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(
            check_vector(&[1.0], 2, 0),
            Err(Error::DimensionMismatch {
                expected: 2,
                got: 1
            })
        ));
        assert!(check_vector(&[1.0, -2.0], 2, 0).is_ok());
    }

    #[test]
    fn normalises_and_refuses_zero() {
        let mut out = Vec::new();
        normalize_into(&[3.0, 4.0], &mut out, 0).unwrap();
        assert!((out[0] - 0.6).abs() < 1e-6 && (out[1] - 0.8).abs() < 1e-6);
        assert!(matches!(
            normalize_into(&[0.0, 0.0], &mut out, 1),
            Err(Error::ZeroVector { row: 1 })
        ));
    }
}
