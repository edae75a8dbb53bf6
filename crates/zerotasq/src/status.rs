//! What a broker reports when asked (`StatusRequest` → `Status`): its totals, each client's
//! queue and figures, each worker's load, rates and task durations — [`BrokerStatus`], sent
//! as JSON so any face or tool can read it. `Rate` counts events per second over the last
//! few seconds, with time passed in like the rest of the broker; [`Durations`] is a
//! histogram of task durations in fixed buckets.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::broker::BrokerStats;

/// A broker's state at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokerStatus {
    /// Seconds since the broker started.
    pub uptime_secs: f64,
    /// Outcomes (completed or failed) per second over the last few seconds.
    pub rate: f64,
    /// The broker's counters since it started.
    pub totals: BrokerStats,
    /// Clients with open tasks, or active in the last few seconds; by id.
    pub clients: Vec<ClientStatus>,
    /// Registered workers, by id.
    pub workers: Vec<WorkerStatus>,
    /// How long the tasks workers answered took, from dispatch to outcome.
    #[serde(default)]
    pub task_durations: Durations,
}

/// One client (one stream or connector) as the broker sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientStatus {
    /// Its routing id, in hex (short: ZeroMQ makes up 5 bytes for a client).
    pub id: String,
    /// Tasks waiting for a worker.
    pub queued: usize,
    /// Tasks on workers now.
    pub in_flight: usize,
    /// Tasks this client submitted.
    pub submitted: u64,
    /// Tasks of its that succeeded.
    pub completed: u64,
    /// Tasks of its that ended in an error.
    pub failed: u64,
    /// Its outcomes per second over the last few seconds.
    pub rate: f64,
}

/// One registered worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Its routing id as text (a remote worker's names its host and pid).
    pub id: String,
    /// What the worker is doing.
    pub state: WorkerState,
    /// Tasks it holds (running or waiting in its queue).
    pub in_flight: usize,
    /// Tasks it completed.
    pub completed: u64,
    /// Tasks it answered with an error.
    pub failed: u64,
    /// The tasks per batch it was handed, on average (a batching worker's batch sizes).
    #[serde(default)]
    pub mean_batch: f64,
    /// Its declared batch size, for a worker that runs tasks in batches (0 otherwise).
    #[serde(default)]
    pub max_batch: usize,
    /// The host it runs on, as it said when it joined.
    #[serde(default)]
    pub host: String,
    /// Its process id on that host.
    #[serde(default)]
    pub pid: u32,
    /// Its slot (0-based) among the workers of its supervisor, for a supervised worker.
    #[serde(default)]
    pub slot: Option<usize>,
    /// How often its slot's worker was started again before this one (deaths, recycling).
    #[serde(default)]
    pub restarts: Option<u64>,
}

/// What a worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum WorkerState {
    /// Holds no task: the next one may go to it.
    Ready,
    /// Holds tasks.
    Busy,
    /// Runs, alone, a task that was on a worker that died (it may be a poison task).
    Suspect,
    /// Handed back its unstarted tasks and takes no more (its command died).
    Retiring,
}

impl WorkerState {
    /// The state as one lower-case word, as the status shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Ready => "ready",
            WorkerState::Busy => "busy",
            WorkerState::Suspect => "suspect",
            WorkerState::Retiring => "retiring",
        }
    }
}

impl BrokerStatus {
    /// The JSON the broker sends.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a status is plain data")
    }

    /// Reads a status as the broker sends it.
    pub fn from_json(bytes: &[u8]) -> Result<BrokerStatus, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Upper bounds of the duration buckets, in seconds: 1, 2.5, 5 per decade from 100 µs to
/// 1000 s, for tasks of microseconds to many minutes.
const DURATION_BOUNDS: [f64; 22] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
];

/// A histogram of task durations since the broker started: counts per bucket (not
/// cumulative), their sum and count — what a Prometheus histogram needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Durations {
    /// Upper bounds of the buckets, in seconds, increasing.
    pub bounds: Vec<f64>,
    /// Durations in each bucket (at most its bound, over the previous one); one more entry
    /// than `bounds` for those over the last bound.
    pub counts: Vec<u64>,
    /// All durations added up, in seconds.
    pub sum_secs: f64,
}

impl Default for Durations {
    fn default() -> Self {
        Durations {
            bounds: DURATION_BOUNDS.to_vec(),
            counts: vec![0; DURATION_BOUNDS.len() + 1],
            sum_secs: 0.0,
        }
    }
}

impl Durations {
    /// Counts one duration.
    pub(crate) fn record(&mut self, duration: Duration) {
        let secs = duration.as_secs_f64();
        let bucket = self.bounds.partition_point(|&bound| bound < secs);
        self.counts[bucket] += 1;
        self.sum_secs += secs;
    }

