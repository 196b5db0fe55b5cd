//! [`PullDropProxy`]: a TCP proxy in front of a nats-server that can lose one JetStream pull
//! request on its way to the server, as a network or a client can, while forwarding everything
//! else unchanged.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

/// The subject prefix of a pull request (`$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`).
const PULL_REQUEST: &str = "$JS.API.CONSUMER.MSG.NEXT.";

/// Disarmed: every pull request passes.
const DISARMED: i64 = -1;

/// A proxy on a free 127.0.0.1 port, forwarding to one nats-server; see the module docs.
/// Connections it accepted stay open until either side closes them.
pub struct PullDropProxy {
    addr: SocketAddr,
    /// Pull requests still to let through before dropping one; [`DISARMED`] when none is to be
    /// dropped.
    skip: Arc<AtomicI64>,
    dropped: Arc<AtomicUsize>,
}

impl PullDropProxy {
    /// Starts forwarding connections to `upstream` (`127.0.0.1:port` or `nats://127.0.0.1:port`).
    ///
    /// # Panics
    /// When it cannot listen.
    pub fn start(upstream: &str) -> PullDropProxy {
        let upstream = upstream.trim_start_matches("nats://").to_owned();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let skip = Arc::new(AtomicI64::new(DISARMED));
        let dropped = Arc::new(AtomicUsize::new(0));
        let (s, d) = (Arc::clone(&skip), Arc::clone(&dropped));
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (s, d) = (Arc::clone(&s), Arc::clone(&d));
                thread::spawn(move || {
                    let _ = forward(client, server, &s, &d);
                });
            }
        });
        PullDropProxy {
            addr,
            skip,
            dropped,
        }
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Lets `skip` more pull requests through, then drops the next one (once).
    pub fn drop_pull_request_after(&self, skip: u32) {
        self.skip.store(i64::from(skip), Ordering::SeqCst);
    }

    /// How many pull requests were dropped so far.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

/// Copies the server's bytes to the client as they come, and the client's protocol to the
/// server one operation at a time, leaving out the pull request [`PullDropProxy`] is armed for.
fn forward(
    client: TcpStream,
    server: TcpStream,
    skip: &AtomicI64,
    dropped: &AtomicUsize,
) -> io::Result<()> {
    let (mut from_server, mut to_client) = (server.try_clone()?, client.try_clone()?);
    thread::spawn(move || {
        let _ = io::copy(&mut from_server, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Both);
    });
    let mut to_server = server;
    let mut from_client = BufReader::new(client);
    let mut line = String::new();
    loop {
        line.clear();
        if from_client.read_line(&mut line)? == 0 {
            return to_server.shutdown(Shutdown::Both);
        }
        let mut op = line.clone().into_bytes();
        let words: Vec<&str> = line.split_whitespace().collect();
        let publish = matches!(words.first(), Some(&"PUB" | &"HPUB"));
        if publish {
            // The last word is the size of what follows (headers and payload), then CRLF.
            let size: usize = words.last().and_then(|w| w.parse().ok()).unwrap_or(0);
            let mut body = vec![0; size + 2];
            from_client.read_exact(&mut body)?;
            let pull = words.get(1).is_some_and(|s| s.starts_with(PULL_REQUEST));
            if pull && take_one(skip) {
                dropped.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            op.extend_from_slice(&body);
        }
        to_server.write_all(&op)?;
    }
}

/// Whether to drop this pull request: counts the armed skips down, and disarms on the drop.
fn take_one(skip: &AtomicI64) -> bool {
    let armed = skip.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
        DISARMED => None,
        0 => Some(DISARMED),
        n => Some(n - 1),
    });
    armed == Ok(0)
}
