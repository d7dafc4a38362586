//! Recall, computed by the harness itself from the ids a system returned.
//!
//! Two definitions, always named in reports:
//! * **by id** — the fraction of the true k nearest ids that appear among the
//!   returned first k ids;
//! * **by distance** (ann-benchmarks' rule) — a returned result counts when its
//!   distance, recomputed by the harness, is within `epsilon` (1e-3) of the true k-th
//!   nearest distance; so ties with the k-th neighbour count.
//!
//! The harness never trusts a system's own distances: [`recompute_distances`]
//! recomputes them from the base vectors.

use omen_core::simd::Kernels;
use omen_core::Metric;

/// ann-benchmarks' tolerance for recall by distance.
pub const DISTANCE_EPSILON: f32 = 1e-3;

/// Which recall definition a figure uses.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecallKind {
    /// Fraction of the true top-k ids returned.
    ById,
    /// Fraction of returned results within 1e-3 of the true k-th distance.
    ByDistance,
}

/// Recall@k by id for one query: `|returned[..k] ∩ truth[..k]| / k`.
/// Negative ids (a peer's "no result") never match. `truth` must hold at least `k` ids.
pub fn recall_by_id(returned: &[i64], truth: &[i64], k: usize) -> f64 {
    if k == 0 {
        return 1.0;
    }
    let truth = &truth[..k.min(truth.len())];
    let hits = returned
        .iter()
        .take(k)
        .filter(|&&id| id >= 0 && truth.contains(&id))
        .count();
    hits as f64 / k as f64
}

/// Recall@k by distance for one query: the fraction of the first `k` returned
/// distances that are `<= truth_distances[k-1] + epsilon`. Missing results count as
/// misses. `truth_distances` are the exact sorted distances, at least `k` of them.
pub fn recall_by_distance(
    returned_distances: &[f32],
    truth_distances: &[f32],
    k: usize,
    epsilon: f32,
) -> f64 {
    if k == 0 {
        return 1.0;
    }
    let Some(&kth) = truth_distances.get(k - 1) else {
        return 0.0;
    };
    let threshold = kth + epsilon;
    let hits = returned_distances
        .iter()
        .take(k)
        .filter(|&&d| d <= threshold)
        .count();
    hits as f64 / k as f64
}

/// Recomputes the distance from `query` to each returned id under `metric`, using
/// the base vectors (`base` row-major, width `dim`). Ids that are negative or out of
/// range get `+inf` (a miss under any definition).
pub fn recompute_distances(
    kernels: &Kernels,
    metric: Metric,
    base: &[f32],
    dim: usize,
    query: &[f32],
    ids: &[i64],
    out: &mut Vec<f32>,
) {
    out.clear();
    let n = base.len().checked_div(dim).unwrap_or(0);
    out.extend(ids.iter().map(|&id| {
        if id < 0 || id as usize >= n {
            f32::INFINITY
        } else {
            let i = id as usize;
            metric.distance(kernels, query, &base[i * dim..(i + 1) * dim])
        }
    }));
}

/// Mean recall over queries, for both definitions at several k.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecallSummary {
    /// k values, ascending.
    pub ks: Vec<usize>,
    /// Mean recall by id at each k.
    pub by_id: Vec<f64>,
    /// Mean recall by distance at each k.
    pub by_distance: Vec<f64>,
}

impl RecallSummary {
    /// Recall by id at `k`, if computed.
    pub fn at(&self, kind: RecallKind, k: usize) -> Option<f64> {
        let i = self.ks.iter().position(|&x| x == k)?;
        match kind {
            RecallKind::ById => self.by_id.get(i).copied(),
            RecallKind::ByDistance => self.by_distance.get(i).copied(),
        }
    }
}

/// Inputs for [`summarize`]: everything about one run's answers.
pub struct RecallInputs<'a> {
    /// Distance metric.
    pub metric: Metric,
    /// Base vectors, row-major.
    pub base: &'a [f32],
    /// Queries, row-major.
    pub queries: &'a [f32],
    /// Vector width.
    pub dim: usize,
    /// True nearest ids, `truth_k` per query.
    pub truth_ids: &'a [i64],
    /// True nearest distances, `truth_k` per query.
    pub truth_distances: &'a [f32],
    /// Ground-truth depth.
    pub truth_k: usize,
    /// Returned ids, `run_k` per query (negative = none).
    pub run_ids: &'a [i64],
    /// Results requested per query.
    pub run_k: usize,
}

