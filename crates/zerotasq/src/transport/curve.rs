//! CURVE security: key pairs and key files, socket set-up for servers and clients, and the
//! ZAP handler that admits only listed client keys (without one, libzmq admits anyone who
//! knows the server's public key).

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{zmq_err, Context, Socket};
use crate::error::Error;

/// The ZAP domain our servers authenticate in.
const ZAP_DOMAIN: &str = "zerotasq";
/// Where libzmq sends authentication requests, per context.
const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";

/// A CURVE public key (32 bytes; Z85 text in files and on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

/// A CURVE key pair.
#[derive(Clone)]
pub struct KeyPair {
    /// The half that peers are given.
    pub public: PublicKey,
    secret: [u8; 32],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair({})", self.public)
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&zmq::z85_encode(&self.0).expect("32 bytes encode"))
    }
}

impl std::str::FromStr for PublicKey {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        decode_key(text.trim()).map(PublicKey)
    }
}

fn decode_key(text: &str) -> Result<[u8; 32], Error> {
    let bytes = zmq::z85_decode(text)
        .map_err(|_| Error::Config(format!("{text:?} is not a Z85-encoded CURVE key")))?;
    bytes
        .try_into()
        .map_err(|_| Error::Config(format!("{text:?} is not a 32-byte CURVE key")))
}

impl KeyPair {
    /// A fresh key pair.
    pub fn generate() -> Result<KeyPair, Error> {
        let pair = zmq::CurveKeyPair::new().map_err(zmq_err("generate a CURVE key pair"))?;
        Ok(KeyPair {
            public: PublicKey(pair.public_key),
            secret: pair.secret_key,
        })
    }

    /// Writes `<base>.key` (the public key, to share) and `<base>.key_secret` (mode 0600).
    pub fn write(&self, base: &Path) -> Result<(), Error> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let with = |suffix: &str| {
            let mut name = base.as_os_str().to_owned();
            name.push(suffix);
            std::path::PathBuf::from(name)
        };
        let public = with(".key");
        std::fs::write(&public, format!("{}\n", self.public))
            .map_err(Error::io(format!("write {}", public.display())))?;
        let secret_path = with(".key_secret");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&secret_path)
            .map_err(Error::io(format!("write {}", secret_path.display())))?;
        let secret = zmq::z85_encode(&self.secret).expect("32 bytes encode");
        writeln!(file, "public = {}\nsecret = {secret}", self.public)
            .map_err(Error::io(format!("write {}", secret_path.display())))
    }

    /// Reads a `.key_secret` file written by [`KeyPair::write`].
    pub fn read(path: &Path) -> Result<KeyPair, Error> {
        let text =
            std::fs::read_to_string(path).map_err(Error::io(format!("read {}", path.display())))?;
        let field = |name: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim().to_string())
                .ok_or_else(|| Error::Config(format!("{}: no `{name} = …` line", path.display())))
        };
        Ok(KeyPair {
            public: field("public")?.parse()?,
            secret: decode_key(&field("secret")?)?,
        })
    }
}

/// Reads public keys, one per line, from a file. `#` starts a comment at the start of a line
/// or after a blank (it is also a Z85 character, so not inside a key).
pub fn read_public_keys(path: &Path) -> Result<Vec<PublicKey>, Error> {
    let text =
        std::fs::read_to_string(path).map_err(Error::io(format!("read {}", path.display())))?;
    parse_public_keys(&text)
        .map_err(|(line, e)| Error::Config(format!("{}:{line}: {e}", path.display())))
}

