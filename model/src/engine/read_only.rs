//! Read sync while the device is read-only (PROTOCOL.md 9.6): the version rows come from a
//! replica, which may miss the newest writes, so **[stormcell]** the active peers are asked
//! for their durable local versions too, and the read is marked possibly stale when some
//! peer could not be asked and the replica cannot show it is current.

use std::collections::BTreeMap;

use super::demotes::ClaimStanding;
use super::{Engine, Progress, SyncOutcome};
use crate::error::ClusterError;
use crate::failover::{DbLink, ReadOnlyReason, StaleReads};
use crate::ids::{DeviceId, Digest, Generation, RepoId, Version};
use crate::leaders::Leaders;
use crate::peer;
use crate::plant::Bug;
use crate::ports::env::shuffle;
use crate::ports::{DbSession, Event};
use crate::rows::{Topology, VersionRow};
use crate::wire::{Request, Response};

/// A replica session's situation: why the device is read-only. Whether the replica
/// looked caught up at its last health check proves nothing about the commits the primary
/// acknowledged since, so only the peers' answers can show a read is fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadOnlyView {
    pub(crate) reason: ReadOnlyReason,
}

/// What a device tells a peer about its working copy of a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerClaim {
    /// Its durable local version, if it has one.
    pub version: Option<Version>,
    /// The digest its copy had as it answered (none while a write shows in it unrecorded).
    pub digest: Option<Digest>,
    /// **[stormcell]** How many demotes of it the local version took note of.
    pub demotes_seen: u64,
}

/// What the read-only sync learned about who holds which version.
struct Claims {
    /// Each device's best known version: its row, raised by what it said itself.
    versions: BTreeMap<DeviceId, Version>,
    /// The digest a device said its copy had, where its own answer raised its version
    /// above its row: a copy taken from it on that claim must have this digest.
    answered_digests: BTreeMap<DeviceId, Digest>,
    /// Active peers that could not be asked.
    unanswered: Vec<DeviceId>,
    /// An unproven sync is refused rather than marked possibly stale: the sync of a write,
    /// which holds the repository's write lock.
    refuse_unproven: bool,
}

/// How many passes a verified sync makes while the holders' copies keep moving on.
const VERIFIED_SYNC_PASSES: u32 = 8;

/// What one pass of the verified sync came to.
enum Pass {
    /// The sync ended with this outcome.
    Done(SyncOutcome),
    /// A holder's copy was not what the pass learned; ask again, unless the next pass
    /// learns the same.
    Again(Look),
}

/// What a pass of the verified sync learned about the holders: if a second pass learns the
/// same, a holder whose refs were not as expected was not moving on.
#[derive(Debug, PartialEq, Eq)]
struct Look {
    versions: BTreeMap<DeviceId, Version>,
    answered_digests: BTreeMap<DeviceId, Digest>,
}

impl Look {
    fn of(claims: &Claims) -> Self {
        Self {
            versions: claims.versions.clone(),
            answered_digests: claims.answered_digests.clone(),
        }
    }
}

impl Engine {
    /// The read-only view of a session, `None` when it is on the primary.
    pub(crate) fn view(&self, link: &DbLink) -> Option<ReadOnlyView> {
        link.read_only.map(|reason| ReadOnlyView { reason })
    }

    /// **[stormcell]** Whether a read-only sync asks the peers rather than trusting the
    /// replica's rows (PROTOCOL.md 9.6).
    fn verifies(&self) -> bool {
        self.config.rules().peer_verified_reads && !self.plants.has(Bug::TrustReplicaVersions)
    }

    /// The read sync of 4.1 on a replica session. Nothing is written to the database (a
    /// replica refuses writes); the device's own durable local version records the sync.
    pub(crate) async fn read_sync_read_only(
        &self,
        session: &mut dyn DbSession,
        repo: &RepoId,
        progress: &Progress,
        view: ReadOnlyView,
    ) -> Result<SyncOutcome, ClusterError> {
        progress.say(format!(
            "The cluster database is read-only ({}); synchronizing from a replica.",
            view.reason.describe()
        ));
        self.verified_sync(session, repo, progress, false, true)
            .await
    }

