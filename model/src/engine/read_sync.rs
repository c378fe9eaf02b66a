//! Read sync (PROTOCOL.md section 4.1): before any read, make sure this device holds the
//! newest version of the repository, fetching from a leader when it does not.

use std::collections::BTreeMap;

use super::read_only::ReadOnlyView;
use super::{Engine, Progress};
use crate::error::ClusterError;
use crate::failover::Intent;
use crate::ids::{DeviceId, Oid, RepoId, Version};
use crate::leaders::Leaders;
use crate::peer;
use crate::plant::Bug;
use crate::ports::{DbSession, Event, LockName, Snapshot};
use crate::rows::{NewSyncEvent, SyncResult, Topology};
use crate::wire::{Request, Response};

/// How often a peer copy looks again for a write waiting to be recorded: short, since a
/// healthy write records within a round trip to the database.
const UNRECORDED_WRITE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// What a read sync found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    /// This device's version after the sync.
    pub version: Version,
    /// The leader fetched from, if a fetch happened.
    pub synced_from: Option<DeviceId>,
    /// Read-only, freshness could not be proven (PROTOCOL.md 9.6).
    pub possibly_stale: bool,
}

/// What a client read gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadReceipt {
    /// Every ref of the working copy.
    pub refs: BTreeMap<String, Oid>,
    /// Freshness could not be proven.
    pub possibly_stale: bool,
}

impl Engine {
    /// A client read: read sync, then the working copy's refs.
    pub async fn read(
        &self,
        repo: &RepoId,
        progress: &Progress,
    ) -> Result<ReadReceipt, ClusterError> {
        let mut possibly_stale = false;
        if !self.plants.has(Bug::SkipReadSync) {
            let synced = match self.connect(Intent::Read).await {
                Ok(mut link) => {
                    let view = self.view(&link);
                    self.read_sync(link.session.as_mut(), repo, progress, false, view)
                        .await
                }
                Err(e) => Err(e),
            };
            match synced {
                Ok(outcome) => possibly_stale = outcome.possibly_stale,
                Err(e) => {
                    self.refused(repo, &e);
                    return Err(e);
                }
            }
        }
        let refs = {
            // Held across the check and the read, so no write moves refs in between.
            let _guard = self.local.shared(repo).await;
            if self.hides_unrecorded_writes() && self.local.any_running(repo).is_some() {
                let e = ClusterError::WriteUnrecorded {
                    repo: repo.clone(),
                    device: self.device.clone(),
                };
                self.refused(repo, &e);
                return Err(e);
            }
            self.ports.store.refs(repo).await?
        };
        Ok(ReadReceipt {
            refs,
            possibly_stale,
        })
    }

    pub(crate) fn refused(&self, repo: &RepoId, e: &ClusterError) {
        self.emit(Event::Frozen {
            repo: repo.clone(),
            message: e.to_string(),
        });
    }

    /// Loads the configuration and checks the repository is clustered and this device is
    /// actively bound to its service.
    pub(crate) async fn bound_topology(
        &self,
        session: &mut dyn DbSession,
        repo: &RepoId,
    ) -> Result<Topology, ClusterError> {
        let topology = session.topology().await?;
        let clustered = topology
            .repositories
            .get(repo)
            .is_some_and(|r| r.service.is_some());
        if !clustered {
            return Err(ClusterError::NotFound(repo.clone()));
        }
        if !topology.is_active(repo, &self.device) {
            return Err(ClusterError::NotBound {
                repo: repo.clone(),
                device: self.device.clone(),
            });
        }
        Ok(topology)
    }

    /// Runs the read sync on `session`. With `hold`, the read lock stays held on success
    /// (the write path keeps it until the new version is recorded, so no read on this
    /// device sees a write before it counts). `read_only` says the session is on a replica.
    pub(crate) async fn read_sync(
        &self,
        session: &mut dyn DbSession,
        repo: &RepoId,
        progress: &Progress,
        hold: bool,
        read_only: Option<ReadOnlyView>,
    ) -> Result<SyncOutcome, ClusterError> {
        let lock = LockName::Read(repo.clone(), self.device.clone());
        let waited = self
            .acquire(session, &lock, self.config.timing.lock_budget, progress)
            .await?;
        let result = match read_only {
            None if self.rows_unverified(repo) => {
                self.read_sync_after_promotion(session, repo, progress, hold)
                    .await
            }
            None => {
                self.read_sync_locked(session, repo, progress, waited.as_millis() as u64)
                    .await
            }
            Some(view) => {
                self.read_sync_read_only(session, repo, progress, view)
                    .await
            }
        };
        // The read lock goes on every failure under both profiles: a leaked read lock would
        // block every later read on this device, and the seed design stays readable.
        if !(hold && result.is_ok()) {
            self.release(session, &lock).await;
        }
        result
    }

