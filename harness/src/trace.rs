//! The trace of a run: every client operation, fault and protocol event with its virtual
//! time and host. Its hash is the run's fingerprint: the same scenario, seed, profile and
//! binary give the same hash.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// One line of the trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEntry {
    /// Virtual milliseconds since the start of the run.
    pub at_ms: u64,
    /// The host it happened on (`nemesis` and `operator` for the harness's own actions).
    pub host: String,
    /// What happened.
    pub what: String,
}

impl std::fmt::Display for TraceEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>10.3}s  {:<10} {}",
            self.at_ms as f64 / 1000.0,
            self.host,
            self.what
        )
    }
}

/// A shared, append-only trace with a running hash. Entries are kept only when asked
/// for (replay with `--trace`, determinism checks); the hash is always kept.
#[derive(Clone)]
pub struct Trace {
    inner: Arc<Mutex<TraceState>>,
}

struct TraceState {
    hasher: fnv::FnvHasher,
    count: u64,
    entries: Option<Vec<TraceEntry>>,
}

impl Trace {
    /// A new trace; `keep` keeps every entry in memory.
    pub fn new(keep: bool) -> Self {
        Trace {
            inner: Arc::new(Mutex::new(TraceState {
                hasher: fnv::FnvHasher::default(),
                count: 0,
                entries: keep.then(Vec::new),
            })),
        }
    }

    /// Appends one entry.
    pub fn record(&self, at_ms: u64, host: &str, what: impl Into<String>) {
        use std::hash::Hasher;
        let what = what.into();
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state.hasher.write_u64(at_ms);
        state.hasher.write(host.as_bytes());
        state.hasher.write_u8(0);
        state.hasher.write(what.as_bytes());
        state.hasher.write_u8(b'\n');
        state.count += 1;
        if let Some(entries) = state.entries.as_mut() {
            entries.push(TraceEntry {
                at_ms,
                host: host.to_owned(),
                what,
            });
        }
    }

    /// The hash of everything recorded so far.
    pub fn hash(&self) -> u64 {
        use std::hash::Hasher;
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .hasher
            .finish()
    }

    /// How many entries were recorded.
    pub fn len(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).count
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries, when kept.
    pub fn entries(&self) -> Option<Vec<TraceEntry>> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .clone()
    }
}

/// Virtual milliseconds since the start of the simulation, from inside a host.
pub fn sim_now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Trace({} entries, hash {:016x})",
            self.len(),
            self.hash()
        )
    }
}
