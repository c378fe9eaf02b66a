//! The simulated working-copy store of one device, with a crash model
//! (ARCHITECTURE.md, "Working-copy crash model").
//!
//! Every repository has a durable state and an ordered list of pending (unsynced)
//! operations: object writes and single ref moves. What a read sees is the durable state
//! with the pending operations applied. [`Store::sync`] makes a repository's pending
//! operations durable; [`SimStore::crash`] keeps a random prefix of them and drops the rest,
//! which models both "unsynced writes are lost" and "a multi-ref update is torn at any point
//! between objects written and all refs moved". A sync that fails (a failing disk) drops
//! them all at once, as a kernel that discards the pages it could not write back does.
//!
//! The store is shared between the device's software (through the [`Store`] port) and the
//! harness (which crashes it and reads the final state), so it is a cheap handle around one
//! mutex. The mutex is never held across an `await`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use stormcell_model::error::StoreError;
use stormcell_model::ids::{Digest, Generation, Oid, RepoId, Version};
use stormcell_model::ports::{
    check_salvage_request, PushApplied, PushPayload, SalvageBundle, Snapshot, Store,
};

/// A simulated commit: an id and at most one parent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Commit {
    /// The commit id (the object id refs point at).
    pub id: String,
    /// Its parent, if any.
    pub parent: Option<String>,
}

impl Commit {
    /// A commit with the given id and parent.
    pub fn new(id: impl Into<String>, parent: Option<&str>) -> Self {
        Self {
            id: id.into(),
            parent: parent.map(str::to_owned),
        }
    }
}

/// Encodes commits as the store's object format (`PushPayload::pack`, `Snapshot::objects`):
/// JSON of a list of commits.
pub fn encode_commits(commits: &[Commit]) -> Vec<u8> {
    // Serialising plain strings cannot fail; the fallback keeps this total anyway.
    serde_json::to_vec(commits).unwrap_or_else(|_| b"[]".to_vec())
}

/// Decodes the store's object format. An empty buffer means no objects (a delete-only push
/// need not carry a pack); anything else that is not a JSON list of commits is an error.
pub fn decode_commits(bytes: &[u8]) -> Result<Vec<Commit>, StoreError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(bytes).map_err(|e| StoreError(format!("malformed object data: {e}")))
}

/// One unsynced write, in the order the working copy issued it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PendingOp {
    /// An object written to the object database.
    Object(Commit),
    /// A ref moved to (or created at) a commit.
    SetRef(String, Oid),
    /// A ref deleted.
    DeleteRef(String),
}

/// A salvage bundle as the simulated disk keeps it: its refs and every commit they reach.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SimBundle {
    refs: BTreeMap<String, Oid>,
    commits: Vec<Commit>,
}

/// What survives a crash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Durable {
    refs: BTreeMap<String, Oid>,
    objects: BTreeMap<String, Commit>,
    local_version: Option<Version>,
    verified_generation: Option<Generation>,
    /// The pre-write digest of a write in progress (written durably at once).
    write_marker: Option<Digest>,
    /// The demotes of this device the local version has taken note of.
    demotes_seen: u64,
    /// Salvage bundles by label; written durably at once (a bundle is synced before the
    /// thaw that asked for it changes any row).
    bundles: BTreeMap<String, SimBundle>,
}

impl Durable {
    fn apply(&mut self, op: PendingOp) {
        match op {
            PendingOp::Object(c) => {
                self.objects.insert(c.id.clone(), c);
            }
            PendingOp::SetRef(name, oid) => {
                self.refs.insert(name, oid);
            }
            PendingOp::DeleteRef(name) => {
                self.refs.remove(&name);
            }
        }
    }
}

/// One repository's working copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RepoState {
    durable: Durable,
    pending: Vec<PendingOp>,
}

impl RepoState {
    /// The refs a read sees: durable refs with the pending ref moves applied.
    fn visible_refs(&self) -> BTreeMap<String, Oid> {
        let mut refs = self.durable.refs.clone();
        for op in &self.pending {
            match op {
                PendingOp::Object(_) => {}
                PendingOp::SetRef(name, oid) => {
                    refs.insert(name.clone(), oid.clone());
                }
                PendingOp::DeleteRef(name) => {
                    refs.remove(name);
                }
            }
        }
        refs
    }

