//! The client side of the simulated database: [`SimDb`] implements the
//! [`ClusterDb`] port over turmoil TCP.
//!
//! Each session is an actor: a spawned task owns the connection, and the
//! [`DbSession`] handle sends it commands over a channel with one-shot replies. The actor
//! keeps an idle session alive with pings, and when the handle is dropped it sends `Close`
//! so the server releases the session's locks at once (a graceful close). Once a request
//! times out or the connection fails, the session is broken for good: turmoil's TCP does not
//! retransmit, so a stream that crossed a partition may have lost frames and is never reused.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use stormcell_model::error::DbError;
use stormcell_model::failover::DbHostConfig;
use stormcell_model::ids::{DeviceId, Digest, Generation, LockOwner, RepoId, Version};
use stormcell_model::ports::{ClusterDb, DbSession, FinishWrite, LockName, ReplicationState};
use stormcell_model::rows::{NewPushEvent, NewSyncEvent, Topology, VersionRow, WriteProps};
use stormcell_model::wire::frame::{read_frame, write_frame};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::wire::{DbRequest, DbResponse};

/// A client's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbClientConfig {
    /// A connect that has not completed after this long fails.
    pub connect_timeout: Duration,
    /// A request without an answer after this long breaks the session.
    pub query_timeout: Duration,
    /// An idle session sends a ping after this long without traffic, so that the server's
    /// session timeout only ever ends sessions of clients that are dead or cut off.
    pub keepalive: Duration,
    /// How long the farewell `Close` may take to send.
    pub close_timeout: Duration,
}

impl Default for DbClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            query_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(5),
            close_timeout: Duration::from_secs(1),
        }
    }
}

/// The cluster database at one simulated address (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimDb {
    /// Where the database host listens.
    pub addr: String,
    /// The client's timing.
    pub config: DbClientConfig,
}

impl SimDb {
    /// A client of the database at `addr` with the default timing.
    pub fn new(addr: impl Into<String>) -> Self {
        Self::with_config(addr, DbClientConfig::default())
    }

    /// A client of the database at `addr` with the given timing.
    pub fn with_config(addr: impl Into<String>, config: DbClientConfig) -> Self {
        Self {
            addr: addr.into(),
            config,
        }
    }

    /// Opens a session to this client's own address, as its concrete type.
    pub async fn open(&self) -> Result<SimDbSession, DbError> {
        self.open_at(&self.addr, self.config.connect_timeout).await
    }

    /// Opens a session to the database at `addr`, giving up on the connect after `timeout`.
    pub async fn open_at(&self, addr: &str, timeout: Duration) -> Result<SimDbSession, DbError> {
        let stream = crate::net::connect(addr, timeout)
            .await
            .map_err(|e| DbError::Connection(format!("connect to {addr}: {e}")))?;
        // Capacity 1 is enough: a handle has at most one request in flight (`&mut self`).
        let (tx, rx) = mpsc::channel(1);
        // On the host's local set, so a crash drops sessions in a fixed order.
        tokio::task::spawn_local(actor(stream, rx, self.config, addr.to_owned()));
        Ok(SimDbSession { tx, broken: None })
    }
}

/// Sessions to any host, by its configured address (the `addr` of [`SimDb`] is only the
/// default for [`SimDb::open`]).
#[async_trait]
impl ClusterDb for SimDb {
    async fn connect(
        &self,
        host: &DbHostConfig,
        timeout: Duration,
    ) -> Result<Box<dyn DbSession>, DbError> {
        Ok(Box::new(self.open_at(&host.address, timeout).await?))
    }
}

/// One request for the actor.
struct Command {
    req: DbRequest,
    reply: oneshot::Sender<Result<DbResponse, DbError>>,
}

/// Why an exchange failed, and whether the request had been written completely (then the
/// stream's framing towards the server is intact and a farewell `Close` can still be sent).
struct Failure {
    reason: String,
    written: bool,
}

/// Sends one request and reads its answer, within `limit`.
async fn exchange(
    stream: &mut turmoil::net::TcpStream,
    req: &DbRequest,
    limit: Duration,
) -> Result<DbResponse, Failure> {
    let mut written = false;
    let result = tokio::time::timeout(limit, async {
        write_frame(stream, req).await?;
        written = true;
        read_frame::<_, DbResponse>(stream).await
    })
    .await;
    match result {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => Err(Failure {
            reason: format!("{} failed: {e}", req.name()),
            // The server hung up or the stream broke: nothing more can reach it.
            written: false,
        }),
        Err(_) => Err(Failure {
            reason: format!("{} got no answer within {limit:?}", req.name()),
            written,
        }),
    }
}

/// Sends `Close` without waiting for anything; failures are ignored (the server's session
/// timeout is the fallback).
async fn farewell(stream: &mut turmoil::net::TcpStream, limit: Duration) {
    let _ = tokio::time::timeout(limit, write_frame(stream, &DbRequest::Close)).await;
}