    /// **[stormcell]** Whether this device must check `repo`'s rows against its peers before
    /// trusting them (PROTOCOL.md 12): the primary's generation differs from the one whose
    /// rows it last verified, because of a promotion while it ran, while it was down, or
    /// before it was first started. Returns the generation to record once verified.
    pub(crate) async fn rows_unverified(
        &self,
        session: &mut dyn DbSession,
        repo: &RepoId,
    ) -> Result<Option<Generation>, ClusterError> {
        // The planted bug trusts the rows after a promotion as it trusts a replica's.
        if !self.config.rules().durable_generation || self.plants.has(Bug::TrustReplicaVersions) {
            return Ok(None);
        }
        if self.plants.has(Bug::EpochInMemory) {
            // The planted bug: the change of primary is known only to a process that saw
            // it happen.
            let epoch = self.failover.primary_epoch();
            let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            let unverified = epoch > 0 && verified.get(repo).copied() != Some(epoch);
            return Ok(unverified.then(|| Generation {
                promotions: epoch,
                lineage: "in memory".to_owned(),
            }));
        }
        let current = session.generation().await?;
        let stored = self.ports.store.verified_generation(repo).await?;
        let unverified = match &stored {
            Some(g) => *g != current,
            // Rows on the database's first primary were never replaced by a replica's.
            None => !current.is_original(),
        };
        Ok(unverified.then_some(current))
    }

    /// **[stormcell]** The first sync of a repository under a new primary generation: the
    /// new primary may lack version rows the old one never shipped, so the peers' durable
    /// versions are asked as while read-only; then this device's row is raised to what it
    /// holds, which puts the lost version back for everyone, and the generation is stored
    /// beside the working copy. A write refuses when some peer could not be asked (it might
    /// hold a newer acknowledged push); a read is marked possibly stale.
    pub(crate) async fn read_sync_after_promotion(
        &self,
        session: &mut dyn DbSession,
        repo: &RepoId,
        progress: &Progress,
        for_write: bool,
        generation: Generation,
    ) -> Result<SyncOutcome, ClusterError> {
        // A write running here (or one that could not be made durable) shows in the copy
        // before it is recorded: recording this copy's digest now would make it count.
        // Reads go to another device until it ends.
        if self.local.shows_unrecorded(repo) {
            return Err(ClusterError::WriteUnrecorded {
                repo: repo.clone(),
                device: self.device.clone(),
            });
        }
        progress
            .say("The cluster database changed primary; checking versions with the other devices.");
        self.ports
            .events
            .reached(crate::ports::Coverage::GenerationCheck);
        let outcome = self
            .verified_sync(session, repo, progress, for_write, false)
            .await?;
        if outcome.possibly_stale {
            return Ok(outcome);
        }
        let digest = self.ports.store.digest(repo).await?;
        session
            .set_version(repo, &self.device, outcome.version, Some(digest), None)
            .await?;
        if self.plants.has(Bug::EpochInMemory) {
            self.verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(repo.clone(), generation.promotions);
        } else {
            self.ports
                .store
                .set_verified_generation(repo, &generation)
                .await?;
        }
        self.emit(Event::Note {
            text: format!("{repo}: rows verified with the peers for generation {generation}"),
        });
        self.confirm(repo);
        Ok(outcome)
    }

    /// The peer-verified sync: version rows raised by what the peers say of themselves,
    /// then a fetch from a holder of the newest version. With `refuse_unproven` (a write,
    /// holding the write lock), a sync that cannot be shown fresh is refused whatever the
    /// configuration says; `read_only` says the rows come from a replica.
    async fn verified_sync(
        &self,
        session: &mut dyn DbSession,
        repo: &RepoId,
        progress: &Progress,
        refuse_unproven: bool,
        read_only: bool,
    ) -> Result<SyncOutcome, ClusterError> {
        let mut last_look = None;
        for _ in 0..VERIFIED_SYNC_PASSES {
            match self
                .verified_sync_pass(
                    session,
                    repo,
                    progress,
                    refuse_unproven,
                    read_only,
                    &last_look,
                )
                .await?
            {
                Pass::Done(outcome) => return Ok(outcome),
                Pass::Again(look) => {
                    progress
                        .say("A device's copy moved on while synchronizing from it; asking again.");
                    last_look = Some(look);
                }
            }
        }
        Err(ClusterError::LeaderLost {
            repo: repo.clone(),
            device: self.device.clone(),
            leaders: Vec::new(),
            last_error: Some(format!(
                "the devices' copies moved on under {VERIFIED_SYNC_PASSES} synchronizations in a \
                 row"
            )),
        })
    }

