//! Every way a request can fail, with the exact message its client sees (PROTOCOL.md
//! sections 6 and 11: every refusal names its cause and, where one exists, the operator
//! command that resolves it).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{DeviceId, RepoId, Version};

/// Errors of the cluster database port.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum DbError {
    /// The database could not be reached or the connection broke: the request may be
    /// retried on a new connection.
    #[error("cluster database unreachable: {0}")]
    Connection(String),
    /// The database answered with an error.
    #[error("cluster database error: {0}")]
    Query(String),
}

impl DbError {
    /// Whether the error is a connection error (the only kind step 6 of a write retries).
    pub fn is_connection(&self) -> bool {
        matches!(self, DbError::Connection(_))
    }
}

/// Errors of the working-copy port.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[error("working copy error: {0}")]
pub struct StoreError(pub String);

/// Errors talking to a peer device.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum PeerError {
    /// No connection could be made.
    #[error("could not connect to device \"{device}\": {reason}")]
    Connect {
        /// The peer.
        device: DeviceId,
        /// Why.
        reason: String,
    },
    /// The request ran past its time limit.
    #[error("device \"{device}\" did not answer within {limit:?}")]
    Timeout {
        /// The peer.
        device: DeviceId,
        /// The limit.
        limit: Duration,
    },
    /// The connection broke or carried something unreadable.
    #[error("connection to device \"{device}\" failed: {reason}")]
    Io {
        /// The peer.
        device: DeviceId,
        /// Why.
        reason: String,
    },
    /// The peer answered with an error.
    #[error("device \"{device}\" refused: {message}")]
    Refused {
        /// The peer.
        device: DeviceId,
        /// Its message.
        message: String,
    },
}

/// A machine-readable cause, carried on the wire beside the message so a client can tell
/// a freeze from a broken link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// Frozen for writes.
    WriteInterruption,
    /// Behind, and no leader fetchable.
    LeaderLost,
    /// No rows and several active devices.
    AmbiguousLeader,
    /// This device is not bound to the repository's service.
    NotBound,
    /// A lock wait ran past its budget.
    LockTimeout,
    /// A ref was not at the value the pusher expected.
    Rejected,
    /// The cluster database could not be reached.
    DatabaseUnavailable,
    /// Read-only maintenance.
    Maintenance,
    /// The server is in read-only mode.
    ReadOnly,
    /// The write reached the disk but may not have been recorded: the outcome is unknown.
    MayNotBeRecorded,
    /// The repository is unknown or not clustered.
    NotFound,
    /// Anything else.
    Internal,
}

