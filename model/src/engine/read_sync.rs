//! Read sync (PROTOCOL.md section 4.1): before any read, make sure this device holds the
//! newest version of the repository, fetching from a leader when it does not.

use std::collections::BTreeMap;
use std::time::Duration;

use super::read_only::ReadOnlyView;
use super::{Engine, Progress};
use crate::error::ClusterError;
use crate::failover::Intent;
use crate::ids::{DeviceId, Digest, Oid, RepoId, Version};
use crate::leaders::Leaders;
use crate::peer;
use crate::plant::Bug;
use crate::ports::{DbSession, Event, LockName, Snapshot};
use crate::rows::{row_versions, NewSyncEvent, SyncResult, Topology, VersionRow};
use crate::wire::{Request, Response};

/// How often a peer copy looks again for a write waiting to be recorded: short, since a
/// healthy write records within a round trip to the database.
const UNRECORDED_WRITE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// How many times a read sync starts over when the rows change under it before it gives up.
const SYNC_ATTEMPTS: u32 = 8;

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

/// Why a copy from a leader did not land.
pub(crate) struct FetchFailed {
    /// What went wrong, for the sync log and the freeze message.
    pub reason: String,
    /// How the sync event is recorded.
    pub result: SyncResult,
    /// The leader answered with refs that are not at the digest the sync expected: its
    /// copy was lost or replaced, or it recorded a newer write since the rows (or its own
    /// answer) were read. Only a fresh look at the cluster tells the two apart.
    pub unexpected_refs: bool,
}

impl FetchFailed {
    fn new(reason: String, result: SyncResult) -> Self {
        Self {
            reason,
            result,
            unexpected_refs: false,
        }
    }
}

