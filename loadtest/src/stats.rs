//! Latency histograms (HdrHistogram, microseconds), their percentiles, and rates.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The most seconds a [`Timeline`] keeps (receipts in later seconds are not kept).
const MAX_TIMELINE_SECS: usize = 3700;

/// Latency per second of receipt: one histogram per second since an origin (the first
/// scheduled publication), for the plots of `--report`. Worker processes get the same
/// origin, so that their timelines merge.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    /// µs since the epoch of second 0.
    origin_us: AtomicU64,
    buckets: Mutex<BTreeMap<u64, Histogram<u64>>>,
}

/// One second of a [`Timeline`], summed up.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub(crate) struct Second {
    /// Seconds since the start.
    pub(crate) second: u64,
    /// Deliveries received in that second.
    pub(crate) deliveries: u64,
    /// Median latency, ms.
    pub(crate) p50_ms: f64,
    /// 99th percentile, ms.
    pub(crate) p99_ms: f64,
    /// Largest, ms.
    pub(crate) max_ms: f64,
}

/// A histogram for one second of a timeline: two significant digits, about 25 KiB.
fn second_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 2).expect("valid histogram bounds")
}

impl Timeline {
    /// Sets second 0 to start at `origin_us` (µs since the epoch); receipts before it
    /// count in second 0.
    pub(crate) fn set_origin(&self, origin_us: u64) {
        self.origin_us.store(origin_us, Ordering::Relaxed);
    }

    /// Records a latency of `micros` received at `at_us` (µs since the epoch).
    pub(crate) fn record(&self, at_us: u64, micros: u64) {
        let sec = at_us.saturating_sub(self.origin_us.load(Ordering::Relaxed)) / 1_000_000;
        if let Ok(mut b) = self.buckets.lock() {
            if b.len() >= MAX_TIMELINE_SECS && !b.contains_key(&sec) {
                return;
            }
            b.entry(sec)
                .or_insert_with(second_histogram)
                .saturating_record(micros.clamp(1, MAX_MICROS));
        }
    }

    /// Its buckets as `(second, encoded histogram)`, for sending between processes.
    pub(crate) fn encode(&self) -> Vec<(u64, Vec<(u64, u64)>)> {
        self.buckets
            .lock()
            .map(|b| b.iter().map(|(s, h)| (*s, encode(h))).collect())
            .unwrap_or_default()
    }

    /// Adds buckets made by [`Timeline::encode`].
    pub(crate) fn add(&self, buckets: &[(u64, Vec<(u64, u64)>)]) {
        if let Ok(mut b) = self.buckets.lock() {
            for (sec, pairs) in buckets {
                decode_into(b.entry(*sec).or_insert_with(second_histogram), pairs);
            }
        }
    }

    /// Every second from 0 to the last with a receipt (seconds without receipts have
    /// zeros).
    pub(crate) fn seconds(&self) -> Vec<Second> {
        let Ok(b) = self.buckets.lock() else {
            return Vec::new();
        };
        let Some(&last) = b.keys().next_back() else {
            return Vec::new();
        };
        (0..=last).map(|sec| second_of(sec, b.get(&sec))).collect()
    }
}

/// The summary of one second's histogram.
pub(crate) fn second_of(second: u64, h: Option<&Histogram<u64>>) -> Second {
    match h.filter(|h| !h.is_empty()) {
        None => Second {
            second,
            deliveries: 0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
        },
        Some(h) => Second {
            second,
            deliveries: h.len(),
            p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
            max_ms: h.max() as f64 / 1000.0,
        },
    }
}

/// A histogram as `(value, count)` pairs of its recorded buckets, for sending between
/// processes (worker to parent) as JSON.
pub(crate) fn encode(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Adds pairs made by [`encode`] into `h`.
pub(crate) fn decode_into(h: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(v, n) in pairs {
        let _ = h.record_n(v.clamp(1, MAX_MICROS), n);
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
    fn timeline_buckets_by_second_of_receipt() {
        let t = Timeline::default();
        t.set_origin(10_200_000);
        t.record(10_200_000, 1_000);
        t.record(11_100_000, 3_000);
        t.record(12_300_000, 5_000);
        t.record(9_000_000, 7); // before the origin: second 0
        let s = t.seconds();
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].second, s[0].deliveries), (0, 3));
        assert!(close(s[0].max_ms, 3.0, 0.01), "{s:?}");
        assert_eq!((s[1].deliveries, s[1].p99_ms), (0, 0.0));
        assert_eq!((s[2].second, s[2].deliveries), (2, 1));
        assert!(close(s[2].p50_ms, 5.0, 0.01), "{s:?}");
        assert!(Timeline::default().seconds().is_empty());
        // Merging the timeline of another process with the same origin.
        let other = Timeline::default();
        other.set_origin(10_200_000);
        other.record(11_300_000, 2_000);
        t.add(&other.encode());
        let s = t.seconds();
        assert_eq!(s[1].deliveries, 1);
        assert_eq!(s.iter().map(|x| x.deliveries).sum::<u64>(), 5);
    }

    #[test]
    fn histograms_survive_encoding() {
        let mut h = new_histogram();
        for us in [1u64, 10, 10, 999, 123_456, 3_000_000] {
            h.record(us).unwrap();
        }
        let pairs = encode(&h);
        let json = serde_json::to_string(&pairs).unwrap();
        let back: Vec<(u64, u64)> = serde_json::from_str(&json).unwrap();
        let mut g = new_histogram();
        decode_into(&mut g, &back);
        decode_into(&mut g, &back);
        assert_eq!(g.len(), 2 * h.len());
        assert_eq!(g.max(), h.max());
        assert_eq!(g.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert_eq!(LatencySummary::of(&g).p99_ms, LatencySummary::of(&h).p99_ms);
    }

    #[test]
    fn rates() {
        assert_eq!(per_sec(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(per_sec(5, Duration::ZERO), 0.0);
        assert_eq!(per_item(10.0, 4), Some(2.5));
        assert_eq!(per_item(10.0, 0), None);
    }
}