    /// Durations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Each bound with the durations in its bucket (over the previous bound, at most this
    /// one); those over the last bound are in [`Durations::count`] only.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.bounds.iter().copied().zip(self.counts.iter().copied())
    }
}

/// Whole seconds the rate looks back over, besides the current one.
const WINDOW_SECS: u64 = 5;
const BUCKETS: usize = WINDOW_SECS as usize + 1;

/// Events per second over the last [`WINDOW_SECS`] whole seconds and the current one, from
/// counts in one-second buckets (so a rate reacts within seconds and costs no allocation).
#[derive(Debug, Clone)]
pub(crate) struct Rate {
    since: Instant,
    /// Ring of counts; `latest` is the bucket (seconds since `since`) last written.
    buckets: [u64; BUCKETS],
    latest: u64,
}

impl Rate {
    pub(crate) fn new(now: Instant) -> Rate {
        Rate {
            since: now,
            buckets: [0; BUCKETS],
            latest: 0,
        }
    }

    pub(crate) fn record(&mut self, count: u64, now: Instant) {
        if count == 0 {
            return;
        }
        let bucket = self.bucket(now);
        // Buckets skipped since the last write held nothing; clear what they kept.
        for b in self.latest + 1..=bucket.min(self.latest + BUCKETS as u64) {
            self.buckets[b as usize % BUCKETS] = 0;
        }
        self.latest = bucket;
        self.buckets[bucket as usize % BUCKETS] += count;
    }

    pub(crate) fn per_sec(&self, now: Instant) -> f64 {
        let bucket = self.bucket(now);
        let first = bucket.saturating_sub(WINDOW_SECS);
        let count: u64 = (first..=self.latest.min(bucket))
            .filter(|b| *b + (BUCKETS as u64) > self.latest)
            .map(|b| self.buckets[b as usize % BUCKETS])
            .sum();
        let covered = now
            .saturating_duration_since(self.since)
            .saturating_sub(Duration::from_secs(first));
        if covered.is_zero() {
            0.0
        } else {
            count as f64 / covered.as_secs_f64()
        }
    }

    fn bucket(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.since)
            .as_secs()
            .max(self.latest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: Instant, ms: u64) -> Instant {
        t + Duration::from_millis(ms)
    }

    #[test]
    fn a_rate_counts_the_last_seconds_and_forgets_older_ones() {
        let t = Instant::now();
        let mut rate = Rate::new(t);
        assert_eq!(rate.per_sec(t), 0.0);
        rate.record(100, at(t, 500));
        assert_eq!(rate.per_sec(at(t, 2_000)), 50.0);
        rate.record(55, at(t, 8_000));
        // At 10.5 s the window is seconds 5 … 10.5: only the 55.
        assert_eq!(rate.per_sec(at(t, 10_500)), 10.0);
        // Long after, nothing is left, however far the ring wrapped.
        assert_eq!(rate.per_sec(at(t, 60_000)), 0.0);
        rate.record(12, at(t, 60_000));
        assert_eq!(
            rate.per_sec(at(t, 61_000)),
            12.0 / 5.0,
            "over seconds 56 … 61"
        );
    }

    #[test]
    fn durations_fall_in_the_first_bucket_that_holds_them() {
        let mut d = Durations::default();
        d.record(Duration::from_micros(50));
        d.record(Duration::from_micros(100));
        d.record(Duration::from_millis(3));
        d.record(Duration::from_secs(5000));
        assert_eq!(d.count(), 4);
        let buckets: Vec<_> = d.buckets().collect();
        assert_eq!(buckets[0], (0.0001, 2), "100 µs is at most the first bound");
        assert_eq!(buckets[5], (0.005, 1));
        let bounded: u64 = buckets.iter().map(|b| b.1).sum();
        assert_eq!(bounded, 3, "5000 s is over every bound");
        assert!((d.sum_secs - 5000.00315).abs() < 1e-9);
    }

    #[test]
    fn status_survives_json() {
        let status = BrokerStatus {
            uptime_secs: 1.5,
            rate: 2.0,
            totals: BrokerStats::default(),
            clients: vec![ClientStatus {
                id: "00ab".into(),
                queued: 3,
                in_flight: 1,
                submitted: 4,
                completed: 0,
                failed: 0,
                rate: 0.0,
            }],
            workers: vec![WorkerStatus {
                id: "r-host-1".into(),
                state: WorkerState::Suspect,
                in_flight: 1,
                completed: 7,
                failed: 1,
                mean_batch: 2.5,
                max_batch: 32,
                host: "host".into(),
                pid: 1,
                slot: Some(0),
                restarts: Some(2),
            }],
            task_durations: Durations::default(),
        };
        let json = status.to_json();
        assert!(String::from_utf8_lossy(&json).contains("\"state\":\"suspect\""));
        assert_eq!(BrokerStatus::from_json(&json).unwrap(), status);
    }
}