    /// Whether an object is visible (durable or pending).
    fn has_object(&self, id: &str) -> bool {
        self.durable.objects.contains_key(id)
            || self
                .pending
                .iter()
                .any(|op| matches!(op, PendingOp::Object(c) if c.id == id))
    }

    /// A visible object.
    fn object(&self, id: &str) -> Option<Commit> {
        self.pending
            .iter()
            .rev()
            .find_map(|op| match op {
                PendingOp::Object(c) if c.id == id => Some(c.clone()),
                _ => None,
            })
            .or_else(|| self.durable.objects.get(id).cloned())
    }

    /// `commit` and every ancestor of it, in walk order, or the first id that is missing.
    /// Bounded by the number of objects, so a cycle cannot loop forever.
    fn history(&self, commit: &str) -> Result<Vec<Commit>, String> {
        let objects = self.visible_objects();
        let mut out = Vec::new();
        let mut at = Some(commit.to_owned());
        while let Some(id) = at {
            if out.len() > objects.len() {
                break;
            }
            let Some(c) = objects.get(&id) else {
                return Err(id);
            };
            at = c.parent.clone();
            out.push(c.clone());
        }
        Ok(out)
    }

    /// Every visible object, in id order.
    fn visible_objects(&self) -> BTreeMap<String, Commit> {
        let mut objects = self.durable.objects.clone();
        for op in &self.pending {
            if let PendingOp::Object(c) = op {
                objects.insert(c.id.clone(), c.clone());
            }
        }
        objects
    }

    /// Queues writes of the given objects that are not visible yet, deduplicated, in the
    /// given order.
    fn queue_objects(&mut self, commits: Vec<Commit>) {
        for c in commits {
            if !self.has_object(&c.id) {
                self.pending.push(PendingOp::Object(c));
            }
        }
    }
}

/// Everything in the store.
#[derive(Debug, Default)]
pub struct StoreState {
    repos: BTreeMap<RepoId, RepoState>,
    /// The disk refuses to make anything durable (a failing fsync, a full disk).
    failing_syncs: bool,
}

/// What a crash did to one repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoCrash {
    /// Pending operations that happened to reach the disk (a prefix).
    pub kept: usize,
    /// Pending operations lost.
    pub lost: usize,
    /// Whether a multi-ref update was torn: some of its ref moves reached the disk and
    /// some did not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub torn: bool,
}

/// What a crash did, per repository that had pending operations, for the trace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashReport {
    /// Repository name to what happened to its pending operations.
    pub repos: BTreeMap<String, RepoCrash>,
}

impl std::fmt::Display for CrashReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.repos.is_empty() {
            return f.write_str("nothing unsynced");
        }
        let mut first = true;
        for (repo, rc) in &self.repos {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(
                f,
                "{repo}: kept {} of {} unsynced writes",
                rc.kept,
                rc.kept + rc.lost
            )?;
        }
        Ok(())
    }
}

impl CrashReport {
    /// Whether the crash lost anything.
    pub fn lost_anything(&self) -> bool {
        self.repos.values().any(|r| r.lost > 0)
    }
}

/// A copy of every working copy of a device, as a backup keeps it: what a read saw at the
/// time, all of it durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreBackup {
    repos: BTreeMap<RepoId, RepoState>,
}

/// The simulated working copies of one device. Cloning shares the same state.
#[derive(Debug, Clone, Default)]
pub struct SimStore {
    inner: Arc<Mutex<StoreState>>,
}

impl SimStore {
    /// An empty store: every repository starts as an empty working copy.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, StoreState> {
        // A panic elsewhere must not make the store unusable for the final-state readout.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets a repository's durable state at time zero: exactly these refs (name to commit
    /// id) and objects, nothing pending, no local version.
    pub fn seed_repo(&self, repo: &str, refs: BTreeMap<String, String>, commits: Vec<Commit>) {
        let mut st = self.lock();
        let durable = Durable {
            refs: refs.into_iter().map(|(k, v)| (k, Oid(v))).collect(),
            objects: commits.into_iter().map(|c| (c.id.clone(), c)).collect(),
            local_version: None,
            verified_generation: None,
            write_marker: None,
            demotes_seen: 0,
            bundles: BTreeMap::new(),
        };
        st.repos.insert(
            RepoId::new(repo),
            RepoState {
                durable,
                pending: Vec::new(),
            },
        );
    }

