//! How the broker's cost grows with the number of workers: tasks that sleep 10 ms, run on
//! 2, 16, 128 and 1,000 workers, and the CPU time the broker's thread spends per task.
//!
//!     cargo bench -p zerotasq --bench broker_scaling               # 2, 16, 128, 1000
//!     cargo bench -p zerotasq --bench broker_scaling -- 2 1000     # chosen sizes
//!
//! Workers are threads, a hundred to a process ("hosts": this binary re-executed), each
//! running the engine's own worker loop (`serve_remote_worker`) against the pool's ipc
//! endpoint; one more is the pool's in-process thread worker. The broker thread's CPU is
//! read from `/proc/self/task/<tid>/schedstat` around each measured stream (the median of
//! three is reported), so the pool's start-up and the workers' registration are not
//! counted; then, with the pool idle for two seconds, the share of a core it still uses
//! (heartbeats, bookkeeping). Two cores cannot keep 1,000 sleeping workers busy (about
//! 100,000 tasks/s), so the large sizes run as fast as the machine allows; the per-task
//! figure is what is compared. Not a timed test: it asserts nothing, it measures.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zerotasq::{Pool, Security, Worker};

const SIZES: [usize; 4] = [2, 16, 128, 1000];
const TASK: Duration = Duration::from_millis(10);
/// Measured streams per size; the median is reported.
const REPS: usize = 3;
/// How long each pool sits idle after its stream, for the broker's idle cost.
const IDLE: Duration = Duration::from_secs(2);
/// Worker threads per host process.
const PER_HOST: usize = 100;
/// The broker thread's name (set where the pool starts it).
const BROKER_THREAD: &str = "zerotasq-broker";

/// Sleeps for the given milliseconds.
#[derive(Serialize, Deserialize)]
struct Nap(u64);

struct Sleeper;

impl Worker for Sleeper {
    type Config = ();
    type Input = Nap;
    type Output = ();
    type Error = String;

    fn init(_: ()) -> Result<Self, String> {
        Ok(Sleeper)
    }

    fn process(&mut self, nap: Nap) -> Result<(), String> {
        std::thread::sleep(Duration::from_millis(nap.0));
        Ok(())
    }
}

fn main() {
    zerotasq::serve_if_worker();
    if let (Ok(endpoint), Ok(count)) = (
        std::env::var("BENCH_HOST_ENDPOINT"),
        std::env::var("BENCH_HOST_WORKERS"),
    ) {
        host(&endpoint, count.parse().expect("BENCH_HOST_WORKERS"));
    }
    raise_fd_limit();
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        SIZES.to_vec()
    } else {
        sizes
    };
    println!(
        "machine: {} cores; tasks sleep {TASK:?}; load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    println!(
        "{:>8} {:>7} {:>8} {:>9} {:>9} {:>15} {:>8} {:>7}",
        "workers", "tasks", "wall s", "tasks/s", "broker %", "broker µs/task", "× first", "idle %"
    );
    let mut first = None;
    for n in sizes {
        let m = measure(n);
        let per_task = m.per_task();
        let base = *first.get_or_insert(per_task);
        println!(
            "{:>8} {:>7} {:>8.2} {:>9.0} {:>8.1}% {:>15.1} {:>7.2}× {:>6.2}%",
            n,
            m.tasks,
            m.wall.as_secs_f64(),
            m.tasks as f64 / m.wall.as_secs_f64(),
            100.0 * m.broker_cpu.as_secs_f64() / m.wall.as_secs_f64(),
            per_task,
            per_task / base,
            100.0 * m.idle_cpu
        );
    }
}

struct Measure {
    tasks: u64,
    wall: Duration,
    broker_cpu: Duration,
    /// Share of one core the broker thread used while the pool sat idle.
    idle_cpu: f64,
}

impl Measure {
    /// The broker thread's CPU per task, in microseconds.
    fn per_task(&self) -> f64 {
        self.broker_cpu.as_secs_f64() * 1e6 / self.tasks as f64
    }
}

