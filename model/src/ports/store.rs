//! The working-copy port: one working copy per repository on a device, whose writes become
//! durable only at their sync points.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::ids::{Digest, Generation, Oid, RepoId, Version};
use crate::rows::RefUpdate;

/// What a client pushes: the ref updates and the objects they need, in the store's own
/// encoding (a Git pack for the daemon).
///
/// The objects are either in memory ([`PushPayload::pack`]) or, for a push the daemon took
/// over HTTP, in a file the request was spooled to ([`PushPayload::spool`]). A push may be
/// hundreds of megabytes: holding it in memory, let alone copying it into this struct,
/// would make a node's resident size grow with the largest push it takes. The file is
/// named by a path rather than moved behind a new port type so that the simulator, the
/// peer wire messages and every other user keep the in-memory form unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushPayload {
    /// The pushing user.
    pub user: String,
    /// Compare-and-swap updates, applied all or nothing.
    pub updates: Vec<RefUpdate>,
    /// Objects, opaque to the protocol (empty when [`PushPayload::spool`] is set).
    pub pack: Vec<u8>,
    /// Where this device's store finds the whole request instead of in `pack`: a file the
    /// device that took the request wrote and removes once the push is done (for the
    /// daemon, the client's `git-receive-pack` request body). Never serialized: it means
    /// something on this device only, and a peer must not be able to make a store read a
    /// file of its choosing, so a payload that arrives over the wire always carries its
    /// objects in `pack`. A store that keeps no such files refuses a payload that names one.
    #[serde(skip)]
    pub spool: Option<PathBuf>,
}

/// The result of receiving a push into a working copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushApplied {
    /// Whether every update applied (a push applies all or nothing).
    pub accepted: bool,
    /// Why not, for the client.
    pub reason: Option<String>,
    /// The store's own answer for the pushing client, handed back only once the write is
    /// recorded (for the daemon, receive-pack's status report); empty when it has none.
    #[serde(default)]
    pub report: Vec<u8>,
}

/// Everything a working copy holds, for a peer to mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// All refs.
    pub refs: BTreeMap<String, Oid>,
    /// Objects, opaque to the protocol.
    pub objects: Vec<u8>,
}