/// Owns the connection of one session.
async fn actor(
    mut stream: turmoil::net::TcpStream,
    mut rx: mpsc::Receiver<Command>,
    config: DbClientConfig,
    addr: String,
) {
    let mut last_traffic = Instant::now();
    let failure = loop {
        let cmd = tokio::select! {
            biased;
            cmd = rx.recv() => cmd,
            _ = tokio::time::sleep_until(last_traffic + config.keepalive) => {
                match exchange(&mut stream, &DbRequest::Ping, config.query_timeout).await {
                    Ok(DbResponse::Pong) => {
                        last_traffic = Instant::now();
                        continue;
                    }
                    Ok(other) => break Failure {
                        reason: format!("unexpected answer to keepalive: {other:?}"),
                        written: true,
                    },
                    Err(f) => break f,
                }
            }
        };
        let Some(cmd) = cmd else {
            // The handle was dropped: end the session gracefully.
            farewell(&mut stream, config.close_timeout).await;
            return;
        };
        let limit = config.query_timeout.saturating_add(cmd.req.patience());
        match exchange(&mut stream, &cmd.req, limit).await {
            Ok(resp) => {
                last_traffic = Instant::now();
                // The caller may have given up waiting; the session stays consistent anyway.
                let _ = cmd.reply.send(Ok(resp));
            }
            Err(f) => {
                let _ = cmd
                    .reply
                    .send(Err(DbError::Connection(format!("{addr}: {}", f.reason))));
                break f;
            }
        }
    };
    // Broken. A live client whose request timed out closes its connection, which a real
    // database notices at once if the link allows; `Close` is that notice here (over a
    // partition it is lost, and the server's session timeout applies).
    if failure.written {
        farewell(&mut stream, config.close_timeout).await;
    }
    drop(stream);
    let reason = format!("{addr}: session broken: {}", failure.reason);
    while let Some(cmd) = rx.recv().await {
        let _ = cmd.reply.send(Err(DbError::Connection(reason.clone())));
    }
}

/// A session with the simulated database (see the module documentation). Dropping it ends
/// the session gracefully.
pub struct SimDbSession {
    tx: mpsc::Sender<Command>,
    /// Set once the session broke: every later call fails the same way without I/O.
    broken: Option<String>,
}

impl SimDbSession {
    /// Whether the session broke (every call now fails with a connection error).
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    pub(super) async fn call(&mut self, req: DbRequest) -> Result<DbResponse, DbError> {
        if let Some(reason) = &self.broken {
            return Err(DbError::Connection(reason.clone()));
        }
        let (reply, answer) = oneshot::channel();
        let sent = self.tx.send(Command { req, reply }).await;
        let result = match sent {
            Ok(()) => answer
                .await
                .unwrap_or_else(|_| Err(DbError::Connection("session task ended".to_owned()))),
            Err(_) => Err(DbError::Connection("session task ended".to_owned())),
        };
        match result {
            Ok(DbResponse::Error(message)) => Err(DbError::Query(message)),
            Ok(resp) => Ok(resp),
            Err(DbError::Connection(reason)) => {
                self.broken = Some(reason.clone());
                Err(DbError::Connection(reason))
            }
            Err(e) => Err(e),
        }
    }
}

fn unexpected(op: &str, resp: DbResponse) -> DbError {
    DbError::Query(format!("unexpected answer to {op}: {resp:?}"))
}

#[async_trait]
impl DbSession for SimDbSession {
    async fn try_lock(&mut self, lock: &LockName) -> Result<bool, DbError> {
        match self.call(DbRequest::TryLock { lock: lock.clone() }).await? {
            DbResponse::Locked(taken) => Ok(taken),
            other => Err(unexpected("try_lock", other)),
        }
    }

    async fn lock_wait(&mut self, lock: &LockName, patience: Duration) -> Result<bool, DbError> {
        let req = DbRequest::LockWait {
            lock: lock.clone(),
            patience_ms: u64::try_from(patience.as_millis()).unwrap_or(u64::MAX),
        };
        match self.call(req).await? {
            DbResponse::Locked(taken) => Ok(taken),
            other => Err(unexpected("lock_wait", other)),
        }
    }

    async fn unlock(&mut self, lock: &LockName) -> Result<(), DbError> {
        match self.call(DbRequest::Unlock { lock: lock.clone() }).await? {
            DbResponse::Done => Ok(()),
            other => Err(unexpected("unlock", other)),
        }
    }

    async fn topology(&mut self) -> Result<Topology, DbError> {
        match self.call(DbRequest::Topology).await? {
            DbResponse::Topology(t) => Ok(t),
            other => Err(unexpected("topology", other)),
        }
    }

