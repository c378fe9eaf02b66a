//! The messages of the node service: client requests (reads and pushes), and peer
//! requests (version queries, fetches, notifications, recovery probes).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::ids::{Digest, LockOwner, Oid, RepoId, Version};
use crate::ports::store::{PushPayload, SalvageBundle, Snapshot};

/// A request: the first and only frame a caller sends on a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// A client read: read sync, then every ref.
    Read {
        /// The repository.
        repo: RepoId,
        /// Send progress lines before the answer.
        progress: bool,
    },
    /// A client push.
    Push {
        /// The repository.
        repo: RepoId,
        /// The ref updates and objects.
        payload: PushPayload,
        /// Send progress lines before the answer.
        progress: bool,
    },
    /// **[stormcell]** A thaw tells a device it was just demoted in `repo`, as its
    /// `demotes`-th demote there (PROTOCOL.md 12): the device forgets its local version
    /// at once, so the demote holds even if the primary is lost before a replica has it.
    Demoted {
        /// The repository.
        repo: RepoId,
        /// The device's demote count after this demote.
        demotes: u64,
    },
    /// A peer asks for this device's durable local version.
    PeerVersion {
        /// The repository.
        repo: RepoId,
        /// Whether the asker is read-only (its rows come from a replica), so the answer
        /// must be one this device can vouch for.
        #[serde(default)]
        read_only: bool,
    },
    /// A peer fetches everything this device holds of a repository.
    PeerFetch {
        /// The repository.
        repo: RepoId,
        /// Copy even a write that is not recorded yet: an operator's plan or salvage
        /// inspects what is on disk. A sync never does (it must not spread a write that
        /// may not count).
        #[serde(default)]
        unrecorded: bool,
    },
    /// A peer announces a new version, so this device pulls at once.
    Notify {
        /// The repository.
        repo: RepoId,
        /// The new version.
        version: Version,
    },
    /// **[stormcell]** Fenced recovery asks whether an interrupted write is still running
    /// here; if not, the write's token is fenced off for good and the digest returned.
    RecoverProbe {
        /// The repository.
        repo: RepoId,
        /// The interrupted writer's token.
        owner: LockOwner,
    },
    /// **[stormcell]** An operator's thaw plan asks, of each pair, whether the first commit
    /// is the second or one of its ancestors in this device's working copy (PROTOCOL.md
    /// 12: plans read ancestry from the commit graph).
    PeerAncestry {
        /// The repository.
        repo: RepoId,
        /// The questions, answered in order.
        queries: Vec<AncestryQuery>,
    },
    /// **[stormcell]** An operator's thaw has this device keep refs it is about to discard
    /// in a salvage bundle, before the version row changes (PROTOCOL.md 12).
    SalvageBundle {
        /// The repository.
        repo: RepoId,
        /// The bundle's label (see [`crate::ports::valid_bundle_label`]).
        label: String,
        /// The refs to keep, under their names in this working copy.
        refs: BTreeMap<String, Oid>,
    },
}

/// One ancestry question of [`Request::PeerAncestry`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AncestryQuery {
    /// The commit that may be an ancestor.
    pub ancestor: Oid,
    /// The commit it may be an ancestor of.
    pub descendant: Oid,
}

/// What a recovery probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum ProbeResult {
    /// The write is still running on the device: it is not interrupted, just slow.
    InProgress,
    /// No such write runs; it can never resume. The working copy's current digest.
    Idle {
        /// The digest.
        digest: Digest,
        /// The device's durable local version: the one the interrupted write started from
        /// when its working copy is the one that write was made in (PROTOCOL.md 12).
        #[serde(default)]
        local_version: Option<crate::ids::Version>,
    },
}

/// A response frame. A request gets any number of `Progress` frames, then exactly one
/// other frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Response {
    /// A progress line (`# ...`, PROTOCOL.md section 11).
    Progress {
        /// The line.
        line: String,
    },
    /// The refs a read saw.
    ReadOk {
        /// Every ref.
        refs: BTreeMap<String, Oid>,
        /// **[stormcell]** Freshness could not be proven (read-only mode).
        possibly_stale: bool,
    },
    /// The push was recorded.
    PushOk {
        /// The version the repository is at.
        version: Version,
    },
    /// A device's durable local version.
    Version {
        /// The version, if the device has one.
        version: Option<Version>,
        /// **[stormcell]** The ref digest of its working copy as it answered (none while a
        /// write shows in the copy unrecorded): an asker that copies from it on the
        /// strength of this answer takes only a copy with this digest, so a device whose
        /// disk was lost or restored since cannot hand over something else as that version.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<Digest>,
        /// **[stormcell]** How many demotes of the device its local version took note of
        /// (PROTOCOL.md 12): an asker whose database counts more ignores the claim.
        #[serde(default, skip_serializing_if = "is_zero")]
        demotes_seen: u64,
    },
    /// A snapshot for a peer.
    Snapshot {
        /// Everything the working copy holds.
        snapshot: Snapshot,
    },
    /// A notification was taken.
    Notified,
    /// A recovery probe's answer.
    Probe {
        /// What was found.
        result: ProbeResult,
    },
    /// **[stormcell]** The answers to [`Request::PeerAncestry`], in the order asked.
    Ancestry {
        /// Whether each query's ancestor is its descendant or one of its ancestors.
        answers: Vec<bool>,
    },
    /// **[stormcell]** A salvage bundle was written and is durable.
    Bundle {
        /// Where it is and what it holds.
        bundle: SalvageBundle,
    },
    /// The request failed.
    Error {
        /// The cause.
        code: ErrorCode,
        /// The message the client sees.
        message: String,
    },
}

/// Whether a count is zero, to leave it out of a message.
fn is_zero(n: &u64) -> bool {
    *n == 0
}
