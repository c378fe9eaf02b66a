//! **[stormcell]** Fenced recovery (PROTOCOL.md section 6): a write interruption whose
//! writer is provably gone is resolved without a person when the interrupted device can
//! be asked about its working copy.

use super::Engine;
use crate::error::ClusterError;
use crate::ids::{LockOwner, RepoId};
use crate::peer;
use crate::plant::Bug;
use crate::ports::{DbSession, Event, FinishWrite};
use crate::rows::{NewPushEvent, PushKind, Topology, VersionRow};
use crate::wire::{ProbeResult, Request, Response};

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
            let event = NewPushEvent {
                repo: row.repo.clone(),
                device: row.device.clone(),
                user: row
                    .write_props
                    .as_ref()
                    .map_or_else(String::new, |p| p.user.clone()),
                started_ms: self.ports.clock.now_ms(),
                updates: Vec::new(),
                accepted: true,
                kind: PushKind::Recovered,
            };
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
        Ok(())
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
