//! Pools across hosts, measured: what CURVE costs against plain TCP (same run, alternating,
//! medians, as a ratio), and how CPU-bound throughput scales from 1 to 3 worker hosts.
//!
//!     sudo bench/distributed/run.sh            # both parts
//!     sudo bench/distributed/run.sh scaling    # one part: curve | scaling
//!
//! The script makes the hosts (network namespaces joined to this one by veth pairs) and a
//! CPU cap per host (a cgroup v1 cpu quota), and hands them over in the environment:
//! `ZT_BENCH_HOSTS` (namespace names), `ZT_BENCH_BROKER` (an address here they all reach),
//! `ZT_BENCH_CGROUPS` (one cgroup directory per host), `ZT_BENCH_QUOTA` (CPUs per host).
//! Without them this says so and exits. The broker and the client run in this process;
//! workers are this binary re-executed on the hosts, running the engine's remote worker
//! loop (`serve_remote`, what `serve_remote_worker` runs after `init`) on raw bytes, so no
//! serialisation is measured. Not a timed test: it asserts nothing, it measures.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use zerotasq::worker_runtime::{serve_remote, WorkerOptions};
use zerotasq::Context;
use zerotasq::PoolSpec;
use zerotasq::{BrokerAccess, KeyPair, RawPool, RemoteBroker, Security, TcpListen};

const REPS: usize = 7;
const TINY_TASKS: u64 = 300_000;
const TINY_WINDOW: usize = 1024;
const BIG_TASKS: u64 = 400;
const BIG: usize = 1 << 20;
/// Enough 1 MiB tasks in flight to keep both workers busy, without a GiB in the broker.
const BIG_WINDOW: usize = 32;
const SPIN: Duration = Duration::from_millis(5);
/// Scaling runs give each host this many tasks: about 2 s at 0.5 CPU per host.
const SPIN_TASKS_PER_HOST: u64 = 200;

fn main() {
    if let Ok(endpoint) = std::env::var("ZT_BENCH_WORKER") {
        worker(&endpoint);
    }
    let (Ok(hosts), Ok(broker), Ok(cgroups), Ok(quota)) = (
        std::env::var("ZT_BENCH_HOSTS"),
        std::env::var("ZT_BENCH_BROKER"),
        std::env::var("ZT_BENCH_CGROUPS"),
        std::env::var("ZT_BENCH_QUOTA"),
    ) else {
        println!("needs hosts and CPU caps: run bench/distributed/run.sh (as root)");
        return;
    };
    let net = Net {
        hosts: hosts.split_whitespace().map(String::from).collect(),
        broker,
        cgroups: cgroups.split_whitespace().map(String::from).collect(),
        quota: quota.parse().expect("ZT_BENCH_QUOTA: CPUs per host"),
        keys: Keys::new(),
    };
    assert!(net.hosts.len() >= 3 && net.cgroups.len() >= 3);
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |part: &str| filter.is_empty() || filter.iter().any(|f| f == part);
    println!(
        "machine: {} cores, {}; load {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        load()
    );
    if wants("curve") {
        curve(&net);
    }
    if wants("scaling") {
        scaling(&net);
    }
    println!("\nload at the end: {}", load());
}

/// What the script made, and the keys of this run.
struct Net {
    hosts: Vec<String>,
    broker: String,
    cgroups: Vec<String>,
    quota: f64,
    keys: Keys,
}

/// The broker's, the workers' and the client's key pairs; the workers read theirs from a
/// file in `dir`, removed on drop.
struct Keys {
    server: KeyPair,
    worker: KeyPair,
    client: KeyPair,
    dir: PathBuf,
}

