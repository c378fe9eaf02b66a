//! **[stormcell]** Fenced recovery (PROTOCOL.md section 6): a write interruption whose
//! writer is provably gone is resolved without a person when the interrupted device can
//! be asked about its working copy.

use super::Engine;
use crate::error::ClusterError;
use crate::ids::{DeviceId, LockOwner, RepoId, Version};
use crate::peer;
use crate::plant::Bug;
use crate::ports::{DbSession, Event, FinishWrite, LockName};
use crate::rows::{row_versions, NewPushEvent, PushKind, Topology, VersionRow};
use crate::wire::{ProbeResult, Request, Response};

/// How many push ids an adoption draws at most to get one above its base version.
const ADOPT_ID_DRAWS: u32 = 1000;

impl Engine {
    /// Resolves the interrupted write of `row`, holding the write lock on `session` (so
    /// the interrupted writer's lock is free: its session is gone). Refuses with a write
    /// interruption when the device cannot be asked or the write is still running there.
    pub(crate) async fn recover(
        &self,
        session: &mut dyn DbSession,
        topology: &Topology,
        row: &VersionRow,
    ) -> Result<(), ClusterError> {
        let Some(owner) = row.lock_owner.clone() else {
            return Err(self.interruption(row));
        };
        let Some(pre_digest) = row.write_props.as_ref().and_then(|p| p.pre_digest) else {
            return Err(self.interruption(row));
        };
        let probe = if row.device == self.device {
            self.probe(&row.repo, &owner).await.ok()
        } else {
            match topology.address_of(&row.device) {
                Some(addr) => {
                    let request = Request::RecoverProbe {
                        repo: row.repo.clone(),
                        owner: owner.clone(),
                    };
                    let limit = self.config.timing.peer_request;
                    match peer::call(self.ports.net.as_ref(), &row.device, addr, &request, limit)
                        .await
                    {
                        Ok(Response::Probe { result }) => Some(result),
                        _ => None,
                    }
                }
                None => None,
            }
        };
        let Some(ProbeResult::Idle {
            digest,
            local_version,
        }) = probe
        else {
            return Err(self.interruption(row));
        };
        // PROTOCOL.md 12: a working copy that is not the one the write was made in (a lost
        // or restored disk) says nothing about what the write left; adopting it would adopt
        // whatever the new disk holds. But a copy older than the write's base (its local
        // version file, written durably before the write began, is lower or gone) cannot
        // hold the write, and no other device can either (nobody copies a version before it
        // is recorded): the write did not take effect, and clearing it is the truth. The
        // device's own row then still claims the base version, which its copy does not
        // match, so it copies that version back from another leader before serving.
        let trust_any_copy = self.plants.has(Bug::TrustEmptyWorkingCopy);
        let lost_copy = !trust_any_copy && local_version.is_none_or(|v| v < row.version);
        if !trust_any_copy && local_version != Some(row.version) && !lost_copy {
            self.emit(Event::Note {
                text: format!(
                    "{}: interrupted write on {} not recovered: its working copy is at local \
                     version {local_version:?}, not {}",
                    row.repo, row.device, row.version
                ),
            });
            return Err(self.interruption(row));
        }
        let (new_version, how) = if digest == pre_digest || lost_copy {
            (row.version, "cleared")
        } else {
            let user = row
                .write_props
                .as_ref()
                .map_or_else(String::new, |p| p.user.clone());
            let event = self.recovered_event(&row.repo, &row.device, user);
            (session.record_push(&event).await?, "adopted")
        };
        let finish = FinishWrite {
            repo: row.repo.clone(),
            device: row.device.clone(),
            old_version: row.version,
            owner,
            new_version,
            digest: if how == "cleared" {
                row.digest
            } else {
                Some(digest)
            },
        };
        if session.finish_write(&finish).await? != 1 {
            return Err(self.interruption(row));
        }
        self.emit(Event::Recovered {
            repo: row.repo.clone(),
            device: row.device.clone(),
            how: how.to_owned(),
        });
        self.ports.events.reached(match how {
            "cleared" => crate::ports::Coverage::RecoveryCleared,
            _ => crate::ports::Coverage::RecoveryAdopted,
        });
        Ok(())
    }

