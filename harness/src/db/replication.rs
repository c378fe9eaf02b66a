//! Streaming replication between simulated database hosts (ARCHITECTURE.md, "Database
//! model"): a primary numbers every committed write and keeps it in its log; a replica pulls
//! the log over the simulated network, keeps what it received (durably), and applies each
//! transaction once the replication delay has passed since its commit. A partition between
//! the two stops the stream; a primary lost for good takes with it what no replica received.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stormcell_model::failover::DbRole;
use stormcell_model::ports::ReplicationState;
use stormcell_model::wire::frame::{read_frame, write_frame};

use super::server::{lock_state, DbHostState};
use super::tables::Tables;
use super::wire::{execute, DbRequest, DbResponse};
use crate::trace::sim_now_ms;

/// One committed write transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Its position in the primary's history, from 1.
    pub seq: u64,
    /// When the primary committed it (virtual milliseconds since the start).
    pub at_ms: u64,
    /// What it did.
    pub req: DbRequest,
}

/// How many entries one `replicate` answer carries at most.
const BATCH: usize = 256;
/// How often a replica asks for more, and applies what is due.
const POLL: Duration = Duration::from_millis(100);
/// A replica that heard from its primary this recently counts as streaming.
const STREAMING_WITHIN_MS: u64 = 1000;
/// A connect or request of the stream that takes longer than this fails.
const STREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// A replica's side of the stream (durable with the host, like a standby's WAL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    /// The primary's address.
    pub upstream: String,
    /// How long after its commit a transaction is applied here.
    pub delay_ms: u64,
    /// The newest sequence number received.
    pub received: u64,
    /// Received and not yet applied, in order.
    pending: VecDeque<LogEntry>,
    /// The primary's newest sequence number at the last contact.
    head_seen: u64,
    /// When the primary last answered.
    last_contact_ms: Option<u64>,
}

impl ReplicaState {
    /// A replica of the primary at `upstream`, in step with it at sequence `at`.
    pub fn new(upstream: impl Into<String>, delay_ms: u64, at: u64) -> Self {
        ReplicaState {
            upstream: upstream.into(),
            delay_ms,
            received: at,
            pending: VecDeque::new(),
            head_seen: at,
            last_contact_ms: None,
        }
    }
}

impl DbHostState {
    /// Records a committed write in the host's log.
    pub(crate) fn commit(&mut self, req: &DbRequest, at_ms: u64) {
        self.seq += 1;
        self.log.push(LogEntry {
            seq: self.seq,
            at_ms,
            req: req.clone(),
        });
    }

    /// The log after `after`, for a replica.
    pub(crate) fn log_after(&self, after: u64) -> DbResponse {
        let start = self.log.partition_point(|e| e.seq <= after);
        let entries = self.log[start..].iter().take(BATCH).cloned().collect();
        DbResponse::Log {
            entries,
            head: self.seq,
        }
    }

    /// The host's replication state as of `now_ms`.
    pub fn replication_state(&self, now_ms: u64) -> ReplicationState {
        let Some(r) = &self.replica else {
            return ReplicationState {
                role: DbRole::Primary,
                streaming: false,
                delay: None,
                caught_up: true,
            };
        };
        let streaming = r
            .last_contact_ms
            .is_some_and(|t| now_ms.saturating_sub(t) <= STREAMING_WITHIN_MS);
        let delay = r
            .pending
            .front()
            .map_or(0, |e| now_ms.saturating_sub(e.at_ms));
        ReplicationState {
            role: DbRole::Replica,
            streaming,
            delay: Some(Duration::from_millis(delay)),
            caught_up: streaming && r.pending.is_empty() && r.received >= r.head_seen,
        }
    }

    /// Takes a batch from the primary.
    fn receive(&mut self, entries: Vec<LogEntry>, head: u64, now_ms: u64) {
        let Some(r) = &mut self.replica else { return };
        for e in entries {
            if e.seq == r.received + 1 {
                r.received = e.seq;
                r.pending.push_back(e);
            }
        }
        r.head_seen = head;
        r.last_contact_ms = Some(now_ms);
    }

    /// Applies every received transaction whose delay has passed (all of them with
    /// `everything`).
    fn apply_due(&mut self, now_ms: u64, everything: bool) {
        loop {
            let Some(r) = &mut self.replica else { return };
            let due = r
                .pending
                .front()
                .is_some_and(|e| everything || e.at_ms + r.delay_ms <= now_ms);
            if !due {
                return;
            }
            let Some(entry) = r.pending.pop_front() else {
                return;
            };
            apply(&mut self.tables, &entry);
            self.seq = entry.seq;
            self.log.push(entry);
        }
    }

    /// Makes this replica a primary: everything it received is applied, and it takes
    /// writes from now on. Returns the sequence number it starts from.
    pub fn promote(&mut self, now_ms: u64) -> u64 {
        self.apply_due(now_ms, true);
        self.replica = None;
        self.seq
    }

    /// The newest sequence number this host holds (applied, or received by a replica).
    pub fn received(&self) -> u64 {
        self.replica.as_ref().map_or(self.seq, |r| r.received)
    }

    /// The host's role.
    pub fn role(&self) -> DbRole {
        if self.replica.is_some() {
            DbRole::Replica
        } else {
            DbRole::Primary
        }
    }
}

fn apply(tables: &mut Tables, entry: &LogEntry) {
    // Session 0 is no client's: writes do not touch locks.
    let _ = execute(tables, 0, &entry.req);
}

/// A replica's stream: ask the primary for more, take it, apply what is due; forever (it
/// idles once the host is promoted).
pub(crate) async fn stream(state: Arc<Mutex<DbHostState>>) {
    let mut conn: Option<turmoil::net::TcpStream> = None;
    loop {
        tokio::time::sleep(POLL).await;
        let upstream = {
            let mut st = lock_state(&state);
            st.apply_due(sim_now_ms(), false);
            match &st.replica {
                Some(r) => (r.upstream.clone(), r.received),
                None => {
                    conn = None;
                    continue;
                }
            }
        };
        let (addr, after) = upstream;
        let stream = match conn.as_mut() {
            Some(s) => s,
            None => match crate::net::connect(&addr, STREAM_TIMEOUT).await {
                Ok(s) => conn.insert(s),
                Err(_) => continue,
            },
        };
        let exchange = tokio::time::timeout(STREAM_TIMEOUT, async {
            write_frame(stream, &DbRequest::Replicate { after }).await?;
            read_frame::<_, DbResponse>(stream).await
        })
        .await;
        match exchange {
            Ok(Ok(DbResponse::Log { entries, head })) => {
                lock_state(&state).receive(entries, head, sim_now_ms());
            }
            // Broken, refused or silent: a new connection next time (turmoil's TCP does not
            // retransmit, so a stream that crossed a partition is never reused).
            _ => conn = None,
        }
    }
}
