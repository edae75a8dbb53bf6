//! Ctrl-C and friends: SIGINT, SIGTERM and SIGHUP are blocked in every thread (call
//! [`block`] before starting any) and taken by one thread with `sigwait`, which hands them
//! to the main thread as ordinary messages. A blocked mask survives `exec`: the workers the
//! engine's supervisor starts clear it first thing (`child::prepare_worker_process`).

use std::sync::mpsc;

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn set() -> libc::sigset_t {
    // SAFETY: a zeroed sigset_t is then initialised by sigemptyset/sigaddset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Blocks the signals in this thread and in the threads it starts from now on.
pub fn block() {
    let set = set();
    // SAFETY: changes this thread's signal mask only.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Starts the thread that waits for the signals; each one received is sent as `wrap(sig)`.
pub fn forward<T: Send + 'static>(tx: mpsc::Sender<T>, wrap: fn(i32) -> T) {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let set = set();
            let mut sig: libc::c_int = 0;
            // SAFETY: waits for one of the blocked signals in `set`.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 && tx.send(wrap(sig)).is_err() {
                return;
            }
        })
        .expect("start the signal thread");
}