    /// One pass of the verified sync. A holder whose refs are not at the digest it was
    /// copied for may have recorded a newer write since it was asked (the rows of a replica
    /// or a new primary do not show it yet): the pass asks again (`Pass::Again`) unless
    /// what it learned is what the previous pass learned (`last_look`), which means the
    /// holder's copy really is lost or replaced.
    async fn verified_sync_pass(
        &self,
        session: &mut dyn DbSession,
        repo: &RepoId,
        progress: &Progress,
        refuse_unproven: bool,
        read_only: bool,
        last_look: &Option<Look>,
    ) -> Result<Pass, ClusterError> {
        let verify = self.verifies();
        // [stormcell] A write running here (or one that could not be made durable) shows
        // in the copy before it is recorded. On the primary its read lock keeps reads
        // out; a replica's locks do not see the primary's, so while read-only the copy
        // itself must not be served until the write ends.
        if read_only
            && verify
            && self.hides_unrecorded_writes()
            && self.local.shows_unrecorded(repo)
        {
            return Err(ClusterError::WriteUnrecorded {
                repo: repo.clone(),
                device: self.device.clone(),
            });
        }
        let topology = self.bound_topology(session, repo).await?;
        let mut rows = session.rows(repo).await?;
        // [stormcell] A demote of this device that its local version has not met makes
        // that version claim nothing (PROTOCOL.md 12).
        let demotions = self.demotions(session, repo).await?;
        let own_seen = self.note_demotes(repo, &demotions).await?;
        if self.standing(&demotions, &self.device, own_seen, false) == ClaimStanding::RowOutdated {
            // This database lost a demote of this device: its row here predates it, and
            // (where the database takes writes) is deleted again.
            if !read_only {
                self.restore_lost_demote(session, repo, &demotions, own_seen)
                    .await?;
            }
            rows.retain(|r| r.device != self.device);
        }
        let mut claims = Claims {
            versions: rows.iter().map(|r| (r.device.clone(), r.version)).collect(),
            answered_digests: BTreeMap::new(),
            unanswered: Vec::new(),
            refuse_unproven,
        };
        if verify {
            let outdated = self
                .ask_peers(&topology, repo, &rows, &demotions, &mut claims, read_only)
                .await;
            // Rows this database kept past a demote it lost claim nothing.
            rows.retain(|r| !outdated.contains(&r.device));
        }
        let own_row = rows.iter().find(|r| r.device == self.device);
        // [stormcell] A write of this device that was interrupted (the process restarted,
        // so nothing here remembers it running) may have left refs in the copy that no
        // database recorded. While the rows come from a replica, recovery cannot settle
        // it: serving (or counting) that copy would show a write that may yet be undone,
        // and copying over it would destroy what recovery adopts once the primary is back.
        // Reads go to another device until then; a copy that still has the write's
        // pre-write digest holds nothing unrecorded. (On a new primary the first sync
        // goes on: the normal sync after it recovers the write.)
        if let Some(row) =
            own_row.filter(|r| r.writing && read_only && verify && self.hides_unrecorded_writes())
        {
            if self.local.any_running(repo).is_none() {
                let pre = row.write_props.as_ref().and_then(|p| p.pre_digest);
                if pre != Some(self.ports.store.digest(repo).await?) {
                    return Err(ClusterError::WriteUnrecorded {
                        repo: repo.clone(),
                        device: self.device.clone(),
                    });
                }
            }
        }
        // [stormcell] this device's own durable version beats a replica's stale row of it,
        // and a row whose working copy is gone or replaced claims nothing (PROTOCOL.md 12).
        // The copy under an unrecorded write, and the version it holds beneath it.
        let mut unmarked_write: Option<(Option<&VersionRow>, Version)> = None;
        let marked = verify && self.unrecorded_in_copy(repo, own_row).await?;
        let mine = if verify {
            let local = self.ports.store.local_version(repo).await?;
            match own_row {
                // The write marker outlived the write's memory and, maybe, its rows: the
                // copy is its local version plus a write no version records. It claims
                // nothing; a device holding that version or newer is copied over it.
                _ if marked => {
                    unmarked_write = local.map(|base| (own_row, base));
                    None
                }
                Some(r) if self.working_copy_intact(repo, r).await? => local.max(Some(r.version)),
                // The local version file is written before a push touches the copy, so a
                // copy at its row's version that no longer has the row's digest holds a
                // write that was never recorded (its record lost with an old primary, or
                // the device crashed before recording it): the file vouches for nothing
                // and the copy claims nothing; it is copied again from a holder. A write
                // running here right now is not that: its copy is ahead of its row only
                // until it records (copying over it would undo it).
                Some(r)
                    if r.digest.is_some()
                        && local == Some(r.version)
                        && self.local.any_running(repo).is_none()
                        && !self.local.shows_unrecorded(repo) =>
                {
                    unmarked_write = Some((Some(r), r.version));
                    None
                }
                _ => local,
            }
        } else {
            own_row.map(|r| r.version)
        };
        let Some(target) = claims.versions.values().copied().chain(mine).max() else {
            let active = topology.active_devices(repo);
            if active.len() > 1 {
                return Err(ClusterError::AmbiguousLeader {
                    repo: repo.clone(),
                    devices: active,
                });
            }
            return self.unproven(repo, &claims, 0, None).map(Pass::Done);
        };
        if mine.is_some_and(|v| v >= target) {
            return self.unproven(repo, &claims, target, None).map(Pass::Done);
        }
        // The write's base version may live only in this copy (nobody claims it or more,
        // and every peer said so): the copy is adopted, not copied again from nobody.
        if let Some((row, base)) = unmarked_write {
            if !read_only
                && claims.unanswered.is_empty()
                && self.config.rules().fenced_recovery
                && target <= base
            {
                if let Some(version) = self
                    .adopt_unmarked_write(session, repo, row, base, claims.refuse_unproven)
                    .await?
                {
                    return self.unproven(repo, &claims, version, None).map(Pass::Done);
                }
            }
            // A marked copy whose base nobody else holds must not be copied over: that
            // version may exist nowhere else. It serves nothing until it is adopted.
            if marked && target < base {
                return Err(ClusterError::WriteUnrecorded {
                    repo: repo.clone(),
                    device: self.device.clone(),
                });
            }
        }
        // Devices holding the newest version, in a random order (like leaders).
        let mut holders: Vec<DeviceId> = claims
            .versions
            .iter()
            .filter(|(d, v)| **v == target && **d != self.device && topology.is_active(repo, d))
            .map(|(d, _)| d.clone())
            .collect();
        shuffle(self.ports.rng.as_ref(), &mut holders);
        let mut last_error = None;
        let mut unexpected_refs = false;
        for holder in &holders {
            progress.say(format!(
                "Synchronizing this device (\"{}\") from device \"{holder}\".",
                self.device
            ));
            // A holder whose row claims the target is copied only at its row's digest, as
            // on the primary; one whose own answer raised its claim, only at the digest it
            // answered with (its disk may have been lost or restored since it answered).
            let expected = rows
                .iter()
                .find(|r| &r.device == holder && r.version == target)
                .and_then(|r| r.digest)
                .or_else(|| claims.answered_digests.get(holder).copied())
                .filter(|_| verify && self.hides_unrecorded_writes());
            match self.fetch_from(&topology, repo, holder, expected).await {
                Ok(_) => {
                    self.copy_is_version(repo, target).await?;
                    self.emit(Event::Synced {
                        repo: repo.clone(),
                        from: holder.clone(),
                        version: target,
                    });
                    return self
                        .unproven(repo, &claims, target, Some(holder.clone()))
                        .map(Pass::Done);
                }
                Err(failed) => {
                    self.emit(Event::SyncFailed {
                        repo: repo.clone(),
                        from: holder.clone(),
                        reason: failed.reason.clone(),
                    });
                    unexpected_refs |= failed.unexpected_refs;
                    last_error = Some(failed.reason);
                }
            }
        }
        let look = Look::of(&claims);
        if unexpected_refs && last_look.as_ref() != Some(&look) {
            return Ok(Pass::Again(look));
        }
        Err(ClusterError::LeaderLost {
            repo: repo.clone(),
            device: self.device.clone(),
            leaders: Leaders::of(&rows).leaders,
            last_error,
        })
    }

