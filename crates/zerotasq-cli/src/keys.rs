//! CURVE keys on the command line: `zerotasq keygen`, and the security of the commands that
//! reach a remote broker (`map --connect`, `worker`) or listen on TCP (`broker`).

use std::path::{Path, PathBuf};

use zerotasq::{KeyPair, Security};

use crate::args::{KeygenArgs, RemoteArgs};
use crate::run::{say, EXIT_USAGE};

/// `NAME` + `suffix`, as `KeyPair::write` names its files.
fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Runs `zerotasq keygen`; returns the exit status.
pub fn keygen(args: KeygenArgs) -> i32 {
    let public = with_suffix(&args.name, ".key");
    let secret = with_suffix(&args.name, ".key_secret");
    if !args.force {
        for path in [&public, &secret] {
            if path.symlink_metadata().is_ok() {
                say(&format!(
                    "zerotasq: {} exists; not overwriting it (use --force)",
                    path.display()
                ));
                return EXIT_USAGE;
            }
        }
    } else {
        // A fresh file, so the secret one is created with mode 0600 whatever it was.
        let _ = std::fs::remove_file(&secret);
    }
    let written = KeyPair::generate().and_then(|keys| keys.write(&args.name).map(|()| keys));
    match written {
        Ok(keys) => {
            say(&format!(
                "zerotasq: wrote {} (public: {}) and {} (secret, keep it)",
                public.display(),
                keys.public,
                secret.display()
            ));
            0
        }
        Err(e) => {
            say(&format!("zerotasq: {e}"));
            EXIT_USAGE
        }
    }
}

/// The security of a command reaching a remote broker.
pub fn client_security(endpoint: &str, remote: &RemoteArgs) -> Result<Security, String> {
    if !remote.insecure && (remote.server_key.is_none() || remote.key.is_none()) {
        return Err(format!(
            "connecting to {endpoint} needs --server-key (the broker's NAME.key) and --key \
             (our NAME.key_secret), or --insecure for plain TCP"
        ));
    }
    zerotasq::client_security(
        endpoint,
        remote.server_key.as_deref(),
        remote.key.as_deref(),
        remote.insecure,
        remote.allow_insecure_remote,
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerotasq::read_public_keys;

    #[test]
    fn keys_with_hash_signs_survive_comments() {
        let dir = std::env::temp_dir().join(format!("zerotasq-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = loop {
            let key = KeyPair::generate().unwrap().public;
            if key.to_string().contains('#') {
                break key;
            }
        };
        let file = dir.join("allowed");
        std::fs::write(
            &file,
            format!("# the team\n\n{key}  # alice\n   # bob left\n"),
        )
        .unwrap();
        assert_eq!(read_public_keys(&file).unwrap(), vec![key]);
        std::fs::write(&file, "not-a-key\n").unwrap();
        assert!(read_public_keys(&file)
            .unwrap_err()
            .to_string()
            .contains(":1:"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