    /// Strikes the device: for each repository in name order that has pending operations,
    /// one uniform draw of `k` in `0..=n` keeps the first `k` as durable and drops the rest.
    pub fn crash(&self, rng: &mut ChaCha8Rng) -> CrashReport {
        let mut st = self.lock();
        let mut report = CrashReport::default();
        for (repo, state) in st.repos.iter_mut() {
            let n = state.pending.len();
            if n == 0 {
                continue;
            }
            let kept = rng.random_range(0..=n);
            let pending = std::mem::take(&mut state.pending);
            let is_ref = |op: &PendingOp| !matches!(op, PendingOp::Object(_));
            let torn = pending[..kept].iter().any(is_ref) && pending[kept..].iter().any(is_ref);
            for op in pending.into_iter().take(kept) {
                state.durable.apply(op);
            }
            report.repos.insert(
                repo.as_str().to_owned(),
                RepoCrash {
                    kept,
                    lost: n - kept,
                    torn,
                },
            );
        }
        report
    }

    /// Takes a backup of every working copy.
    pub fn backup(&self) -> StoreBackup {
        let st = self.lock();
        let repos = st
            .repos
            .iter()
            .map(|(repo, state)| {
                let mut durable = state.durable.clone();
                for op in state.pending.iter().cloned() {
                    durable.apply(op);
                }
                let copy = RepoState {
                    durable,
                    pending: Vec::new(),
                };
                (repo.clone(), copy)
            })
            .collect();
        StoreBackup { repos }
    }

    /// Replaces every working copy with a backup's (a device rebuilt from backups).
    pub fn restore(&self, backup: &StoreBackup) {
        self.lock().repos = backup.repos.clone();
    }

    /// The disk is gone: every working copy and local version file with it. The device
    /// starts again on an empty disk.
    pub fn wipe(&self) {
        self.lock().repos.clear();
    }

    /// While `failing`, every sync fails and drops the writes it should have made durable
    /// (see [`Store::sync`] here); writes not yet synced stay visible until a sync or a
    /// crash.
    pub fn set_failing_syncs(&self, failing: bool) {
        self.lock().failing_syncs = failing;
    }

    fn check_disk(st: &StoreState, what: &str, repo: &RepoId) -> Result<(), StoreError> {
        if st.failing_syncs {
            return Err(StoreError(format!(
                "{what} of {repo} failed: input/output error (the disk refuses writes)"
            )));
        }
        Ok(())
    }

    /// The refs a read would see, per repository (for the final state).
    pub fn snapshot_refs(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let st = self.lock();
        st.repos
            .iter()
            .map(|(repo, state)| {
                let refs = state
                    .visible_refs()
                    .into_iter()
                    .map(|(name, oid)| (name, oid.0))
                    .collect();
                (repo.as_str().to_owned(), refs)
            })
            .collect()
    }

    /// The durable refs of a repository (what would survive a crash that keeps nothing).
    pub fn durable_refs(&self, repo: &RepoId) -> BTreeMap<String, Oid> {
        let st = self.lock();
        st.repos
            .get(repo)
            .map(|s| s.durable.refs.clone())
            .unwrap_or_default()
    }

    /// How many unsynced operations a repository has.
    pub fn pending_ops(&self, repo: &RepoId) -> usize {
        self.lock().repos.get(repo).map_or(0, |s| s.pending.len())
    }

    /// Every commit a read of the repository could see, in id order.
    pub fn visible_commits(&self, repo: &RepoId) -> Vec<Commit> {
        let st = self.lock();
        st.repos
            .get(repo)
            .map(|s| s.visible_objects().into_values().collect())
            .unwrap_or_default()
    }
}

/// Where a salvage bundle is, as this store names it.
fn bundle_location(repo: &RepoId, label: &str) -> String {
    format!("salvage/{repo}/{label}.bundle")
}

