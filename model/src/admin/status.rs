//! Status (PROTOCOL.md section 8) as data and as readable tables, computed by the pure
//! rules of [`crate::status`] from the rows and the push log.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{Admin, AdminError};
use crate::ids::{RepoId, ServiceId};
use crate::leaders::writing_rows;
use crate::plant::Bug;
use crate::ports::LockName;
use crate::rows::VersionRow;
use crate::status::{repo_sync, repository_status, DeviceLine, RepoSync, ServiceSync};

/// How long a lone leader's change counts as still spreading (8.1).
const PARTIAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// Service sync status (8.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The service.
    pub service: ServiceId,
    /// The service's status: the first that applies.
    pub sync: ServiceSync,
    /// Each repository's status, in name order.
    pub repos: Vec<(RepoId, RepoSync)>,
    /// Repositories where an active device holds `writing = true`.
    pub writing: Vec<RepoId>,
}

/// Repository status (8.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryStatus {
    /// The repository.
    pub repo: RepoId,
    /// One line per device with a row.
    pub lines: Vec<DeviceLine>,
}

/// A status as one word and its detail, for tables.
pub fn sync_text(sync: &ServiceSync) -> String {
    match sync {
        ServiceSync::AmbiguousLeader => "Ambiguous Leader".to_owned(),
        ServiceSync::Unsynchronized { for_ms } => {
            format!(
                "Unsynchronized (unreplicated changes for {}s)",
                for_ms / 1000
            )
        }
        ServiceSync::Partial { lag } => format!("Partial (lag {lag})"),
        ServiceSync::Synchronized => "Synchronized".to_owned(),
        ServiceSync::NoRepositories => "No Repositories".to_owned(),
    }
}

fn repo_text(sync: &RepoSync) -> String {
    match sync {
        RepoSync::Ambiguous => "ambiguous".to_owned(),
        RepoSync::Synchronized => "synchronized".to_owned(),
        RepoSync::Partial { lag } => format!("partial (lag {lag})"),
        RepoSync::Unsynchronized { for_ms } => format!("unsynchronized for {}s", for_ms / 1000),
    }
}

impl ServiceStatus {
    /// The status as a table.
    pub fn render(&self) -> String {
        let mut out = format!("Service {}: {}\n", self.service, sync_text(&self.sync));
        for (repo, sync) in &self.repos {
            let writing = if self.writing.contains(repo) {
                "  (writing)"
            } else {
                ""
            };
            let _ = writeln!(out, "  {repo:<12} {}{writing}", repo_text(sync));
        }
        out
    }
}

impl RepositoryStatus {
    /// The status as a table.
    pub fn render(&self) -> String {
        let mut out = format!(
            "Repository {}\n  {:<10} {:>8}  {:<14} {:<20} {:<16} {}\n",
            self.repo, "device", "version", "writing since", "last writer", "digest", "leader"
        );
        for l in &self.lines {
            let _ = writeln!(
                out,
                "  {:<10} {:>8}  {:<14} {:<20} {:<16} {}",
                l.device.as_str(),
                l.version,
                l.writing_since_ms
                    .map_or_else(|| "-".to_owned(), |t| t.to_string()),
                l.last_writer.as_deref().unwrap_or("-"),
                l.digest.map_or_else(|| "-".to_owned(), |d| d.to_string()),
                match l.matches_leader {
                    Some(true) => "matches",
                    Some(false) => "differs",
                    None => "-",
                }
            );
        }
        out
    }
}

impl Admin {
    /// `stormcell service status`: the sync status of every Git repository of `service`.
    pub async fn service_status(&self, service: &ServiceId) -> Result<ServiceStatus, AdminError> {
        let mut session = self.connect().await?;
        let topology = session.topology().await?;
        if !topology.services.contains_key(service) {
            return Err(AdminError::UnknownService(service.clone()));
        }
        let now_ms = self.ports.clock.now_ms();
        let mut repos = Vec::new();
        let mut writing = Vec::new();
        for repo in topology.repositories.values() {
            if repo.service.as_ref() != Some(service) {
                continue;
            }
            let active: Vec<_> = if self.plants.has(Bug::StatusIgnoresInactive) {
                topology
                    .bindings_of(&repo.id)
                    .iter()
                    .filter(|b| b.is_active() && b.writable)
                    .map(|b| b.device.clone())
                    .collect()
            } else {
                topology.active_devices(&repo.id)
            };
            let rows = session.rows(&repo.id).await?;
            let leader = rows
                .iter()
                .filter(|r| active.contains(&r.device))
                .map(|r| r.version)
                .max();
            let pushed_ms = match leader {
                Some(v) if v > 0 => session
                    .push_events(&repo.id, Some(v - 1))
                    .await?
                    .into_iter()
                    .find(|e| e.id == v)
                    .map(|e| e.event.started_ms),
                _ => None,
            };
            if rows.iter().any(|r| r.writing && active.contains(&r.device)) {
                writing.push(repo.id.clone());
            }
            repos.push((
                repo.id.clone(),
                repo_sync(&rows, &active, pushed_ms, now_ms, PARTIAL_WINDOW),
            ));
        }
        let syncs: Vec<RepoSync> = repos.iter().map(|(_, s)| s.clone()).collect();
        Ok(ServiceStatus {
            service: service.clone(),
            sync: crate::status::service_sync(&syncs),
            repos,
            writing,
        })
    }

    /// `stormcell repository status REPO`: one line per device with a row.
    pub async fn repository_status(&self, repo: &RepoId) -> Result<RepositoryStatus, AdminError> {
        let mut session = self.connect().await?;
        let rows = session.rows(repo).await?;
        Ok(RepositoryStatus {
            repo: repo.clone(),
            lines: repository_status(&rows),
        })
    }

    /// Whether `repo` is frozen for writes by an interrupted write: some row says `writing`
    /// while the write lock is free (so its writer's session is gone). Returns that row.
    pub async fn write_frozen(&self, repo: &RepoId) -> Result<Option<VersionRow>, AdminError> {
        let mut session = self.connect().await?;
        let rows = session.rows(repo).await?;
        let Some(row) = writing_rows(&rows).first().map(|r| (*r).clone()) else {
            return Ok(None);
        };
        let lock = LockName::Write(repo.clone());
        if !session.try_lock(&lock).await? {
            return Ok(None);
        }
        // Looked at under the lock: a writer that finished meanwhile cleared its row.
        let still = session
            .rows(repo)
            .await?
            .into_iter()
            .find(|r| r.device == row.device && r.writing);
        self.release_write(session.as_mut(), repo).await;
        Ok(still)
    }
}
