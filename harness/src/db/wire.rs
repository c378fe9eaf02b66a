//! The simulated database's wire messages: one request per
//! [`DbSession`](stormcell_model::ports::DbSession) method plus `Ping` and `Close`, sent as
//! frames of [`stormcell_model::wire::frame`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stormcell_model::ids::{DeviceId, Digest, Generation, LockOwner, RepoId, Version};
use stormcell_model::ports::{FinishWrite, LockName, ReplicationState};
use stormcell_model::rows::{
    row_versions, NewPushEvent, NewSyncEvent, Topology, VersionRow, WriteProps,
};

use super::replication::LogEntry;
use super::tables::{SessionId, Tables};

/// A request from a client session. Externally tagged (`{"try-lock": {...}}`): an
/// internally tagged enum is buffered whole before it is decoded, and every query of a
/// run crosses this wire twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DbRequest {
    /// `try_lock`.
    TryLock {
        /// The lock.
        lock: LockName,
    },
    /// `lock_wait`: waits in the lock's queue for at most `patience_ms` (answered by the
    /// server, which can wait; the tables alone only try).
    LockWait {
        /// The lock.
        lock: LockName,
        /// How long the session waits at most, in milliseconds.
        patience_ms: u64,
    },
    /// `unlock`.
    Unlock {
        /// The lock.
        lock: LockName,
    },
    /// `topology`.
    Topology,
    /// `rows`.
    Rows {
        /// The repository.
        repo: RepoId,
    },
    /// `out_of_sync`.
    OutOfSync {
        /// The device.
        device: DeviceId,
    },
    /// `begin_write`.
    BeginWrite {
        /// The repository.
        repo: RepoId,
        /// The writing device.
        device: DeviceId,
        /// Who is writing.
        props: WriteProps,
        /// The writer's token.
        owner: LockOwner,
    },
    /// `finish_write`.
    FinishWrite {
        /// The conditional update.
        finish: FinishWrite,
    },
    /// `set_version`.
    SetVersion {
        /// The repository.
        repo: RepoId,
        /// The device.
        device: DeviceId,
        /// The version.
        version: Version,
        /// The digest.
        digest: Option<Digest>,
        /// Only while the repository's rows are exactly these.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected: Option<Vec<(DeviceId, Version)>>,
    },
    /// `generation`.
    Generation,
    /// `demotions`.
    Demotions {
        /// The repository.
        repo: RepoId,
    },
    /// `restore_demote`.
    RestoreDemote {
        /// The repository.
        repo: RepoId,
        /// The device.
        device: DeviceId,
        /// The demotes it took note of.
        demotes: u64,
    },
    /// `insert_initial`.
    InsertInitial {
        /// The repository.
        repo: RepoId,
        /// The device.
        device: DeviceId,
        /// The digest.
        digest: Option<Digest>,
    },
    /// `record_push`.
    RecordPush {
        /// The event.
        event: NewPushEvent,
    },
    /// `newest_push_id`.
    NewestPushId {
        /// The repository.
        repo: RepoId,
    },
    /// `record_sync`.
    RecordSync {
        /// The event.
        event: NewSyncEvent,
    },
    /// `ping`, and the client's keepalive.
    Ping,
    /// `replication`: the host's replication state.
    Replication,
    /// A replica asks its primary for committed transactions after `after`.
    Replicate {
        /// The last sequence number the replica received.
        after: u64,
    },
    /// The client ends the session: its locks are released at once. Not answered.
    Close,
    /// An administrative request (see [`super::admin`]).
    Admin {
        /// The request.
        request: super::admin::AdminRequest,
    },
}

impl DbRequest {
    /// The request's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            DbRequest::TryLock { .. } => "try_lock",
            DbRequest::LockWait { .. } => "lock_wait",
            DbRequest::Unlock { .. } => "unlock",
            DbRequest::Topology => "topology",
            DbRequest::Rows { .. } => "rows",
            DbRequest::OutOfSync { .. } => "out_of_sync",
            DbRequest::BeginWrite { .. } => "begin_write",
            DbRequest::FinishWrite { .. } => "finish_write",
            DbRequest::SetVersion { .. } => "set_version",
            DbRequest::Generation => "generation",
            DbRequest::Demotions { .. } => "demotions",
            DbRequest::RestoreDemote { .. } => "restore_demote",
            DbRequest::InsertInitial { .. } => "insert_initial",
            DbRequest::RecordPush { .. } => "record_push",
            DbRequest::NewestPushId { .. } => "newest_push_id",
            DbRequest::RecordSync { .. } => "record_sync",
            DbRequest::Ping => "ping",
            DbRequest::Replication => "replication",
            DbRequest::Replicate { .. } => "replicate",
            DbRequest::Close => "close",
            DbRequest::Admin { .. } => "admin",
        }
    }

    /// How long the server may hold the request before answering, beyond the time a query
    /// takes: a lock wait's patience.
    pub fn patience(&self) -> std::time::Duration {
        match self {
            DbRequest::LockWait { patience_ms, .. } => {
                std::time::Duration::from_millis(*patience_ms)
            }
            _ => std::time::Duration::ZERO,
        }
    }

    /// Whether the request changes the tables (a replica refuses these, a primary ships
    /// them to its replicas). Locks are not data: each host keeps its own.
    pub fn is_write(&self) -> bool {
        match self {
            DbRequest::BeginWrite { .. }
            | DbRequest::FinishWrite { .. }
            | DbRequest::SetVersion { .. }
            | DbRequest::RestoreDemote { .. }
            | DbRequest::InsertInitial { .. }
            | DbRequest::RecordPush { .. }
            | DbRequest::RecordSync { .. } => true,
            DbRequest::TryLock { .. }
            | DbRequest::LockWait { .. }
            | DbRequest::Unlock { .. }
            | DbRequest::Topology
            | DbRequest::Rows { .. }
            | DbRequest::OutOfSync { .. }
            | DbRequest::NewestPushId { .. }
            | DbRequest::Generation
            | DbRequest::Demotions { .. }
            | DbRequest::Ping
            | DbRequest::Replication
            | DbRequest::Replicate { .. }
            | DbRequest::Close => false,
            DbRequest::Admin { request } => request.is_write(),
        }
    }
}