fn show(oid: Option<&Oid>) -> &str {
    oid.map_or("nothing", |o| o.as_str())
}

#[async_trait]
impl Store for SimStore {
    async fn refs(&self, repo: &RepoId) -> Result<BTreeMap<String, Oid>, StoreError> {
        let st = self.lock();
        Ok(st
            .repos
            .get(repo)
            .map(RepoState::visible_refs)
            .unwrap_or_default())
    }

    async fn apply_push(
        &self,
        repo: &RepoId,
        push: &PushPayload,
    ) -> Result<PushApplied, StoreError> {
        // Spooled requests exist only in the daemon; nothing here ever makes one.
        if let Some(file) = &push.spool {
            return Err(StoreError(format!(
                "the simulated store keeps no spooled pushes ({})",
                file.display()
            )));
        }
        let commits = decode_commits(&push.pack)?;
        let mut st = self.lock();
        let state = st.repos.entry(repo.clone()).or_default();
        let refs = state.visible_refs();

        let reject = |reason: String| {
            Ok(PushApplied {
                accepted: false,
                reason: Some(reason),
                report: Vec::new(),
            })
        };
        // Compare-and-swap, all or nothing: check everything before writing anything.
        let mut seen = std::collections::BTreeSet::new();
        for u in &push.updates {
            if !seen.insert(u.name.as_str()) {
                return reject(format!("{}: updated more than once in one push", u.name));
            }
            let current = refs.get(&u.name);
            if current != u.old.as_ref() {
                return reject(format!(
                    "{}: expected {}, found {}",
                    u.name,
                    show(u.old.as_ref()),
                    show(current)
                ));
            }
            if let Some(new) = &u.new {
                let in_pack = commits.iter().any(|c| c.id == new.0);
                if !in_pack && !state.has_object(new.as_str()) {
                    return reject(format!("{}: missing object {}", u.name, new));
                }
            }
        }

        // Objects first, then one ref move per update: a crash can keep any prefix.
        state.queue_objects(commits);
        for u in &push.updates {
            if u.new == u.old {
                continue;
            }
            match &u.new {
                Some(new) => state
                    .pending
                    .push(PendingOp::SetRef(u.name.clone(), new.clone())),
                None => state.pending.push(PendingOp::DeleteRef(u.name.clone())),
            }
        }
        Ok(PushApplied {
            accepted: true,
            reason: None,
            report: Vec::new(),
        })
    }

    async fn sync(&self, repo: &RepoId) -> Result<(), StoreError> {
        let mut st = self.lock();
        if let Err(e) = Self::check_disk(&st, "sync", repo) {
            // A failed writeback does not leave the data waiting for a retry: the kernel
            // may drop the dirty pages it could not write (and report the next fsync as
            // clean), so what this sync should have made durable is gone at once, not
            // only at the next crash. Software that goes on as if it were there finds out.
            if let Some(state) = st.repos.get_mut(repo) {
                state.pending.clear();
            }
            return Err(e);
        }
        if let Some(state) = st.repos.get_mut(repo) {
            let pending = std::mem::take(&mut state.pending);
            for op in pending {
                state.durable.apply(op);
            }
        }
        Ok(())
    }

    async fn export(&self, repo: &RepoId) -> Result<Snapshot, StoreError> {
        let st = self.lock();
        let Some(state) = st.repos.get(repo) else {
            return Ok(Snapshot {
                refs: BTreeMap::new(),
                objects: encode_commits(&[]),
            });
        };
        let objects: Vec<Commit> = state.visible_objects().into_values().collect();
        Ok(Snapshot {
            refs: state.visible_refs(),
            objects: encode_commits(&objects),
        })
    }

