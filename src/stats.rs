//! Counters and histograms the hot paths update with a few relaxed atomic adds, read by a napi
//! getter when metrics are scraped: a scrape costs one call, a write costs no traffic to JS.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// etcd's `wal_fsync_duration_seconds` / `backend_commit_duration_seconds` buckets: 1 ms to 8 s,
/// doubling, so dashboards built for etcd read the same.
pub const DISK_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

/// etcd's `peer_round_trip_time_seconds` buckets: 0.1 ms to 0.8 s, doubling.
pub const RTT_BUCKETS: &[f64] = &[
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192,
];

/// etcd's `snapshot_save_total_duration_seconds` buckets: 10 ms to about 80 s.
pub const SNAPSHOT_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// A Prometheus-style histogram with fixed upper bounds (non-cumulative counts inside).
pub struct Histogram {
    bounds: &'static [f64],
    /// One slot per bound plus one for +Inf.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

/// A histogram as read at one moment: cumulative bucket counts, as the exposition wants them.
#[derive(Debug, Clone)]
pub struct HistogramReading {
    pub bounds: Vec<f64>,
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(slot) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn read(&self) -> HistogramReading {
        let mut running = 0u64;
        let mut cumulative = Vec::with_capacity(self.bounds.len());
        for c in self.counts.iter().take(self.bounds.len()) {
            running += c.load(Ordering::Relaxed);
            cumulative.push(running);
        }
        let inf = self
            .counts
            .last()
            .map(|c| c.load(Ordering::Relaxed))
            .unwrap_or(0);
        HistogramReading {
            bounds: self.bounds.to_vec(),
            cumulative,
            count: running + inf,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// What the storage layer measures about its own disk work.
pub struct StorageStats {
    /// Commits of the log's writer that carried log writes (each one fsyncs): etcd's WAL fsync.
    pub log_fsync: Histogram,
    /// Commits that carried applied entries into the state machine: etcd's backend commit. They
    /// are the log writer's commits, so one that also carried appends counts in both.
    pub apply_commit: Histogram,
    /// Building and saving a snapshot, and installing one received from the leader.
    pub snapshot_save: Histogram,
    pub snapshot_install: Histogram,
    /// Reading the stored snapshot out to send it to a peer: each is a full read of the id window.
    pub snapshot_read: Histogram,
    /// Size in bytes of the latest snapshot built or installed here.
    pub snapshot_bytes: AtomicU64,
}

impl Default for StorageStats {
    fn default() -> Self {
        StorageStats {
            log_fsync: Histogram::new(DISK_BUCKETS),
            apply_commit: Histogram::new(DISK_BUCKETS),
            snapshot_save: Histogram::new(SNAPSHOT_BUCKETS),
            snapshot_install: Histogram::new(SNAPSHOT_BUCKETS),
            snapshot_read: Histogram::new(SNAPSHOT_BUCKETS),
            snapshot_bytes: AtomicU64::new(0),
        }
    }
}

/// Times `f` into `h`.
pub fn timed<T>(h: &Histogram, f: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let out = f();
    h.observe(started.elapsed());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_count_overflow() {
        let h = Histogram::new(DISK_BUCKETS);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(20));
        let r = h.read();
        assert_eq!(r.cumulative[0], 1);
        assert_eq!(r.cumulative[2], 2);
        assert_eq!(*r.cumulative.last().unwrap_or(&0), 2);
        assert_eq!(r.count, 3);
        assert!(r.sum_seconds > 20.0);
    }
}
