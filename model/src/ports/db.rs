//! The cluster database port: sessions, session-scoped named locks (PROTOCOL.md section 2)
//! and the row operations of sections 4 and 5.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::DbError;
use crate::failover::{DbHostConfig, DbRole};
use crate::ids::{DeviceId, Digest, Generation, LockOwner, RepoId, Version};
use crate::rows::{NewPushEvent, NewSyncEvent, Topology, VersionRow, WriteProps};

/// The name of a session-scoped lock.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockName {
    /// `write(repo)`: cluster-wide, taken by every write, thaw and maintenance lock.
    Write(RepoId),
    /// `read(repo, device)`: taken by every read sync on one device.
    Read(RepoId, DeviceId),
    /// `pull(repo, device)`: taken by the background replication of one device.
    Pull(RepoId, DeviceId),
}

impl LockName {
    /// The kind of lock, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            LockName::Write(_) => "write",
            LockName::Read(..) => "read",
            LockName::Pull(..) => "pull",
        }
    }

    /// The repository the lock protects.
    pub fn repo(&self) -> &RepoId {
        match self {
            LockName::Write(r) | LockName::Read(r, _) | LockName::Pull(r, _) => r,
        }
    }
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockName::Write(r) => write!(f, "write({r})"),
            LockName::Read(r, d) => write!(f, "read({r}, {d})"),
            LockName::Pull(r, d) => write!(f, "pull({r}, {d})"),
        }
    }
}

/// Step 6 of a write: the conditional update that records the new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishWrite {
    /// The repository.
    pub repo: RepoId,
    /// The device that wrote.
    pub device: DeviceId,
    /// The update applies only where the row still has this version...
    pub old_version: Version,
    /// ...and `writing = true` with this `lock_owner`.
    pub owner: LockOwner,
    /// The version to set.
    pub new_version: Version,
    /// The digest to record with it (**[stormcell]**).
    pub digest: Option<Digest>,
}