impl Keys {
    fn new() -> Keys {
        let dir = std::env::temp_dir().join(format!("zt-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let worker = KeyPair::generate().unwrap();
        worker.write(&dir.join("worker")).unwrap();
        Keys {
            server: KeyPair::generate().unwrap(),
            worker,
            client: KeyPair::generate().unwrap(),
            dir,
        }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Curve,
    Plain,
}

/// A worker process on a host: this binary, re-executed in the host's namespace, moved into
/// the host's cgroup if given; killed on drop.
struct RemoteWorker(Child);

impl RemoteWorker {
    fn start(
        net: &Net,
        host: usize,
        endpoint: &str,
        mode: Mode,
        work: &str,
        cgroup: bool,
    ) -> RemoteWorker {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &net.hosts[host]])
            .arg(std::env::current_exe().unwrap())
            .env("ZT_BENCH_WORKER", endpoint)
            .env("ZT_BENCH_WORK", work);
        if mode == Mode::Curve {
            command
                .env("ZT_BENCH_KEY", net.keys.dir.join("worker.key_secret"))
                .env("ZT_BENCH_SERVER", net.keys.server.public.to_string());
        }
        let child = command.spawn().expect("start a worker");
        if cgroup {
            // `ip netns exec` execs the worker in place: this pid is the worker's, and the
            // cgroup holds it (and the threads it starts) from here on.
            let procs = format!("{}/cgroup.procs", net.cgroups[host]);
            std::fs::write(&procs, child.id().to_string()).expect("join the host's cgroup");
        }
        RemoteWorker(child)
    }
}

impl Drop for RemoteWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The worker role: serves the broker at `endpoint` until killed. `ZT_BENCH_WORK` says
/// what a task is: `echo` returns its first 16 bytes; `spin` burns the microseconds of CPU
/// its 8 bytes say.
fn worker(endpoint: &str) -> ! {
    let security = match std::env::var("ZT_BENCH_SERVER") {
        Ok(server) => Security::Client {
            keys: KeyPair::read(std::env::var("ZT_BENCH_KEY").unwrap().as_ref()).unwrap(),
            server: server.parse().unwrap(),
        },
        Err(_) => Security::Insecure,
    };
    let opts = WorkerOptions::remote(endpoint, security);
    let spin = std::env::var("ZT_BENCH_WORK").as_deref() == Ok("spin");
    let err = serve_remote(
        &Context::new(),
        &opts,
        move |task: &[u8], out: &mut Vec<u8>| {
            if spin {
                let us = u64::from_le_bytes(task.try_into().expect("8 bytes"));
                spin_cpu(Duration::from_micros(us));
                out.extend_from_slice(task);
            } else {
                out.extend_from_slice(&task[..task.len().min(16)]);
            }
            Ok(())
        },
    );
    eprintln!("bench worker: {err:?}");
    std::process::exit(1)
}

/// A broker in this process listening on the hosts' side for workers and clients.
fn broker(net: &Net, mode: Mode) -> RawPool {
    let at = Some(format!("tcp://{}:0", net.broker));
    let security = match mode {
        Mode::Curve => Security::Server {
            keys: net.keys.server.clone(),
            allowed: vec![net.keys.worker.public, net.keys.client.public],
        },
        Mode::Plain => Security::Insecure,
    };
    RawPool::start(PoolSpec {
        tcp: Some(TcpListen {
            workers: at.clone(),
            clients: at,
            security,
            // Plain TCP off loopback is what is being measured.
            allow_insecure_remote: true,
        }),
        ..PoolSpec::default()
    })
    .expect("start a broker")
}

fn wait_ready(pool: &RawPool, n: u64) {
    let until = Instant::now() + Duration::from_secs(30);
    while pool.stats().workers_ready < n {
        assert!(Instant::now() < until, "workers did not join");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Streams `n` tasks through `broker` with `window` in flight; tasks/s. The task for index
/// `i` is `payload` with `i` in its first 8 bytes.
fn run(broker: &impl BrokerAccess, n: u64, payload: &'static [u8], window: usize) -> f64 {
    let started = Instant::now();
    let stream = broker
        .stream(
            0..n,
            window,
            true,
            Box::new(move |i: u64, buf: &mut Vec<u8>| {
                buf.extend_from_slice(&i.to_le_bytes());
                buf.extend_from_slice(&payload[8..]);
                Ok(())
            }),
            Box::new(|bytes: &[u8]| Ok(bytes.len())),
        )
        .expect("stream");
    let mut count = 0u64;
    for outcome in stream {
        outcome.expect("task");
        count += 1;
    }
    assert_eq!(count, n);
    n as f64 / started.elapsed().as_secs_f64()
}

/// CURVE against plain TCP: two workers on two hosts and a client over TCP, per mode; the
/// modes take turns (ABBA), each rep on the same warm brokers and workers.
fn curve(net: &Net) {
    println!(
        "\n## CURVE vs plain TCP: 2 worker hosts (veth), client over TCP; {REPS} reps, alternating, medians"
    );
    let tiny: &'static [u8] = Box::leak(vec![7u8; 16].into_boxed_slice());
    let big: &'static [u8] = Box::leak(vec![7u8; BIG].into_boxed_slice());
    // Per mode: the broker, its workers (kept alive) and the client.
    let setups: Vec<(RawPool, Vec<RemoteWorker>, RemoteBroker)> = [Mode::Curve, Mode::Plain]
        .into_iter()
        .map(|mode| {
            let pool = broker(net, mode);
            let endpoints = pool.tcp_endpoints().clone();
            let workers_ep = endpoints.workers.unwrap();
            let workers = (0..2)
                .map(|h| RemoteWorker::start(net, h, &workers_ep, mode, "echo", false))
                .collect();
            wait_ready(&pool, 2);
            let security = match mode {
                Mode::Curve => Security::Client {
                    keys: net.keys.client.clone(),
                    server: net.keys.server.public,
                },
                Mode::Plain => Security::Insecure,
            };
            let client = RemoteBroker::connect(&endpoints.clients.unwrap(), security, true)
                .expect("connect the client");
            // Warm up: connections made, batch sizes learnt.
            run(&client, 20_000, tiny, TINY_WINDOW);
            (pool, workers, client)
        })
        .collect();
    for (label, n, payload, window) in [
        ("16-byte tasks", TINY_TASKS, tiny, TINY_WINDOW),
        (
            "1 MiB tasks (16-byte results; tasks/s = MiB/s)",
            BIG_TASKS,
            big,
            BIG_WINDOW,
        ),
    ] {
        let mut rates = [Vec::new(), Vec::new()];
        for rep in 0..REPS {
            let order: [usize; 2] = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                rates[i].push(run(&setups[i].2, n, payload, window));
            }
        }
        let (c, p) = (median(&rates[0]), median(&rates[1]));
        println!("{label}, {n} per run:");
        println!("  CURVE  {c:>8.0} tasks/s   (runs: {})", list(&rates[0]));
        println!("  plain  {p:>8.0} tasks/s   (runs: {})", list(&rates[1]));
        println!("  CURVE/plain = {:.2}", c / p);
    }
}

/// CPU-bound scaling: 1, 2 and 3 worker hosts, one worker process per host, each host
/// capped at `quota` CPUs by its cgroup. One broker per host count, all kept warm; the
/// host counts take turns within each rep.
fn scaling(net: &Net) {
    println!(
        "\n## CPU-bound scaling: tasks of {SPIN:?} CPU; one worker per host, each host capped at {} CPU (cgroup cpu quota); CURVE; {REPS} reps, medians",
        net.quota
    );
    let spin: &'static [u8] = Box::leak(
        (SPIN.as_micros() as u64)
            .to_le_bytes()
            .to_vec()
            .into_boxed_slice(),
    );
    let setups: Vec<(RawPool, Vec<RemoteWorker>)> = (1..=3)
        .map(|hosts| {
            let pool = broker(net, Mode::Curve);
            let endpoint = pool.tcp_endpoints().workers.clone().unwrap();
            let workers = (0..hosts)
                .map(|h| RemoteWorker::start(net, h, &endpoint, Mode::Curve, "spin", true))
                .collect();
            wait_ready(&pool, hosts as u64);
            (pool, workers)
        })
        .collect();
    let mut rates = [Vec::new(), Vec::new(), Vec::new()];
    for rep in 0..REPS {
        for i in 0..3 {
            // Rotate the order so no host count always runs first.
            let h = (i + rep) % 3;
            let n = SPIN_TASKS_PER_HOST * (h as u64 + 1);
            rates[h].push(run_spin(&setups[h].0, n, spin));
        }
    }
    let medians: Vec<f64> = rates.iter().map(|r| median(r)).collect();
    println!("hosts  CPUs  tasks/s  speedup  ideal tasks/s  efficiency   (runs)");
    for (h, (rate, r)) in medians.iter().zip(&rates).enumerate() {
        let hosts = h as f64 + 1.0;
        let ideal = net.quota * hosts / SPIN.as_secs_f64();
        println!(
            "{:>5}  {:>4.1}  {rate:>7.1}  {:>6.2}×  {ideal:>13.1}  {:>9.1} %   ({})",
            h + 1,
            net.quota * hosts,
            rate / medians[0],
            100.0 * rate / ideal,
            list(r)
        );
    }
}

/// Streams `n` spin tasks (each the same 8 bytes: its CPU time in µs); tasks/s.
fn run_spin(broker: &impl BrokerAccess, n: u64, task: &'static [u8]) -> f64 {
    let started = Instant::now();
    let stream = broker
        .stream(
            0..n,
            64,
            true,
            Box::new(move |_: u64, buf: &mut Vec<u8>| {
                buf.extend_from_slice(task);
                Ok(())
            }),
            Box::new(|_: &[u8]| Ok(())),
        )
        .expect("stream");
    let mut count = 0u64;
    for outcome in stream {
        outcome.expect("task");
        count += 1;
    }
    assert_eq!(count, n);
    n as f64 / started.elapsed().as_secs_f64()
}

/// Burns `d` of this thread's CPU time (not wall time: a throttled worker takes longer).
fn spin_cpu(d: Duration) {
    let until = thread_cpu() + d;
    while thread_cpu() < until {
        std::hint::spin_loop();
    }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn median(v: &[f64]) -> f64 {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default()
}