/// A copy from a leader that landed in the working copy.
pub(crate) struct Fetched {
    /// What the leader sent.
    pub snapshot: Snapshot,
    /// The working copy's refs just before the copy, to put back if its version cannot be
    /// recorded.
    pub before: BTreeMap<String, Oid>,
    /// The count of moves of the copy's refs once this copy landed.
    pub moves: u64,
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
                    let first = self
                        .read_sync(link.session.as_mut(), repo, progress, false, view)
                        .await;
                    match first {
                        // **[stormcell]** The primary stopped answering during the read:
                        // a read may go on elsewhere, so it asks the failover once more,
                        // which now tries that host briefly and falls back to a replica
                        // (PROTOCOL.md 9.4: anything but a write switches to read-only).
                        Err(ClusterError::Database(e))
                            if e.is_connection()
                                && link.read_only.is_none()
                                && self.config.rules().bounded_database_waits =>
                        {
                            drop(link);
                            match self.connect(Intent::Read).await {
                                Ok(mut link) => {
                                    let view = self.view(&link);
                                    self.read_sync(
                                        link.session.as_mut(),
                                        repo,
                                        progress,
                                        false,
                                        view,
                                    )
                                    .await
                                }
                                Err(again) => Err(again),
                            }
                        }
                        other => other,
                    }
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
            if self.hides_unrecorded_writes() && self.local.shows_unrecorded(repo) {
                let e = ClusterError::WriteUnrecorded {
                    repo: repo.clone(),
                    device: self.device.clone(),
                };
                self.refused(repo, &e);
                return Err(e);
            }
            self.ports.store.refs(repo).await?
        };
        if possibly_stale {
            self.ports
                .events
                .reached(crate::ports::Coverage::PossiblyStaleRead);
        }
        Ok(ReadReceipt {
            refs,
            possibly_stale,
        })
    }

    pub(crate) fn refused(&self, repo: &RepoId, e: &ClusterError) {
        if let Some(point) = crate::ports::Coverage::of_refusal(e) {
            self.ports.events.reached(point);
        }
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
            None => match self.rows_unverified(session, repo).await {
                Ok(Some(generation)) => {
                    self.read_sync_after_promotion(session, repo, progress, hold, generation)
                        .await
                }
                Ok(None) => {
                    let synced = self
                        .read_sync_locked(session, repo, progress, waited.as_millis() as u64)
                        .await;
                    if synced.is_ok() {
                        self.confirm(repo);
                    }
                    synced
                }
                Err(e) => Err(e),
            },
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
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .read_sync_once(session, repo, progress, waited_ms)
                .await?
            {
                Some(outcome) => return Ok(outcome),
                None if attempt < SYNC_ATTEMPTS => {
                    progress
                        .say("The cluster's versions changed while synchronizing; starting over.");
                }
                None => {
                    return Err(ClusterError::LeaderLost {
                        repo: repo.clone(),
                        device: self.device.clone(),
                        leaders: Vec::new(),
                        last_error: Some(format!(
                        "the version rows changed under {SYNC_ATTEMPTS} synchronizations in a row"
                    )),
                    })
                }
            }
        }
    }

    /// One pass of the read sync; `None` when the rows changed between reading them and
    /// recording this device's new version (the sync starts over).
    async fn read_sync_once(
        &self,
        session: &mut dyn DbSession,
        repo: &RepoId,
        progress: &Progress,
        waited_ms: u64,
    ) -> Result<Option<SyncOutcome>, ClusterError> {
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
            return Ok(Some(SyncOutcome {
                version: 0,
                synced_from: None,
                possibly_stale: false,
            }));
        };
        let mine = rows.iter().find(|r| r.device == self.device);
        // [stormcell] A write of this device that was interrupted (its process crashed, its
        // database link or its disk failed) may have left refs that are not recorded, or
        // not durable: they are not served until recovery decides whether they count.
        // (A write of this device that is still running holds the read lock.)
        if let Some(row) = mine.filter(|r| r.writing && self.hides_unrecorded_writes()) {
            // Recovery does not wait for the next write (PROTOCOL.md 12): this device
            // resolves its own interrupted write when the write lock is free.
            if self.config.rules().background_recovery
                && self.recover_own(session, &topology, row).await
            {
                return Ok(None);
            }
            return Err(ClusterError::WriteUnrecorded {
                repo: repo.clone(),
                device: self.device.clone(),
            });
        }
        // [stormcell] A device without a row, or whose local version is above its row,
        // may hold a claim a demote discarded: it takes note of its demotes first
        // (PROTOCOL.md 12), so its local version never claims that data again.
        if self.tracks_demotes() {
            let local = self.ports.store.local_version(repo).await?;
            // A row without a local version may be one a lost database kept past a demote.
            let may_be_demoted = match mine {
                None => true,
                Some(row) => local.is_none_or(|l| l > row.version),
            };
            if may_be_demoted && self.meet_demotes(session, repo).await? {
                return Ok(None);
            }
        }
        if !leaders.needs_sync(&rows, &self.device) {
            let intact = match mine {
                Some(row) => self.working_copy_intact(repo, row).await?,
                None => true,
            };
            if intact {
                progress.say(format!(
                    "Device \"{}\" is already a cluster leader and does not need to be synchronized.",
                    self.device
                ));
                return Ok(Some(SyncOutcome {
                    version: max,
                    synced_from: None,
                    possibly_stale: false,
                }));
            }
            // [stormcell] PROTOCOL.md 12: the working copy is not the one the row describes
            // (a lost or replaced disk); the row claims nothing until it is synchronized.
            progress.say(format!(
                "Device \"{}\" does not hold the version {max} its row claims (its working copy \
                 was lost or replaced); synchronizing from another leader.",
                self.device
            ));
            self.emit(Event::Note {
                text: format!("{repo}: working copy not intact at version {max}; resynchronizing"),
            });
        }
        let before = mine.map(|r| r.version);
        if let Some(row) = mine {
            if self
                .raise_to_local_version(session, repo, row, &rows, max)
                .await?
            {
                return Ok(None);
            }
        }
        if let Some(settled) = self
            .settle_held_copy(session, repo, &rows, max, before, waited_ms)
            .await?
        {
            return Ok(settled);
        }
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
            let expected = self.expected_digest(&rows, leader);
            match self.fetch_from(&topology, repo, leader, expected).await {
                Ok(Fetched {
                    snapshot,
                    before: refs_before,
                    moves,
                }) => {
                    let digest = snapshot.digest();
                    let rules = self.config.rules();
                    let recorded = rules.sync_records_leader_digest.then_some(digest);
                    let changed = self
                        .record_synced_version(session, repo, max, recorded, &rows)
                        .await?;
                    if !changed {
                        // [stormcell] PROTOCOL.md 12: the rows changed since they were read
                        // (a demote, a promote or a thaw in between), so the copied refs
                        // may be what the operator gave up, and this device's row still
                        // describes the copy it had: that copy comes back, or it would no
                        // longer match its row and could never lead again.
                        self.restore_refs(repo, refs_before, moves).await?;
                        self.emit(Event::Note {
                            text: format!(
                                "{repo}: copy of version {max} from {leader} not recorded (the \
                                 rows changed meanwhile); refs restored, syncing again"
                            ),
                        });
                        return Ok(None);
                    }
                    self.copy_is_version(repo, max).await?;
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
                    return Ok(Some(SyncOutcome {
                        version: max,
                        synced_from: Some(leader.clone()),
                        possibly_stale: false,
                    }));
                }
                Err(FetchFailed {
                    reason,
                    result,
                    unexpected_refs,
                }) => {
                    // A leader whose refs moved on since the rows were read wrote a newer
                    // version meanwhile: start over from the new rows.
                    if unexpected_refs
                        && row_versions(&session.rows(repo).await?) != row_versions(&rows)
                    {
                        return Ok(None);
                    }
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
        // Only reached by a leader whose copy is not intact, when no other leader served.
        if leaders.leaders.contains(&self.device) {
            return Err(ClusterError::NotIntact {
                repo: repo.clone(),
                device: self.device.clone(),
                version: max,
            });
        }
        Err(ClusterError::LeaderLost {
            repo: repo.clone(),
            device: self.device.clone(),
            leaders: leaders.leaders.clone(),
            last_error,
        })
    }

    /// **[stormcell]** PROTOCOL.md 12: a copy from a leader can land in the working copy
    /// without its version being recorded (the database went away between the two, the
    /// process crashed, or a read-only sync copied it). When this device's refs already
    /// have the digest a leader's row records for the newest version, the device holds that
    /// version: its row says so at once, with no fetch. Without this, a device whose only
    /// leader then lost its disk would keep the newest acknowledged push in its working
    /// copy and yet wait forever for a leader to copy it from. `Ok(None)` when it does not
    /// hold that version; otherwise what the pass returns (`Some(None)`: the rows changed
    /// meanwhile and the sync starts over).
    async fn settle_held_copy(
        &self,
        session: &mut dyn DbSession,
        repo: &RepoId,
        rows: &[VersionRow],
        max: Version,
        before: Option<Version>,
        waited_ms: u64,
    ) -> Result<Option<Option<SyncOutcome>>, ClusterError> {
        let rules = self.config.rules();
        if !rules.device_incarnation
            || !rules.sync_records_leader_digest
            || self.plants.has(Bug::TrustEmptyWorkingCopy)
        {
            return Ok(None);
        }
        let digest = self.ports.store.digest(repo).await?;
        let Some(held) = rows
            .iter()
            .find(|r| r.version == max && r.device != self.device && r.digest == Some(digest))
        else {
            return Ok(None);
        };
        let changed = self
            .record_synced_version(session, repo, max, Some(digest), rows)
            .await?;
        if !changed {
            return Ok(Some(None));
        }
        self.copy_is_version(repo, max).await?;
        self.record_sync(
            session,
            repo,
            &held.device,
            before,
            Some(max),
            waited_ms,
            SyncResult::Sync,
        )
        .await;
        self.emit(Event::Note {
            text: format!(
                "{repo}: working copy already holds version {max} (as recorded for {}); \
                 its row now says so",
                held.device
            ),
        });
        Ok(Some(Some(SyncOutcome {
            version: max,
            synced_from: None,
            possibly_stale: false,
        })))
    }

    /// **[stormcell]** A sync while read-only (PROTOCOL.md 9.6) copies a version and writes
    /// only the local version file: the replica takes no row. When the primary is back,
    /// this device's row still says the older version and its copy no longer matches it.
    /// If the leader it copied from is then lost, nothing would ever vouch for that copy,
    /// and a thaw could not tell what it keeps. The local version file is written only once
    /// a copy is whole and durable (and, before a write, at the row's own version), so a
    /// file above the row, with no write running here, names the version the copy holds:
    /// the row is raised to it, with the copy's digest. Never above the newest row (a
    /// version demoted since may have been the copy's), and conditional on the rows read.
    /// Returns whether the row was raised (the sync then starts over from the new rows).
    async fn raise_to_local_version(
        &self,
        session: &mut dyn DbSession,
        repo: &RepoId,
        row: &VersionRow,
        rows: &[VersionRow],
        max: Version,
    ) -> Result<bool, ClusterError> {
        let rules = self.config.rules();
        if !rules.device_incarnation
            || !rules.sync_records_leader_digest
            || self.plants.has(Bug::TrustEmptyWorkingCopy)
            || row.writing
            || self.local.shows_unrecorded(repo)
        {
            return Ok(false);
        }
        let Some(local) = self.ports.store.local_version(repo).await? else {
            return Ok(false);
        };
        if local <= row.version || local > max {
            return Ok(false);
        }
        let digest = self.ports.store.digest(repo).await?;
        if row.digest == Some(digest) {
            return Ok(false);
        }
        let raised = self
            .record_synced_version(session, repo, local, Some(digest), rows)
            .await?;
        if raised {
            self.emit(Event::Note {
                text: format!(
                    "{repo}: working copy holds version {local} (copied while read-only); \
                     its row now says so"
                ),
            });
        }
        Ok(raised)
    }

    /// Records that this device now holds `max`, **[stormcell]** conditional on the rows the
    /// sync read (PROTOCOL.md 12), so a demote, promote or write in between is not undone.
    /// Returns whether the row changed; `false` means the sync must start over.
    ///
    /// Other devices catching up meanwhile (their rows raised, or first inserted, at most
    /// to `max`) change the rows without touching what this copy is worth: the update is
    /// then tried again against the rows as they are, rather than starting over. On a busy
    /// cluster every pass would otherwise meet a peer's sync and give up as leader lost.
    async fn record_synced_version(
        &self,
        session: &mut dyn DbSession,
        repo: &RepoId,
        max: Version,
        digest: Option<Digest>,
        rows: &[VersionRow],
    ) -> Result<bool, ClusterError> {
        if !self.config.rules().conditional_sync || self.plants.has(Bug::UnconditionalSyncUpdate) {
            return Ok(session
                .set_version(repo, &self.device, max, digest, None)
                .await?);
        }
        let read = row_versions(rows);
        let mut seen = read.clone();
        for _ in 0..SYNC_ATTEMPTS {
            if session
                .set_version(repo, &self.device, max, digest, Some(&seen))
                .await?
            {
                return Ok(true);
            }
            let now = row_versions(&session.rows(repo).await?);
            if !only_caught_up(&read, &now, max, &self.device) {
                return Ok(false);
            }
            seen = now;
        }
        Ok(false)
    }

    /// Fenced recovery of this device's own interrupted write, from a read: only when the
    /// write lock can be had at once (a read never waits for writers here, and taking it
    /// after the read lock without waiting cannot deadlock). Returns whether it resolved.
    async fn recover_own(
        &self,
        session: &mut dyn DbSession,
        topology: &Topology,
        row: &VersionRow,
    ) -> bool {
        let write = LockName::Write(row.repo.clone());
        if !matches!(session.try_lock(&write).await, Ok(true)) {
            return false;
        }
        let recovered = self.recover(session, topology, row).await.is_ok();
        self.release(session, &write).await;
        recovered
    }

    /// **[stormcell]** Whether this device's working copy of `repo` is the one `row`
    /// describes (PROTOCOL.md 12, device incarnation): its digest matches the row's, or,
    /// for a row without one, it has a local version file or the row is the empty version
    /// 0 of a new repository. A row being written is fenced recovery's business.
    pub(crate) async fn working_copy_intact(
        &self,
        repo: &RepoId,
        row: &VersionRow,
    ) -> Result<bool, ClusterError> {
        if !self.config.rules().device_incarnation
            || self.plants.has(Bug::TrustEmptyWorkingCopy)
            || row.writing
        {
            return Ok(true);
        }
        let local = self.ports.store.local_version(repo).await?;
        let intact = match row.digest {
            Some(digest) => self.ports.store.digest(repo).await? == digest,
            None => row.version == 0 || local.is_some(),
        };
        if !intact {
            self.ports
                .events
                .reached(crate::ports::Coverage::IncarnationMismatch);
        }
        if intact && local != Some(row.version) {
            // A crash between recording a version and writing the local version file:
            // the copy is the recorded one, so the file catches up (a later recovery
            // probe reads it).
            if let Err(e) = self.ports.store.set_local_version(repo, row.version).await {
                self.emit(Event::Note {
                    text: format!("{repo}: local version {} not written: {e}", row.version),
                });
            }
        }
        Ok(intact)
    }

    /// Records that the working copy is exactly `version` now (a copy recorded, a write
    /// recorded or adopted): the local version file says so, and **[stormcell]** no write
    /// in progress is marked on it any more.
    pub(crate) async fn copy_is_version(
        &self,
        repo: &RepoId,
        version: Version,
    ) -> Result<(), ClusterError> {
        self.ports.store.set_local_version(repo, version).await?;
        if self.config.rules().device_incarnation
            && self.ports.store.write_marker(repo).await?.is_some()
        {
            self.ports.store.set_write_marker(repo, None).await?;
        }
        Ok(())
    }

    /// **[stormcell]** Whether the working copy holds a write that no version records,
    /// known by its durable write marker (PROTOCOL.md 12) after a crash or a lost primary
    /// took the memory of it: marked, no write running here, no row of its own saying
    /// `writing` at the copy's version or above (fenced recovery's case), and neither the
    /// pre-write digest (nothing was written) nor the digest `own_row` records (the write
    /// was recorded or adopted). A marker found settled is cleared.
    pub(crate) async fn unrecorded_in_copy(
        &self,
        repo: &RepoId,
        own_row: Option<&VersionRow>,
    ) -> Result<bool, ClusterError> {
        // A row still saying `writing` leaves the write to fenced recovery, which knows
        // its owner and may be adopting it right now.
        if !self.config.rules().device_incarnation
            || self.plants.has(Bug::TrustEmptyWorkingCopy)
            || self.local.any_running(repo).is_some()
            || self.local.shows_unrecorded(repo)
        {
            return Ok(false);
        }
        let Some(pre) = self.ports.store.write_marker(repo).await? else {
            return Ok(false);
        };
        // A `writing` row is the business of fenced recovery only while the copy is at
        // the row's version, where that write started. A copy already past it (the mark
        // outlived its write on a primary since lost) holds another write under the
        // marker, which no row describes.
        if let Some(row) = own_row.filter(|r| r.writing) {
            let local = self.ports.store.local_version(repo).await?;
            if local.is_none_or(|l| l <= row.version) {
                return Ok(false);
            }
        }
        let digest = self.ports.store.digest(repo).await?;
        if digest == pre || own_row.and_then(|r| r.digest) == Some(digest) {
            if let Err(e) = self.ports.store.set_write_marker(repo, None).await {
                self.emit(Event::Note {
                    text: format!("{repo}: settled write marker not cleared: {e}"),
                });
            }
            return Ok(false);
        }
        Ok(true)
    }

    /// **[stormcell]** The digest a leader's copy must have to be copied: the one its row
    /// recorded. A leader being written keeps its row's digest until the write is recorded,
    /// so an unrecorded (or not yet durable) write is never copied out of it.
    fn expected_digest(&self, rows: &[VersionRow], leader: &DeviceId) -> Option<Digest> {
        if !self.config.rules().device_incarnation || self.plants.has(Bug::TrustEmptyWorkingCopy) {
            return None;
        }
        rows.iter()
            .find(|r| &r.device == leader)
            .and_then(|r| r.digest)
    }

    /// Copies a leader's working copy into this device's, durably.
    /// With `expected`, a copy whose refs do not have that digest is refused before
    /// anything is written (the leader's working copy is not the version its row claims).
    pub(crate) async fn fetch_from(
        &self,
        topology: &Topology,
        repo: &RepoId,
        leader: &DeviceId,
        expected: Option<Digest>,
    ) -> Result<Fetched, FetchFailed> {
        let addr = topology.address_of(leader).ok_or_else(|| {
            FetchFailed::new(
                format!("device \"{leader}\" has no address"),
                SyncResult::Error,
            )
        })?;
        let request = Request::PeerFetch {
            repo: repo.clone(),
            unrecorded: false,
        };
        let timing = &self.config.timing;
        let started_ms = self.ports.clock.now_ms();
        let limit = timing.fetch_answer.min(timing.copy_limit);
        let answer = peer::call(self.ports.net.as_ref(), leader, addr, &request, limit)
            .await
            .map_err(|e| {
                let kind = if matches!(e, crate::error::PeerError::Timeout { .. }) {
                    SyncResult::Timeout
                } else {
                    SyncResult::Error
                };
                FetchFailed::new(e.to_string(), kind)
            })?;
        let Response::Snapshot { snapshot } = answer else {
            return Err(FetchFailed::new(
                format!("device \"{leader}\" answered a fetch with {answer:?}"),
                SyncResult::Error,
            ));
        };
        if let Some(expected) = expected {
            if snapshot.digest() != expected {
                return Err(FetchFailed {
                    reason: format!(
                        "device \"{leader}\" holds refs (digest {}) that are not the version \
                         it claimed (digest {expected}): its working copy was lost or \
                         replaced, or it recorded a newer write",
                        snapshot.digest()
                    ),
                    result: SyncResult::Error,
                    unexpected_refs: true,
                });
            }
        }
        // The object transfer gets what is left of the copy limit; past it the transfer is
        // dropped (a real store kills its fetch), and the refs stay as they were.
        let spent = Duration::from_millis(self.ports.clock.now_ms().saturating_sub(started_ms));
        let left = timing.copy_limit.saturating_sub(spent);
        let store_err =
            |e: crate::error::StoreError| FetchFailed::new(e.to_string(), SyncResult::Error);
        let copy = async {
            let _guard = self.local.exclusive(repo).await;
            let before = self.ports.store.refs(repo).await.map_err(store_err)?;
            self.ports
                .store
                .import(repo, &snapshot)
                .await
                .map_err(store_err)?;
            self.ports.store.sync(repo).await.map_err(store_err)?;
            Ok((before, self.local.moved(repo)))
        };
        let (before, moves) = match tokio::time::timeout(left, copy).await {
            Ok(copied) => copied?,
            Err(_) => {
                return Err(FetchFailed::new(
                    format!(
                        "copying from device \"{leader}\" took longer than the copy limit \
                         ({:?})",
                        timing.copy_limit
                    ),
                    SyncResult::Timeout,
                ))
            }
        };
        Ok(Fetched {
            snapshot,
            before,
            moves,
        })
    }

    /// Puts a working copy's refs back as they were before a copy whose version could not
    /// be recorded; the copied objects stay, unreferenced. Unless something moved the refs
    /// since (`moves` is the count when the copy landed): a push, or another sync that
    /// holds no database lock (while read-only) and recorded its version locally, must not
    /// be undone.
    pub(crate) async fn restore_refs(
        &self,
        repo: &RepoId,
        refs: BTreeMap<String, Oid>,
        moves: u64,
    ) -> Result<(), ClusterError> {
        let _guard = self.local.exclusive(repo).await;
        if self.local.moves(repo) != moves {
            return Ok(());
        }
        self.local.moved(repo);
        let snapshot = Snapshot {
            refs,
            objects: Vec::new(),
        };
        self.ports.store.import(repo, &snapshot).await?;
        self.ports.store.sync(repo).await?;
        Ok(())
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
    pub(crate) fn hides_unrecorded_writes(&self) -> bool {
        self.config.rules().writes_hidden_until_recorded
    }

    /// Serves a peer's fetch: a consistent copy of the working copy, **[stormcell]** once
    /// no write to it is waiting to be recorded (for at most one peer request's time),
    /// unless the asker wants `unrecorded` writes too.
    pub async fn export_for_peer(
        &self,
        repo: &RepoId,
        unrecorded: bool,
    ) -> Result<Snapshot, ClusterError> {
        // [stormcell] A copy a demote gave up (its version forgotten, nothing synchronized
        // since) is no leader's, whatever a database that lost the demote says
        // (PROTOCOL.md 12); only an operator's plan reads it.
        if !unrecorded && self.gave_up_by_demote(repo).await? {
            return Err(ClusterError::Demoted {
                repo: repo.clone(),
                device: self.device.clone(),
            });
        }
        let deadline = tokio::time::Instant::now() + self.config.timing.peer_request;
        loop {
            let guard = self.local.shared(repo).await;
            if unrecorded || !self.hides_unrecorded_writes() || !self.local.shows_unrecorded(repo) {
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

/// **[stormcell]** Whether the rows went from `read` to `now` only by devices other than
/// `me` catching up to at most `max`: no row gone, none lowered, none past `max`, and
/// `me`'s own row as it was. Such changes leave a copy of `max` as good as it was.
fn only_caught_up(
    read: &[(DeviceId, Version)],
    now: &[(DeviceId, Version)],
    max: Version,
    me: &DeviceId,
) -> bool {
    let before: BTreeMap<&DeviceId, Version> = read.iter().map(|(d, v)| (d, *v)).collect();
    let after: BTreeMap<&DeviceId, Version> = now.iter().map(|(d, v)| (d, *v)).collect();
    let kept = before
        .iter()
        .all(|(d, v)| after.get(d).is_some_and(|now| now >= v));
    let caught_up = after.iter().all(|(d, v)| {
        if *d == me {
            before.get(d) == Some(v)
        } else {
            *v <= max || before.get(d) == Some(v)
        }
    });
    kept && caught_up
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(list: &[(&str, Version)]) -> Vec<(DeviceId, Version)> {
        let mut v: Vec<_> = list.iter().map(|(d, v)| (DeviceId::new(*d), *v)).collect();
        v.sort();
        v
    }

    #[test]
    fn peers_catching_up_leave_a_copy_of_the_newest_version_valid() {
        let me = DeviceId::new("a");
        let read = rows(&[("a", 3), ("b", 9), ("c", 5)]);
        // c synced to 9, d inserted its first row at 9.
        let now = rows(&[("a", 3), ("b", 9), ("c", 9), ("d", 9)]);
        assert!(only_caught_up(&read, &now, 9, &me));
        assert!(only_caught_up(&read, &read, 9, &me));
    }

    #[test]
    fn a_write_a_demote_a_lowered_row_or_a_change_of_my_row_start_the_sync_over() {
        let me = DeviceId::new("a");
        let read = rows(&[("a", 3), ("b", 9), ("c", 5)]);
        // A write past the version copied.
        assert!(!only_caught_up(
            &read,
            &rows(&[("a", 3), ("b", 10), ("c", 5)]),
            9,
            &me
        ));
        // A demote of the leader copied from.
        assert!(!only_caught_up(&read, &rows(&[("a", 3), ("c", 5)]), 9, &me));
        // A row lowered (reset by an operator).
        assert!(!only_caught_up(
            &read,
            &rows(&[("a", 3), ("b", 9), ("c", 2)]),
            9,
            &me
        ));
        // This device's own row changed.
        assert!(!only_caught_up(
            &read,
            &rows(&[("a", 4), ("b", 9), ("c", 5)]),
            9,
            &me
        ));
    }
}
