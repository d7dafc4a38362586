//! Pareto frontiers of (recall, QPS) points and QPS interpolated at a target recall.
//!
//! A point is on the frontier when no other point has both higher-or-equal recall
//! and higher QPS (ann-benchmarks draws each system this way). QPS at a recall `r`
//! is read off the frontier: between the two frontier points whose recalls bracket
//! `r`, linearly in recall and geometrically in QPS (QPS is plotted on a log axis,
//! so this is a straight segment on the plot). Above the best recall reached there
//! is no figure (`None`): the system never got there. Below the lowest frontier
//! recall, the fastest frontier point answers (it already reaches `r`).

/// One measured operating point.
#[derive(Copy, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Point {
    /// Recall in [0, 1].
    pub recall: f64,
    /// Queries per second.
    pub qps: f64,
}

/// The Pareto frontier of `points`, sorted by ascending recall (so descending QPS).
/// Points with non-finite values are ignored.
pub fn pareto_frontier(points: &[Point]) -> Vec<Point> {
    let mut pts: Vec<Point> = points
        .iter()
        .copied()
        .filter(|p| p.recall.is_finite() && p.qps.is_finite() && p.qps > 0.0)
        .collect();
    // Highest recall first; among equal recall the fastest first.
    pts.sort_by(|a, b| b.recall.total_cmp(&a.recall).then(b.qps.total_cmp(&a.qps)));
    let mut out: Vec<Point> = Vec::new();
    let mut best_qps = f64::NEG_INFINITY;
    for p in pts {
        if p.qps > best_qps {
            out.push(p);
            best_qps = p.qps;
        }
    }
    out.reverse();
    out
}

/// QPS at `target` recall, interpolated on the Pareto frontier of `points`
/// (see the module docs); `None` when no point reaches `target`.
pub fn qps_at_recall(points: &[Point], target: f64) -> Option<f64> {
    let f = pareto_frontier(points);
    let last = f.last()?;
    if target > last.recall {
        return None;
    }
    let first = f.first()?;
    if target <= first.recall {
        return Some(first.qps);
    }
    for w in f.windows(2) {
        let (a, b) = (w[0], w[1]);
        if target >= a.recall && target <= b.recall {
            // A measured point answers exactly, without rounding through logs.
            if target == a.recall {
                return Some(a.qps);
            }
            let span = b.recall - a.recall;
            if span <= 0.0 || target == b.recall {
                return Some(b.qps);
            }
            let t = (target - a.recall) / span;
            return Some((a.qps.ln() + t * (b.qps.ln() - a.qps.ln())).exp());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(recall: f64, qps: f64) -> Point {
        Point { recall, qps }
    }

    #[test]
    fn frontier_drops_dominated_points() {
        let pts = [
            p(0.9, 1000.0),
            p(0.8, 900.0),
            p(0.95, 500.0),
            p(0.99, 100.0),
            p(0.95, 400.0),
        ];
        let f = pareto_frontier(&pts);
        assert_eq!(f, vec![p(0.9, 1000.0), p(0.95, 500.0), p(0.99, 100.0)]);
    }

    #[test]
    fn interpolates_geometrically_between_bracketing_points() {
        let pts = [p(0.9, 1000.0), p(1.0, 10.0)];
        let q = qps_at_recall(&pts, 0.95).unwrap();
        assert!((q - 100.0).abs() < 1e-9, "{q}");
        assert_eq!(qps_at_recall(&pts, 0.9), Some(1000.0));
        assert!((qps_at_recall(&pts, 1.0).unwrap() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn below_and_above_the_frontier() {
        let pts = [p(0.92, 800.0), p(0.97, 200.0)];
        // Below the lowest recall: the fastest point already reaches it.
        assert_eq!(qps_at_recall(&pts, 0.5), Some(800.0));
        // Above the best recall: never reached.
        assert_eq!(qps_at_recall(&pts, 0.99), None);
        assert_eq!(qps_at_recall(&[], 0.9), None);
    }

    #[test]
    fn a_dominated_point_does_not_change_the_answer() {
        let base = [p(0.9, 1000.0), p(1.0, 10.0)];
        // (0.95, 5) is dominated by (1.0, 10): same or better on both axes.
        let with_slow = [p(0.9, 1000.0), p(1.0, 10.0), p(0.95, 5.0)];
        assert_eq!(qps_at_recall(&base, 0.95), qps_at_recall(&with_slow, 0.95));
        // A measured point on the frontier replaces the estimate, above or below it.
        let with_fast = [p(0.9, 1000.0), p(1.0, 10.0), p(0.95, 700.0)];
        assert_eq!(qps_at_recall(&with_fast, 0.95), Some(700.0));
        let with_measured = [p(0.9, 1000.0), p(1.0, 10.0), p(0.95, 50.0)];
        assert_eq!(qps_at_recall(&with_measured, 0.95), Some(50.0));
    }
}
