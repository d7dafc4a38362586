//! Panel packing shared by the SIMD tile kernels.
//!
//! A tile kernel computes every pair of a block of queries and a block of rows.
//! Reading each row as a contiguous `dim`-long vector would need one horizontal
//! reduction per pair; instead the rows are transposed into *panels* of `w` rows,
//! dim-major inside a panel, so that one vector load fetches component `d` of `w`
//! rows at once and the micro-kernel accumulates `w` distances per register with
//! no reduction at all (the layout BLAS sgemm packs its B operand into).

/// Packs the first `n` rows of width `dim` of `src` into panels of `w` rows:
/// `dst[p * w * dim + d * w + j] = src[(p * w + j) * dim + d]`, with zeros for the
/// padding rows past `n` in the last panel.
///
/// Writes exactly `n.div_ceil(w) * w * dim` floats at the start of `dst`, which
/// must hold at least that many, as `src` must hold `n * dim`.
pub(crate) fn pack_panels(src: &[f32], n: usize, dim: usize, w: usize, dst: &mut [f32]) {
    debug_assert!(w > 0 && dim > 0);
    debug_assert!(src.len() >= n * dim);
    let panel_len = w * dim;
    let np = n.div_ceil(w);
    for (p, panel) in dst[..np * panel_len]
        .chunks_exact_mut(panel_len)
        .enumerate()
    {
        for j in 0..w {
            let r = p * w + j;
            // Strided writes without per-element bounds checks: lane j of every
            // w-wide group of the panel is component d of row r.
            let lane = panel[j..].iter_mut().step_by(w);
            if r < n {
                for (o, &x) in lane.zip(&src[r * dim..(r + 1) * dim]) {
                    *o = x;
                }
            } else {
                lane.for_each(|o| *o = 0.0);
            }
        }
    }
}

/// The number of floats of scratch a tile kernel packing `nq` queries in groups
/// of `mr` and `nr` rows in panels of `nr_panel` needs, as `(panels, queries)`.
pub(crate) fn packed_sizes(
    nq: usize,
    nr: usize,
    dim: usize,
    mr: usize,
    nr_panel: usize,
) -> (usize, usize) {
    (
        nr.div_ceil(nr_panel) * nr_panel * dim,
        nq.div_ceil(mr) * mr * dim,
    )
}

/// The shape of a tile call after applying the length rules shared with the scalar
/// kernel: `nr = rows.len() / dim`, and only the queries whose whole output line
/// fits in `out` are computed. `None` when there is nothing to do.
pub(crate) fn tile_shape(
    queries: &[f32],
    rows: &[f32],
    dim: usize,
    out: &[f32],
) -> Option<(usize, usize)> {
    if dim == 0 {
        return None;
    }
    let nr = rows.len() / dim;
    if nr == 0 {
        return None;
    }
    let nq = (queries.len() / dim).min(out.len() / nr);
    (nq > 0).then_some((nq, nr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_layout_and_padding() {
        let (n, dim, w) = (5, 3, 4);
        let src: Vec<f32> = (0..n * dim).map(|x| x as f32 + 1.0).collect();
        let mut dst = vec![f32::NAN; 2 * w * dim + 3];
        pack_panels(&src, n, dim, w, &mut dst);
        for p in 0..2 {
            for d in 0..dim {
                for j in 0..w {
                    let r = p * w + j;
                    let want = if r < n { src[r * dim + d] } else { 0.0 };
                    assert_eq!(dst[p * w * dim + d * w + j], want, "p={p} d={d} j={j}");
                }
            }
        }
        // Nothing past the packed length is touched.
        assert!(dst[2 * w * dim..].iter().all(|x| x.is_nan()));
    }

    #[test]
    fn shape_rules() {
        assert_eq!(tile_shape(&[0.0; 6], &[0.0; 9], 0, &[0.0; 6]), None);
        assert_eq!(tile_shape(&[0.0; 6], &[0.0; 2], 3, &[0.0; 6]), None);
        assert_eq!(tile_shape(&[0.0; 6], &[0.0; 9], 3, &[0.0; 6]), Some((2, 3)));
        // A short output drops the queries whose line does not fit.
        assert_eq!(tile_shape(&[0.0; 6], &[0.0; 9], 3, &[0.0; 5]), Some((1, 3)));
        assert_eq!(tile_shape(&[0.0; 6], &[0.0; 9], 3, &[0.0; 2]), None);
    }
}
