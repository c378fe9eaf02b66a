//! Write sync (PROTOCOL.md section 4.2): a push under the cluster write lock, with the
//! `writing` row as the durable stand-in for the lock, and step 6's conditional update.

use std::sync::Arc;

use tokio::time::Instant;

use super::{Engine, Progress};
use crate::error::{ClusterError, DbError};
use crate::failover::Intent;
use crate::ids::{Digest, LockOwner, RepoId, Version};
use crate::leaders::writing_rows;
use crate::peer;
use crate::plant::Bug;
use crate::ports::{DbSession, Event, FinishWrite, LockName, PushApplied, PushPayload, WritePoint};
use crate::rows::{NewPushEvent, PushKind, WriteProps};
use crate::wire::Request;

/// What a recorded push returns to the service, which acknowledges it to the client and
/// then hands it to [`Engine::after_ack`].
#[derive(Debug)]
pub struct PushReceipt {
    /// The repository's version after the push.
    pub version: Version,
    /// Whether the push changed refs (a rejected push changes none).
    pub applied: PushApplied,
    /// The session still holding the push's locks, released once the client has its
    /// answer. Dropped unused (the service gave up), the session's end releases them.
    held: Option<HeldLocks>,
}

/// A session and the locks it still holds for a recorded push.
struct HeldLocks {
    session: Box<dyn DbSession>,
    locks: Vec<LockName>,
}

impl std::fmt::Debug for HeldLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldLocks")
            .field("locks", &self.locks)
            .finish_non_exhaustive()
    }
}

/// Everything step 6 needs to record a write.
struct Recording {
    repo: RepoId,
    owner: LockOwner,
    old_version: Version,
    event: NewPushEvent,
    digest: Digest,
}

impl Engine {
    /// A client push, end to end. Returns only once the write is recorded (or refused).
    pub async fn push(
        self: &Arc<Self>,
        repo: &RepoId,
        payload: &PushPayload,
        progress: &Progress,
    ) -> Result<PushReceipt, ClusterError> {
        progress.say(format!("Acquiring write lock for repository \"{repo}\"..."));
        let mut session = match self.connect(Intent::Write).await {
            Ok(link) => link.session,
            Err(e) => {
                self.refused(repo, &e);
                return Err(e);
            }
        };
        let write = LockName::Write(repo.clone());
        if let Err(e) = self
            .acquire(
                session.as_mut(),
                &write,
                self.config.timing.lock_budget,
                progress,
            )
            .await
        {
            self.refused(repo, &e);
            return Err(e);
        }
        let prepared = self.prepare_write(session.as_mut(), repo, progress).await;
        let old_version = match prepared {
            Ok(v) => v,
            Err(e) => {
                self.refused(repo, &e);
                self.release(session.as_mut(), &write).await;
                return Err(e);
            }
        };
        self.write_locked(session, repo, payload, progress, old_version)
            .await
    }

    /// Steps 2 and 3: refuse (or, **[stormcell]**, recover) an interrupted write, then
    /// sync this device. Returns this device's version.
    async fn prepare_write(
        &self,
        session: &mut dyn DbSession,
        repo: &RepoId,
        progress: &Progress,
    ) -> Result<Version, ClusterError> {
        let topology = self.bound_topology(session, repo).await?;
        if let Some(message) = topology
            .repositories
            .get(repo)
            .and_then(|r| r.maintenance.clone())
        {
            return Err(ClusterError::Maintenance(message));
        }
        // Checked under the write lock: once an operator sets Prevent Writes, no write that
        // takes the lock afterwards lands here (7.5, contracting a cluster).
        if !topology.is_writable(repo, &self.device) {
            return Err(ClusterError::WritesPrevented {
                repo: repo.clone(),
                device: self.device.clone(),
            });
        }
        if !self.plants.has(Bug::IgnoreWritingFlag) {
            let rows = session.rows(repo).await?;
            for row in writing_rows(&rows) {
                if self.config.rules().fenced_recovery {
                    self.recover(session, &topology, row).await?;
                } else {
                    return Err(self.interruption(row));
                }
            }
        }
        if self.plants.has(Bug::SkipWriteSync) {
            let rows = session.rows(repo).await?;
            return Ok(rows
                .iter()
                .find(|r| r.device == self.device)
                .map_or(0, |r| r.version));
        }
        let synced = self
            .read_sync(
                session,
                repo,
                progress,
                self.config.rules().writes_hidden_until_recorded,
                None,
            )
            .await?;
        Ok(synced.version)
    }

