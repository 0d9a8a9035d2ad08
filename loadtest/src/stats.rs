//! Latency histograms (HdrHistogram, microseconds), their percentiles, and rates.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// The largest latency tracked: one hour, in microseconds. Larger values are clamped.
const MAX_MICROS: u64 = 3_600_000_000;

/// A new histogram of microseconds, 1 µs to one hour, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// A latency recorder shared by many connection tasks: a few histograms behind their own
/// locks, so that tasks on different threads rarely wait for each other.
#[derive(Debug)]
pub(crate) struct Recorder {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Recorder {
    /// A recorder with `shards` histograms (at least one).
    pub(crate) fn new(shards: usize) -> Self {
        Recorder {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
        }
    }

    /// Records `micros` (clamped to 1 µs .. one hour) into the shard of `key`.
    pub(crate) fn record(&self, key: usize, micros: u64) {
        let shard = &self.shards[key % self.shards.len()];
        if let Ok(mut h) = shard.lock() {
            h.saturating_record(micros.clamp(1, MAX_MICROS));
        }
    }

    /// All shards merged into one histogram.
    pub(crate) fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for s in &self.shards {
            if let Ok(h) = s.lock() {
                // Same bounds on both sides, so adding cannot fail.
                let _ = all.add(&*h);
            }
        }
        all
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub(crate) struct LatencySummary {
    /// Number of samples.
    pub(crate) count: u64,
    /// Mean.
    pub(crate) mean_ms: f64,
    /// Median.
    pub(crate) p50_ms: f64,
    /// 90th percentile.
    pub(crate) p90_ms: f64,
    /// 99th percentile.
    pub(crate) p99_ms: f64,
    /// 99.9th percentile.
    pub(crate) p999_ms: f64,
    /// Largest sample.
    pub(crate) max_ms: f64,
}

impl LatencySummary {
    /// The summary of a histogram of microseconds (all zero when it is empty).
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// `count` per second over `elapsed` (0 when no time passed).
pub(crate) fn per_sec(count: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 {
        count as f64 / s
    } else {
        0.0
    }
}

/// `total / n`, or `None` when `n` is 0.
pub(crate) fn per_item(total: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| total / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance * b.abs().max(1e-9)
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = new_histogram();
        for ms in 1..=1000u64 {
            h.record(ms * 1000).unwrap();
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 1000);
        // Three significant digits: each value within 0.1%.
        assert!(close(s.p50_ms, 500.0, 0.002), "{s:?}");
        assert!(close(s.p90_ms, 900.0, 0.002), "{s:?}");
        assert!(close(s.p99_ms, 990.0, 0.002), "{s:?}");
        assert!(close(s.p999_ms, 999.0, 0.002), "{s:?}");
        assert!(close(s.max_ms, 1000.0, 0.002), "{s:?}");
        assert!(close(s.mean_ms, 500.5, 0.002), "{s:?}");
    }

    #[test]
    fn one_slow_sample_shows_only_in_the_tail() {
        let mut h = new_histogram();
        for _ in 0..999 {
            h.record(2_000).unwrap();
        }
        h.record(500_000).unwrap();
        let s = LatencySummary::of(&h);
        assert!(close(s.p50_ms, 2.0, 0.002), "{s:?}");
        assert!(close(s.p99_ms, 2.0, 0.002), "{s:?}");
        assert!(close(s.p999_ms, 2.0, 0.002), "{s:?}");
        assert!(close(s.max_ms, 500.0, 0.002), "{s:?}");
    }

    #[test]
    fn empty_histogram_summarises_to_zero() {
        assert_eq!(
            LatencySummary::of(&new_histogram()),
            LatencySummary::default()
        );
    }

    #[test]
    fn recorder_merges_shards_and_clamps() {
        let r = Recorder::new(4);
        for k in 0..100 {
            r.record(k, 1_000);
        }
        r.record(7, 0); // clamped up to 1 µs
        r.record(8, u64::MAX); // clamped down to one hour
        let h = r.merged();
        assert_eq!(h.len(), 102);
        assert_eq!(h.min(), 1);
        assert!(h.max() >= MAX_MICROS);
        assert_eq!(Recorder::new(0).shards.len(), 1);
    }

    #[test]
    fn rates() {
        assert_eq!(per_sec(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(per_sec(5, Duration::ZERO), 0.0);
        assert_eq!(per_item(10.0, 4), Some(2.5));
        assert_eq!(per_item(10.0, 0), None);
    }
}