/// A request's failure, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClusterError {
    /// Section 6: some row has `writing = true`.
    #[error(
        "Repository \"{repo}\" is frozen for writes: a write by {user} on device \"{device}\" \
         was interrupted{since}. Reads still work. To resolve it, run \
         `stormcell repository thaw {repo} --demote {device}` (the interrupted write is lost) \
         or restore the device so the cluster can recover it."
    , since = since_text(*.since_ms))]
    WriteInterruption {
        /// The repository.
        repo: RepoId,
        /// The interrupted device.
        device: DeviceId,
        /// The interrupted writer.
        user: String,
        /// How long ago the write started, when known.
        since_ms: Option<u64>,
    },
    /// Section 6: this device needs sync and no leader is fetchable.
    #[error(
        "Repository \"{repo}\" is behind on this device (\"{device}\") and no cluster leader \
         ({leaders}) could be synchronized from{reason}. Restore a leader, or run \
         `stormcell repository thaw {repo} --demote DEVICE` to give up its changes."
    , leaders = join(.leaders), reason = reason_text(.last_error))]
    LeaderLost {
        /// The repository.
        repo: RepoId,
        /// This device.
        device: DeviceId,
        /// The leaders that could not be used.
        leaders: Vec<DeviceId>,
        /// The last fetch error, if any fetch was tried.
        last_error: Option<String>,
    },
    /// Section 6: no rows and several active devices.
    #[error(
        "Repository \"{repo}\" has no version information and several active devices \
         ({devices}): the cluster cannot tell which copy to trust. Run \
         `stormcell repository thaw {repo} --promote DEVICE` on the device with the right data."
    , devices = join(.devices))]
    AmbiguousLeader {
        /// The repository.
        repo: RepoId,
        /// The active devices.
        devices: Vec<DeviceId>,
    },
    /// Section 4.1 step 4: this device is not bound to the repository's service.
    #[error(
        "Device \"{device}\" is not an active member of the service of repository \"{repo}\"."
    )]
    NotBound {
        /// The repository.
        repo: RepoId,
        /// This device.
        device: DeviceId,
    },
    /// Section 7.5: the device's binding is set to Prevent Writes.
    #[error(
        "Device \"{device}\" takes no writes for repository \"{repo}\" (its binding is set to \
         Prevent Writes). Push to another device of the service."
    )]
    WritesPrevented {
        /// The repository.
        repo: RepoId,
        /// This device.
        device: DeviceId,
    },
    /// Section 2: a lock wait ran past its budget.
    #[error(
        "Timed out after {waited:?} waiting for the {lock} lock of repository \"{repo}\"{holder}. \
         This request failed; a retry may work."
    , holder = holder_text(.holder))]
    LockTimeout {
        /// The repository.
        repo: RepoId,
        /// `write` or `read`.
        lock: &'static str,
        /// How long we waited.
        waited: Duration,
        /// Who held it, when known.
        holder: Option<String>,
    },
    /// The push's compare-and-swap failed.
    #[error("Push rejected: {0}")]
    Rejected(String),
    /// The cluster database could not be reached.
    #[error("The cluster database could not be reached ({0}). Nothing was changed.")]
    Database(DbError),
    /// Read-only maintenance (section 7.3).
    #[error("This repository is currently in read-only maintenance mode. {0}")]
    Maintenance(String),
    /// Step 6 of 4.2 failed: the write reached the disk but may not be recorded.
    #[error(
        "CRITICAL. The write reached device \"{device}\" but could not be recorded in the \
         cluster ({reason}). It may not have been recorded; repository \"{repo}\" is frozen \
         for writes until the cluster recovers it or an operator runs \
         `stormcell repository thaw {repo} --demote {device}`."
    )]
    MayNotBeRecorded {
        /// The repository.
        repo: RepoId,
        /// This device.
        device: DeviceId,
        /// Why.
        reason: String,
    },
    /// **[stormcell]** Step 6 changed no row: the write was fenced off.
    #[error(
        "The write to repository \"{repo}\" was not acknowledged: this device's version row \
         changed while it was writing (it was recovered or demoted by the cluster). Fetch and \
         check whether your change is present before pushing again."
    )]
    Fenced {
        /// The repository.
        repo: RepoId,
    },
    /// Writes are refused: the device is read-only (PROTOCOL.md 9.4).
    #[error(
        "This server is in read-only mode ({}). Pushes and other writes are refused until \
         the primary cluster database is back; reads are still served."
    , .reason.describe())]
    ReadOnly {
        /// Why.
        reason: crate::failover::ReadOnlyReason,
    },
    /// Neither the primary nor any replica answered.
    #[error(
        "Unable to reach any database: neither the primary nor a replica answered ({reason})."
    )]
    Stranded {
        /// What failed.
        reason: String,
    },
    /// **[stormcell]** The database's version rows could not be trusted (read-only on a
    /// replica, or just after a primary change) and the peers that could vouch did not
    /// answer: a write is refused, and so is a read when the configuration says so
    /// (PROTOCOL.md 9.6).
    #[error(
        "Repository \"{repo}\" cannot be shown to be up to date on this device right now: \
         the cluster database may be missing recent versions, and these devices did not \
         answer for theirs: {unanswered}. Retry, or use another device."
    , unanswered = join(.unanswered))]
    Unverified {
        /// The repository.
        repo: RepoId,
        /// The peers that could not be asked.
        unanswered: Vec<DeviceId>,
    },
    /// **[stormcell]** A push to the repository on this device reached the disk and is not
    /// recorded yet (its version waits on the cluster database), so the working copy shows
    /// a change that may never count. Reads go to another device meanwhile.
    #[error(
        "A push to repository \"{repo}\" on device \"{device}\" is still being recorded in \
         the cluster, so this device cannot serve it right now. Read from another device, or \
         retry shortly."
    )]
    WriteUnrecorded {
        /// The repository.
        repo: RepoId,
        /// This device.
        device: DeviceId,
    },
    /// **[stormcell]** PROTOCOL.md 12: a demote gave up this device's copy and it has not
    /// been synchronized since, so it is no leader's copy to hand to a peer.
    #[error(
        "Device \"{device}\" was demoted in repository \"{repo}\" and holds no version of it \
         until it is synchronized; copy from a leader instead."
    )]
    Demoted {
        /// The repository.
        repo: RepoId,
        /// This device.
        device: DeviceId,
    },
    /// **[stormcell]** PROTOCOL.md 12: this device's row says it holds the newest version,
    /// but its working copy is not that version (a lost, wiped or restored disk), and no
    /// other device holding it could be copied.
    #[error(
        "Repository \"{repo}\" is frozen on device \"{device}\": its row claims version \
         {version}, but its working copy does not hold that version (the disk was lost, wiped \
         or restored from an older backup), and no other device holding version {version} \
         could be synchronized from. Bring back a device that holds it, or run `stormcell \
         repository thaw {repo} --demote {device}` to give up what only this device held."
    )]
    NotIntact {
        /// The repository.
        repo: RepoId,
        /// This device.
        device: DeviceId,
        /// The version its row claims.
        version: Version,
    },
    /// A push reached the working copy but could not be made durable (the disk failed to
    /// sync): it is not acknowledged, and whether it counts is decided by recovery.
    #[error(
        "The push to repository \"{repo}\" could not be made durable on device \"{device}\" \
         ({reason}). It was not acknowledged and may or may not take effect; repository \
         \"{repo}\" is frozen for writes until the device's disk works again and the cluster \
         recovers the write, or an operator runs `stormcell repository thaw {repo} --demote \
         {device}`."
    )]
    NotDurable {
        /// The repository.
        repo: RepoId,
        /// This device.
        device: DeviceId,
        /// What the disk said.
        reason: String,
    },
    /// The repository is unknown or not clustered.
    #[error("Repository \"{0}\" is not known to this cluster.")]
    NotFound(RepoId),
    /// The working copy failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Anything else.
    #[error("Internal error: {0}")]
    Internal(String),
}

