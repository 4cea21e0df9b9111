//! The histogram API that openraft's runtime statistics call (`Histogram`, `PercentileStats`,
//! `AsciiChart`), kept small.
//!
//! Why this crate exists: the release of the same name builds, on first use, one process-wide
//! table of bucket boundaries for every scale it supports at once. openraft creates its statistics
//! histograms when a node starts, so every process that runs a node kept about 22 MB of anonymous
//! memory for statistics this package never reads: half of a node's idle footprint over a bare
//! Node.js. Here a value's bucket is computed from its bits, and there is no table.
//!
//! Buckets: 0 has its own; every other value falls in the quarter of its power of two that holds
//! it (two bits below the leading one), so a percentile is exact below 8 and within 25% above.
//! openraft records batch sizes, budgets and latencies in these, for its own display only.

use std::fmt;
use std::marker::PhantomData;

/// Sub-buckets per power of two, as a number of bits.
const SUB_BITS: u32 = 2;
const SUBS: usize = 1 << SUB_BITS;
/// Values below `SUBS * 2` are counted exactly; each power of two above is split in `SUBS`.
const EXACT: u64 = (SUBS * 2) as u64;
const BUCKETS: usize = EXACT as usize + (64 - (SUB_BITS as usize + 1)) * SUBS;

fn bucket_of(value: u64) -> usize {
    if value < EXACT {
        return value as usize;
    }
    let top = 63 - value.leading_zeros(); // >= SUB_BITS + 1
    let sub = (value >> (top - SUB_BITS)) as usize & (SUBS - 1);
    EXACT as usize + (top - SUB_BITS - 1) as usize * SUBS + sub
}

/// The smallest value that falls in `bucket`.
fn lower_bound(bucket: usize) -> u64 {
    if bucket < EXACT as usize {
        return bucket as u64;
    }
    let rest = bucket - EXACT as usize;
    let top = (rest / SUBS) as u32 + SUB_BITS + 1;
    let sub = (rest % SUBS) as u64;
    (1u64 << top) | (sub << (top - SUB_BITS))
}

/// Counts of values in logarithmic buckets. `T` is accepted for signature compatibility; no
/// per-period metadata is kept.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram<T = ()> {
    counts: Box<[u64]>,
    _meta: PhantomData<T>,
}

impl<T> Histogram<T> {
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            _meta: PhantomData,
        }
    }

    pub fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    pub fn record_n(&mut self, value: u64, count: u64) {
        self.counts[bucket_of(value)] += count;
    }

    /// How many values were recorded.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The lower bound of the bucket that holds the `fraction` quantile (0.0-1.0); 0 when empty.
    pub fn percentile(&self, fraction: f64) -> u64 {
        let total = self.total();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64 * fraction).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return lower_bound(bucket);
            }
        }
        lower_bound(BUCKETS - 1)
    }

    pub fn percentile_stats(&self) -> PercentileStats {
        PercentileStats {
            samples: self.total(),
            p0_1: self.percentile(0.001),
            p1: self.percentile(0.01),
            p5: self.percentile(0.05),
            p10: self.percentile(0.10),
            p50: self.percentile(0.50),
            p90: self.percentile(0.90),
            p99: self.percentile(0.99),
            p99_9: self.percentile(0.999),
        }
    }
}

impl<T> Default for Histogram<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for Histogram<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("percentiles", &self.percentile_stats())
            .finish()
    }
}

/// A histogram's count and percentiles, each the lower bound of its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PercentileStats {
    pub samples: u64,
    pub p0_1: u64,
    pub p1: u64,
    pub p5: u64,
    pub p10: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
}

impl fmt::Display for PercentileStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[samples: {}, P0.1: {}, P1: {}, P5: {}, P10: {}, P50: {}, P90: {}, P99: {}, P99.9: {}]",
            self.samples,
            self.p0_1,
            self.p1,
            self.p5,
            self.p10,
            self.p50,
            self.p90,
            self.p99,
            self.p99_9
        )
    }
}

/// Named histograms shown one line each.
#[derive(Clone)]
pub struct AsciiChart<T = ()> {
    series: Vec<(String, Histogram<T>)>,
}

impl<T> AsciiChart<T> {
    pub fn new() -> Self {
        AsciiChart { series: Vec::new() }
    }

    pub fn add(mut self, name: &str, histogram: Histogram<T>) -> Self {
        self.series.push((name.to_string(), histogram));
        self
    }
}

impl<T> Default for AsciiChart<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for AsciiChart<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.series.iter().map(|(name, _)| name))
            .finish()
    }
}

impl<T> fmt::Display for AsciiChart<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, histogram) in &self.series {
            writeln!(f, "{name}: {}", histogram.percentile_stats())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_falls_in_the_bucket_whose_bounds_hold_it() {
        let mut probes: Vec<u64> = (0..4096).collect();
        for shift in 0..64 {
            let p = 1u64 << shift;
            probes.extend([p - 1, p, p + 1, p | (p >> 1), p | (p >> 2)]);
        }
        probes.push(u64::MAX);
        for v in probes {
            let b = bucket_of(v);
            assert!(b < BUCKETS, "{v} -> bucket {b}");
            assert!(
                lower_bound(b) <= v,
                "{v} below its bucket's bound {}",
                lower_bound(b)
            );
            if b + 1 < BUCKETS {
                assert!(
                    v < lower_bound(b + 1),
                    "{v} at or past the next bucket's bound"
                );
            }
        }
    }

    #[test]
    fn percentiles_are_exact_for_small_values_and_within_a_quarter_above() {
        let mut h: Histogram = Histogram::new();
        for v in 1..=100u64 {
            h.record(v);
        }
        h.record_n(0, 0);
        let s = h.percentile_stats();
        assert_eq!(s.samples, 100);
        assert_eq!(s.p1, 1);
        assert_eq!(s.p5, 5);
        for (got, exact) in [(s.p50, 50u64), (s.p90, 90), (s.p99, 99)] {
            assert!(got <= exact && got * 5 >= exact * 4, "{got} for {exact}");
        }
        let empty: Histogram = Histogram::new();
        assert_eq!(empty.percentile_stats().p99, 0);
    }
}