    async fn read_sync_locked(
        &self,
        session: &mut dyn DbSession,
        repo: &RepoId,
        progress: &Progress,
        waited_ms: u64,
    ) -> Result<SyncOutcome, ClusterError> {
        let topology = self.bound_topology(session, repo).await?;
        let rows = session.rows(repo).await?;
        let leaders = Leaders::of(&rows);
        let Some(max) = leaders.max else {
            let active = topology.active_devices(repo);
            if active.len() > 1 {
                return Err(ClusterError::AmbiguousLeader {
                    repo: repo.clone(),
                    devices: active,
                });
            }
            let digest = self.ports.store.digest(repo).await?;
            session
                .insert_initial(repo, &self.device, Some(digest))
                .await?;
            self.ports.store.set_local_version(repo, 0).await?;
            return Ok(SyncOutcome {
                version: 0,
                synced_from: None,
                possibly_stale: false,
            });
        };
        if !leaders.needs_sync(&rows, &self.device) {
            progress.say(format!(
                "Device \"{}\" is already a cluster leader and does not need to be synchronized.",
                self.device
            ));
            return Ok(SyncOutcome {
                version: max,
                synced_from: None,
                possibly_stale: false,
            });
        }
        let before = rows
            .iter()
            .find(|r| r.device == self.device)
            .map(|r| r.version);
        let candidates = leaders.fetchable(
            &self.device,
            |d| topology.is_active(repo, d),
            self.ports.rng.as_ref(),
        );
        let mut last_error = None;
        for leader in &candidates {
            progress.say(format!(
                "Synchronizing this device (\"{}\") from cluster leader (\"{leader}\").",
                self.device
            ));
            match self.fetch_from(&topology, repo, leader).await {
                Ok(snapshot) => {
                    let digest = snapshot.digest();
                    let recorded = if self.config.profile.is_stormcell() {
                        Some(digest)
                    } else {
                        None
                    };
                    session
                        .set_version(repo, &self.device, max, recorded)
                        .await?;
                    self.ports.store.set_local_version(repo, max).await?;
                    self.record_sync(
                        session,
                        repo,
                        leader,
                        before,
                        Some(max),
                        waited_ms,
                        SyncResult::Sync,
                    )
                    .await;
                    self.emit(Event::Synced {
                        repo: repo.clone(),
                        from: leader.clone(),
                        version: max,
                    });
                    return Ok(SyncOutcome {
                        version: max,
                        synced_from: Some(leader.clone()),
                        possibly_stale: false,
                    });
                }
                Err((reason, result)) => {
                    self.emit(Event::SyncFailed {
                        repo: repo.clone(),
                        from: leader.clone(),
                        reason: reason.clone(),
                    });
                    self.record_sync(session, repo, leader, before, before, waited_ms, result)
                        .await;
                    last_error = Some(reason);
                }
            }
        }
        Err(ClusterError::LeaderLost {
            repo: repo.clone(),
            device: self.device.clone(),
            leaders: leaders.leaders.clone(),
            last_error,
        })
    }

    /// Copies a leader's working copy into this device's, durably.
    pub(crate) async fn fetch_from(
        &self,
        topology: &Topology,
        repo: &RepoId,
        leader: &DeviceId,
    ) -> Result<Snapshot, (String, SyncResult)> {
        let addr = topology.address_of(leader).ok_or_else(|| {
            (
                format!("device \"{leader}\" has no address"),
                SyncResult::Error,
            )
        })?;
        let request = Request::PeerFetch {
            repo: repo.clone(),
            unrecorded: false,
        };
        let limit = self
            .config
            .timing
            .copy_limit
            .min(self.config.timing.peer_request * 6);
        let answer = peer::call(self.ports.net.as_ref(), leader, addr, &request, limit)
            .await
            .map_err(|e| {
                let kind = if matches!(e, crate::error::PeerError::Timeout { .. }) {
                    SyncResult::Timeout
                } else {
                    SyncResult::Error
                };
                (e.to_string(), kind)
            })?;
        let Response::Snapshot { snapshot } = answer else {
            return Err((
                format!("device \"{leader}\" answered a fetch with {answer:?}"),
                SyncResult::Error,
            ));
        };
        let store_err = |e: crate::error::StoreError| (e.to_string(), SyncResult::Error);
        let _guard = self.local.exclusive(repo).await;
        self.ports
            .store
            .import(repo, &snapshot)
            .await
            .map_err(store_err)?;
        self.ports.store.sync(repo).await.map_err(store_err)?;
        Ok(snapshot)
    }

    /// Records a sync event; losing the log row is not worth failing the read for.
    #[allow(clippy::too_many_arguments)]
    async fn record_sync(
        &self,
        session: &mut dyn DbSession,
        repo: &RepoId,
        from: &DeviceId,
        before: Option<Version>,
        after: Option<Version>,
        waited_ms: u64,
        result: SyncResult,
    ) {
        let event = NewSyncEvent {
            repo: repo.clone(),
            device: self.device.clone(),
            from_device: from.clone(),
            version_before: before,
            version_after: after,
            waited_ms,
            result,
        };
        if let Err(e) = session.record_sync(&event).await {
            self.emit(Event::Note {
                text: format!("sync event not recorded: {e}"),
            });
        }
    }

    /// **[stormcell]** Whether reads and peer copies must not show a write that is not
    /// recorded yet. Normally the writer's read lock already keeps them out; this covers
    /// a writer whose database session died (its locks went with it) and read-only mode,
    /// where reads take no lock on the primary. Otherwise a read could see a push that a
    /// later read elsewhere does not, and reads would go backwards.
    fn hides_unrecorded_writes(&self) -> bool {
        self.config.profile.is_stormcell()
    }

    /// Serves a peer's fetch: a consistent copy of the working copy, **[stormcell]** once
    /// no write to it is waiting to be recorded (for at most one peer request's time),
    /// unless the asker wants `unrecorded` writes too.
    pub async fn export_for_peer(
        &self,
        repo: &RepoId,
        unrecorded: bool,
    ) -> Result<Snapshot, ClusterError> {
        let deadline = tokio::time::Instant::now() + self.config.timing.peer_request;
        loop {
            let guard = self.local.shared(repo).await;
            if unrecorded
                || !self.hides_unrecorded_writes()
                || self.local.any_running(repo).is_none()
            {
                let snapshot = self.ports.store.export(repo).await?;
                drop(guard);
                return Ok(snapshot);
            }
            drop(guard);
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::WriteUnrecorded {
                    repo: repo.clone(),
                    device: self.device.clone(),
                });
            }
            tokio::time::sleep(UNRECORDED_WRITE_POLL).await;
        }
    }
}
