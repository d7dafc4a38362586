//! Latency percentiles.

/// Latency distribution of a run, in microseconds.
#[derive(Copy, Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 95th percentile.
    pub p95_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Mean.
    pub mean_us: f64,
}

/// Nearest-rank percentile of sorted samples (`q` in [0, 1]).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Latency {
    /// Summarises per-query latencies in seconds.
    pub fn from_seconds(samples: &[f64]) -> Latency {
        let mut s: Vec<f64> = samples.iter().map(|x| x * 1e6).collect();
        s.sort_by(|a, b| a.total_cmp(b));
        let mean = if s.is_empty() {
            f64::NAN
        } else {
            s.iter().sum::<f64>() / s.len() as f64
        };
        Latency {
            p50_us: percentile(&s, 0.50),
            p95_us: percentile(&s, 0.95),
            p99_us: percentile(&s, 0.99),
            p999_us: percentile(&s, 0.999),
            mean_us: mean,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=1000).map(|i| i as f64).collect();
        assert_eq!(percentile(&s, 0.5), 500.0);
        assert_eq!(percentile(&s, 0.99), 990.0);
        assert_eq!(percentile(&s, 0.999), 999.0);
        assert_eq!(percentile(&s, 1.0), 1000.0);
        assert_eq!(percentile(&[7.0], 0.5), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
        let l = Latency::from_seconds(&[1e-6, 2e-6, 3e-6, 4e-6]);
        assert!((l.p50_us - 2.0).abs() < 1e-9 && (l.mean_us - 2.5).abs() < 1e-9);
    }
}