    async fn import(&self, repo: &RepoId, snapshot: &Snapshot) -> Result<(), StoreError> {
        let commits = decode_commits(&snapshot.objects)?;
        let mut st = self.lock();
        let state = st.repos.entry(repo.clone()).or_default();
        // A mirror must be complete: refuse (before writing anything) a snapshot whose refs
        // point at objects neither it nor this working copy has.
        for (name, oid) in &snapshot.refs {
            let in_snapshot = commits.iter().any(|c| c.id == oid.0);
            if !in_snapshot && !state.has_object(oid.as_str()) {
                return Err(StoreError(format!(
                    "mirror of {repo}: {name} points at missing object {oid}"
                )));
            }
        }
        let refs = state.visible_refs();
        state.queue_objects(commits);
        // `+refs/*:refs/*` with prune: refs are moved in name order, each its own write.
        let mut names: std::collections::BTreeSet<&String> = refs.keys().collect();
        names.extend(snapshot.refs.keys());
        for name in names {
            match (refs.get(name), snapshot.refs.get(name)) {
                (Some(old), Some(new)) if old == new => {}
                (_, Some(new)) => state
                    .pending
                    .push(PendingOp::SetRef(name.clone(), new.clone())),
                (Some(_), None) => state.pending.push(PendingOp::DeleteRef(name.clone())),
                (None, None) => {}
            }
        }
        Ok(())
    }

    async fn local_version(&self, repo: &RepoId) -> Result<Option<Version>, StoreError> {
        Ok(self
            .lock()
            .repos
            .get(repo)
            .and_then(|s| s.durable.local_version))
    }

    async fn set_local_version(&self, repo: &RepoId, version: Version) -> Result<(), StoreError> {
        let mut st = self.lock();
        Self::check_disk(&st, "writing the local version", repo)?;
        st.repos
            .entry(repo.clone())
            .or_default()
            .durable
            .local_version = Some(version);
        Ok(())
    }

    async fn demotes_seen(&self, repo: &RepoId) -> Result<u64, StoreError> {
        Ok(self
            .lock()
            .repos
            .get(repo)
            .map_or(0, |s| s.durable.demotes_seen))
    }

    async fn forget_claim(&self, repo: &RepoId, demotes_seen: u64) -> Result<(), StoreError> {
        let mut st = self.lock();
        Self::check_disk(&st, "forgetting the local version", repo)?;
        let durable = &mut st.repos.entry(repo.clone()).or_default().durable;
        durable.local_version = None;
        durable.demotes_seen = demotes_seen;
        Ok(())
    }

    async fn write_marker(&self, repo: &RepoId) -> Result<Option<Digest>, StoreError> {
        Ok(self
            .lock()
            .repos
            .get(repo)
            .and_then(|s| s.durable.write_marker))
    }

    async fn set_write_marker(&self, repo: &RepoId, pre: Option<Digest>) -> Result<(), StoreError> {
        let mut st = self.lock();
        Self::check_disk(&st, "writing the write marker", repo)?;
        st.repos
            .entry(repo.clone())
            .or_default()
            .durable
            .write_marker = pre;
        Ok(())
    }

    async fn verified_generation(&self, repo: &RepoId) -> Result<Option<Generation>, StoreError> {
        Ok(self
            .lock()
            .repos
            .get(repo)
            .and_then(|s| s.durable.verified_generation.clone()))
    }

    async fn set_verified_generation(
        &self,
        repo: &RepoId,
        generation: &Generation,
    ) -> Result<(), StoreError> {
        let mut st = self.lock();
        Self::check_disk(&st, "writing the verified generation", repo)?;
        st.repos
            .entry(repo.clone())
            .or_default()
            .durable
            .verified_generation = Some(generation.clone());
        Ok(())
    }

    async fn is_ancestor(
        &self,
        repo: &RepoId,
        ancestor: &Oid,
        descendant: &Oid,
    ) -> Result<bool, StoreError> {
        let st = self.lock();
        let Some(state) = st.repos.get(repo) else {
            return Ok(false);
        };
        // Walk the parents down from `descendant`; a missing object ends the walk. Bounded
        // by the number of objects, so a cycle cannot loop forever.
        let limit = state.durable.objects.len() + state.pending.len();
        let mut at = state.object(descendant.as_str());
        let mut steps = 0;
        while let Some(c) = at {
            if c.id == ancestor.as_str() {
                return Ok(true);
            }
            steps += 1;
            if steps > limit {
                break;
            }
            at = c.parent.as_deref().and_then(|p| state.object(p));
        }
        Ok(false)
    }

