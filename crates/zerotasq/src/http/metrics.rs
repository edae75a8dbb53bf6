//! A broker's status as Prometheus metrics, in the Prometheus text format (version 0.0.4,
//! which every Prometheus and `promtool` reads): counters since the broker started, gauges
//! of now, and the histogram of task durations. Names follow the ecosystem's conventions:
//! `zerotasq_` first, `_total` on counters, base units (seconds).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::status::{BrokerStatus, WorkerState};

pub(super) use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every worker state, so each has a series even while no worker is in it.
const STATES: [WorkerState; 4] = [
    WorkerState::Ready,
    WorkerState::Busy,
    WorkerState::Suspect,
    WorkerState::Retiring,
];

/// The status taken for one scrape.
#[derive(Debug)]
struct Figures(BrokerStatus);

impl Figures {
    /// Counters: name (without `_total`), help, value.
    fn counters(&self) -> [(&'static str, &'static str, u64); 12] {
        let t = &self.0.totals;
        [
            (
                "tasks_submitted",
                "Tasks accepted from clients.",
                t.submitted,
            ),
            (
                "tasks_completed",
                "Tasks answered with a result.",
                t.completed,
            ),
            (
                "tasks_failed",
                "Tasks answered with an error (raised, panicked, lost, timed out, cancelled).",
                t.failed,
            ),
            (
                "tasks_requeued",
                "Tasks put back in their queue because their worker died or left.",
                t.requeued,
            ),
            (
                "tasks_poisoned",
                "Tasks that were on as many dying workers as they had tries.",
                t.poisoned,
            ),
            (
                "tasks_timed_out",
                "Tries of tasks that ran past their time limit.",
                t.timed_out,
            ),
            (
                "workers_registered",
                "Workers that registered.",
                t.workers_ready,
            ),
            (
                "workers_lost",
                "Workers that died or fell silent while registered.",
                t.workers_lost,
            ),
            (
                "workers_recycled",
                "Workers that left to be replaced by fresh ones.",
                t.recycled,
            ),
            (
                "worker_init_failures",
                "Workers whose init failed.",
                t.init_failures,
            ),
            (
                "results_dropped",
                "Results dropped because their task had its outcome or was not the sender's.",
                t.duplicates_dropped,
            ),
            (
                "malformed_messages",
                "Messages dropped because they did not decode.",
                t.malformed,
            ),
        ]
    }
}

impl Collector for Figures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = &self.0;
        for (name, help, value) in self.counters() {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "tasks_queued",
                "Tasks waiting for a worker.",
                status.totals.queued,
            ),
            (
                "tasks_in_flight",
                "Tasks on workers.",
                status.totals.in_flight,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value as i64);
            gauge.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }

        let help = "Workers registered, by state.";
        let mut workers = encoder.encode_descriptor("workers", help, None, MetricType::Gauge)?;
        for state in STATES {
            let n = status.workers.iter().filter(|w| w.state == state).count();
            let labels = [("state", state.as_str())];
            ConstGauge::new(n as i64).encode(workers.encode_family(&labels)?)?;
        }

        let help = "Tasks waiting for a worker, by client (a client shows while it has tasks \
                    open and for 10 s after).";
        let mut depth = encoder.encode_descriptor("queue_depth", help, None, MetricType::Gauge)?;
        for client in &status.clients {
            let labels = [("client", client.id.as_str())];
            ConstGauge::new(client.queued as i64).encode(depth.encode_family(&labels)?)?;
        }

        let help = "Seconds from a task's dispatch to a worker to its outcome at the broker, \
                    for the tasks workers answered.";
        let seconds = Unit::Seconds;
        let durations = &status.task_durations;
        let buckets: Vec<(f64, u64)> = durations.buckets().collect();
        encoder
            .encode_descriptor("task_duration", help, Some(&seconds), MetricType::Histogram)?
            .encode_histogram::<NoLabelSet>(
                durations.sum_secs,
                durations.count(),
                &buckets,
                None,
            )?;

        let uptime = ConstGauge::new(status.uptime_secs);
        let help = "Seconds since the broker started.";
        uptime.encode(encoder.encode_descriptor(
            "uptime",
            help,
            Some(&seconds),
            MetricType::Gauge,
        )?)
    }
}

/// The metrics page for one status.
pub(super) fn encode(status: &BrokerStatus) -> String {
    let mut registry = Registry::with_prefix("zerotasq");
    registry.register_collector(Box::new(Figures(status.clone())));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        .expect("writing to a String does not fail");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{ClientStatus, Durations, WorkerStatus};
    use crate::BrokerStats;

    fn worker(id: &str, state: WorkerState) -> WorkerStatus {
        WorkerStatus {
            id: id.into(),
            state,
            in_flight: 0,
            completed: 0,
            failed: 0,
            mean_batch: 0.0,
            max_batch: 0,
            host: "h".into(),
            pid: 1,
            slot: None,
            restarts: None,
        }
    }

    #[test]
    fn the_page_has_counters_gauges_by_label_and_the_histogram() {
        let mut durations = Durations::default();
        durations.record(std::time::Duration::from_millis(3));
        let status = BrokerStatus {
            uptime_secs: 2.5,
            rate: 0.0,
            totals: BrokerStats {
                submitted: 10,
                completed: 7,
                failed: 1,
                recycled: 2,
                ..BrokerStats::default()
            },
            clients: vec![ClientStatus {
                id: "00ab".into(),
                queued: 2,
                in_flight: 0,
                submitted: 10,
                completed: 7,
                failed: 1,
                rate: 0.0,
            }],
            workers: vec![
                worker("a", WorkerState::Busy),
                worker("b", WorkerState::Busy),
            ],
            task_durations: durations,
        };
        let page = encode(&status);
        for line in [
            "# TYPE zerotasq_tasks_submitted_total counter",
            "zerotasq_tasks_submitted_total 10",
            "zerotasq_tasks_completed_total 7",
            "zerotasq_tasks_failed_total 1",
            "zerotasq_workers_recycled_total 2",
            "zerotasq_workers{state=\"busy\"} 2",
            "zerotasq_workers{state=\"suspect\"} 0",
            "zerotasq_queue_depth{client=\"00ab\"} 2",
            "# TYPE zerotasq_task_duration_seconds histogram",
            "zerotasq_task_duration_seconds_bucket{le=\"0.0025\"} 0",
            "zerotasq_task_duration_seconds_bucket{le=\"0.005\"} 1",
            "zerotasq_task_duration_seconds_bucket{le=\"+Inf\"} 1",
            "zerotasq_task_duration_seconds_count 1",
            "zerotasq_uptime_seconds 2.5",
        ] {
            assert!(page.lines().any(|l| l == line), "no {line:?} in\n{page}");
        }
    }
}