    async fn rows(&mut self, repo: &RepoId) -> Result<Vec<VersionRow>, DbError> {
        match self.call(DbRequest::Rows { repo: repo.clone() }).await? {
            DbResponse::Rows(rows) => Ok(rows),
            other => Err(unexpected("rows", other)),
        }
    }

    async fn out_of_sync(&mut self, device: &DeviceId) -> Result<Vec<RepoId>, DbError> {
        let req = DbRequest::OutOfSync {
            device: device.clone(),
        };
        match self.call(req).await? {
            DbResponse::Repos(repos) => Ok(repos),
            other => Err(unexpected("out_of_sync", other)),
        }
    }

    async fn begin_write(
        &mut self,
        repo: &RepoId,
        device: &DeviceId,
        props: &WriteProps,
        owner: &LockOwner,
    ) -> Result<(), DbError> {
        let req = DbRequest::BeginWrite {
            repo: repo.clone(),
            device: device.clone(),
            props: props.clone(),
            owner: owner.clone(),
        };
        match self.call(req).await? {
            DbResponse::Done => Ok(()),
            other => Err(unexpected("begin_write", other)),
        }
    }

    async fn finish_write(&mut self, finish: &FinishWrite) -> Result<u64, DbError> {
        let req = DbRequest::FinishWrite {
            finish: finish.clone(),
        };
        match self.call(req).await? {
            DbResponse::Changed(n) => Ok(n),
            other => Err(unexpected("finish_write", other)),
        }
    }

    async fn set_version(
        &mut self,
        repo: &RepoId,
        device: &DeviceId,
        version: Version,
        digest: Option<Digest>,
        expected: Option<&[(DeviceId, Version)]>,
    ) -> Result<bool, DbError> {
        let req = DbRequest::SetVersion {
            repo: repo.clone(),
            device: device.clone(),
            version,
            digest,
            expected: expected.map(<[_]>::to_vec),
        };
        match self.call(req).await? {
            DbResponse::Changed(n) => Ok(n == 1),
            other => Err(unexpected("set_version", other)),
        }
    }

    async fn demotions(&mut self, repo: &RepoId) -> Result<BTreeMap<DeviceId, u64>, DbError> {
        let request = DbRequest::Demotions { repo: repo.clone() };
        match self.call(request).await? {
            DbResponse::Demotions(counts) => Ok(counts),
            other => Err(unexpected("demotions", other)),
        }
    }

    async fn restore_demote(
        &mut self,
        repo: &RepoId,
        device: &DeviceId,
        demotes: u64,
    ) -> Result<bool, DbError> {
        let request = DbRequest::RestoreDemote {
            repo: repo.clone(),
            device: device.clone(),
            demotes,
        };
        match self.call(request).await? {
            DbResponse::Inserted(deleted) => Ok(deleted),
            other => Err(unexpected("restore_demote", other)),
        }
    }

    async fn generation(&mut self) -> Result<Generation, DbError> {
        match self.call(DbRequest::Generation).await? {
            DbResponse::Generation(g) => Ok(g),
            other => Err(unexpected("generation", other)),
        }
    }

    async fn insert_initial(
        &mut self,
        repo: &RepoId,
        device: &DeviceId,
        digest: Option<Digest>,
    ) -> Result<bool, DbError> {
        let req = DbRequest::InsertInitial {
            repo: repo.clone(),
            device: device.clone(),
            digest,
        };
        match self.call(req).await? {
            DbResponse::Inserted(b) => Ok(b),
            other => Err(unexpected("insert_initial", other)),
        }
    }

    async fn record_push(&mut self, event: &NewPushEvent) -> Result<u64, DbError> {
        let req = DbRequest::RecordPush {
            event: event.clone(),
        };
        match self.call(req).await? {
            DbResponse::PushId(id) => Ok(id),
            other => Err(unexpected("record_push", other)),
        }
    }

    async fn newest_push_id(&mut self, repo: &RepoId) -> Result<Option<u64>, DbError> {
        match self
            .call(DbRequest::NewestPushId { repo: repo.clone() })
            .await?
        {
            DbResponse::NewestPushId(id) => Ok(id),
            other => Err(unexpected("newest_push_id", other)),
        }
    }

    async fn record_sync(&mut self, event: &NewSyncEvent) -> Result<(), DbError> {
        let req = DbRequest::RecordSync {
            event: event.clone(),
        };
        match self.call(req).await? {
            DbResponse::Done => Ok(()),
            other => Err(unexpected("record_sync", other)),
        }
    }

    async fn ping(&mut self) -> Result<(), DbError> {
        match self.call(DbRequest::Ping).await? {
            DbResponse::Pong => Ok(()),
            other => Err(unexpected("ping", other)),
        }
    }

    async fn replication(&mut self) -> Result<ReplicationState, DbError> {
        match self.call(DbRequest::Replication).await? {
            DbResponse::Replication(state) => Ok(state),
            other => Err(unexpected("replication", other)),
        }
    }
}