    async fn write_salvage_bundle(
        &self,
        repo: &RepoId,
        label: &str,
        refs: &BTreeMap<String, Oid>,
    ) -> Result<SalvageBundle, StoreError> {
        check_salvage_request(repo, label, refs)?;
        let mut st = self.lock();
        Self::check_disk(&st, "writing a salvage bundle", repo)?;
        let state = st.repos.entry(repo.clone()).or_default();
        let mut commits: BTreeMap<String, Commit> = BTreeMap::new();
        for (name, oid) in refs {
            let history = state.history(oid.as_str()).map_err(|missing| {
                StoreError(format!(
                    "salvage bundle {label} of {repo}: {name} needs missing object {missing}"
                ))
            })?;
            commits.extend(history.into_iter().map(|c| (c.id.clone(), c)));
        }
        state.durable.bundles.insert(
            label.to_owned(),
            SimBundle {
                refs: refs.clone(),
                commits: commits.into_values().collect(),
            },
        );
        Ok(SalvageBundle {
            location: bundle_location(repo, label),
            refs: refs.clone(),
        })
    }

    async fn salvage_bundles(&self, repo: &RepoId) -> Result<Vec<SalvageBundle>, StoreError> {
        let st = self.lock();
        Ok(st
            .repos
            .get(repo)
            .map(|state| {
                state
                    .durable
                    .bundles
                    .iter()
                    .map(|(label, b)| SalvageBundle {
                        location: bundle_location(repo, label),
                        refs: b.refs.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use stormcell_model::rows::RefUpdate;

    use super::*;

    fn repo() -> RepoId {
        RepoId::new("R1")
    }

    fn oid(s: &str) -> Oid {
        Oid::new(s)
    }

    fn refs(pairs: &[(&str, &str)]) -> BTreeMap<String, Oid> {
        pairs.iter().map(|(k, v)| (k.to_string(), oid(v))).collect()
    }

    fn plain(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn update(name: &str, old: Option<&str>, new: Option<&str>) -> RefUpdate {
        RefUpdate {
            name: name.to_owned(),
            old: old.map(oid),
            new: new.map(oid),
        }
    }

    fn push(updates: Vec<RefUpdate>, commits: &[Commit]) -> PushPayload {
        PushPayload {
            user: "alice".to_owned(),
            updates,
            pack: encode_commits(commits),
            spool: None,
        }
    }

    fn seeded() -> SimStore {
        let s = SimStore::new();
        s.seed_repo(
            "R1",
            plain(&[("refs/heads/main", "c0"), ("refs/heads/dev", "c0")]),
            vec![Commit::new("c0", None)],
        );
        s
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn store_commits_round_trip_and_garbage_is_an_error() {
        let cs = vec![Commit::new("a", None), Commit::new("b", Some("a"))];
        assert_eq!(decode_commits(&encode_commits(&cs)).unwrap(), cs);
        assert_eq!(decode_commits(b"").unwrap(), Vec::<Commit>::new());
        assert!(decode_commits(b"{not json").is_err());
        assert!(decode_commits(b"{\"id\":\"a\"}").is_err());
    }

    #[test]
    fn store_push_is_visible_at_once_and_durable_after_sync() {
        block_on(async {
            let s = seeded();
            let r = repo();
            let p = push(
                vec![update("refs/heads/main", Some("c0"), Some("c1"))],
                &[Commit::new("c1", Some("c0"))],
            );
            let applied = s.apply_push(&r, &p).await.unwrap();
            assert!(applied.accepted, "{applied:?}");
            assert_eq!(s.refs(&r).await.unwrap()["refs/heads/main"], oid("c1"));
            assert_eq!(s.durable_refs(&r)["refs/heads/main"], oid("c0"));
            assert_eq!(s.pending_ops(&r), 2);
            s.sync(&r).await.unwrap();
            assert_eq!(s.pending_ops(&r), 0);
            assert_eq!(s.durable_refs(&r)["refs/heads/main"], oid("c1"));
            // A crash with nothing pending changes nothing and reports nothing.
            let report = s.crash(&mut ChaCha8Rng::seed_from_u64(1));
            assert!(report.repos.is_empty());
            assert_eq!(s.refs(&r).await.unwrap()["refs/heads/main"], oid("c1"));
        });
    }

    #[test]
    fn store_push_is_all_or_nothing() {
        block_on(async {
            let s = seeded();
            let r = repo();
            let p = push(
                vec![
                    update("refs/heads/main", Some("c0"), Some("c1")),
                    update("refs/heads/dev", Some("cX"), Some("c1")),
                ],
                &[Commit::new("c1", Some("c0"))],
            );
            let applied = s.apply_push(&r, &p).await.unwrap();
            assert!(!applied.accepted);
            assert_eq!(
                applied.reason.as_deref(),
                Some("refs/heads/dev: expected cX, found c0")
            );
            assert_eq!(s.pending_ops(&r), 0);
            assert_eq!(s.refs(&r).await.unwrap()["refs/heads/main"], oid("c0"));

            // Creating an existing ref, and a missing object, are rejected too.
            let p = push(vec![update("refs/heads/main", None, Some("c0"))], &[]);
            let applied = s.apply_push(&r, &p).await.unwrap();
            assert_eq!(
                applied.reason.as_deref(),
                Some("refs/heads/main: expected nothing, found c0")
            );
            let p = push(vec![update("refs/heads/new", None, Some("c9"))], &[]);
            let applied = s.apply_push(&r, &p).await.unwrap();
            assert!(!applied.accepted);
            assert!(applied.reason.unwrap().contains("missing object c9"));
            // A duplicate ref in one push.
            let p = push(
                vec![
                    update("refs/heads/main", Some("c0"), Some("c0")),
                    update("refs/heads/main", Some("c0"), Some("c0")),
                ],
                &[],
            );
            assert!(!s.apply_push(&r, &p).await.unwrap().accepted);
            // Garbage in the pack is an error of the working copy, not a rejection.
            let mut p = push(vec![], &[]);
            p.pack = b"garbage".to_vec();
            assert!(s.apply_push(&r, &p).await.is_err());
            assert_eq!(s.pending_ops(&r), 0);
        });
    }

    #[test]
    fn store_push_can_create_and_delete_refs_with_existing_objects() {
        block_on(async {
            let s = seeded();
            let r = repo();
            let p = push(
                vec![
                    update("refs/heads/dev", Some("c0"), None),
                    update("refs/tags/v1", None, Some("c0")),
                ],
                &[],
            );
            assert!(s.apply_push(&r, &p).await.unwrap().accepted);
            assert_eq!(
                s.refs(&r).await.unwrap(),
                refs(&[("refs/heads/main", "c0"), ("refs/tags/v1", "c0")])
            );
            assert_eq!(s.pending_ops(&r), 2);
        });
    }

    #[test]
    fn store_crash_keeps_a_random_prefix_and_can_tear_a_multi_ref_push() {
        let mut outcomes = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let outcome = block_on(async {
                let s = seeded();
                let r = repo();
                let p = push(
                    vec![
                        update("refs/heads/main", Some("c0"), Some("c1")),
                        update("refs/heads/dev", Some("c0"), Some("c1")),
                    ],
                    &[Commit::new("c1", Some("c0"))],
                );
                assert!(s.apply_push(&r, &p).await.unwrap().accepted);
                let report = s.crash(&mut ChaCha8Rng::seed_from_u64(seed));
                let rc = report.repos["R1"];
                assert_eq!(rc.kept + rc.lost, 3);
                assert_eq!(s.pending_ops(&r), 0);
                let got = s.refs(&r).await.unwrap();
                let commits = s.visible_commits(&r);
                // A ref never points at an object that did not survive.
                for target in got.values() {
                    assert!(commits.iter().any(|c| c.id == target.0));
                }
                // The refs move in push order: dev only after main.
                let expected = match rc.kept {
                    0 | 1 => ("c0", "c0"),
                    2 => ("c1", "c0"),
                    _ => ("c1", "c1"),
                };
                assert_eq!(
                    (
                        got["refs/heads/main"].as_str(),
                        got["refs/heads/dev"].as_str()
                    ),
                    expected
                );
                assert_eq!(report.lost_anything(), rc.kept < 3);
                rc.kept
            });
            outcomes.insert(outcome);
        }
        // Over 64 seeds every prefix length occurs, including the torn one.
        assert_eq!(outcomes.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn store_crash_is_deterministic_per_seed() {
        let run = |seed| {
            block_on(async {
                let s = SimStore::new();
                for name in ["R1", "R2", "R3"] {
                    let r = RepoId::new(name);
                    let mut prev: Option<String> = None;
                    for i in 0..5 {
                        let id = format!("{name}-{i}");
                        let p = push(
                            vec![update("refs/heads/main", prev.as_deref(), Some(&id))],
                            &[Commit::new(id.clone(), prev.as_deref())],
                        );
                        assert!(s.apply_push(&r, &p).await.unwrap().accepted);
                        prev = Some(id);
                    }
                }
                (
                    s.crash(&mut ChaCha8Rng::seed_from_u64(seed)),
                    s.snapshot_refs(),
                )
            })
        };
        assert_eq!(run(7), run(7));
        let (report, _) = run(7);
        assert_eq!(
            report.repos.keys().collect::<Vec<_>>(),
            vec!["R1", "R2", "R3"]
        );
        let text = report.to_string();
        assert!(text.starts_with("R1: kept ") && text.contains(" of 10 unsynced writes, R2: "));
        assert_eq!(CrashReport::default().to_string(), "nothing unsynced");
    }

    #[test]
    fn store_import_mirrors_with_prune_and_export_round_trips() {
        block_on(async {
            let leader = seeded();
            let r = repo();
            let p = push(
                vec![
                    update("refs/heads/main", Some("c0"), Some("c2")),
                    update("refs/heads/dev", Some("c0"), None),
                    update("refs/tags/t", None, Some("c1")),
                ],
                &[Commit::new("c1", Some("c0")), Commit::new("c2", Some("c1"))],
            );
            assert!(leader.apply_push(&r, &p).await.unwrap().accepted);
            let snap = leader.export(&r).await.unwrap();
            assert_eq!(
                snap.refs,
                refs(&[("refs/heads/main", "c2"), ("refs/tags/t", "c1")])
            );

            let follower = seeded();
            follower.seed_repo(
                "R1",
                plain(&[("refs/heads/dev", "c0"), ("refs/heads/old", "c0")]),
                vec![Commit::new("c0", None)],
            );
            follower.import(&r, &snap).await.unwrap();
            assert_eq!(follower.refs(&r).await.unwrap(), snap.refs);
            assert_eq!(follower.digest(&r).await.unwrap(), snap.digest());
            assert_eq!(follower.export(&r).await.unwrap(), snap);
            // Nothing is durable until synced: a crash that keeps nothing restores the old
            // refs.
            assert_eq!(
                follower.durable_refs(&r),
                refs(&[("refs/heads/dev", "c0"), ("refs/heads/old", "c0")])
            );
            follower.sync(&r).await.unwrap();
            assert_eq!(follower.durable_refs(&r), snap.refs);

            // A snapshot pointing at an object nobody has is refused before any write.
            let bad = Snapshot {
                refs: refs(&[("refs/heads/main", "zz")]),
                objects: encode_commits(&[]),
            };
            assert!(follower.import(&r, &bad).await.is_err());
            assert_eq!(follower.pending_ops(&r), 0);
            let garbage = Snapshot {
                refs: BTreeMap::new(),
                objects: b"nope".to_vec(),
            };
            assert!(follower.import(&r, &garbage).await.is_err());
        });
    }

    #[test]
    fn store_local_version_is_durable_at_once_and_unknown_repos_are_empty() {
        block_on(async {
            let s = SimStore::new();
            let r = RepoId::new("R9");
            assert!(s.refs(&r).await.unwrap().is_empty());
            assert_eq!(s.local_version(&r).await.unwrap(), None);
            s.set_local_version(&r, 4).await.unwrap();
            s.crash(&mut ChaCha8Rng::seed_from_u64(0));
            assert_eq!(s.local_version(&r).await.unwrap(), Some(4));
            let snap = s.export(&r).await.unwrap();
            assert!(snap.refs.is_empty());
            assert_eq!(decode_commits(&snap.objects).unwrap(), vec![]);
            // The harness's view: every repository the store knows, with visible refs.
            assert_eq!(s.snapshot_refs()["R9"], BTreeMap::new());
        });
    }
}