    /// Records that this process checked `repo`'s working copy against its row on the
    /// primary.
    pub(crate) fn confirm(&self, repo: &RepoId) {
        self.confirmed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(repo.clone());
    }

    /// **[stormcell]** This device's durable local version of `repo`, as told to a peer.
    /// A peer that is read-only counts it as proof that no newer version exists here, so
    /// it is told only once this process has checked the copy against its row on the
    /// primary: a device restarted on a disk restored from a backup has a version file
    /// that is consistent and old, and would vouch for a stale read (PROTOCOL.md 9.6, 12).
    /// It is told with the working copy's digest, unless a write shows in the copy
    /// unrecorded.
    pub async fn version_for_peer(
        &self,
        repo: &RepoId,
        asker_read_only: bool,
    ) -> Result<PeerClaim, ClusterError> {
        let unconfirmed = !self
            .confirmed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(repo);
        if asker_read_only && unconfirmed && self.verifies() {
            return Err(ClusterError::Unverified {
                repo: repo.clone(),
                unanswered: vec![self.device.clone()],
            });
        }
        let version = self.ports.store.local_version(repo).await?;
        // A copy marked with a write in progress holds its version only beneath that
        // write: an asker may take it only as it was before the write.
        let marker = if self.config.rules().device_incarnation {
            self.ports.store.write_marker(repo).await?
        } else {
            None
        };
        let digest = if self.local.shows_unrecorded(repo) {
            None
        } else if marker.is_some() {
            marker
        } else {
            Some(self.ports.store.digest(repo).await?)
        };
        let demotes_seen = if self.tracks_demotes() {
            self.ports.store.demotes_seen(repo).await?
        } else {
            0
        };
        Ok(PeerClaim {
            version,
            digest,
            demotes_seen,
        })
    }

