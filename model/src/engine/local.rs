//! Writes running on this device, so fenced recovery can tell an interrupted write from
//! a slow one (**[stormcell]**, PROTOCOL.md section 6).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedRwLockWriteGuard, RwLock};

use crate::ids::{LockOwner, RepoId};

/// The writes in progress on this device, and a per-repository guard that keeps peers
/// from copying a working copy while refs are being moved.
#[derive(Default)]
pub struct LocalWrites {
    running: Arc<Mutex<BTreeSet<(RepoId, LockOwner)>>>,
    /// Repositories where a write reached the working copy but could not be made durable:
    /// its refs may be visible and vanish with the next crash, until a recovery probe
    /// makes them durable.
    unsettled: Mutex<BTreeSet<RepoId>>,
    guards: Mutex<std::collections::BTreeMap<RepoId, Arc<RwLock<()>>>>,
    /// How many times each working copy's refs were moved by a push or a copy: a sync
    /// undoing its own copy must know that nothing landed after it.
    changes: Mutex<std::collections::BTreeMap<RepoId, u64>>,
}

impl LocalWrites {
    /// Records that a write with this token is running until the returned marker drops.
    pub fn start(&self, repo: &RepoId, owner: &LockOwner) -> RunningWrite {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((repo.clone(), owner.clone()));
        RunningWrite {
            running: Arc::clone(&self.running),
            key: (repo.clone(), owner.clone()),
        }
    }

    /// Whether any write to `repo` is running here: its refs may be on disk before its
    /// version is recorded.
    pub fn any_running(&self, repo: &RepoId) -> Option<LockOwner> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(r, _)| r == repo)
            .map(|(_, owner)| owner.clone())
    }

    /// Marks `repo` as holding a write that is visible but not durable.
    pub fn unsettle(&self, repo: &RepoId) {
        self.unsettled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(repo.clone());
    }

    /// The working copy of `repo` is durable again.
    pub fn settle(&self, repo: &RepoId) {
        self.unsettled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(repo);
    }

    /// Whether `repo` may show a write that is not durable, or one still running.
    pub fn shows_unrecorded(&self, repo: &RepoId) -> bool {
        self.any_running(repo).is_some()
            || self
                .unsettled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(repo)
    }

    /// Whether a write with this token is running here.
    pub fn is_running(&self, repo: &RepoId, owner: &LockOwner) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(repo.clone(), owner.clone()))
    }

    fn guard(&self, repo: &RepoId) -> Arc<RwLock<()>> {
        self.guards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(repo.clone())
            .or_default()
            .clone()
    }

    /// Counts a move of `repo`'s refs (made under [`LocalWrites::exclusive`]) and returns
    /// the new count.
    pub fn moved(&self, repo: &RepoId) -> u64 {
        let mut changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let count = changes.entry(repo.clone()).or_default();
        *count += 1;
        *count
    }

    /// How many times `repo`'s refs were moved so far.
    pub fn moves(&self, repo: &RepoId) -> u64 {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(repo)
            .copied()
            .unwrap_or(0)
    }

    /// Exclusive access to a working copy while its refs move.
    pub async fn exclusive(&self, repo: &RepoId) -> OwnedRwLockWriteGuard<()> {
        self.guard(repo).write_owned().await
    }

    /// Shared access to a working copy for copying it out.
    pub async fn shared(&self, repo: &RepoId) -> tokio::sync::OwnedRwLockReadGuard<()> {
        self.guard(repo).read_owned().await
    }
}

/// Marks a write as running while it lives.
pub struct RunningWrite {
    running: Arc<Mutex<BTreeSet<(RepoId, LockOwner)>>>,
    key: (RepoId, LockOwner),
}

impl Drop for RunningWrite {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}
