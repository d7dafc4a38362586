//! The geometry both storages share: rows in at most [`BUCKETS`] buckets, bucket
//! `b` holding `base << b` rows from row `base * (2^b - 1)` (the scheme of the
//! `boxcar` crate), so that growth adds buckets and never moves a row; and the
//! length checks of `append` / `append_batch`.

use omen_core::{Error, Result};

/// Number of buckets. With `base >= 1` rows in bucket 0 they address
/// `base * (2^32 - 1) >= MAX_SLOTS` rows.
pub(crate) const BUCKETS: usize = 32;

/// Rows held by bucket `b` when bucket 0 holds `1 << shift`.
#[inline]
pub(crate) fn rows(shift: u32, b: usize) -> usize {
    (1usize << shift) << b
}

/// First row of bucket `b`.
#[inline]
pub(crate) fn start(shift: u32, b: usize) -> usize {
    ((1usize << b) - 1) << shift
}

/// The bucket holding `row` and the row's offset in it. Requires
/// `row < MAX_SLOTS`, which bounds the bucket below [`BUCKETS`].
#[inline]
pub(crate) fn locate(shift: u32, row: usize) -> (usize, usize) {
    // Rows [base(2^b - 1), base(2^(b+1) - 1)) are bucket b, i.e. bucket b holds
    // the rows whose `row / base + 1` lies in [2^b, 2^(b+1)).
    let q = (row >> shift) + 1;
    let b = (usize::BITS - 1 - q.leading_zeros()) as usize;
    (b, row - start(shift, b))
}

/// `DimensionMismatch` unless `vector` has `dim` components.
pub(crate) fn check_row(dim: usize, vector: &[f32]) -> Result<()> {
    if vector.len() != dim {
        return Err(Error::DimensionMismatch {
            expected: dim,
            got: vector.len(),
        });
    }
    Ok(())
}

/// `DimensionMismatch` unless `rows` is a whole number of `dim`-wide rows.
pub(crate) fn check_rows(dim: usize, rows: &[f32]) -> Result<()> {
    if !rows.len().is_multiple_of(dim) {
        return Err(Error::DimensionMismatch {
            expected: dim,
            got: rows.len() % dim,
        });
    }
    Ok(())
}
