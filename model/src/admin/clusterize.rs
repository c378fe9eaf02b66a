//! Clusterize (PROTOCOL.md 7.4): assign a repository to a service or take it off one. It
//! moves no data and touches no version rows.

use super::{Admin, AdminError, ConfigEdit, Confirm};
use crate::ids::{RepoId, ServiceId};

impl Admin {
    /// `repository clusterize REPO (--service SERVICE | --remove-service)`. When the service
    /// has more than one active device, warns that the repository will be frozen as an
    /// ambiguous leader until a device is promoted, and asks for confirmation unless
    /// `force`. Returns the warning, if one was given.
    pub async fn clusterize(
        &self,
        repo: &RepoId,
        service: Option<&ServiceId>,
        force: bool,
        confirm: &dyn Confirm,
    ) -> Result<Option<String>, AdminError> {
        let mut session = self.connect().await?;
        let topology = session.topology().await?;
        if !topology.repositories.contains_key(repo) {
            return Err(AdminError::UnknownRepository(repo.clone()));
        }
        let mut warning = None;
        if let Some(s) = service {
            if !topology.services.contains_key(s) {
                return Err(AdminError::UnknownService(s.clone()));
            }
            let mut active: Vec<String> = topology
                .bindings
                .iter()
                .filter(|b| &b.service == s && b.is_active())
                .map(|b| b.device.to_string())
                .collect();
            active.sort();
            active.dedup();
            let rows = session.rows(repo).await?;
            if active.len() > 1 && rows.is_empty() {
                let w = format!(
                    "Service {s} has {} active devices ({}). Repository {repo} has no version \
                     information, so it will be frozen as an ambiguous leader until you run \
                     `stormcell repository thaw {repo} --promote DEVICE` on the device with \
                     the right data.",
                    active.len(),
                    active.join(", ")
                );
                if !force && !confirm.confirm("Clusterize anyway?", &w).await {
                    return Err(AdminError::Declined);
                }
                warning = Some(w);
            }
        }
        session
            .edit(&ConfigEdit::SetRepositoryService {
                repo: repo.clone(),
                service: service.cloned(),
            })
            .await?;
        self.emit(match service {
            Some(s) => format!("{repo} clusterized onto {s}"),
            None => format!("{repo} taken off its service"),
        });
        Ok(warning)
    }
}