/// The server's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", content = "value", rename_all = "kebab-case")]
pub enum DbResponse {
    /// The request succeeded with nothing to return.
    Done,
    /// `try_lock` and `lock_wait`: whether the session holds the lock.
    Locked(bool),
    /// `topology`.
    Topology(Topology),
    /// `rows`.
    Rows(Vec<VersionRow>),
    /// `out_of_sync`.
    Repos(Vec<RepoId>),
    /// `finish_write`: rows changed.
    Changed(u64),
    /// `insert_initial`: whether it inserted.
    Inserted(bool),
    /// `generation`.
    Generation(Generation),
    /// `demotions`.
    Demotions(BTreeMap<DeviceId, u64>),
    /// `record_push`: the new id.
    PushId(u64),
    /// `newest_push_id`.
    NewestPushId(Option<u64>),
    /// `ping`.
    Pong,
    /// `replication`.
    Replication(ReplicationState),
    /// `replicate`: committed transactions in order, and the primary's newest sequence
    /// number.
    Log {
        /// The transactions.
        entries: Vec<LogEntry>,
        /// The newest sequence number on the primary.
        head: u64,
    },
    /// `push_events`.
    PushEvents(Vec<stormcell_model::rows::PushEvent>),
    /// `salvage_records`.
    SalvageRecords(Vec<stormcell_model::admin::SalvageRecord>),
    /// The database refused the request (a query error).
    Error(String),
}

/// Runs one request of `session` against the tables. `Close` releases the session's locks;
/// `Ping` only answers.
pub fn execute(tables: &mut Tables, session: SessionId, req: &DbRequest) -> DbResponse {
    match req {
        DbRequest::TryLock { lock } | DbRequest::LockWait { lock, .. } => {
            DbResponse::Locked(tables.try_lock(session, lock))
        }
        DbRequest::Unlock { lock } => {
            tables.unlock(session, lock);
            DbResponse::Done
        }
        DbRequest::Topology => DbResponse::Topology(tables.topology().clone()),
        DbRequest::Rows { repo } => DbResponse::Rows(tables.rows(repo)),
        DbRequest::OutOfSync { device } => DbResponse::Repos(tables.out_of_sync(device)),
        DbRequest::BeginWrite {
            repo,
            device,
            props,
            owner,
        } => {
            tables.begin_write(repo, device, props, owner);
            DbResponse::Done
        }
        DbRequest::FinishWrite { finish } => DbResponse::Changed(tables.finish_write(finish)),
        DbRequest::SetVersion {
            repo,
            device,
            version,
            digest,
            expected,
        } => {
            let current = || row_versions(&tables.rows(repo));
            if expected.as_ref().is_some_and(|e| *e != current()) {
                return DbResponse::Changed(0);
            }
            tables.set_version(repo, device, *version, *digest);
            DbResponse::Changed(1)
        }
        DbRequest::Generation => DbResponse::Generation(tables.generation().clone()),
        DbRequest::Demotions { repo } => DbResponse::Demotions(tables.demotions(repo)),
        DbRequest::RestoreDemote {
            repo,
            device,
            demotes,
        } => DbResponse::Inserted(tables.restore_demote(repo, device, *demotes)),
        DbRequest::InsertInitial {
            repo,
            device,
            digest,
        } => DbResponse::Inserted(tables.insert_initial(repo, device, *digest)),
        DbRequest::RecordPush { event } => DbResponse::PushId(tables.record_push(event)),
        DbRequest::NewestPushId { repo } => DbResponse::NewestPushId(tables.newest_push_id(repo)),
        DbRequest::RecordSync { event } => {
            tables.record_sync(event);
            DbResponse::Done
        }
        DbRequest::Ping => DbResponse::Pong,
        // Answered by the server, which knows the host's role and log.
        DbRequest::Replication | DbRequest::Replicate { .. } => {
            DbResponse::Error(format!("{} is not a table operation", req.name()))
        }
        DbRequest::Close => {
            tables.release_session(session);
            DbResponse::Done
        }
        DbRequest::Admin { request } => super::admin::execute_admin(tables, request),
    }
}