/// A connection to the cluster database. Dropping it ends the session, which releases its
/// locks (on a live client the database sees the close at once; a silently dead client's
/// locks outlive it until the database's session timeout).
#[async_trait]
pub trait DbSession: Send {
    /// Tries once to take a named lock; `false` when someone else holds it.
    async fn try_lock(&mut self, lock: &LockName) -> Result<bool, DbError>;
    /// Waits in the database's queue for a named lock, for at most `patience`: `true`
    /// once this session holds it, `false` when the wait ran out with the lock still held
    /// elsewhere (this session then leaves the queue). Waiters are served in the order they
    /// began waiting, and a release hands the lock to the first of them at once
    /// (**[stormcell]** lock hand-off, PROTOCOL.md 12): no newcomer's `try_lock` can take a
    /// lock someone is queued for.
    async fn lock_wait(&mut self, lock: &LockName, patience: Duration) -> Result<bool, DbError>;
    /// Releases a lock this session holds.
    async fn unlock(&mut self, lock: &LockName) -> Result<(), DbError>;
    /// The configuration: devices, services, bindings, repositories.
    async fn topology(&mut self) -> Result<Topology, DbError>;
    /// Every version row of a repository.
    async fn rows(&mut self, repo: &RepoId) -> Result<Vec<VersionRow>, DbError>;
    /// **[stormcell]** How many times each device's row of `repo` was deleted (demoted),
    /// for devices demoted at least once (PROTOCOL.md 12, claims after a demote). The
    /// count lives in the database beside the rows and changes in the same transaction as
    /// the deletion, so a host that lacks a demote lacks its count too.
    async fn demotions(&mut self, repo: &RepoId) -> Result<BTreeMap<DeviceId, u64>, DbError>;
    /// **[stormcell]** Applies again a demote of `device` this database lost (a replica
    /// promoted before it received the demote), which the device itself took note of as
    /// its `demotes`-th: when the database counts fewer, the device's row is deleted and
    /// the count raised to `demotes`, in one change. Returns whether a row was deleted.
    async fn restore_demote(
        &mut self,
        repo: &RepoId,
        device: &DeviceId,
        demotes: u64,
    ) -> Result<bool, DbError>;
    /// Repositories actively bound to `device` on which it has no row or is below `max`.
    async fn out_of_sync(&mut self, device: &DeviceId) -> Result<Vec<RepoId>, DbError>;
    /// Step 4 of a write: upsert the device's row with `writing = true`, `write_props` and
    /// `lock_owner`, leaving its version unchanged (a new row starts at version 0).
    async fn begin_write(
        &mut self,
        repo: &RepoId,
        device: &DeviceId,
        props: &WriteProps,
        owner: &LockOwner,
    ) -> Result<(), DbError>;
    /// Step 6 of a write: returns how many rows changed (0 or 1).
    async fn finish_write(&mut self, finish: &FinishWrite) -> Result<u64, DbError>;
    /// After a sync: upsert the device's version (and digest). With `expected`, only
    /// while the repository's rows are still exactly those (device and version, in device
    /// order) a sync read (**[stormcell]** conditional sync, PROTOCOL.md 12): returns
    /// whether it changed the row.
    async fn set_version(
        &mut self,
        repo: &RepoId,
        device: &DeviceId,
        version: Version,
        digest: Option<Digest>,
        expected: Option<&[(DeviceId, Version)]>,
    ) -> Result<bool, DbError>;
    /// The generation of the primary this host's data comes from (PROTOCOL.md 12).
    async fn generation(&mut self) -> Result<Generation, DbError>;
    /// Inserts version 0 for the device unless some row of the repository exists; returns
    /// whether it inserted.
    async fn insert_initial(
        &mut self,
        repo: &RepoId,
        device: &DeviceId,
        digest: Option<Digest>,
    ) -> Result<bool, DbError>;
    /// Appends a push event and returns its id.
    async fn record_push(&mut self, event: &NewPushEvent) -> Result<u64, DbError>;
    /// The id of the newest push event of a repository.
    async fn newest_push_id(&mut self, repo: &RepoId) -> Result<Option<u64>, DbError>;
    /// Appends a sync event.
    async fn record_sync(&mut self, event: &NewSyncEvent) -> Result<(), DbError>;
    /// Checks the session is alive.
    async fn ping(&mut self) -> Result<(), DbError>;
    /// The host's replication state (PROTOCOL.md 9.5).
    async fn replication(&mut self) -> Result<ReplicationState, DbError>;
}

/// What a database host says about its replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationState {
    /// What the host itself believes it is (a replica refuses writes).
    pub role: DbRole,
    /// A replica: it is receiving from its primary right now.
    pub streaming: bool,
    /// A replica: how far behind the primary's commits it applies (`None` when unknown).
    pub delay: Option<Duration>,
    /// A replica: it has applied everything its primary committed, as of its last contact.
    pub caught_up: bool,
}

/// The cluster database's hosts: a factory of sessions to any one of them.
#[async_trait]
pub trait ClusterDb: Send + Sync {
    /// Opens a new session to `host`, giving up after `timeout`.
    async fn connect(
        &self,
        host: &DbHostConfig,
        timeout: Duration,
    ) -> Result<Box<dyn DbSession>, DbError>;

    /// A health check found `host` not answering within its time limit. Sessions to it
    /// that are waiting for an answer may fail now instead of at their own (longer) query
    /// timeout, so a request can go on elsewhere. Adapters whose waits end otherwise need
    /// not act.
    fn not_answering(&self, _host: &DbHostConfig) {}

    /// Waits until a session has waited for an answer from a host longer than a round
    /// trip should take, and returns that host's address: the health monitor checks it
    /// at once rather than when its next check is due, so a hung host is found sooner.
    /// Adapters that never suspect a host never return.
    async fn suspected(&self) -> String {
        std::future::pending().await
    }
}
