//! Maintenance locks (PROTOCOL.md 7.2) and read-only maintenance (7.3).
//!
//! A maintenance lock runs steps 1 to 4 of a write (4.2) for each repository on the device
//! whose working copy the operator will change, keeps the write locks while the operator
//! works, and on confirmation records a push event of kind `maintenance` and runs step 6,
//! so the device becomes the sole leader and its changes spread.

use std::collections::BTreeMap;

use super::plan::Refs;
use super::{Admin, AdminError, AdminSession, ConfigEdit, OPERATOR_USER};
use crate::ids::{DeviceId, Digest, LockOwner, RepoId, Version};
use crate::leaders::writing_rows;
use crate::ports::{FinishWrite, LockName};
use crate::rows::{NewPushEvent, PushKind, RefUpdate, Topology, WriteProps};
use crate::wire::{Request, Response};

/// One repository held by a maintenance lock.
#[derive(Debug, Clone)]
struct Held {
    repo: RepoId,
    owner: LockOwner,
    version: Version,
    refs: Refs,
    started_ms: u64,
}

/// Maintenance locks held on one device. Dropping it ends the session: the write locks go,
/// and the `writing` rows stay behind as a write interruption (the lock was interrupted).
pub struct MaintenanceLock {
    session: Box<dyn AdminSession>,
    device: DeviceId,
    topology: Topology,
    held: Vec<Held>,
}

impl MaintenanceLock {
    /// The device under maintenance.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    /// The repositories locked, in the order they were locked.
    pub fn repos(&self) -> Vec<RepoId> {
        self.held.iter().map(|h| h.repo.clone()).collect()
    }

    /// Gives the locks up without recording anything, as when the locking process dies.
    pub fn abandon(self) {}
}

/// The ref updates that turn `before` into `after`.
fn changes(before: &Refs, after: &Refs) -> Vec<RefUpdate> {
    let names: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter(|n| before.get(*n) != after.get(*n))
        .map(|n| RefUpdate {
            name: n.clone(),
            old: before.get(n).cloned(),
            new: after.get(n).cloned(),
        })
        .collect()
}

impl Admin {
    /// Asks `device` to synchronize `repo` and returns its refs (a read runs the read sync
    /// of 4.1 on the device).
    async fn synced_refs(
        &self,
        topology: &Topology,
        repo: &RepoId,
        device: &DeviceId,
    ) -> Result<Refs, AdminError> {
        let request = Request::Read {
            repo: repo.clone(),
            progress: false,
        };
        let limit = self.config.timing.lock_budget + self.config.timing.peer_request * 6;
        let failed = |reason: String| AdminError::Device {
            repo: repo.clone(),
            device: device.clone(),
            reason,
        };
        match self.call(topology, device, &request, limit).await {
            Ok(Response::ReadOk { refs, .. }) => Ok(refs),
            Ok(other) => Err(failed(format!("unexpected answer {other:?}"))),
            Err(e) => Err(failed(e)),
        }
    }

