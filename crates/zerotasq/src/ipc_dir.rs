//! The pool's private directory for its `ipc://` endpoint: created 0700 (only this user can
//! connect) under an unpredictable name, removed when the pool closes, removed by the
//! workers when the parent dies without closing it, and swept on a later start if all of
//! them died too. The owner holds an `flock` on the directory for as long as it lives: pids
//! say nothing across pid namespaces (containers sharing `/tmp`), a free lock does.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::Error;

const PREFIX: &str = "zerotasq-";
/// `mkdtemp` replaces these with random letters and digits.
const RANDOM: &str = "XXXXXX";
/// The socket file workers connect to, inside the directory.
pub const SOCKET_NAME: &str = "workers.sock";

/// A private directory, removed on drop.
#[derive(Debug)]
pub struct IpcDir {
    path: PathBuf,
    /// Held until the directory is gone: while it is held, no other pool sweeps it.
    _lock: File,
}

impl IpcDir {
    /// Creates `zerotasq-XXXXXX` under `$XDG_RUNTIME_DIR` or the temp dir, after removing
    /// directories of this user whose owner is gone.
    pub fn create() -> Result<IpcDir, Error> {
        let parent = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        sweep_abandoned(&parent);
        let template = parent.join(format!("{PREFIX}{RANDOM}"));
        let context = || format!("create a directory like {}", template.display());
        let mut name = CString::new(template.as_os_str().as_bytes())
            .map_err(|e| Error::io(context())(e.into()))?
            .into_bytes_with_nul();
        // SAFETY: `name` is a NUL-terminated template that mkdtemp fills in place. It picks
        // a name nobody can guess, makes it 0700 and retries while the name is taken.
        if unsafe { libc::mkdtemp(name.as_mut_ptr().cast()) }.is_null() {
            return Err(Error::io(context())(std::io::Error::last_os_error()));
        }
        name.pop();
        let path = PathBuf::from(OsString::from_vec(name));
        let locked = open_dir(&path).and_then(|dir| {
            // SAFETY: flock on a descriptor we own.
            match unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } {
                0 => Ok(dir),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
        match locked {
            Ok(lock) => Ok(IpcDir { path, _lock: lock }),
            Err(e) => {
                let _ = std::fs::remove_dir(&path);
                Err(Error::io(format!("lock {}", path.display()))(e))
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `ipc://` endpoint inside the directory.
    pub fn endpoint(&self) -> String {
        format!("ipc://{}", self.path.join(SOCKET_NAME).display())
    }
}

impl Drop for IpcDir {
    fn drop(&mut self) {
        // Before the lock goes with the fields.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The directory itself, opened to hold or test its lock (close-on-exec, so worker
/// processes do not inherit it; a symlink is refused).
fn open_dir(path: &Path) -> std::io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
}

/// Removes the directories this user's pools left behind: named as ours, owned by us, with
/// a socket (so their owner had locked them: the lock comes first), and a lock nobody holds.
/// Anything else — another user's, one being set up, one whose owner (or a process it
/// forked) still lives — is left alone.
fn sweep_abandoned(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(random) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        if random.len() != RANDOM.len() || !random.bytes().all(|b| b.is_ascii_alphanumeric()) {
            continue;
        }
        let path = entry.path();
        let Ok(dir) = open_dir(&path) else {
            continue;
        };
        // SAFETY: geteuid has no preconditions.
        let ours = dir
            .metadata()
            .is_ok_and(|m| m.uid() == unsafe { libc::geteuid() });
        if !ours || std::fs::symlink_metadata(path.join(SOCKET_NAME)).is_err() {
            continue;
        }
        // SAFETY: flock on a descriptor we own; the lock is held until `dir` drops, so two
        // pools starting at once do not both remove it.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

static ON_SIGTERM: OnceLock<(CString, CString)> = OnceLock::new();

/// In a worker process: on SIGTERM (the parent-death signal), remove the pool's socket file
/// and directory, then exit.
pub fn remove_on_sigterm(dir: &Path) {
    let socket = dir.join(SOCKET_NAME);
    let (Ok(socket), Ok(dir)) = (
        CString::new(socket.as_os_str().as_bytes()),
        CString::new(dir.as_os_str().as_bytes()),
    ) else {
        return;
    };
    if ON_SIGTERM.set((socket, dir)).is_err() {
        return;
    }
    extern "C" fn on_sigterm(_: libc::c_int) {
        if let Some((socket, dir)) = ON_SIGTERM.get() {
            // SAFETY: unlink, rmdir and _exit are async-signal-safe.
            unsafe {
                libc::unlink(socket.as_ptr());
                libc::rmdir(dir.as_ptr());
            }
        }
        // SAFETY: as above.
        unsafe { libc::_exit(128 + libc::SIGTERM) }
    }
    // SAFETY: installs a handler that only makes async-signal-safe calls.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigterm as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
    }
}
