//! Loopback ports for the servers and proxy listeners a run starts.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{ChaosError, Result};

/// Lowest port handed out; ports below the kernel's ephemeral range (32768 and up) are
/// never taken as some client connection's source port between choosing and binding.
const LOW: u32 = 10_000;
/// How many ports from `LOW` are walked.
const SPAN: u32 = 22_000;

/// The next step of the walk, shared by every run of the process (two runs of one test
/// binary must never be handed the same port before either has bound it).
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Hands out free loopback ports, walking on from an offset drawn from the process id so
/// that concurrent processes (and the end-to-end tests) rarely try the same ones.
#[derive(Debug, Default)]
pub struct Ports;

impl Ports {
    /// A port nothing listens on now, never handed out before by this process.
    pub fn free(&self) -> Result<u16> {
        let base = (std::process::id() % 200) * 100 + 50;
        for _ in 0..SPAN {
            let step = base + NEXT.fetch_add(1, Ordering::Relaxed);
            let Ok(port) = u16::try_from(LOW + step % SPAN) else {
                continue;
            };
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
        Err(ChaosError::Setup(format!(
            "no free port on loopback between {LOW} and {}",
            LOW + SPAN
        )))
    }
}