    /// Asks every other active device for its durable local version, weighing each
    /// answer against the demotes this session's database counts (`demotions`). Returns
    /// the devices whose rows here predate a demote this database lost.
    async fn ask_peers(
        &self,
        topology: &Topology,
        repo: &RepoId,
        rows: &[VersionRow],
        demotions: &BTreeMap<DeviceId, u64>,
        claims: &mut Claims,
        read_only: bool,
    ) -> Vec<DeviceId> {
        let mut outdated = Vec::new();
        for peer_id in topology.active_devices(repo) {
            if peer_id == self.device {
                continue;
            }
            let Some(addr) = topology.address_of(&peer_id) else {
                claims.unanswered.push(peer_id);
                continue;
            };
            let request = Request::PeerVersion {
                repo: repo.clone(),
                read_only,
            };
            let limit = self.config.timing.peer_request;
            match peer::call(self.ports.net.as_ref(), &peer_id, addr, &request, limit).await {
                Ok(Response::Version {
                    version,
                    digest,
                    demotes_seen,
                }) => {
                    let has_row = rows.iter().any(|r| r.device == peer_id);
                    match self.standing(demotions, &peer_id, demotes_seen, has_row) {
                        ClaimStanding::Current => {}
                        ClaimStanding::Void => continue,
                        ClaimStanding::Unproven => {
                            claims.unanswered.push(peer_id);
                            continue;
                        }
                        ClaimStanding::RowOutdated => {
                            claims.versions.remove(&peer_id);
                            outdated.push(peer_id.clone());
                        }
                    }
                    if let Some(v) = version {
                        let row = claims.versions.get(&peer_id).copied();
                        if row.is_none_or(|r| v > r) {
                            claims.versions.insert(peer_id.clone(), v);
                            if let Some(d) = digest {
                                claims.answered_digests.insert(peer_id, d);
                            }
                        }
                    }
                }
                _ => claims.unanswered.push(peer_id),
            }
        }
        outdated
    }

    /// The outcome of a read-only sync at `version`: fresh when every peer answered, else
    /// possibly stale, or refused by configuration.
    fn unproven(
        &self,
        repo: &RepoId,
        claims: &Claims,
        version: Version,
        synced_from: Option<DeviceId>,
    ) -> Result<SyncOutcome, ClusterError> {
        let possibly_stale = self.verifies()
            && !claims.unanswered.is_empty()
            && !self.plants.has(Bug::UnmarkedStaleRead);
        let refuse =
            claims.refuse_unproven || self.failover.config().stale_reads == StaleReads::Refuse;
        if possibly_stale && refuse {
            return Err(ClusterError::Unverified {
                repo: repo.clone(),
                unanswered: claims.unanswered.clone(),
            });
        }
        Ok(SyncOutcome {
            version,
            synced_from,
            possibly_stale,
        })
    }
}
