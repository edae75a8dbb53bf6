//! `zerotasq broker`: a standalone broker on TCP — a pool with no local workers, whose
//! clients (`zerotasq map --connect`, or any face's remote client) and workers (`zerotasq
//! worker`) connect from anywhere. The engine shares the workers between clients in turns.

use std::io::Write;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use zerotasq::BrokerConfig;
use zerotasq::{check_insecure, server_security};
use zerotasq::{HttpListen, PoolSpec, RawPool, Security, TcpListen};

use crate::args::BrokerArgs;
use crate::run::{say, EXIT_USAGE};
use crate::signals;

/// The security the broker listens with, from its arguments.
fn security(args: &BrokerArgs) -> Result<Security, String> {
    if args.insecure {
        for endpoint in [&args.clients, &args.workers] {
            check_insecure(endpoint, args.allow_insecure_remote).map_err(|e| e.to_string())?;
        }
        return Ok(Security::Insecure);
    }
    let key = args
        .key
        .as_ref()
        .ok_or("--key is required without --insecure")?;
    server_security(key, &args.allow).map_err(|e| e.to_string())
}

/// Runs `zerotasq broker` until a signal; returns the exit status.
pub fn broker(args: BrokerArgs) -> i32 {
    signals::block();
    let security = match security(&args) {
        Ok(security) => security,
        Err(message) => {
            say(&format!("zerotasq: {message}"));
            return EXIT_USAGE;
        }
    };
    let allowed = match &security {
        Security::Server { allowed, .. } => format!("CURVE, {} allowed keys", allowed.len()),
        _ => "plain TCP, no authentication".to_string(),
    };
    let spec = PoolSpec {
        broker: BrokerConfig {
            max_retries: args.retries,
            ..BrokerConfig::default()
        },
        tcp: Some(TcpListen {
            workers: Some(args.workers.clone()),
            clients: Some(args.clients.clone()),
            security,
            allow_insecure_remote: args.allow_insecure_remote,
        }),
        max_connections_per_address: args.max_connections_per_address,
        http: args.http.clone().map(|addr| HttpListen {
            addr,
            allow_remote: args.allow_remote_http,
        }),
        ..PoolSpec::default()
    };
    let pool = match RawPool::start(spec) {
        Ok(pool) => pool,
        Err(e) => {
            say(&format!("zerotasq: cannot start the broker: {e}"));
            return EXIT_USAGE;
        }
    };
    let bound = pool.tcp_endpoints().clone();
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "clients {}", bound.clients.as_deref().unwrap_or("-"));
        let _ = writeln!(out, "workers {}", bound.workers.as_deref().unwrap_or("-"));
        if let Some(http) = pool.http_address() {
            let _ = writeln!(out, "http http://{http}");
        }
        let _ = out.flush();
    }
    let dashboard = pool
        .http_address()
        .map_or_else(String::new, |a| format!(", dashboard at http://{a}/"));
    say(&format!(
        "zerotasq broker: clients at {}, workers at {} ({allowed}){dashboard}; Ctrl-C stops",
        bound.clients.as_deref().unwrap_or("-"),
        bound.workers.as_deref().unwrap_or("-"),
    ));

    let (tx, rx) = mpsc::channel();
    signals::forward(tx, |sig| sig);
    let mut last = (Instant::now(), pool.stats().completed);
    let sig = loop {
        let received = match args.status_every {
            Some(every) => rx.recv_timeout(every),
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(sig) => break sig,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let stats = pool.stats();
                let now = Instant::now();
                let secs = now.duration_since(last.0).max(Duration::from_millis(1));
                let rate = stats.completed.saturating_sub(last.1) as f64 / secs.as_secs_f64();
                last = (now, stats.completed);
                say(&format!(
                    "zerotasq broker: {} workers alive, {} queued, {} in flight, {} completed, \
                     {} failed, {rate:.1}/s",
                    stats.workers_alive,
                    stats.queued,
                    stats.in_flight,
                    stats.completed,
                    stats.failed
                ));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break libc::SIGTERM,
        }
    };
    drop(pool);
    say("zerotasq broker: stopped");
    128 + sig
}