    /// `repository lock REPO...` on `device`: steps 1 to 4 of 4.2 for each repository in
    /// turn. **[stormcell]** If one fails, the ones already locked are released through
    /// step 6, so a failed lock command leaves nothing frozen.
    pub async fn lock(
        &self,
        device: &DeviceId,
        repos: &[RepoId],
    ) -> Result<MaintenanceLock, AdminError> {
        let mut session = self.connect().await?;
        let topology = session.topology().await?;
        let mut repos = repos.to_vec();
        repos.sort();
        repos.dedup();
        let mut lock = MaintenanceLock {
            session,
            device: device.clone(),
            topology,
            held: Vec::new(),
        };
        for repo in &repos {
            if let Err(e) = self.lock_one(&mut lock, repo).await {
                self.emit(format!(
                    "maintenance lock of {repo} on {device} failed: {e}"
                ));
                self.release_unchanged(&mut lock).await;
                return Err(e);
            }
        }
        self.emit(format!(
            "maintenance lock on {device} holds {}; maintenance may begin",
            repos
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(lock)
    }

    async fn lock_one(&self, lock: &mut MaintenanceLock, repo: &RepoId) -> Result<(), AdminError> {
        let Some(r) = lock.topology.repositories.get(repo) else {
            return Err(AdminError::UnknownRepository(repo.clone()));
        };
        if r.service.is_none() {
            return Err(AdminError::NotClustered(repo.clone()));
        }
        self.acquire_write(lock.session.as_mut(), repo, self.config.timing.lock_budget)
            .await?;
        let result = async {
            let rows = lock.session.rows(repo).await?;
            if let Some(row) = writing_rows(&rows).first() {
                return Err(AdminError::Interrupted {
                    repo: repo.clone(),
                    device: row.device.clone(),
                });
            }
            let refs = self.synced_refs(&lock.topology, repo, &lock.device).await?;
            // [stormcell] Like a push, the lock keeps the device's read lock, so no read
            // there sees the changes before they are recorded.
            if self.config.rules().writes_hidden_until_recorded {
                let read = LockName::Read(repo.clone(), lock.device.clone());
                self.acquire(lock.session.as_mut(), &read, self.config.timing.lock_budget)
                    .await?;
            }
            let rows = lock.session.rows(repo).await?;
            let version = rows
                .iter()
                .find(|r| r.device == lock.device)
                .map_or(0, |r| r.version);
            let owner = LockOwner::new(format!(
                "{}-maintenance-{:016x}",
                lock.device,
                self.ports.rng.below(u64::MAX)
            ));
            let started_ms = self.ports.clock.now_ms();
            let props = WriteProps {
                user: OPERATOR_USER.to_owned(),
                device: lock.device.clone(),
                since_ms: started_ms,
                pre_digest: self
                    .config
                    .rules()
                    .pre_write_digest
                    .then(|| digest_of(&refs)),
            };
            lock.session
                .begin_write(repo, &lock.device, &props, &owner)
                .await?;
            Ok(Held {
                repo: repo.clone(),
                owner,
                version,
                refs,
                started_ms,
            })
        }
        .await;
        match result {
            Ok(held) => {
                lock.held.push(held);
                Ok(())
            }
            Err(e) => {
                self.release_reads(lock, repo).await;
                self.release_write(lock.session.as_mut(), repo).await;
                Err(e)
            }
        }
    }

    /// Step 6 without a change for every held repository, then the write locks go.
    async fn release_unchanged(&self, lock: &mut MaintenanceLock) {
        let rules = self.config.rules();
        for h in std::mem::take(&mut lock.held) {
            let finish = FinishWrite {
                repo: h.repo.clone(),
                device: lock.device.clone(),
                old_version: h.version,
                owner: h.owner.clone(),
                new_version: h.version,
                digest: rules.digest_in_rows.then(|| digest_of(&h.refs)),
            };
            if let Err(e) = lock.session.finish_write(&finish).await {
                self.emit(format!(
                    "releasing the maintenance lock of {} failed ({e}): it stays frozen for \
                     writes until recovered or thawed",
                    h.repo
                ));
            }
            self.release_reads(lock, &h.repo).await;
            self.release_write(lock.session.as_mut(), &h.repo).await;
        }
    }

    /// Releases the device's read lock of `repo` if this session holds it.
    async fn release_reads(&self, lock: &mut MaintenanceLock, repo: &RepoId) {
        if self.config.rules().writes_hidden_until_recorded {
            let read = LockName::Read(repo.clone(), lock.device.clone());
            self.release(lock.session.as_mut(), &read).await;
        }
    }

    /// Maintenance is done: for each repository, records a push event of kind
    /// `maintenance` with the ref changes made, runs step 6 so the device becomes the sole
    /// leader, releases the lock and asks the other devices to pull. Returns the new
    /// version of each repository.
    pub async fn confirm_maintenance(
        &self,
        mut lock: MaintenanceLock,
    ) -> Result<BTreeMap<RepoId, Version>, AdminError> {
        let rules = self.config.rules();
        let mut versions = BTreeMap::new();
        let held = std::mem::take(&mut lock.held);
        let mut first_error = None;
        for h in held {
            let result = async {
                // The device is the leader and its read lock is held here: read its working
                // copy as a peer would, without a read sync.
                let after = self
                    .snapshot_of(&lock.topology, &h.repo, &lock.device)
                    .await
                    .map_err(|reason| AdminError::Device {
                        repo: h.repo.clone(),
                        device: lock.device.clone(),
                        reason,
                    })?
                    .refs;
                let event = NewPushEvent {
                    repo: h.repo.clone(),
                    device: lock.device.clone(),
                    user: OPERATOR_USER.to_owned(),
                    started_ms: h.started_ms,
                    updates: changes(&h.refs, &after),
                    accepted: true,
                    kind: PushKind::Maintenance,
                };
                let id = lock.session.record_push(&event).await?;
                let finish = FinishWrite {
                    repo: h.repo.clone(),
                    device: lock.device.clone(),
                    old_version: h.version,
                    owner: h.owner.clone(),
                    new_version: id,
                    digest: rules.digest_in_rows.then(|| digest_of(&after)),
                };
                let changed = lock.session.finish_write(&finish).await?;
                if rules.release_checks_row_count && changed != 1 {
                    return Err(AdminError::Fenced {
                        repo: h.repo.clone(),
                        device: lock.device.clone(),
                    });
                }
                Ok(id)
            }
            .await;
            self.release_reads(&mut lock, &h.repo).await;
            self.release_write(lock.session.as_mut(), &h.repo).await;
            match result {
                Ok(version) => {
                    self.emit(format!(
                        "maintenance of {} on {} recorded as version {version}",
                        h.repo, lock.device
                    ));
                    versions.insert(h.repo.clone(), version);
                    self.notify_peers(&lock.topology, &h.repo, &lock.device, version)
                        .await;
                }
                Err(e) => {
                    self.emit(format!("maintenance of {} not recorded: {e}", h.repo));
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(versions),
        }
    }

    /// Tells the other active devices of a repository to pull now.
    async fn notify_peers(
        &self,
        topology: &Topology,
        repo: &RepoId,
        writer: &DeviceId,
        version: Version,
    ) {
        for device in topology.active_devices(repo) {
            if &device == writer {
                continue;
            }
            let request = Request::Notify {
                repo: repo.clone(),
                version,
            };
            // A device that misses the notice catches up on its next scan.
            let _ = self
                .call(topology, &device, &request, self.config.timing.peer_request)
                .await;
        }
    }

    /// `repository maintenance --start MESSAGE` (`Some`) or `--stop` (`None`) for each
    /// repository (7.3).
    pub async fn set_maintenance(
        &self,
        repos: &[RepoId],
        message: Option<String>,
    ) -> Result<(), AdminError> {
        let mut session = self.connect().await?;
        let topology = session.topology().await?;
        for repo in repos {
            if !topology.repositories.contains_key(repo) {
                return Err(AdminError::UnknownRepository(repo.clone()));
            }
        }
        for repo in repos {
            session
                .edit(&ConfigEdit::SetMaintenance {
                    repo: repo.clone(),
                    message: message.clone(),
                })
                .await?;
            self.emit(match &message {
                Some(m) => format!("{repo} is in read-only maintenance: {m}"),
                None => format!("{repo} left read-only maintenance"),
            });
        }
        Ok(())
    }
}

fn digest_of(refs: &Refs) -> Digest {
    Digest::of(refs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}
