//! The fault proxy: every peer link and every device-to-database link of a run goes
//! through a loopback TCP listener here, so a link between two hosts can be cut (both
//! ways, or one way), held (nothing passes until released) or left alone, per link.
//!
//! Links are unordered host pairs, as in the history (`FaultKind::Partition` names two
//! hosts). A connection belongs to the link between the host that dialled and the host
//! it reaches. For a database link the dialling device is known from the listener (each
//! device has its own listener per database host); a peer listener is shared by every
//! device dialling that peer (the address is registered once), so the dialling device is
//! found from `/proc`: the process holding the connection's client end.
//!
//! What each state does to a connection:
//! - cut both ways: live connections are closed, new ones closed at once (the dialler
//!   sees the connection drop, as a partition breaks a TCP connection);
//! - cut one way (`from -> to`): bytes from `from` to `to` stop (held in the proxy and
//!   not read further, so the sender's writes back up as over a link that drops its
//!   packets), the other direction flows; delivered when the cut is repaired;
//! - held (a slow link, a hang): neither direction moves until released.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{io, Result};

/// How often a blocked or idle pump looks at the link's state again.
const POLL: Duration = Duration::from_millis(50);
/// How long a pump waits for bytes before it looks at the link's state again.
const READ_WAIT: Duration = Duration::from_millis(200);
/// The host a connection is attributed to when no device holds its client end (an admin
/// command, for instance): no fault ever names it.
pub const OUTSIDE: &str = "outside";

/// Who dials through a listener.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Always this host.
    Host(String),
    /// The device whose process holds the client end of the connection.
    ByProcess,
}

/// One link's faults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct LinkState {
    /// Cut: both ways, or only `(from, to)` when one-way.
    cut: Option<Option<(String, String)>>,
    /// Held: nothing moves.
    held: bool,
}

/// What a pump may do with its bytes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Pass,
    Wait,
    Close,
}

#[derive(Debug, Default)]
struct Shared {
    links: Mutex<BTreeMap<(String, String), LinkState>>,
    /// Device processes by pid, for [`Caller::ByProcess`].
    pids: Mutex<BTreeMap<u32, String>>,
    stop: AtomicBool,
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn flow(&self, from: &str, to: &str) -> Flow {
        if self.stop.load(Ordering::Relaxed) {
            return Flow::Close;
        }
        let links = lock(&self.links);
        let Some(state) = links.get(&pair(from, to)) else {
            return Flow::Pass;
        };
        match &state.cut {
            Some(None) => Flow::Close,
            Some(Some((f, t))) if f == from && t == to => Flow::Wait,
            _ if state.held => Flow::Wait,
            _ => Flow::Pass,
        }
    }

    fn update(&self, a: &str, b: &str, change: impl FnOnce(&mut LinkState)) {
        let mut links = lock(&self.links);
        let key = pair(a, b);
        let state = links.entry(key.clone()).or_default();
        change(state);
        if *state == LinkState::default() {
            links.remove(&key);
        }
    }
}

/// The proxy: its listeners and the state of every link.
#[derive(Debug, Default)]
pub struct Proxy {
    shared: Arc<Shared>,
    listeners: Mutex<Vec<(u16, JoinHandle<()>)>>,
}

impl Proxy {
    /// A proxy with no listeners.
    pub fn new() -> Proxy {
        Proxy::default()
    }

    /// Listens on `listen_port` and forwards every connection to `target_port`, as a
    /// link from the caller to host `to`.
    pub fn route(
        &self,
        listen_port: u16,
        target_port: u16,
        to: &str,
        caller: Caller,
    ) -> Result<()> {
        let listener = TcpListener::bind(("127.0.0.1", listen_port))
            .map_err(io(format!("127.0.0.1:{listen_port}")))?;
        let shared = Arc::clone(&self.shared);
        let to = to.to_owned();
        let handle = std::thread::Builder::new()
            .name(format!("proxy-{listen_port}"))
            .spawn(move || accept_loop(&listener, listen_port, target_port, &to, &caller, &shared))
            .map_err(io(format!("proxy thread for port {listen_port}")))?;
        lock(&self.listeners).push((listen_port, handle));
        Ok(())
    }

    /// Says that process `pid` is device `device` (until another process takes the name).
    pub fn set_device_pid(&self, device: &str, pid: u32) {
        let mut pids = lock(&self.shared.pids);
        pids.retain(|_, d| d != device);
        pids.insert(pid, device.to_owned());
    }

    /// Cuts the link between `a` and `b`: both ways, or only from `a` to `b`.
    pub fn cut(&self, a: &str, b: &str, one_way: bool) {
        let direction = one_way.then(|| (a.to_owned(), b.to_owned()));
        self.shared.update(a, b, |s| s.cut = Some(direction));
    }

    /// Repairs a cut link.
    pub fn repair(&self, a: &str, b: &str) {
        self.shared.update(a, b, |s| s.cut = None);
    }

