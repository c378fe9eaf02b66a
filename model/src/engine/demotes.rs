//! **[stormcell]** Claims after a demote (PROTOCOL.md 12). A demote deletes a device's
//! row, but not the local version file beside its working copy, and peers that ask for
//! durable versions (a read while read-only, the first sync under a new primary) would
//! take that file as a claim and bring back what the demote discarded. So the database
//! counts each device's demotes beside the rows, a device takes note of its demotes (and
//! forgets its local version) when it meets them, and tells its count with its claim:
//! - an answer counting fewer demotes than the asker's database is older than a demote:
//!   it claims nothing (or, from a device with a row again, it cannot be told apart from a
//!   fresh claim, and counts as unanswered);
//! - an answer counting more shows the asker's database lost a demote (a lagging replica
//!   promoted): that device's row there is older than the demote and claims nothing.

use std::collections::BTreeMap;

use super::Engine;
use crate::error::ClusterError;
use crate::ids::{DeviceId, RepoId};
use crate::plant::Bug;
use crate::ports::{DbSession, Event};

/// What a peer's answer is worth against the asker's count of its demotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimStanding {
    /// The claim is as current as the asker's database.
    Current,
    /// The claim predates a demote the asker's database counts: it claims nothing.
    Void,
    /// The claim predates a demote, but the device has a row again (a promote), so a
    /// fresh claim cannot be told apart from the old one.
    Unproven,
    /// The asker's database lacks a demote the device took note of: its row there claims
    /// nothing, the answer stands.
    RowOutdated,
}

impl Engine {
    /// Whether demotes invalidate claims here (the rule, unless the planted bug is in).
    pub(crate) fn tracks_demotes(&self) -> bool {
        self.config.rules().demote_invalidates_claim && !self.plants.has(Bug::ClaimsSurviveDemote)
    }

    /// The demote counts of `repo` on this session, empty when demotes are not tracked.
    pub(crate) async fn demotions(
        &self,
        session: &mut dyn DbSession,
        repo: &RepoId,
    ) -> Result<BTreeMap<DeviceId, u64>, ClusterError> {
        if !self.tracks_demotes() {
            return Ok(BTreeMap::new());
        }
        Ok(session.demotions(repo).await?)
    }

    /// Takes note of this device's demotes that `counts` shows and its local version does
    /// not: that version claimed what a demote discarded, so it is forgotten before
    /// anything else reads it. Returns how many demotes the device has taken note of.
    pub(crate) async fn note_demotes(
        &self,
        repo: &RepoId,
        counts: &BTreeMap<DeviceId, u64>,
    ) -> Result<u64, ClusterError> {
        if !self.tracks_demotes() {
            return Ok(0);
        }
        let seen = self.ports.store.demotes_seen(repo).await?;
        let counted = counts.get(&self.device).copied().unwrap_or(0);
        if counted <= seen {
            return Ok(seen);
        }
        self.ports.store.forget_claim(repo, counted).await?;
        self.emit(Event::Note {
            text: format!(
                "{repo}: this device was demoted since its local version was written; it \
                 claims no version until it is synchronized"
            ),
        });
        Ok(counted)
    }

    /// **[stormcell]** A thaw says this device was just demoted in `repo`, as its
    /// `demotes`-th demote there: the local version is forgotten at once, so the demote
    /// holds even where the database that recorded it is lost before a replica has it.
    pub async fn note_demoted(&self, repo: &RepoId, demotes: u64) -> Result<(), ClusterError> {
        let counts = BTreeMap::from([(self.device.clone(), demotes)]);
        self.note_demotes(repo, &counts).await.map(|_| ())
    }

    /// Reads the demote counts and takes note of this device's (see
    /// [`Engine::note_demotes`]), where demotes are tracked; applies again a demote the
    /// database lost. Returns whether that changed the rows.
    pub(crate) async fn meet_demotes(
        &self,
        session: &mut dyn DbSession,
        repo: &RepoId,
    ) -> Result<bool, ClusterError> {
        if !self.tracks_demotes() {
            return Ok(false);
        }
        let counts = self.demotions(session, repo).await?;
        let seen = self.note_demotes(repo, &counts).await?;
        self.restore_lost_demote(session, repo, &counts, seen).await
    }

    /// A database that counts fewer demotes of this device than it took note of lost
    /// them (a replica promoted before it received the demote): its row there is the one
    /// the demote deleted, and would make the discarded copy a leader again. The device
    /// deletes it again. Returns whether it did (the rows changed).
    pub(crate) async fn restore_lost_demote(
        &self,
        session: &mut dyn DbSession,
        repo: &RepoId,
        counts: &BTreeMap<DeviceId, u64>,
        seen: u64,
    ) -> Result<bool, ClusterError> {
        if self.standing(counts, &self.device, seen, true) != ClaimStanding::RowOutdated {
            return Ok(false);
        }
        let deleted = session.restore_demote(repo, &self.device, seen).await?;
        if deleted {
            self.emit(Event::Note {
                text: format!(
                    "{repo}: the database lost a demote of this device; its row is deleted again"
                ),
            });
        }
        Ok(deleted)
    }

    /// Whether this device's copy of `repo` was given up by a demote: its local version
    /// forgotten for one, and nothing synchronized since.
    pub(crate) async fn gave_up_by_demote(&self, repo: &RepoId) -> Result<bool, ClusterError> {
        if !self.tracks_demotes() || self.ports.store.local_version(repo).await?.is_some() {
            return Ok(false);
        }
        Ok(self.ports.store.demotes_seen(repo).await? > 0)
    }

    /// What `device`'s answer counting `seen` demotes is worth, given the asker's counts
    /// and whether the device has a row in the asker's database.
    pub(crate) fn standing(
        &self,
        counts: &BTreeMap<DeviceId, u64>,
        device: &DeviceId,
        seen: u64,
        has_row: bool,
    ) -> ClaimStanding {
        if !self.tracks_demotes() {
            return ClaimStanding::Current;
        }
        let counted = counts.get(device).copied().unwrap_or(0);
        match seen.cmp(&counted) {
            std::cmp::Ordering::Less if has_row => ClaimStanding::Unproven,
            std::cmp::Ordering::Less => ClaimStanding::Void,
            std::cmp::Ordering::Equal => ClaimStanding::Current,
            std::cmp::Ordering::Greater => ClaimStanding::RowOutdated,
        }
    }
}