/// Mean recall@k by id and by distance for every `k` in `ks` that is at most both
/// the run's k and the ground truth's depth.
pub fn summarize(inp: &RecallInputs<'_>, ks: &[usize]) -> RecallSummary {
    let kernels = Kernels::best();
    let nq = inp.queries.len().checked_div(inp.dim).unwrap_or(0);
    let ks: Vec<usize> = ks
        .iter()
        .copied()
        .filter(|&k| k >= 1 && k <= inp.run_k && k <= inp.truth_k)
        .collect();
    let mut by_id = vec![0.0; ks.len()];
    let mut by_distance = vec![0.0; ks.len()];
    let mut dists = Vec::new();
    for q in 0..nq {
        let query = &inp.queries[q * inp.dim..(q + 1) * inp.dim];
        let returned = &inp.run_ids[q * inp.run_k..(q + 1) * inp.run_k];
        let truth = &inp.truth_ids[q * inp.truth_k..(q + 1) * inp.truth_k];
        let truth_d = &inp.truth_distances[q * inp.truth_k..(q + 1) * inp.truth_k];
        recompute_distances(
            kernels, inp.metric, inp.base, inp.dim, query, returned, &mut dists,
        );
        for (i, &k) in ks.iter().enumerate() {
            by_id[i] += recall_by_id(returned, truth, k);
            by_distance[i] += recall_by_distance(&dists, truth_d, k, DISTANCE_EPSILON);
        }
    }
    if nq > 0 {
        by_id.iter_mut().for_each(|r| *r /= nq as f64);
        by_distance.iter_mut().for_each(|r| *r /= nq as f64);
    }
    RecallSummary {
        ks,
        by_id,
        by_distance,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_id_counts_intersection_of_first_k() {
        assert_eq!(recall_by_id(&[1, 2, 3], &[3, 2, 1], 3), 1.0);
        assert_eq!(recall_by_id(&[1, 9, 8], &[1, 2, 3], 3), 1.0 / 3.0);
        // Only the first k returned count, and only the first k of the truth.
        assert_eq!(recall_by_id(&[4, 1, 2], &[1, 2, 4], 2), 0.5);
        // Missing results (-1) never match, even against a truth of -1.
        assert_eq!(recall_by_id(&[-1, -1], &[-1, 0], 2), 0.0);
    }

    #[test]
    fn by_distance_counts_ties_with_the_kth() {
        // Truth: 0.1, 0.2, 0.5 (k = 3). A run returning a different id at a tied
        // distance 0.5 loses by id but not by distance.
        let truth_d = [0.1, 0.2, 0.5, 0.5];
        assert_eq!(recall_by_distance(&[0.1, 0.2, 0.5], &truth_d, 3, 1e-3), 1.0);
        assert_eq!(recall_by_id(&[0, 1, 3], &[0, 1, 2, 3], 3), 2.0 / 3.0);
        // Within epsilon counts; beyond it does not.
        assert_eq!(
            recall_by_distance(&[0.1, 0.2, 0.5009], &truth_d, 3, 1e-3),
            1.0
        );
        assert_eq!(
            recall_by_distance(&[0.1, 0.2, 0.502], &truth_d, 3, 1e-3),
            2.0 / 3.0
        );
        // Fewer results than k: the missing ones are misses.
        assert_eq!(recall_by_distance(&[0.1], &truth_d, 2, 1e-3), 0.5);
    }

    #[test]
    fn summarize_recomputes_distances_instead_of_trusting_the_system() {
        // 1-d base: 0, 1, 2, 3; query at 0.2 under L2: truth 0, 1, 2.
        let base = [0.0f32, 1.0, 2.0, 3.0];
        let queries = [0.2f32];
        let truth_ids = [0i64, 1, 2];
        let truth_d = [0.04f32, 0.64, 3.24];
        // The run claims ids 0, 1, 3: recall by id 2/3, by distance 2/3 at k = 3,
        // and 1.0 at k = 1 and 2.
        let run_ids = [0i64, 1, 3];
        let s = summarize(
            &RecallInputs {
                metric: Metric::L2,
                base: &base,
                queries: &queries,
                dim: 1,
                truth_ids: &truth_ids,
                truth_distances: &truth_d,
                truth_k: 3,
                run_ids: &run_ids,
                run_k: 3,
            },
            &[1, 2, 3, 10],
        );
        assert_eq!(s.ks, vec![1, 2, 3]);
        assert_eq!(s.at(RecallKind::ById, 1), Some(1.0));
        assert!((s.at(RecallKind::ById, 3).unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.at(RecallKind::ByDistance, 3).unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.at(RecallKind::ByDistance, 10), None);
    }
}