    /// Holds everything on the link between `a` and `b`.
    pub fn hold(&self, a: &str, b: &str) {
        self.shared.update(a, b, |s| s.held = true);
    }

    /// Releases a held link.
    pub fn release(&self, a: &str, b: &str) {
        self.shared.update(a, b, |s| s.held = false);
    }

    /// Lifts every fault.
    pub fn heal_all(&self) {
        lock(&self.shared.links).clear();
    }

    /// Closes every listener and connection.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let listeners = std::mem::take(&mut *lock(&self.listeners));
        for (port, _) in &listeners {
            // Wakes the accept call, which then sees the stop flag.
            let _ = TcpStream::connect(("127.0.0.1", *port));
        }
        for (_, handle) in listeners {
            let _ = handle.join();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: &TcpListener,
    listen_port: u16,
    target_port: u16,
    to: &str,
    caller: &Caller,
    shared: &Arc<Shared>,
) {
    for client in listener.incoming() {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(client) = client else {
            continue;
        };
        let from = match caller {
            Caller::Host(host) => host.clone(),
            Caller::ByProcess => {
                let port = client.peer_addr().map(|a| a.port()).unwrap_or(0);
                let pids = lock(&shared.pids).clone();
                let candidates: BTreeSet<u32> = pids.keys().copied().collect();
                crate::procfs::owner(port, listen_port, &candidates)
                    .and_then(|pid| pids.get(&pid).cloned())
                    .unwrap_or_else(|| OUTSIDE.to_owned())
            }
        };
        let shared = Arc::clone(shared);
        let to = to.to_owned();
        let _ = std::thread::Builder::new()
            .name(format!("link-{from}-{to}"))
            .spawn(move || connect(client, target_port, &from, &to, &shared));
    }
}

/// Forwards one connection while its link lets it.
fn connect(client: TcpStream, target_port: u16, from: &str, to: &str, shared: &Arc<Shared>) {
    if shared.flow(from, to) == Flow::Close {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = {
        let shared = Arc::clone(shared);
        let (from, to) = (from.to_owned(), to.to_owned());
        std::thread::Builder::new().spawn(move || pump(client, server, &from, &to, &shared))
    };
    pump(server2, client2, to, from, shared);
    if let Ok(up) = up {
        let _ = up.join();
    }
}

/// Copies bytes from `src` (host `from`) to `dst` (host `to`) as the link allows.
fn pump(mut src: TcpStream, mut dst: TcpStream, from: &str, to: &str, shared: &Shared) {
    let _ = src.set_read_timeout(Some(READ_WAIT));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => {
                // Pass the end of the stream on; the other direction may go on.
                let _ = dst.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if shared.flow(from, to) == Flow::Close {
                    break;
                }
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        loop {
            match shared.flow(from, to) {
                Flow::Pass => break,
                Flow::Wait => std::thread::sleep(POLL),
                Flow::Close => {
                    let _ = src.shutdown(Shutdown::Both);
                    let _ = dst.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        if dst.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = src.shutdown(Shutdown::Both);
    let _ = dst.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> u16 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = stream;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    fn roundtrip(port: u16, timeout: Duration) -> Option<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        s.write_all(b"ping").ok()?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).ok()?;
        Some(buf.to_vec())
    }

    fn free() -> u16 {
        TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port")
    }

    #[test]
    fn links_pass_cut_one_way_and_hold() {
        let target = echo_server();
        let proxy = Proxy::new();
        let port = free();
        proxy
            .route(port, target, "b", Caller::Host("a".to_owned()))
            .expect("route");
        let short = Duration::from_millis(600);
        assert_eq!(roundtrip(port, short), Some(b"ping".to_vec()));

        proxy.cut("a", "b", false);
        assert_eq!(roundtrip(port, short), None, "a cut link passes nothing");
        proxy.repair("a", "b");
        assert_eq!(roundtrip(port, short), Some(b"ping".to_vec()));

        // One way from b to a: the request reaches b, the answer never comes back.
        proxy.cut("b", "a", true);
        assert_eq!(roundtrip(port, short), None, "the answer is dropped");
        proxy.repair("b", "a");

        // A held link delivers once released.
        proxy.hold("a", "b");
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(short)).expect("timeout");
        s.write_all(b"ping").expect("write");
        let mut buf = [0u8; 4];
        assert!(s.read_exact(&mut buf).is_err(), "nothing passes while held");
        proxy.release("a", "b");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert!(s.read_exact(&mut buf).is_ok(), "held bytes are delivered");
        assert_eq!(&buf, b"ping");

        // A live connection is broken by a cut.
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(b"ping").expect("write");
        s.read_exact(&mut buf).expect("answer");
        proxy.cut("a", "b", false);
        std::thread::sleep(Duration::from_millis(500));
        s.set_read_timeout(Some(short)).expect("timeout");
        let _ = s.write_all(b"ping");
        let broken = matches!(s.read(&mut buf), Ok(0) | Err(_));
        assert!(broken, "a cut closes live connections");
        proxy.stop();
    }
}
