//! `zerotasq status`: asks a standalone broker (`zerotasq broker`) for its status — clients
//! with their queue depths, workers with their load, rates — and prints it as a table or as
//! JSON, once or every `--watch` interval.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::mpsc;
use std::time::Duration;

use zerotasq::{BrokerStatus, RemoteBroker};

use crate::args::StatusArgs;
use crate::run::{say, EXIT_USAGE};
use crate::signals;

/// Runs `zerotasq status`; returns the exit status.
pub fn status(args: StatusArgs) -> i32 {
    signals::block();
    let broker = crate::keys::client_security(&args.connect, &args.remote).and_then(|security| {
        RemoteBroker::connect(&args.connect, security, args.remote.allow_insecure_remote)
            .map_err(|e| e.to_string())
    });
    let broker = match broker {
        Ok(broker) => broker,
        Err(message) => {
            say(&format!("zerotasq: {message}"));
            return EXIT_USAGE;
        }
    };
    let Some(every) = args.watch else {
        return match broker.status() {
            Ok(status) => {
                print(&args, &status);
                0
            }
            Err(e) => {
                say(&format!("zerotasq: {e}"));
                EXIT_USAGE
            }
        };
    };
    let (tx, rx) = mpsc::channel();
    signals::forward(tx, |sig| sig);
    loop {
        // While watching, a broker that is away (restarting) is reported, not fatal.
        match broker.status() {
            Ok(status) => print(&args, &status),
            Err(e) => say(&format!("zerotasq: {e}")),
        }
        match rx.recv_timeout(every) {
            Ok(sig) => return 128 + sig,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return 128 + libc::SIGTERM,
        }
    }
}

fn print(args: &StatusArgs, status: &BrokerStatus) {
    let mut out = std::io::stdout().lock();
    let _ = if args.json {
        out.write_all(&status.to_json())
            .and_then(|()| out.write_all(b"\n"))
    } else {
        out.write_all(render(&args.connect, status).as_bytes())
    };
    let _ = out.flush();
}

/// The status as a readable table.
pub fn render(endpoint: &str, status: &BrokerStatus) -> String {
    let t = &status.totals;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "broker {endpoint}: up {}, {:.1} tasks/s",
        crate::duration::show(Duration::from_secs_f64(status.uptime_secs)),
        status.rate
    );
    let _ = writeln!(
        text,
        "totals: {} workers, {} queued, {} in flight; {} submitted, {} completed, {} failed, \
         {} requeued, {} poisoned, {} timed out, {} recycled",
        t.workers_alive,
        t.queued,
        t.in_flight,
        t.submitted,
        t.completed,
        t.failed,
        t.requeued,
        t.poisoned,
        t.timed_out,
        t.recycled
    );
    let _ = writeln!(text);
    if status.clients.is_empty() {
        let _ = writeln!(text, "no clients");
    } else {
        let _ = writeln!(
            text,
            "{:<16} {:>8} {:>9} {:>10} {:>10} {:>7} {:>9}",
            "CLIENT", "QUEUED", "IN FLIGHT", "SUBMITTED", "COMPLETED", "FAILED", "TASKS/S"
        );
        for c in &status.clients {
            let _ = writeln!(
                text,
                "{:<16} {:>8} {:>9} {:>10} {:>10} {:>7} {:>9.1}",
                c.id, c.queued, c.in_flight, c.submitted, c.completed, c.failed, c.rate
            );
        }
    }
    let _ = writeln!(text);
    if status.workers.is_empty() {
        let _ = writeln!(text, "no workers");
    } else {
        let width = status.workers.iter().map(|w| w.id.len()).max().unwrap_or(0);
        let _ = writeln!(
            text,
            "{:<width$} {:<8} {:>9} {:>10} {:>7} {:>7}",
            "WORKER", "STATE", "IN FLIGHT", "COMPLETED", "FAILED", "BATCH"
        );
        for w in &status.workers {
            let _ = writeln!(
                text,
                "{:<width$} {:<8} {:>9} {:>10} {:>7} {:>7.1}",
                w.id,
                w.state.as_str(),
                w.in_flight,
                w.completed,
                w.failed,
                w.mean_batch
            );
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerotasq::status::{ClientStatus, WorkerState, WorkerStatus};
    use zerotasq::BrokerStats;

    #[test]
    fn the_table_has_a_row_per_client_and_worker() {
        let status = BrokerStatus {
            uptime_secs: 90.0,
            rate: 12.5,
            totals: BrokerStats {
                workers_alive: 1,
                queued: 3,
                ..BrokerStats::default()
            },
            clients: vec![ClientStatus {
                id: "00deadbeef".into(),
                queued: 3,
                in_flight: 1,
                submitted: 10,
                completed: 6,
                failed: 0,
                rate: 2.0,
            }],
            workers: vec![WorkerStatus {
                id: "r-host-1-abc-0".into(),
                state: WorkerState::Busy,
                in_flight: 1,
                completed: 6,
                failed: 0,
                mean_batch: 1.0,
                max_batch: 0,
                host: "host".into(),
                pid: 1,
                slot: Some(0),
                restarts: Some(0),
            }],
            task_durations: Default::default(),
        };
        let text = render("tcp://h:1", &status);
        assert!(
            text.starts_with("broker tcp://h:1: up 90s, 12.5 tasks/s\n"),
            "{text}"
        );
        let row = text.lines().find(|l| l.starts_with("00deadbeef")).unwrap();
        let cells: Vec<_> = row.split_whitespace().collect();
        assert_eq!(cells, ["00deadbeef", "3", "1", "10", "6", "0", "2.0"]);
        let row = text.lines().find(|l| l.starts_with("r-host")).unwrap();
        let cells: Vec<_> = row.split_whitespace().collect();
        assert_eq!(cells, ["r-host-1-abc-0", "busy", "1", "6", "0", "1.0"]);
    }
}
