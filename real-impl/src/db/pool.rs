//! Idle database sessions kept for reuse. Opening a PostgreSQL connection costs several
//! round trips (TCP, startup, authentication), which every clone would otherwise pay before
//! its read sync. A session goes back to the pool only when it holds no advisory lock (see
//! `PgSession`'s drop), so a lock still dies with its session as PROTOCOL.md requires.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

/// How many idle sessions are kept per database host.
const IDLE_PER_HOST: usize = 8;
/// How long an idle session is kept: long enough to serve a burst of reads, short enough
/// that a connection a partition or failover silently broke is not reused much later.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

/// Idle sessions by database address.
#[derive(Default)]
pub struct SessionPool {
    idle: Mutex<BTreeMap<String, Vec<(Client, Instant)>>>,
}

impl std::fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let counts: BTreeMap<&str, usize> =
            idle.iter().map(|(a, v)| (a.as_str(), v.len())).collect();
        f.debug_struct("SessionPool")
            .field("idle", &counts)
            .finish()
    }
}

impl SessionPool {
    /// An idle, still open session to `address`, if one is kept.
    pub fn take(&self, address: &str) -> Option<Client> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let kept = idle.get_mut(address)?;
        while let Some((client, since)) = kept.pop() {
            if !client.is_closed() && since.elapsed() < IDLE_LIMIT {
                return Some(client);
            }
        }
        None
    }

    /// Keeps `client` for reuse, unless it is closed or the pool for `address` is full.
    pub fn give(&self, address: &str, client: Client) {
        if client.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let kept = idle.entry(address.to_owned()).or_default();
        kept.retain(|(c, since)| !c.is_closed() && since.elapsed() < IDLE_LIMIT);
        if kept.len() < IDLE_PER_HOST {
            kept.push((client, Instant::now()));
        }
    }

    /// Closes every idle session to `address` (its host stopped answering).
    pub fn clear(&self, address: &str) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(address);
    }

    /// How many idle sessions are kept for `address`.
    pub fn idle(&self, address: &str) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(address)
            .map_or(0, Vec::len)
    }
}