impl Snapshot {
    /// The digest of the snapshot's refs.
    pub fn digest(&self) -> Digest {
        Digest::of(self.refs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

/// **[stormcell]** A salvage bundle (PROTOCOL.md 12, "Thaw and salvage"): refs a thaw
/// discarded and every object they reach, kept on the device whose data they were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalvageBundle {
    /// Where the bundle is, as its device names it (for the daemon, the file's path).
    pub location: String,
    /// The refs it holds, under their names in the discarded working copy.
    pub refs: BTreeMap<String, Oid>,
}

/// Whether `label` may name a salvage bundle: letters, digits, `-`, `_` and `.`, not
/// starting with a dot, at most 200 characters. A label is a file name on the daemon, so
/// nothing that could climb out of the salvage directory is accepted.
pub fn valid_bundle_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 200
        && !label.starts_with('.')
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks a salvage bundle request the same way on every adapter: a safe label and at
/// least one ref to keep.
pub fn check_salvage_request(
    repo: &RepoId,
    label: &str,
    refs: &BTreeMap<String, Oid>,
) -> Result<(), StoreError> {
    if !valid_bundle_label(label) {
        return Err(StoreError(format!(
            "invalid salvage bundle label {label:?}"
        )));
    }
    if refs.is_empty() {
        return Err(StoreError(format!(
            "salvage bundle {label} of {repo}: no refs to keep"
        )));
    }
    Ok(())
}

/// The working copies of one device.
#[async_trait]
pub trait Store: Send + Sync {
    /// The refs of a working copy as a read would see them.
    async fn refs(&self, repo: &RepoId) -> Result<BTreeMap<String, Oid>, StoreError>;
    /// The digest of the working copy's refs.
    async fn digest(&self, repo: &RepoId) -> Result<Digest, StoreError> {
        let refs = self.refs(repo).await?;
        Ok(Digest::of(
            refs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ))
    }
    /// Receives a push: checks every update's `old` against the current value and, when
    /// all match, writes the objects and moves the refs. Not durable until [`Store::sync`].
    async fn apply_push(
        &self,
        repo: &RepoId,
        push: &PushPayload,
    ) -> Result<PushApplied, StoreError>;
    /// Makes everything written to the working copy durable (objects, refs, directories).
    async fn sync(&self, repo: &RepoId) -> Result<(), StoreError>;
    /// Everything the working copy holds.
    async fn export(&self, repo: &RepoId) -> Result<Snapshot, StoreError>;
    /// Mirrors a peer's snapshot (`+refs/*:refs/*` with prune). Not durable until
    /// [`Store::sync`].
    async fn import(&self, repo: &RepoId, snapshot: &Snapshot) -> Result<(), StoreError>;
    /// The device's durable local version of a repository (kept beside the working copy).
    async fn local_version(&self, repo: &RepoId) -> Result<Option<Version>, StoreError>;
    /// Durably records the device's local version of a repository.
    async fn set_local_version(&self, repo: &RepoId, version: Version) -> Result<(), StoreError>;
    /// **[stormcell]** How many demotes of this device in `repo` it has taken note of
    /// (PROTOCOL.md 12, claims after a demote); 0 when it never was demoted. A local
    /// version stands as a claim only for askers whose database counts no more demotes
    /// of this device than this.
    async fn demotes_seen(&self, repo: &RepoId) -> Result<u64, StoreError>;
    /// **[stormcell]** Gives up the local version as a claim after `demotes_seen` demotes:
    /// the local version file is removed first, then the count is recorded, both durably
    /// (a crash in between leaves a device that claims nothing, which is safe).
    async fn forget_claim(&self, repo: &RepoId, demotes_seen: u64) -> Result<(), StoreError>;
    /// **[stormcell]** The write in progress on this working copy, kept beside it: the
    /// ref digest the copy had before the write (PROTOCOL.md 12). A push sets it before
    /// it touches the copy and clears it once its outcome is settled (recorded, taken
    /// back out, recovered, or copied over by a sync), so a copy that a crash or a lost
    /// primary left holding a write no version records is known as such after a restart,
    /// even where no database row says `writing` any more.
    async fn write_marker(&self, repo: &RepoId) -> Result<Option<Digest>, StoreError>;
    /// Durably sets (`Some(pre-write digest)`) or clears (`None`) the write marker.
    async fn set_write_marker(&self, repo: &RepoId, pre: Option<Digest>) -> Result<(), StoreError>;
    /// The primary generation whose rows of `repo` this device last verified against its
    /// peers (PROTOCOL.md 12), kept beside the working copy; `None` when it never did.
    async fn verified_generation(&self, repo: &RepoId) -> Result<Option<Generation>, StoreError>;
    /// Durably records the generation whose rows of `repo` this device verified.
    async fn set_verified_generation(
        &self,
        repo: &RepoId,
        generation: &Generation,
    ) -> Result<(), StoreError>;
    /// **[stormcell]** Whether `ancestor` is `descendant` or one of its ancestors in the
    /// working copy's commit graph (the objects, not the push log: a force push or a push
    /// of many commits shows as it is). `false` when either commit is not in the working
    /// copy.
    async fn is_ancestor(
        &self,
        repo: &RepoId,
        ancestor: &Oid,
        descendant: &Oid,
    ) -> Result<bool, StoreError>;
    /// **[stormcell]** Writes `refs` and every object they reach to the salvage bundle
    /// `label` of `repo` (see [`valid_bundle_label`]), durable when this returns; a bundle
    /// of the same label is replaced. The commits need not be reachable from the working
    /// copy's refs any more, only present. Fails, keeping no bundle, when a commit is
    /// missing, `refs` is empty, the label is invalid, or the disk refuses the write.
    async fn write_salvage_bundle(
        &self,
        repo: &RepoId,
        label: &str,
        refs: &BTreeMap<String, Oid>,
    ) -> Result<SalvageBundle, StoreError>;
    /// **[stormcell]** The salvage bundles kept for `repo`, in label order.
    async fn salvage_bundles(&self, repo: &RepoId) -> Result<Vec<SalvageBundle>, StoreError>;
}
