//! CURVE keys on the command line: `zerotasq keygen`, and the security of the commands that
//! reach a remote broker (`map --connect`, `worker`) or listen on TCP (`broker`).

use std::path::{Path, PathBuf};

use zerotasq::transport::curve::check_insecure;
use zerotasq::{KeyPair, PublicKey, Security};

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

/// Reads public keys, one per line (`#` comments), naming the file and line of a bad one.
pub fn read_public_keys(path: &Path) -> Result<Vec<PublicKey>, String> {
    zerotasq::transport::curve::read_public_keys(path).map_err(|e| e.to_string())
}

/// A public key from a file written by `keygen` (its first key), or given as Z85 text.
pub fn public_key(given: &Path) -> Result<PublicKey, String> {
    if given.exists() {
        let keys = read_public_keys(given)?;
        return keys
            .into_iter()
            .next()
            .ok_or_else(|| format!("{}: no public key in it", given.display()));
    }
    given.to_string_lossy().parse().map_err(|_| {
        format!(
            "{}: no such file (nor a Z85-encoded public key)",
            given.display()
        )
    })
}

/// Our key pair from a `.key_secret` file.
pub fn key_pair(path: &Path) -> Result<KeyPair, String> {
    KeyPair::read(path).map_err(|e| e.to_string())
}

/// The security of a client or worker reaching `endpoint`: CURVE with both keys, or plain
/// with `--insecure` (refused off loopback unless `--allow-insecure-remote`).
pub fn client_security(endpoint: &str, remote: &RemoteArgs) -> Result<Security, String> {
    if remote.insecure {
        check_insecure(endpoint, remote.allow_insecure_remote).map_err(|e| e.to_string())?;
        return Ok(Security::Insecure);
    }
    let (Some(server), Some(key)) = (&remote.server_key, &remote.key) else {
        return Err(format!(
            "connecting to {endpoint} needs --server-key (the broker's NAME.key) and --key \
             (our NAME.key_secret), or --insecure for plain TCP"
        ));
    };
    Ok(Security::Client {
        keys: key_pair(key)?,
        server: public_key(server)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(read_public_keys(&file).unwrap_err().contains(":1:"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