/// One size: a pool with `n` workers, warmed up, then `REPS` streams measured; the one with
/// the median broker CPU per task.
fn measure(n: usize) -> Measure {
    // Enough in flight for every worker's two tasks of credit, and then some.
    let window = (4 * n).max(1024);
    let pool = Pool::<Sleeper>::builder(())
        .threads(1)
        .window(window)
        .build()
        .expect("pool");
    let hosts = start_hosts(pool.raw().worker_endpoint(), n - 1);
    let until = Instant::now() + Duration::from_secs(120);
    while pool.stats().workers_alive < n {
        assert!(Instant::now() < until, "workers did not all register");
        std::thread::sleep(Duration::from_millis(20));
    }
    let nap = TASK.as_millis() as u64;
    let run = |count: u64| {
        for outcome in pool.map_unordered((0..count).map(|_| Nap(nap))).unwrap() {
            outcome.expect("nap");
        }
    };
    // Every worker has run tasks (and reported its task time) before the measure.
    run(4 * n as u64);
    // Named by the broker thread itself once it runs: looked up after it has served.
    let tid = broker_tid().expect("the broker thread");
    // Two seconds of work if every worker were busy, within bounds: three seconds at 2
    // workers; at 1,000, what two cores get through in a few seconds.
    let ideal_rate = n as f64 / TASK.as_secs_f64();
    let tasks = ((2.0 * ideal_rate) as u64).clamp(600, 40_000);
    let mut reps: Vec<(Duration, Duration)> = (0..REPS)
        .map(|_| {
            let cpu = thread_cpu(tid);
            let started = Instant::now();
            run(tasks);
            (started.elapsed(), thread_cpu(tid) - cpu)
        })
        .collect();
    reps.sort_by_key(|(_, cpu)| *cpu);
    let (wall, broker_cpu) = reps[reps.len() / 2];
    // Then nothing to do: what remains is heartbeats and the broker's own bookkeeping.
    let cpu = thread_cpu(tid);
    let started = Instant::now();
    std::thread::sleep(IDLE);
    let idle_cpu = (thread_cpu(tid) - cpu).as_secs_f64() / started.elapsed().as_secs_f64();
    assert_eq!(pool.stats().workers_alive, n, "no worker was lost");
    for mut h in hosts {
        let _ = h.kill();
        let _ = h.wait();
    }
    drop(pool);
    Measure {
        tasks,
        wall,
        broker_cpu,
        idle_cpu,
    }
}

/// Re-executes this binary as host processes with `count` workers in all.
fn start_hosts(endpoint: &str, count: usize) -> Vec<Child> {
    let exe = std::env::current_exe().unwrap();
    (0..count.div_ceil(PER_HOST))
        .map(|h| {
            let here = PER_HOST.min(count - h * PER_HOST);
            Command::new(&exe)
                .env("BENCH_HOST_ENDPOINT", endpoint)
                .env("BENCH_HOST_WORKERS", here.to_string())
                .spawn()
                .expect("start a host")
        })
        .collect()
}

/// A host: `count` workers, each a thread with its own worker loop, until killed.
fn host(endpoint: &str, count: usize) -> ! {
    // SAFETY: asks the kernel to kill this process when the bench dies; no memory involved.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    raise_fd_limit();
    for _ in 0..count {
        let endpoint = endpoint.to_string();
        std::thread::spawn(move || {
            let e = zerotasq::serve_remote_worker::<Sleeper>(&endpoint, Security::Insecure, ());
            eprintln!("bench worker ended: {e:?}");
        });
        // Routing ids carry the time in nanoseconds; spacing the starts keeps them apart.
        std::thread::sleep(Duration::from_micros(50));
    }
    loop {
        std::thread::park();
    }
}

/// The broker thread of the only pool alive in this process.
fn broker_tid() -> Option<u32> {
    std::fs::read_dir("/proc/self/task")
        .ok()?
        .find_map(|entry| {
            let entry = entry.ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            (comm.trim_end() == BROKER_THREAD)
                .then(|| entry.file_name().to_str()?.parse().ok())
                .flatten()
        })
}

/// CPU time a thread of this process has used (schedstat's first field, in nanoseconds).
fn thread_cpu(tid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .expect("read schedstat");
    let ns = stat
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .expect("schedstat's run time");
    Duration::from_nanos(ns)
}

/// Every worker is a few sockets here or in a host; lift the soft limit to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls read or write the rlimit we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
