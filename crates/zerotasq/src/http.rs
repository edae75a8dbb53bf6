//! A pool's read-only HTTP endpoint, when asked for ([`HttpListen`]): `/metrics` in the
//! Prometheus text format (`metrics`), a live dashboard at `/` with its script, and
//! `/api/status`, the JSON the dashboard reads (the broker's status and the outcomes counted
//! every second over the last ten minutes).
//!
//! It runs on a thread of its own and asks the broker as any client does (a status request,
//! answered between two iterations of the broker's loop), so a slow or stuck HTTP peer never
//! holds up the broker. The history for the throughput chart is sampled from the counters
//! the broker publishes anyway (`RawPool::stats`), which costs the broker nothing.
//! Only `GET` and `HEAD` are served; anything else gets `405`.

use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tiny_http::{Header, Method, Request, Response, Server};

use crate::broker::BrokerStats;
use crate::error::Error;
use crate::link::Link;

mod metrics;

/// How often the outcome counters are sampled for the chart.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Samples kept: ten minutes' worth.
const HISTORY: usize = 600;

const DASHBOARD_HTML: &str = include_str!("http/dashboard.html");
const DASHBOARD_JS: &str = include_str!("http/dashboard.js");

/// Where a pool serves its metrics and dashboard over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpListen {
    /// `HOST:PORT`, e.g. `127.0.0.1:9100` (port 0: any free port).
    pub addr: String,
    /// Serve on an address other than loopback. There is no authentication: anyone who can
    /// reach the address sees the figures (but can change nothing).
    pub allow_remote: bool,
}

impl HttpListen {
    /// On loopback only, at `addr` (`HOST:PORT`).
    pub fn local(addr: impl Into<String>) -> HttpListen {
        HttpListen {
            addr: addr.into(),
            allow_remote: false,
        }
    }
}

/// A bound HTTP listener, not serving yet: binding comes first, so a bad address or a port
/// in use fails a pool before anything else starts.
pub(crate) struct HttpBound {
    server: Server,
    addr: SocketAddr,
}

impl HttpBound {
    pub(crate) fn bind(listen: &HttpListen) -> Result<HttpBound, Error> {
        let wanted = &listen.addr;
        let malformed = || {
            Error::Config(format!(
                "the HTTP address {wanted:?} is not HOST:PORT (e.g. 127.0.0.1:9100)"
            ))
        };
        let addr = wanted
            .to_socket_addrs()
            .map_err(|_| malformed())?
            .next()
            .ok_or_else(malformed)?;
        if !addr.ip().is_loopback() && !listen.allow_remote {
            return Err(Error::Config(format!(
                "serving HTTP on {addr} (not loopback) must be allowed explicitly: the metrics \
                 and dashboard have no authentication"
            )));
        }
        let server = Server::http(addr).map_err(|e| Error::Io {
            context: format!("listen for HTTP on {addr}"),
            source: std::io::Error::other(e.to_string()),
        })?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| Error::Config("the HTTP listener is not on IP".into()))?;
        Ok(HttpBound { server, addr })
    }

    /// Serves on a thread of its own until dropped: figures from the broker `link` reaches,
    /// history from `stats`.
    pub(crate) fn serve(
        self,
        link: Link,
        stats: Arc<Mutex<BrokerStats>>,
    ) -> Result<HttpServer, Error> {
        let server = Arc::new(self.server);
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let server = server.clone();
            let stopping = stopping.clone();
            std::thread::Builder::new()
                .name("zerotasq-http".into())
                .spawn(move || run(&server, &link, &stats, &stopping))
                .map_err(Error::io("start the HTTP thread"))?
        };
        Ok(HttpServer {
            server,
            stopping,
            thread: Some(thread),
            addr: self.addr,
        })
    }
}

/// The HTTP endpoint of a running pool; dropping it stops it.
pub(crate) struct HttpServer {
    server: Arc<Server>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl HttpServer {
    /// The address it listens on (port resolved).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Outcomes counted so far, sampled every second: (seconds since the endpoint started,
/// completed, failed).
struct History {
    started: Instant,
    samples: VecDeque<(f64, u64, u64)>,
    next: Instant,
}

impl History {
    fn sample(&mut self, stats: &Mutex<BrokerStats>, now: Instant) {
        if now < self.next {
            return;
        }
        self.next = now + SAMPLE_EVERY;
        let (completed, failed) = {
            let stats = stats.lock().expect("stats lock");
            (stats.completed, stats.failed)
        };
        if self.samples.len() == HISTORY {
            self.samples.pop_front();
        }
        let at = now.duration_since(self.started).as_secs_f64();
        self.samples.push_back((at, completed, failed));
    }
}

fn run(server: &Server, link: &Link, stats: &Mutex<BrokerStats>, stopping: &AtomicBool) {
    let now = Instant::now();
    let mut history = History {
        started: now,
        samples: VecDeque::with_capacity(HISTORY),
        next: now,
    };
    while !stopping.load(Ordering::Acquire) {
        history.sample(stats, Instant::now());
        let wait = history.next.saturating_duration_since(Instant::now());
        match server.recv_timeout(wait) {
            Ok(Some(request)) => respond(request, link, &history),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("the HTTP endpoint stopped: {e}");
                return;
            }
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name, value).expect("a valid header")
}

fn respond(request: Request, link: &Link, history: &History) {
    let (status, content_type, body) = answer(request.method(), request.url(), link, history);
    let mut response = Response::from_data(body)
        .with_status_code(status)
        .with_header(header("Content-Type", content_type))
        .with_header(header("Cache-Control", "no-store"))
        .with_header(header("X-Content-Type-Options", "nosniff"))
        .with_header(header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'",
        ));
    if status == 405 {
        response = response.with_header(header("Allow", "GET, HEAD"));
    }
    // A peer that went away is no concern of ours.
    let _ = request.respond(response);
}

const TEXT: &str = "text/plain; charset=utf-8";

/// Status code, content type and body for a request.
fn answer(
    method: &Method,
    url: &str,
    link: &Link,
    history: &History,
) -> (u16, &'static str, Vec<u8>) {
    if !matches!(method, Method::Get | Method::Head) {
        return (405, TEXT, b"read-only: only GET and HEAD\n".to_vec());
    }
    let path = url.split('?').next().unwrap_or(url);
    match path {
        "/" => (200, "text/html; charset=utf-8", DASHBOARD_HTML.into()),
        "/dashboard.js" => (200, "text/javascript; charset=utf-8", DASHBOARD_JS.into()),
        "/metrics" => match link.status() {
            Ok(status) => (
                200,
                metrics::CONTENT_TYPE,
                metrics::encode(&status).into_bytes(),
            ),
            Err(e) => (
                503,
                TEXT,
                format!("no status from the broker: {e}\n").into(),
            ),
        },
        "/api/status" => match link.status() {
            Ok(status) => {
                let body = serde_json::json!({
                    "status": status,
                    "history": history.samples,
                    "sample_secs": SAMPLE_EVERY.as_secs_f64(),
                });
                (200, "application/json", body.to_string().into_bytes())
            }
            Err(e) => (
                503,
                TEXT,
                format!("no status from the broker: {e}\n").into(),
            ),
        },
        _ => (404, TEXT, b"not found: try / or /metrics\n".to_vec()),
    }
}