/// The keys, or the 1-based line of the first bad one with its error.
fn parse_public_keys(text: &str) -> Result<Vec<PublicKey>, (usize, Error)> {
    text.lines()
        .enumerate()
        .filter_map(|(n, line)| Some((n + 1, line.split_whitespace().next()?)))
        .filter(|(_, word)| !word.starts_with('#'))
        .map(|(n, key)| key.parse().map_err(|e| (n, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lists_allow_comments_and_keys_containing_hashes() {
        let with_hash = PublicKey([7; 32]);
        let mut key = with_hash.to_string();
        // Find a key whose Z85 text holds a '#', to prove it is not cut there.
        let mut n = 0u8;
        while !key.contains('#') {
            n += 1;
            key = PublicKey([n; 32]).to_string();
        }
        let text = format!("# workers\n\n{key}   # host b\n  {with_hash}\n");
        let keys = parse_public_keys(&text).unwrap();
        assert_eq!(keys, vec![key.parse().unwrap(), with_hash]);
        assert_eq!(parse_public_keys("# ok\nnot-a-key\n").unwrap_err().0, 2);
    }
}

/// How a socket secures its TCP connections.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Security {
    /// Plain text: only for loopback, or when explicitly allowed.
    Insecure,
    /// A server (the broker): its key pair; clients must hold one of `allowed`.
    Server {
        /// This side's key pair.
        keys: KeyPair,
        /// The public keys of the peers admitted; every other peer is refused.
        allowed: Vec<PublicKey>,
    },
    /// A client or worker: its key pair and the server's public key.
    Client {
        /// This side's key pair.
        keys: KeyPair,
        /// The broker's public key.
        server: PublicKey,
    },
}

impl Socket {
    /// Applies `security` (before bind/connect).
    pub fn secure(&self, security: &Security) -> Result<(), Error> {
        let apply = || -> Result<(), zmq::Error> {
            match security {
                Security::Insecure => {}
                Security::Server { keys, .. } => {
                    self.0.set_zap_domain(ZAP_DOMAIN)?;
                    self.0.set_curve_server(true)?;
                    self.0.set_curve_secretkey(&keys.secret)?;
                }
                Security::Client { keys, server } => {
                    self.0.set_curve_serverkey(&server.0)?;
                    self.0.set_curve_publickey(&keys.public.0)?;
                    self.0.set_curve_secretkey(&keys.secret)?;
                }
            }
            Ok(())
        };
        apply().map_err(zmq_err("set CURVE options"))
    }
}

/// The ZAP handler of one context: answers libzmq's authentication requests until dropped.
pub struct ZapHandler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ZapHandler {
    /// Starts admitting CURVE clients whose public key is in `allowed`, and no one else.
    pub fn start(ctx: &Context, allowed: &[PublicKey]) -> Result<ZapHandler, Error> {
        let socket = ctx
            .0
            .socket(zmq::REP)
            .map_err(zmq_err("create the ZAP socket"))?;
        socket.set_linger(0).map_err(zmq_err("set ZAP linger"))?;
        socket
            .bind(ZAP_ENDPOINT)
            .map_err(zmq_err("bind the ZAP handler"))?;
        let allowed: HashSet<[u8; 32]> = allowed.iter().map(|k| k.0).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("zerotasq-zap".into())
            .spawn(move || {
                while !thread_stop.load(Ordering::Acquire) {
                    match socket.poll(zmq::POLLIN, 100) {
                        Ok(0) => continue,
                        Ok(_) => {}
                        Err(_) => return,
                    }
                    let Ok(request) = socket.recv_multipart(0) else {
                        return;
                    };
                    let reply = answer(&request, &allowed);
                    if socket.send_multipart(reply, 0).is_err() {
                        return;
                    }
                }
            })
            .map_err(Error::io("start the ZAP handler"))?;
        Ok(ZapHandler {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ZapHandler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The ZAP 1.0 reply to one request (RFC 27): 200 for a listed CURVE key, 400 otherwise.
fn answer(request: &[Vec<u8>], allowed: &HashSet<[u8; 32]>) -> Vec<Vec<u8>> {
    let version = request.first().cloned().unwrap_or_default();
    let request_id = request.get(1).cloned().unwrap_or_default();
    let domain = request.get(2).map(|d| &d[..]);
    let mechanism = request.get(5).map(|m| &m[..]);
    let key = request
        .get(6)
        .and_then(|k| <[u8; 32]>::try_from(&k[..]).ok());
    let admitted = version == b"1.0"
        && domain == Some(ZAP_DOMAIN.as_bytes())
        && mechanism == Some(b"CURVE".as_slice())
        && key.is_some_and(|k| allowed.contains(&k));
    let (code, text, user) = match (admitted, key) {
        (true, Some(k)) => ("200", "OK", PublicKey(k).to_string()),
        _ => {
            tracing::warn!(
                "refused a peer: {}",
                key.map_or("no CURVE key".to_string(), |k| format!(
                    "key {} is not allowed",
                    PublicKey(k)
                ))
            );
            ("400", "key not allowed", String::new())
        }
    };
    vec![
        b"1.0".to_vec(),
        request_id,
        code.as_bytes().to_vec(),
        text.as_bytes().to_vec(),
        user.into_bytes(),
        Vec::new(),
    ]
}

/// A public key from a file written by [`KeyPair::write`] (its first key), or given as Z85
/// text.
pub fn public_key(given: &Path) -> Result<PublicKey, Error> {
    if given.exists() {
        return read_public_keys(given)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Config(format!("{}: no public key in it", given.display())));
    }
    given.to_string_lossy().parse().map_err(|_| {
        Error::Config(format!(
            "{}: no such file (nor a Z85-encoded public key)",
            given.display()
        ))
    })
}

/// The security of a client or worker reaching `endpoint`: CURVE with the broker's public
/// key (`server_key`: its NAME.key file or the Z85 key) and our key pair (`key`: a
/// NAME.key_secret file), or plain TCP when `insecure` — refused off loopback unless
/// `allow_insecure_remote`.
pub fn client_security(
    endpoint: &str,
    server_key: Option<&Path>,
    key: Option<&Path>,
    insecure: bool,
    allow_insecure_remote: bool,
) -> Result<Security, Error> {
    if insecure {
        check_insecure(endpoint, allow_insecure_remote)?;
        return Ok(Security::Insecure);
    }
    let (Some(server), Some(key)) = (server_key, key) else {
        return Err(Error::Config(format!(
            "connecting to {endpoint} needs the broker's public key (its NAME.key) and our \
             key pair (a NAME.key_secret), or plain TCP asked for explicitly"
        )));
    };
    Ok(Security::Client {
        keys: KeyPair::read(key)?,
        server: public_key(server)?,
    })
}

/// The security of a broker listening on TCP: our key pair (`key`: a NAME.key_secret file)
/// and the public keys admitted, read from `allow` files (one per line, `#` comments).
pub fn server_security(key: &Path, allow: &[impl AsRef<Path>]) -> Result<Security, Error> {
    let keys = KeyPair::read(key)?;
    let mut allowed = Vec::new();
    for file in allow {
        allowed.extend(read_public_keys(file.as_ref())?);
    }
    if allowed.is_empty() {
        return Err(Error::Config(
            "the allowed-keys files list no public key: no one could connect".into(),
        ));
    }
    Ok(Security::Server { keys, allowed })
}

/// Refuses plain TCP on anything but loopback unless `allow_remote` (the caller's explicit
/// `--allow-insecure-remote`).
pub fn check_insecure(endpoint: &str, allow_remote: bool) -> Result<(), Error> {
    let Some(rest) = endpoint.strip_prefix("tcp://") else {
        return Ok(());
    };
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback || allow_remote {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "plain TCP on {endpoint} would let anyone on the network submit tasks and read \
             results; use CURVE keys, or allow it explicitly"
        )))
    }
}