    /// **[stormcell]** Adopts a write of this device that no database recorded, not even as
    /// `writing` (PROTOCOL.md 6, 12): a promotion dropped the old primary's last rows, the
    /// mark included, after the push reached this working copy. The copy is `row`'s version
    /// plus that write (its local version file, written before a push touches the copy,
    /// still says `row`'s version), and when no peer holds anything newer it may be the
    /// only copy of `row`'s version, which an acknowledged push made: fetching it again
    /// from nobody would freeze the repository for good, and a demote would throw the
    /// acknowledged push away. So, as fenced recovery does with a marked write, the copy
    /// becomes a new version (a `recovered` push event). Needs the write lock, so no write
    /// elsewhere lands beside it: held already by a write (`write_locked`), otherwise taken
    /// if free at once. `Ok(None)` when the lock is busy or the rows changed meanwhile.
    ///
    /// `base` is the version the copy holds under the write: `row`'s version, or, for a
    /// copy whose write marker survived a promotion that also lost rows before it, the
    /// local version file's (`row` may then be older, or missing).
    pub(crate) async fn adopt_unmarked_write(
        &self,
        session: &mut dyn DbSession,
        repo: &RepoId,
        row: Option<&VersionRow>,
        base: Version,
        write_locked: bool,
    ) -> Result<Option<Version>, ClusterError> {
        let write = LockName::Write(repo.clone());
        if !write_locked && !matches!(session.try_lock(&write).await, Ok(true)) {
            return Ok(None);
        }
        let adopted = self.adopt_locked(session, repo, row, base).await;
        if !write_locked {
            self.release(session, &write).await;
        }
        adopted
    }

    async fn adopt_locked(
        &self,
        session: &mut dyn DbSession,
        repo: &RepoId,
        row: Option<&VersionRow>,
        base: Version,
    ) -> Result<Option<Version>, ClusterError> {
        // Decided on rows read before the lock: they must still be the same, and nobody
        // may have written (or be writing) past the copy's base version.
        let rows = session.rows(repo).await?;
        if rows.iter().find(|r| r.device == self.device) != row
            || rows.iter().any(|r| r.version > base || r.writing)
        {
            return Ok(None);
        }
        let digest = {
            let _guard = self.local.exclusive(repo).await;
            if self.local.shows_unrecorded(repo) {
                return Ok(None);
            }
            // What is adopted must survive the next crash.
            self.ports.store.sync(repo).await?;
            self.ports.store.digest(repo).await?
        };
        // The lost mark named the user; nothing else does.
        let event = self.recovered_event(repo, &self.device, String::new());
        // The new version must be above the base, which a promotion may have taken from
        // every row (push ids are drawn above the rows only): the same number for the base
        // without the write elsewhere and with it here would be two states of one version.
        let mut version = session.record_push(&event).await?;
        for _ in 0..ADOPT_ID_DRAWS {
            if version > base {
                break;
            }
            version = session.record_push(&event).await?;
        }
        if version <= base {
            return Ok(None);
        }
        let seen = row_versions(&rows);
        if !session
            .set_version(repo, &self.device, version, Some(digest), Some(&seen))
            .await?
        {
            return Ok(None);
        }
        self.copy_is_version(repo, version).await?;
        self.emit(Event::Recovered {
            repo: repo.clone(),
            device: self.device.clone(),
            how: "adopted".to_owned(),
        });
        self.ports
            .events
            .reached(crate::ports::Coverage::LostMarkAdopted);
        Ok(Some(version))
    }

    /// The push event that records an adopted write of `row`'s device: it names no ref
    /// updates (the write's own were never recorded), so plans read the commit graph.
    fn recovered_event(&self, repo: &RepoId, device: &DeviceId, user: String) -> NewPushEvent {
        NewPushEvent {
            repo: repo.clone(),
            device: device.clone(),
            user,
            started_ms: self.ports.clock.now_ms(),
            updates: Vec::new(),
            accepted: true,
            kind: PushKind::Recovered,
        }
    }

    /// Answers a recovery probe about a write on this device.
    pub async fn probe(
        &self,
        repo: &RepoId,
        owner: &LockOwner,
    ) -> Result<ProbeResult, ClusterError> {
        // Holding the working copy exclusively: no ref moves while we look.
        let _guard = self.local.exclusive(repo).await;
        if self.local.is_running(repo, owner) {
            return Ok(ProbeResult::InProgress);
        }
        // [stormcell] PROTOCOL.md 12: answer only for what is durable, so a write that is
        // adopted cannot vanish with the next crash.
        self.ports.store.sync(repo).await?;
        self.local.settle(repo);
        let digest = self.ports.store.digest(repo).await?;
        let local_version = self.ports.store.local_version(repo).await?;
        Ok(ProbeResult::Idle {
            digest,
            local_version,
        })
    }
}