    /// Steps 4 to 7, with the write lock (and, **[stormcell]**, the read lock) held.
    async fn write_locked(
        self: &Arc<Self>,
        mut session: Box<dyn DbSession>,
        repo: &RepoId,
        payload: &PushPayload,
        progress: &Progress,
        old_version: Version,
    ) -> Result<PushReceipt, ClusterError> {
        let owner = LockOwner::new(format!(
            "{}-{:016x}",
            self.device,
            self.ports.rng.below(u64::MAX)
        ));
        let started_ms = self.ports.clock.now_ms();
        let pre_digest = self.ports.store.digest(repo).await?;
        let props = WriteProps {
            user: payload.user.clone(),
            device: self.device.clone(),
            since_ms: started_ms,
            pre_digest: self.config.rules().pre_write_digest.then_some(pre_digest),
        };
        // [stormcell] Recovery adopts a write only from the working copy it was made in,
        // known by its local version file (PROTOCOL.md 12): the file must say the version
        // the write starts from before the row says `writing`. A disk that cannot even
        // write that file refuses the push while nothing has happened yet.
        if self.config.rules().device_incarnation
            && self.ports.store.local_version(repo).await? != Some(old_version)
        {
            self.ports
                .store
                .set_local_version(repo, old_version)
                .await?;
        }
        // Registered before the row says `writing`, so a recovery probe that sees the row
        // also sees the write running.
        let running = self.local.start(repo, &owner);
        // [stormcell] The copy is marked as holding a write in progress before it can
        // change, and stays marked until the write's outcome is settled: a restart that
        // forgets the running write, or a promotion that loses its `writing` row, still
        // leaves the copy known as holding something no version may record.
        if self.config.rules().device_incarnation {
            if let Err(e) = self
                .ports
                .store
                .set_write_marker(repo, Some(pre_digest))
                .await
            {
                drop(running);
                return Err(e.into());
            }
        }
        if let Err(e) = session
            .begin_write(repo, &self.device, &props, &owner)
            .await
        {
            // The row may or may not say `writing` now; the session's end releases the
            // locks either way, and a later writer recovers or refuses.
            drop(running);
            return Err(e.into());
        }
        self.ports
            .failpoints
            .hit(WritePoint::AfterWritingSet, repo)
            .await;

        progress.say(format!(
            "Ready to receive on cluster host \"{}\".",
            self.device
        ));
        let (applied, moves) = {
            let _guard = self.local.exclusive(repo).await;
            // Counted, so taking a fenced push back out (`undo_fenced_write`) can tell
            // whether anything moved the refs since.
            let moves = self.local.moved(repo);
            let applied = match self.ports.store.apply_push(repo, payload).await {
                Ok(applied) => applied,
                Err(e) => return Err(self.not_durable(repo, e)),
            };
            self.ports
                .failpoints
                .hit(WritePoint::AfterRefsWritten, repo)
                .await;
            if !self.plants.has(Bug::SkipFsync) {
                if let Err(e) = self.ports.store.sync(repo).await {
                    // The refs may be visible and not durable: the row stays `writing`, so
                    // recovery decides once the disk can vouch for them (its probe syncs
                    // first). The planted bug goes on as if the sync had worked.
                    if !self.plants.has(Bug::AckBeforeDurable) {
                        return Err(self.not_durable(repo, e));
                    }
                }
            }
            (applied, moves)
        };
        let digest = self.ports.store.digest(repo).await?;
        let recording = Recording {
            repo: repo.clone(),
            owner,
            old_version,
            event: NewPushEvent {
                repo: repo.clone(),
                device: self.device.clone(),
                user: payload.user.clone(),
                started_ms,
                // A push applies all or nothing (the store port's contract), and the thaw
                // plan reads this log: it names the updates only when they were applied.
                updates: if applied.accepted {
                    payload.updates.clone()
                } else {
                    Vec::new()
                },
                accepted: applied.accepted,
                kind: PushKind::Push,
            },
            digest,
        };

        if self.plants.has(Bug::AckBeforeVersionBump) && applied.accepted {
            // The client hears "ok" now; the version is recorded a moment later. (A push
            // the store rejected is still refused: the bug is about acknowledging early,
            // not about acknowledging what did not happen.)
            let engine = Arc::clone(self);
            let progress = progress.clone();
            self.ports.spawn.spawn(Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let _running = running;
                if let Ok((_, held)) = engine.finish(session, recording, &progress).await {
                    engine.release_held(held).await;
                }
            }));
            return Ok(PushReceipt {
                version: old_version,
                applied,
                held: None,
            });
        }
        let finished = self.finish(session, recording, progress).await;
        let fenced = matches!(finished, Err(ClusterError::Fenced { .. }));
        if fenced && applied.accepted && self.hides_unrecorded_writes() {
            self.undo_fenced_write(repo, &payload.updates, moves, digest)
                .await;
        }
        drop(running);
        let (version, held) = finished?;
        if !applied.accepted {
            self.release_held(held).await;
            let reason = applied
                .reason
                .clone()
                .unwrap_or_else(|| "a ref moved".to_owned());
            return Err(ClusterError::Rejected(reason));
        }
        Ok(PushReceipt {
            version,
            applied,
            held,
        })
    }

    /// Steps 6 and 7: record the new version and clear `writing`. The locks are handed
    /// back, still held, when the original session survived: they are released only after
    /// the client is told (**[stormcell]** and phabricator alike), so nothing that needs
    /// the write lock (a thaw's demote above all) can act on this version before the
    /// acknowledgement has left. Released first, a demote could discard the version
    /// while the "ok" was still on its way, and the client would be told a push stands
    /// that the operator had already given up.
    async fn finish(
        &self,
        mut session: Box<dyn DbSession>,
        rec: Recording,
        progress: &Progress,
    ) -> Result<(Version, Option<HeldLocks>), ClusterError> {
        let write = LockName::Write(rec.repo.clone());
        let read = LockName::Read(rec.repo.clone(), self.device.clone());
        if self.plants.has(Bug::ReleaseLockBeforeClearWriting) {
            self.release(session.as_mut(), &read).await;
            self.release(session.as_mut(), &write).await;
        }
        let recorded = self.record_write(Some(session), &rec, progress).await;
        let (version, session) = match recorded {
            Ok(v) => v,
            Err(e) => {
                self.emit(Event::WriteNotRecorded {
                    repo: rec.repo.clone(),
                    reason: e.to_string(),
                });
                return Err(e);
            }
        };
        // The version is recorded: a local version file that cannot be written leaves this
        // device's claim lower than the truth, which only costs a fetch later.
        if let Err(e) = self.copy_is_version(&rec.repo, version).await {
            self.emit(Event::Note {
                text: format!("{}: local version {version} not written: {e}", rec.repo),
            });
        }
        self.emit(Event::WriteRecorded {
            repo: rec.repo.clone(),
            version,
            changed: rec.event.accepted,
        });
        self.ports
            .failpoints
            .hit(WritePoint::AfterVersionBump, &rec.repo)
            .await;
        let held = session.map(|session| {
            let mut locks = Vec::new();
            if self.config.rules().writes_hidden_until_recorded {
                locks.push(read);
            }
            locks.push(write);
            HeldLocks { session, locks }
        });
        progress.say(format!(
            "Write recorded at version {version}; the cluster write lock is released once \
             this push is acknowledged."
        ));
        Ok((version, held))
    }

    /// Releases what a recorded push still holds, in the order taken by `finish`.
    async fn release_held(&self, held: Option<HeldLocks>) {
        let Some(HeldLocks { mut session, locks }) = held else {
            return;
        };
        for lock in &locks {
            self.release(session.as_mut(), lock).await;
        }
    }

    /// Step 6 proper, retried on connection errors for the release window. Returns the new
    /// version and the session, if the original one survived (it holds the locks).
    async fn record_write(
        &self,
        mut session: Option<Box<dyn DbSession>>,
        rec: &Recording,
        progress: &Progress,
    ) -> Result<(Version, Option<Box<dyn DbSession>>), ClusterError> {
        let deadline = Instant::now() + self.config.timing.release_window;
        let rules = self.config.rules();
        // The push event's id, with the primary it was recorded on: an id from a primary
        // that has since been replaced may be missing from the new one, so it is recorded
        // again there rather than reused.
        let mut event_id: Option<(u64, u64)> = None;
        let mut original = true;
        let mut warned = false;
        loop {
            let attempt = async {
                let mut s = match session.take() {
                    Some(s) => s,
                    // While the primary is lost the device is read-only; that is exactly
                    // what the release window waits out.
                    None => match self.connect(Intent::Write).await {
                        Ok(link) => link.session,
                        Err(e) => return Err(DbError::Connection(e.to_string())),
                    },
                };
                let result = async {
                    // [stormcell] a push that changed nothing keeps the version.
                    let new_version = if rules.bump_only_on_change && !rec.event.accepted {
                        rec.old_version
                    } else {
                        let epoch = self.failover.primary_epoch();
                        let id = match event_id {
                            Some((id, recorded_on)) if recorded_on == epoch => id,
                            _ => s.record_push(&rec.event).await?,
                        };
                        event_id = Some((id, epoch));
                        id
                    };
                    let finish = FinishWrite {
                        repo: rec.repo.clone(),
                        device: self.device.clone(),
                        old_version: rec.old_version,
                        owner: rec.owner.clone(),
                        new_version,
                        digest: rules.digest_in_rows.then_some(rec.digest),
                    };
                    let changed = s.finish_write(&finish).await?;
                    Ok::<_, DbError>((new_version, changed))
                }
                .await;
                result.map(|r| (r, s))
            }
            .await;
            match attempt {
                Ok(((version, changed), s)) => {
                    if warned {
                        progress.say("RECOVERED. Link to primary database was restored.");
                    }
                    if rules.release_checks_row_count
                        && changed != 1
                        && !self.plants.has(Bug::IgnoreRowCount)
                    {
                        return Err(ClusterError::Fenced {
                            repo: rec.repo.clone(),
                        });
                    }
                    return Ok((version, original.then_some(s)));
                }
                Err(e) if e.is_connection() && Instant::now() < deadline => {
                    original = false;
                    if !warned {
                        warned = true;
                        progress.say("CRITICAL. Failed to release cluster write lock!");
                        progress.say(format!(
                            "The write lock could not be released because the cluster database \
                             could not be reached ({e}). Retrying for up to {} seconds...",
                            self.config.timing.release_window.as_secs()
                        ));
                    }
                    tokio::time::sleep(self.config.timing.release_retry).await;
                }
                Err(e) => {
                    progress.say("Giving up: the repository stays frozen for writes.");
                    return Err(ClusterError::MayNotBeRecorded {
                        repo: rec.repo.clone(),
                        device: self.device.clone(),
                        reason: e.to_string(),
                    });
                }
            }
        }
    }

    /// After the client was acknowledged: release the push's locks, the last failpoint,
    /// then **[stormcell]** tell the other active devices to pull at once.
    pub async fn after_ack(self: &Arc<Self>, repo: &RepoId, receipt: PushReceipt) {
        let version = receipt.version;
        self.release_held(receipt.held).await;
        self.ports.failpoints.hit(WritePoint::AfterAck, repo).await;
        if !self.config.rules().notify_after_write {
            return;
        }
        let topology = match self.connect(Intent::Read).await {
            Ok(mut link) => link.session.topology().await,
            Err(_) => return,
        };
        let Ok(topology) = topology else { return };
        for device in topology.active_devices(repo) {
            if device == self.device {
                continue;
            }
            let Some(addr) = topology.address_of(&device).map(str::to_owned) else {
                continue;
            };
            let engine = Arc::clone(self);
            let repo = repo.clone();
            self.ports.spawn.spawn(Box::pin(async move {
                let request = Request::Notify { repo, version };
                let limit = engine.config.timing.peer_request;
                // A peer that misses the notice catches up on its next scan.
                let _ =
                    peer::call(engine.ports.net.as_ref(), &device, &addr, &request, limit).await;
            }));
        }
    }

    /// **[stormcell]** A push that reached the working copy was fenced: its row changed
    /// while it wrote (a demote, a recovery, or a new primary that never had its
    /// `writing` mark), so it is not acknowledged and no version records it. Left in the
    /// copy, its refs would be served as whatever version the local file names, then
    /// vanish at the next sync: reads would go backwards. So the copy's refs go back to
    /// what they were before the push, unless the primary's row for this device now
    /// records this very copy (recovery adopted it as a version). When the primary
    /// cannot tell, the copy is marked as showing an unrecorded write, which reads and
    /// peer copies refuse until recovery settles it.
    async fn undo_fenced_write(
        &self,
        repo: &RepoId,
        updates: &[crate::rows::RefUpdate],
        moves: u64,
        digest: crate::ids::Digest,
    ) {
        let adopted = match self.connect(Intent::Write).await {
            Ok(mut link) => link.session.rows(repo).await.ok().map(|rows| {
                rows.iter()
                    .any(|r| r.device == self.device && r.digest == Some(digest))
            }),
            Err(_) => None,
        };
        let settled = match adopted {
            Some(true) => true,
            Some(false) => match self.take_back(repo, updates, moves).await {
                Ok(()) => {
                    self.emit(Event::Note {
                        text: format!("{repo}: a fenced push was taken out of the working copy"),
                    });
                    true
                }
                Err(e) => {
                    self.local.unsettle(repo);
                    self.emit(Event::Note {
                        text: format!("{repo}: the refs of a fenced push stay ({e})"),
                    });
                    false
                }
            },
            None => {
                self.local.unsettle(repo);
                false
            }
        };
        if settled && self.config.rules().device_incarnation {
            if let Err(e) = self.ports.store.set_write_marker(repo, None).await {
                self.emit(Event::Note {
                    text: format!("{repo}: write marker not cleared: {e}"),
                });
            }
        }
    }

    /// Puts the copy's refs back as they were before a push that applied all of
    /// `updates` (its refs now, each update turned back), unless anything moved them
    /// since (`restore_refs` counts the moves).
    async fn take_back(
        &self,
        repo: &RepoId,
        updates: &[crate::rows::RefUpdate],
        moves: u64,
    ) -> Result<(), ClusterError> {
        let mut refs = self.ports.store.refs(repo).await?;
        for u in updates {
            match &u.old {
                Some(old) => refs.insert(u.name.clone(), old.clone()),
                None => refs.remove(&u.name),
            };
        }
        self.restore_refs(repo, refs, moves).await
    }

    /// A push that reached the working copy but could not be made durable.
    fn not_durable(&self, repo: &RepoId, e: crate::error::StoreError) -> ClusterError {
        self.local.unsettle(repo);
        let error = ClusterError::NotDurable {
            repo: repo.clone(),
            device: self.device.clone(),
            reason: e.to_string(),
        };
        self.refused(repo, &error);
        error
    }

    pub(crate) fn interruption(&self, row: &crate::rows::VersionRow) -> ClusterError {
        let props = row.write_props.as_ref();
        ClusterError::WriteInterruption {
            repo: row.repo.clone(),
            device: row.device.clone(),
            user: props.map_or_else(|| "unknown".to_owned(), |p| p.user.clone()),
            since_ms: props.map(|p| self.ports.clock.now_ms().saturating_sub(p.since_ms)),
        }
    }
}
