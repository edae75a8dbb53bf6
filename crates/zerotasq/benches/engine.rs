//! The engine's benchmark: ZeroTasQ side by side with the transport's own limit (a bare
//! libzmq DEALER fan-out echo over ipc) and rayon, in one run, printed as ratios.
//!
//!     cargo bench -p zerotasq --bench engine            # everything
//!     cargo bench -p zerotasq --bench engine -- tiny    # one part: tiny | cpu | memory
//!
//! Not a timed test: it asserts nothing, it measures.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zerotasq::{Pool, Worker};

const TINY_TASKS: u64 = 1_000_000;
const BARE_WINDOW: usize = 256;
const CPU_TASKS: u64 = 400;
const CPU_TASK: Duration = Duration::from_millis(5);
const WORKERS: usize = 2;

/// What the benchmark's worker does with a task.
#[derive(Serialize, Deserialize)]
enum Task {
    /// Return the 16 bytes unchanged.
    Echo([u8; 16]),
    /// Burn this many microseconds of CPU.
    Spin(u64),
}

struct BenchWorker;

impl Worker for BenchWorker {
    type Config = ();
    type Input = Task;
    type Output = [u8; 16];
    type Error = String;

    fn init(_: ()) -> Result<Self, String> {
        Ok(BenchWorker)
    }

    fn process(&mut self, task: Task) -> Result<[u8; 16], String> {
        Ok(match task {
            Task::Echo(bytes) => bytes,
            Task::Spin(us) => {
                spin_cpu(Duration::from_micros(us));
                [0; 16]
            }
        })
    }
}

/// Burns `d` of this thread's CPU time (not wall time, so a busy machine does not shorten
/// the task).
fn spin_cpu(d: Duration) {
    let until = thread_cpu() + d;
    while thread_cpu() < until {
        std::hint::spin_loop();
    }
}

/// CPU time of this whole process (the client's and the broker's threads).
fn process_cpu() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn thread_cpu() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(id, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn payload(i: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&i.to_le_bytes());
    b
}

fn main() {
    zerotasq::serve_if_worker();
    if let Ok(endpoint) = std::env::var("BENCH_BARE_ECHO") {
        bare_echo_worker(&endpoint);
        return;
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |part: &str| filter.is_empty() || filter.iter().any(|f| f == part);
    println!(
        "machine: {} cores, {}; {WORKERS} worker processes",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_string())
            )
            .unwrap_or_default()
    );
    if wants("tiny") {
        tiny();
    }
    if wants("cpu") {
        cpu();
    }
    if wants("memory") {
        memory();
    }
}

/// Tiny tasks: ZeroTasQ ordered and unordered against the bare fan-out and rayon.
fn tiny() {
    println!("\n## tiny tasks: {TINY_TASKS} × 16-byte echo");
    let bare = bare_fanout(TINY_TASKS);
    println!(
        "bare libzmq DEALER fan-out, ipc, window {BARE_WINDOW}: {:>10.0} tasks/s",
        bare
    );

    let rayon = rayon_rate(TINY_TASKS);
    println!(
        "rayon par_bridge (threads, same closure):     {:>10.0} tasks/s",
        rayon
    );

    let pool = Pool::<BenchWorker>::builder(())
        .processes(WORKERS)
        .build()
        .expect("pool");
    // Warm up: workers started and connected.
    pool.map((0..1000).map(|i| Task::Echo(payload(i))))
        .unwrap()
        .for_each(drop);
    for ordered in [true, false] {
        let started = Instant::now();
        let input = (0..TINY_TASKS).map(|i| Task::Echo(payload(i)));
        let stream = if ordered {
            pool.map(input)
        } else {
            pool.map_unordered(input)
        }
        .unwrap();
        let mut n = 0u64;
        for outcome in stream {
            outcome.expect("echo");
            n += 1;
        }
        assert_eq!(n, TINY_TASKS);
        let rate = n as f64 / started.elapsed().as_secs_f64();
        println!(
            "zerotasq {:<9} window 1024:               {:>10.0} tasks/s = {:.2}× bare fan-out, {:.3}× rayon",
            if ordered { "ordered" } else { "unordered" },
            rate,
            rate / bare,
            rate / rayon
        );
    }
}

