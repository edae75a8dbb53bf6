//! The pool's private directory for its `ipc://` endpoint: created 0700 (only this user can
//! connect), removed when the pool closes, removed by the workers when the parent dies
//! without closing it, and swept on the next start if all of them died too.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::Error;

const PREFIX: &str = "zerotasq-";
/// The socket file workers connect to, inside the directory.
pub const SOCKET_NAME: &str = "workers.sock";

/// A private directory, removed on drop.
#[derive(Debug)]
pub struct IpcDir {
    path: PathBuf,
}

impl IpcDir {
    /// Creates `zerotasq-<pid>-<n>` under `$XDG_RUNTIME_DIR` or the temp dir, after removing
    /// directories left by processes that no longer exist.
    pub fn create(n: u64) -> Result<IpcDir, Error> {
        let parent = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        sweep_stale(&parent);
        let path = parent.join(format!("{PREFIX}{}-{n}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(Error::io(format!("create {}", path.display())))?;
        Ok(IpcDir { path })
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
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes `zerotasq-<pid>-*` directories whose process is gone.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
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