impl ClusterError {
    /// The machine-readable cause.
    pub fn code(&self) -> ErrorCode {
        match self {
            ClusterError::WriteInterruption { .. } => ErrorCode::WriteInterruption,
            ClusterError::LeaderLost { .. } => ErrorCode::LeaderLost,
            ClusterError::AmbiguousLeader { .. } => ErrorCode::AmbiguousLeader,
            ClusterError::NotBound { .. } | ClusterError::WritesPrevented { .. } => {
                ErrorCode::NotBound
            }
            // Like a read lock held by a writer: this request only, retryable elsewhere.
            ClusterError::LockTimeout { .. } | ClusterError::WriteUnrecorded { .. } => {
                ErrorCode::LockTimeout
            }
            ClusterError::Rejected(_) => ErrorCode::Rejected,
            ClusterError::Database(_) => ErrorCode::DatabaseUnavailable,
            ClusterError::Maintenance(_) => ErrorCode::Maintenance,
            ClusterError::MayNotBeRecorded { .. }
            | ClusterError::Fenced { .. }
            | ClusterError::NotDurable { .. } => ErrorCode::MayNotBeRecorded,
            ClusterError::NotIntact { .. } | ClusterError::Demoted { .. } => ErrorCode::LeaderLost,
            ClusterError::ReadOnly { .. } => ErrorCode::ReadOnly,
            ClusterError::Stranded { .. } => ErrorCode::DatabaseUnavailable,
            ClusterError::Unverified { .. } => ErrorCode::LeaderLost,
            ClusterError::NotFound(_) => ErrorCode::NotFound,
            ClusterError::Store(_) | ClusterError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<DbError> for ClusterError {
    fn from(e: DbError) -> Self {
        ClusterError::Database(e)
    }
}

fn join(devices: &[DeviceId]) -> String {
    if devices.is_empty() {
        return "none".to_owned();
    }
    devices
        .iter()
        .map(|d| d.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn since_text(since_ms: Option<u64>) -> String {
    since_ms
        .map(|ms| format!(" {}s ago", ms / 1000))
        .unwrap_or_default()
}

fn reason_text(last_error: &Option<String>) -> String {
    last_error
        .as_ref()
        .map(|e| format!(" (last error: {e})"))
        .unwrap_or_default()
}

fn holder_text(holder: &Option<String>) -> String {
    holder
        .as_ref()
        .map(|h| format!(" (held by {h})"))
        .unwrap_or_default()
}
