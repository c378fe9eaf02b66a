//! Loopback ports for servers a test starts (shared with the port contract suite in
//! `tests/tests/contracts.rs`, which includes this file).

/// A free TCP port on loopback, taken below the kernel's ephemeral range.
///
/// A port the kernel hands out for `bind(0)` is free only until some client connection
/// (git, a database session, a peer call) gets it as its own source port, which on a busy
/// machine happens between picking the port and the daemon binding it. Ports below the
/// ephemeral range (32768 and up on Linux) are never handed out that way, so only another
/// server could take them: each test process starts at an offset drawn from its pid and
/// walks on from there, skipping ports something already holds.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = (std::process::id() % 200) * 100;
    for _ in 0..SPAN {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let Ok(port) = u16::try_from(LOW + (base + step) % SPAN) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on loopback between {LOW} and {}", LOW + SPAN);
}
