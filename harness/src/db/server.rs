//! The simulated SQL host's software: accepts sessions over turmoil TCP and runs their
//! requests against the shared [`Tables`].
//!
//! Session rules (the crux of the database model): a session's locks are released when
//! the client sends `Close`, or when the session has been silent for the session timeout.
//! An EOF or a broken connection without `Close` does **not** end the session early: a
//! crashed turmoil host's sockets send a FIN as they drop, which must not look like a
//! graceful close, because a real database only notices a client struck by lightning when
//! its session times out.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use stormcell_model::wire::frame::{read_frame, write_frame};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::replication::{LogEntry, ReplicaState};
use super::tables::{SessionId, Tables};
use super::wire::{execute, DbRequest, DbResponse};
use stormcell_model::ports::LockName;

/// The database host's durable state. The harness creates it outside the host's software
/// so that it survives a crash and restart of that software, as committed data survives a
/// database restart.
#[derive(Debug, Clone, Default)]
pub struct DbHostState {
    /// The tables (and the locks, which a restart of the software clears).
    pub tables: Tables,
    /// The next session id; kept across restarts so ids in traces stay unique.
    next_session: SessionId,
    /// Sessions that ended by timeout (silent clients), for traces and tests.
    pub expired_sessions: u64,
    /// Every committed write, in order (a primary's, or what a replica applied).
    pub(crate) log: Vec<LogEntry>,
    /// The sequence number of the newest committed (or applied) write.
    pub(crate) seq: u64,
    /// Set on a replica: its stream from the primary.
    pub replica: Option<ReplicaState>,
}

impl DbHostState {
    /// A host holding these tables.
    pub fn new(tables: Tables) -> Self {
        Self {
            tables,
            next_session: 1,
            expired_sessions: 0,
            log: Vec::new(),
            seq: 0,
            replica: None,
        }
    }

    /// A replica holding a copy of a primary's tables at sequence 0, streaming from
    /// `upstream` and applying each transaction `delay_ms` after its commit.
    pub fn replica_of(tables: Tables, upstream: &str, delay_ms: u64) -> Arc<Mutex<DbHostState>> {
        let mut st = Self::new(tables);
        st.replica = Some(ReplicaState::new(upstream, delay_ms, 0));
        Arc::new(Mutex::new(st))
    }

    /// The state wrapped for sharing between the harness and the host's software.
    pub fn shared(tables: Tables) -> Arc<Mutex<DbHostState>> {
        Arc::new(Mutex::new(Self::new(tables)))
    }

    fn new_session(&mut self) -> SessionId {
        let id = self.next_session.max(1);
        self.next_session = id + 1;
        id
    }
}

/// Locks the host state, ignoring poisoning (a panicked task must not wedge the database).
pub fn lock_state(state: &Mutex<DbHostState>) -> MutexGuard<'_, DbHostState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The server's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbServerConfig {
    /// A session without any request for this long ends, releasing its locks.
    pub session_timeout: Duration,
    /// How often silent sessions are looked for.
    pub reap_interval: Duration,
}

impl Default for DbServerConfig {
    fn default() -> Self {
        Self {
            session_timeout: Duration::from_secs(30),
            reap_interval: Duration::from_secs(1),
        }
    }
}

/// A live session as the server tracks it.
struct Session {
    last_seen: Instant,
    /// Dropping this tells the connection's task to hang up (the session expired).
    _kill: oneshot::Sender<()>,
}

type Sessions = Arc<Mutex<BTreeMap<SessionId, Session>>>;

/// Wakes every session waiting for a lock after a release, so the one the lock was handed
/// to answers at once (the others see it is not theirs and wait on).
type Releases = Arc<Notify>;

fn lock_sessions(
    s: &Mutex<BTreeMap<SessionId, Session>>,
) -> MutexGuard<'_, BTreeMap<SessionId, Session>> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Aborts a task when dropped, so the reaper does not outlive the server.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves the database on `port` with the default timing. Run it as a turmoil host's
/// software; it returns only on a listener error.
pub async fn serve(state: Arc<Mutex<DbHostState>>, port: u16) -> io::Result<()> {
    serve_with(state, port, DbServerConfig::default()).await
}

/// Serves the database on `port` with the given timing.
pub async fn serve_with(
    state: Arc<Mutex<DbHostState>>,
    port: u16,
    config: DbServerConfig,
) -> io::Result<()> {
    // This software just (re)started: no session of a previous run survives, so neither
    // do their locks.
    let released = lock_state(&state).tables.release_all_locks();
    if !released.is_empty() {
        tracing::debug!(locks = released.len(), "database restart released locks");
    }
    let listener = crate::net::listen(&format!("0.0.0.0:{port}")).await?;
    let sessions: Sessions = Arc::new(Mutex::new(BTreeMap::new()));
    let releases: Releases = Arc::new(Notify::new());
    // Every task stays on the host's local set: a crash then drops the sessions in the order
    // they opened (tokio's shared task lists order them by a process-wide counter).
    let _reaper = AbortOnDrop(tokio::task::spawn_local(reap(
        state.clone(),
        sessions.clone(),
        releases.clone(),
        config,
    )));
    let _stream = AbortOnDrop(tokio::task::spawn_local(super::replication::stream(
        state.clone(),
    )));

    loop {
        let (stream, peer) = listener.accept().await?;
        let id = lock_state(&state).new_session();
        let (kill_tx, kill_rx) = oneshot::channel();
        lock_sessions(&sessions).insert(
            id,
            Session {
                last_seen: Instant::now(),
                _kill: kill_tx,
            },
        );
        tracing::trace!(session = id, peer = %crate::net::peer_name(peer), "db session opened");
        tokio::task::spawn_local(run_session(
            stream,
            id,
            Shared {
                state: state.clone(),
                sessions: sessions.clone(),
                releases: releases.clone(),
            },
            kill_rx,
        ));
    }
}