/// The transport's own limit: one DEALER fanning 16-byte messages out to two echo processes
/// over ipc, at most `BARE_WINDOW` in flight.
fn bare_fanout(count: u64) -> f64 {
    let dir = std::env::temp_dir().join(format!("zerotasq-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let endpoint = format!("ipc://{}/bare.sock", dir.display());
    let ctx = zmq::Context::new();
    let socket = ctx.socket(zmq::DEALER).unwrap();
    socket.set_sndhwm(100_000).unwrap();
    socket.set_rcvhwm(100_000).unwrap();
    socket.bind(&endpoint).unwrap();
    let mut workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .env("BENCH_BARE_ECHO", &endpoint)
                .spawn()
                .unwrap()
        })
        .collect();
    // Wait for both peers: a round trip through each.
    for _ in 0..WORKERS * 4 {
        socket.send(&payload(0)[..], 0).unwrap();
        socket.recv_bytes(0).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let (mut sent, mut received) = (0u64, 0u64);
    while received < count {
        while sent < count && (sent - received) < BARE_WINDOW as u64 {
            socket.send(&payload(sent)[..], 0).unwrap();
            sent += 1;
        }
        socket.recv_bytes(0).unwrap();
        received += 1;
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    rate
}

fn bare_echo_worker(endpoint: &str) {
    let ctx = zmq::Context::new();
    let socket = ctx.socket(zmq::DEALER).unwrap();
    socket.connect(endpoint).unwrap();
    loop {
        let msg = socket.recv_bytes(0).unwrap();
        socket.send(msg, 0).unwrap();
    }
}

fn rayon_rate(count: u64) -> f64 {
    use rayon::iter::{ParallelBridge, ParallelIterator};
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(WORKERS)
        .build()
        .unwrap();
    let started = Instant::now();
    let n = pool.install(|| {
        (0..count)
            .par_bridge()
            .map(|i| {
                let mut w = BenchWorker;
                w.process(Task::Echo(payload(i))).unwrap()
            })
            .count()
    });
    assert_eq!(n as u64, count);
    count as f64 / started.elapsed().as_secs_f64()
}

/// CPU-bound tasks: parallel efficiency against total CPU / workers, with and without the
/// pool's start-up.
fn cpu() {
    println!("\n## CPU-bound: {CPU_TASKS} × {CPU_TASK:?} of CPU, {WORKERS} workers");
    let ideal = CPU_TASK.as_secs_f64() * CPU_TASKS as f64 / WORKERS as f64;
    let started = Instant::now();
    let pool = Pool::<BenchWorker>::builder(())
        .processes(WORKERS)
        .build()
        .expect("pool");
    let input = (0..CPU_TASKS).map(|_| Task::Spin(CPU_TASK.as_micros() as u64));
    let mut first = None;
    for outcome in pool.map(input).unwrap() {
        outcome.expect("spin");
        first.get_or_insert_with(Instant::now);
    }
    let total = started.elapsed().as_secs_f64();
    println!(
        "ideal {ideal:.3} s; wall {total:.3} s including start-up: efficiency {:.1} %",
        100.0 * ideal / total
    );
    // Again on the warm pool: the steady state.
    let cpu_before = process_cpu();
    let started = Instant::now();
    let input = (0..CPU_TASKS).map(|_| Task::Spin(CPU_TASK.as_micros() as u64));
    pool.map(input).unwrap().for_each(|o| {
        o.expect("spin");
    });
    let warm = started.elapsed().as_secs_f64();
    let parent_cpu = process_cpu() - cpu_before;
    println!(
        "warm pool: wall {warm:.3} s: efficiency {:.1} % (client and broker threads: {:.1} ms of CPU)",
        100.0 * ideal / warm,
        parent_cpu.as_secs_f64() * 1e3
    );
}

/// A 10-million-task lazy stream: resident memory at 1M and at 10M tasks.
fn memory() {
    const TOTAL: u64 = 10_000_000;
    println!("\n## memory: a lazy stream of {TOTAL} tiny tasks");
    let pool = Pool::<BenchWorker>::builder(())
        .processes(WORKERS)
        .build()
        .expect("pool");
    let started = Instant::now();
    let mut at_1m = 0;
    let mut n = 0u64;
    for outcome in pool
        .map((0..TOTAL).map(|i| Task::Echo(payload(i))))
        .unwrap()
    {
        outcome.expect("echo");
        n += 1;
        if n == 1_000_000 {
            at_1m = rss_kib();
        }
    }
    let at_10m = rss_kib();
    println!(
        "RSS at 1M tasks: {} KiB; at 10M: {} KiB; growth {:+.1} % ({:.0} tasks/s)",
        at_1m,
        at_10m,
        100.0 * (at_10m as f64 - at_1m as f64) / at_1m as f64,
        n as f64 / started.elapsed().as_secs_f64()
    );
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
