//! Workers shared by the integration tests. Each test binary re-executes itself as its
//! worker processes; the constructor below turns such a child into a worker before the
//! test harness starts.

#![allow(dead_code)]

use std::time::Duration;

use serde::{Deserialize, Serialize};
use zerotasq::{KeyPair, Worker};

#[ctor::ctor]
fn worker_entry() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    zerotasq::serve_if_worker();
}

/// What a task asks the test worker to do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Job {
    /// Return the number.
    Echo(u64),
    /// Burn CPU for this many microseconds, then return the number.
    Spin(u64, u64),
    /// Sleep this many milliseconds, then return the number.
    Sleep(u64, u64),
    /// Panic with this message.
    Panic(String),
    /// Return an error with this message.
    Fail(String),
    /// Kill the worker process (as an OOM kill would).
    Die,
    /// Return this process's pid.
    Pid,
    /// Sleep this many milliseconds, then return this process's pid.
    SleepPid(u64),
    /// Write this process's pid to the file (so a test knows which worker holds the task),
    /// sleep this many milliseconds, then return the number.
    Announce(u64, u64, std::path::PathBuf),
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Config {
    /// `init` fails with this message.
    pub fail_init: Option<String>,
    /// `init` takes this long (a model being loaded).
    pub init_ms: u64,
    /// `init` fails while this file exists (a model not yet in place).
    pub fail_while: Option<std::path::PathBuf>,
}

pub struct TestWorker;

impl Worker for TestWorker {
    type Config = Config;
    type Input = Job;
    type Output = u64;
    type Error = String;

    fn init(config: Config) -> Result<Self, String> {
        std::thread::sleep(Duration::from_millis(config.init_ms));
        if config.fail_while.as_ref().is_some_and(|f| f.exists()) {
            return Err("the model is not in place yet".into());
        }
        match config.fail_init {
            Some(message) => Err(message),
            None => Ok(TestWorker),
        }
    }

    fn process(&mut self, job: Job) -> Result<u64, String> {
        match job {
            Job::Echo(n) => Ok(n),
            Job::Spin(n, us) => {
                let until = std::time::Instant::now() + Duration::from_micros(us);
                while std::time::Instant::now() < until {
                    std::hint::spin_loop();
                }
                Ok(n)
            }
            Job::Sleep(n, ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                Ok(n)
            }
            Job::Panic(message) => panic!("{message}"),
            Job::Fail(message) => Err(message),
            Job::Die => {
                // SAFETY: ends this worker process abruptly, like the OOM killer.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                unreachable!()
            }
            Job::Pid => Ok(std::process::id() as u64),
            Job::SleepPid(ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                Ok(std::process::id() as u64)
            }
            Job::Announce(n, ms, file) => {
                std::fs::write(file, std::process::id().to_string()).map_err(|e| e.to_string())?;
                std::thread::sleep(Duration::from_millis(ms));
                Ok(n)
            }
        }
    }
}

/// Whether a process is still alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Runs `n` echo jobs through `pool` within a minute: the outputs (all must succeed) and the
/// broker's figures at the end.
pub fn echo_run(pool: zerotasq::Pool<TestWorker>, n: u64) -> (Vec<u64>, zerotasq::BrokerStats) {
    within(Duration::from_secs(60), move || {
        let out: Vec<u64> = pool
            .map((0..n).map(Job::Echo))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        (out, pool.stats())
    })
}

/// Runs `f` on a thread and fails the test if it takes longer than `limit` (a hang).
pub fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not finish within {limit:?}"))
}

/// The remote-worker role: a separate process that joins a pool over TCP with CURVE.
#[ctor::ctor]
fn remote_worker_role() {
    let Some(endpoint) = std::env::var_os("ZT_REMOTE_ENDPOINT") else {
        return;
    };
    if std::env::var_os("ZEROTASQ_ENTRY").is_some() {
        return;
    }
    let keys = KeyPair::read(std::path::Path::new(
        &std::env::var("ZT_REMOTE_KEY").unwrap(),
    ))
    .unwrap();
    let server = std::env::var("ZT_REMOTE_SERVER").unwrap().parse().unwrap();
    let err = zerotasq::serve_remote_worker::<TestWorker>(
        endpoint.to_str().unwrap(),
        zerotasq::Security::Client { keys, server },
        Config::default(),
    );
    eprintln!("remote worker: {err:?}");
    std::process::exit(1);
}

pub struct Keys {
    pub server: KeyPair,
    pub worker: KeyPair,
    pub client: KeyPair,
    pub dir: std::path::PathBuf,
}

pub fn keys() -> Keys {
    let dir = std::env::temp_dir().join(format!(
        "zt-remote-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
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

/// Starts a remote worker process against `endpoint`; killed when the guard drops.
pub struct RemoteWorker(pub std::process::Child);

impl RemoteWorker {
    pub fn start(endpoint: &str, k: &Keys) -> RemoteWorker {
        Self::start_in(None, endpoint, k)
    }

    /// Starts it inside network namespace `netns` (another host), if given.
    pub fn start_in(netns: Option<&str>, endpoint: &str, k: &Keys) -> RemoteWorker {
        let exe = std::env::current_exe().unwrap();
        let mut command = match netns {
            Some(ns) => {
                let mut c = std::process::Command::new("ip");
                c.args(["netns", "exec", ns]).arg(exe);
                c
            }
            None => std::process::Command::new(exe),
        };
        RemoteWorker(
            command
                .env("ZT_REMOTE_ENDPOINT", endpoint)
                .env("ZT_REMOTE_KEY", k.dir.join("worker.key_secret"))
                .env("ZT_REMOTE_SERVER", k.server.public.to_string())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for RemoteWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Streams `n` byte tasks (each index, little-endian) through `broker`, in order; a task's
/// result is the worker's answer as bytes.
pub fn bytes_stream(
    broker: &impl zerotasq::BrokerAccess,
    n: u32,
) -> zerotasq::Stream<impl Iterator<Item = Vec<u8>>, Vec<u8>> {
    broker
        .stream(
            (0..n).map(|i| i.to_le_bytes().to_vec()),
            64,
            true,
            Box::new(|item: Vec<u8>, buf: &mut Vec<u8>| {
                buf.extend_from_slice(&item);
                Ok(())
            }),
            Box::new(|bytes: &[u8]| Ok(bytes.to_vec())),
        )
        .unwrap()
}

/// Adds `n` in-process workers to `spec`, each answering a task by `answer`.
pub fn thread_workers(
    spec: &mut zerotasq::PoolSpec,
    n: usize,
    answer: impl Fn(&[u8], &mut Vec<u8>) + Clone + Send + 'static,
) {
    for _ in 0..n {
        let answer = answer.clone();
        spec.threads.push(Box::new(move |ctx, opts, _stop| {
            let _ = zerotasq::worker_runtime::serve(
                ctx,
                &opts,
                &mut |task: &[u8], out: &mut Vec<u8>| {
                    answer(task, out);
                    Ok(())
                },
            );
        }));
    }
}