/// Ends sessions that have been silent for the session timeout.
async fn reap(
    state: Arc<Mutex<DbHostState>>,
    sessions: Sessions,
    releases: Releases,
    config: DbServerConfig,
) {
    let mut interval = tokio::time::interval(config.reap_interval);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now = Instant::now();
        let mut sessions = lock_sessions(&sessions);
        let expired: Vec<SessionId> = sessions
            .iter()
            .filter(|(_, s)| now.duration_since(s.last_seen) >= config.session_timeout)
            .map(|(&id, _)| id)
            .collect();
        if expired.is_empty() {
            continue;
        }
        let mut st = lock_state(&state);
        for id in expired {
            // Removing the entry drops its kill switch: the connection (if any) hangs up.
            sessions.remove(&id);
            let locks = st.tables.release_session(id);
            st.expired_sessions += 1;
            tracing::debug!(session = id, locks = locks.len(), "db session timed out");
        }
        releases.notify_waiters();
    }
}

/// Runs one request on this host: replication requests by the host itself, writes refused
/// on a replica and logged on a primary, everything else on the tables.
fn answer(st: &mut DbHostState, id: SessionId, req: &DbRequest) -> DbResponse {
    let now = crate::trace::sim_now_ms();
    match req {
        DbRequest::Replication => DbResponse::Replication(st.replication_state(now)),
        DbRequest::Replicate { after } => st.log_after(*after),
        _ if req.is_write() && st.replica.is_some() => DbResponse::Error(format!(
            "cannot execute {} in a read-only transaction: this host is a replica",
            req.name()
        )),
        _ => {
            let resp = execute(&mut st.tables, id, req);
            if req.is_write() {
                st.commit(req, now);
            }
            resp
        }
    }
}

/// What every session task of a host shares.
struct Shared {
    state: Arc<Mutex<DbHostState>>,
    sessions: Sessions,
    releases: Releases,
}

/// Serves one connection: one session.
async fn run_session(
    mut stream: turmoil::net::TcpStream,
    id: SessionId,
    shared: Shared,
    mut kill: oneshot::Receiver<()>,
) {
    loop {
        let req: DbRequest = tokio::select! {
            biased;
            // The session expired: hang up, like a database terminating a backend.
            _ = &mut kill => return,
            frame = read_frame(&mut stream) => match frame {
                Ok(req) => req,
                // EOF, reset or garbage without `Close`: the client may be dead; its
                // session (and locks) stay until the session timeout.
                Err(e) => {
                    tracing::trace!(session = id, error = %e, "db connection ended without close");
                    return;
                }
            },
        };
        let resp = if let DbRequest::LockWait { lock, .. } = &req {
            match wait_for_lock(&shared, id, lock, req.patience(), &mut kill).await {
                Some(resp) => resp,
                None => return,
            }
        } else {
            let mut live = lock_sessions(&shared.sessions);
            let Some(session) = live.get_mut(&id) else {
                return;
            };
            session.last_seen = Instant::now();
            let mut st = lock_state(&shared.state);
            let resp = answer(&mut st, id, &req);
            if matches!(req, DbRequest::Unlock { .. } | DbRequest::Close) {
                shared.releases.notify_waiters();
            }
            if req == DbRequest::Close {
                live.remove(&id);
                tracing::trace!(session = id, "db session closed");
                return;
            }
            resp
        };
        if write_frame(&mut stream, &resp).await.is_err() {
            return;
        }
    }
}

/// A lock wait (**[stormcell]** lock hand-off): takes the lock or joins its queue, then
/// waits until a release hands it over or `patience` runs out. `None` when the session
/// ended meanwhile.
async fn wait_for_lock(
    shared: &Shared,
    id: SessionId,
    lock: &LockName,
    patience: Duration,
    kill: &mut oneshot::Receiver<()>,
) -> Option<DbResponse> {
    let deadline = Instant::now() + patience;
    {
        let mut live = lock_sessions(&shared.sessions);
        let session = live.get_mut(&id)?;
        // A waiting session is not silent: it counts as heard from until its wait ends.
        session.last_seen = deadline;
        if lock_state(&shared.state).tables.lock_or_queue(id, lock) {
            return Some(DbResponse::Locked(true));
        }
    }
    loop {
        // Registered before the look at the holder, so a release in between still wakes it.
        let released = shared.releases.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        if lock_state(&shared.state).tables.lock_holder(lock) == Some(id) {
            return Some(DbResponse::Locked(true));
        }
        tokio::select! {
            biased;
            _ = &mut *kill => return None,
            () = released => {}
            () = tokio::time::sleep_until(deadline) => {
                let held = lock_state(&shared.state).tables.leave_queue(id, lock);
                return Some(DbResponse::Locked(held));
            }
        }
    }
}
