//! Free ports, a minimal HTTP GET for monitoring endpoints, and log tails for panic messages.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Lowest port handed out.
const PORT_FLOOR: u16 = 10_000;

/// A port on 127.0.0.1 that nothing listens on now and this process has not handed out before.
///
/// Ports are drawn at random *below* the kernel's ephemeral range when there is room: a port that
/// `bind(0)` would return is also one the kernel picks as the local port of outgoing connections,
/// so while a server is down for an outage test a reconnecting client could take its port and
/// make the restart fail. Below the range only another listener can collide, and callers retry
/// on "address in use" at first start.
pub fn free_port() -> u16 {
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let mut taken = TAKEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let ceiling = ephemeral_floor();
    if ceiling > PORT_FLOOR + 1_000 {
        let hasher = RandomState::new();
        for attempt in 0u32..1_000 {
            let span = u64::from(ceiling - PORT_FLOOR);
            let port = PORT_FLOOR + (hasher.hash_one(attempt) % span) as u16;
            if !taken.contains(&port) && bindable(port) {
                taken.insert(port);
                return port;
            }
        }
    }
    // No room below the ephemeral range (or it is crowded): let the kernel choose.
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("local_addr of a bound listener")
            .port();
        if taken.insert(port) {
            return port;
        }
    }
}

fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_floor() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// `GET path` from `addr` over HTTP/1.0 (so the body is never chunked); returns the status code
/// and the body. Enough for monitoring, health and metrics endpoints, with no HTTP client
/// dependency.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP status line"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok((status, body.to_owned()))
}

/// 127.0.0.1:`port`.
pub(crate) fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Whether 127.0.0.1:`port` accepts a connection and greets with a NATS `INFO` line.
pub(crate) fn nats_info(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&local(port), Duration::from_millis(500))
    else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).is_ok() && &head == b"INFO "
}

/// The last `lines` lines of the file at `path`, headed by its path, for panic messages.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            format!(
                "--- {} (last {} lines) ---\n{}",
                path.display(),
                lines,
                all[start..].join("\n")
            )
        }
        Err(e) => format!("--- {}: {e} ---", path.display()),
    }
}
