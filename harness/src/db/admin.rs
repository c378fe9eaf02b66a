//! The administrative side of the simulated database: configuration edits, demotes and the
//! push log, behind the model's [`AdminSession`] port.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use stormcell_model::admin::{AdminDb, AdminSession, ConfigEdit, SalvageRecord};
use stormcell_model::error::DbError;
use stormcell_model::ids::{DeviceId, RepoId, Version};
use stormcell_model::rows::{row_versions, PushEvent};

use super::client::{SimDb, SimDbSession};
use super::tables::Tables;
use super::wire::{DbRequest, DbResponse};

/// An administrative request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdminRequest {
    /// `edit`.
    Edit {
        /// The change.
        edit: ConfigEdit,
    },
    /// `delete_row`.
    DeleteRows {
        /// The repository.
        repo: RepoId,
        /// The devices.
        devices: Vec<DeviceId>,
        /// Only if the repository's rows are exactly these.
        #[serde(default)]
        expected: Option<Vec<(DeviceId, Version)>>,
    },
    /// `push_events`.
    PushEvents {
        /// The repository.
        repo: RepoId,
        /// Only events with a larger id.
        after: Option<u64>,
    },
    /// `record_salvage`.
    RecordSalvage {
        /// The record.
        record: SalvageRecord,
    },
    /// `salvage_records`.
    SalvageRecords {
        /// The repository.
        repo: RepoId,
    },
}

impl AdminRequest {
    /// Whether the request changes the tables (replicas refuse it; a primary ships it).
    pub fn is_write(&self) -> bool {
        match self {
            AdminRequest::Edit { .. }
            | AdminRequest::DeleteRows { .. }
            | AdminRequest::RecordSalvage { .. } => true,
            AdminRequest::PushEvents { .. } | AdminRequest::SalvageRecords { .. } => false,
        }
    }
}

/// Runs one administrative request against the tables.
pub fn execute_admin(tables: &mut Tables, req: &AdminRequest) -> DbResponse {
    match req {
        AdminRequest::Edit { edit } => match tables.apply_edit(edit) {
            Ok(()) => DbResponse::Done,
            Err(message) => DbResponse::Error(message),
        },
        AdminRequest::DeleteRows {
            repo,
            devices,
            expected,
        } => {
            if expected
                .as_ref()
                .is_some_and(|e| *e != row_versions(&tables.rows(repo)))
            {
                return DbResponse::Changed(0);
            }
            let deleted = devices
                .iter()
                .filter(|device| tables.delete_row(repo, device))
                .count();
            DbResponse::Changed(deleted as u64)
        }
        AdminRequest::PushEvents { repo, after } => DbResponse::PushEvents(
            tables
                .push_events()
                .iter()
                .filter(|e| &e.event.repo == repo && after.is_none_or(|a| e.id > a))
                .cloned()
                .collect(),
        ),
        AdminRequest::RecordSalvage { record } => {
            tables.record_salvage(record);
            DbResponse::Done
        }
        AdminRequest::SalvageRecords { repo } => {
            DbResponse::SalvageRecords(tables.salvage_records(repo))
        }
    }
}

impl Tables {
    /// Applies a configuration change, or says why it cannot be applied.
    pub fn apply_edit(&mut self, edit: &ConfigEdit) -> Result<(), String> {
        let t = self.topology_mut();
        match edit {
            ConfigEdit::AddDevice { device } => {
                if t.devices.contains_key(&device.id) {
                    return Err(format!("device {} already exists", device.id));
                }
                t.devices.insert(device.id.clone(), device.clone());
            }
            ConfigEdit::AddBinding { binding } => {
                if !t.devices.contains_key(&binding.device) {
                    return Err(format!("no device {}", binding.device));
                }
                if !t.services.contains_key(&binding.service) {
                    return Err(format!("no service {}", binding.service));
                }
                if t.bindings
                    .iter()
                    .any(|b| b.device == binding.device && b.service == binding.service)
                {
                    return Err(format!(
                        "{} is already bound to {}",
                        binding.device, binding.service
                    ));
                }
                t.bindings.push(binding.clone());
            }
            ConfigEdit::SetBinding {
                service,
                device,
                writable,
                disabled,
            } => {
                let Some(b) = t
                    .bindings
                    .iter_mut()
                    .find(|b| &b.device == device && &b.service == service)
                else {
                    return Err(format!("{device} is not bound to {service}"));
                };
                if let Some(w) = writable {
                    b.writable = *w;
                }
                if let Some(d) = disabled {
                    b.disabled = *d;
                }
            }
            ConfigEdit::SetServiceClosed { service, closed } => {
                let Some(s) = t.services.get_mut(service) else {
                    return Err(format!("no service {service}"));
                };
                s.closed = *closed;
            }
            ConfigEdit::AddRepository { repository } => {
                if t.repositories.contains_key(&repository.id) {
                    return Err(format!("repository {} already exists", repository.id));
                }
                t.repositories
                    .insert(repository.id.clone(), repository.clone());
            }
            ConfigEdit::SetRepositoryService { repo, service } => {
                if let Some(s) = service {
                    if !t.services.contains_key(s) {
                        return Err(format!("no service {s}"));
                    }
                }
                let Some(r) = t.repositories.get_mut(repo) else {
                    return Err(format!("no repository {repo}"));
                };
                r.service = service.clone();
            }
            ConfigEdit::SetMaintenance { repo, message } => {
                let Some(r) = t.repositories.get_mut(repo) else {
                    return Err(format!("no repository {repo}"));
                };
                r.maintenance = message.clone();
            }
        }
        Ok(())
    }
}

#[async_trait]
impl AdminSession for SimDbSession {
    async fn edit(&mut self, edit: &ConfigEdit) -> Result<(), DbError> {
        let request = AdminRequest::Edit { edit: edit.clone() };
        match self.call(DbRequest::Admin { request }).await? {
            DbResponse::Done => Ok(()),
            other => Err(DbError::Query(format!(
                "unexpected answer to edit: {other:?}"
            ))),
        }
    }

    async fn delete_rows(
        &mut self,
        repo: &RepoId,
        devices: &[DeviceId],
        expected: Option<&[(DeviceId, Version)]>,
    ) -> Result<u64, DbError> {
        let request = AdminRequest::DeleteRows {
            repo: repo.clone(),
            devices: devices.to_vec(),
            expected: expected.map(<[_]>::to_vec),
        };
        match self.call(DbRequest::Admin { request }).await? {
            DbResponse::Changed(n) => Ok(n),
            other => Err(DbError::Query(format!(
                "unexpected answer to delete_rows: {other:?}"
            ))),
        }
    }

    async fn push_events(
        &mut self,
        repo: &RepoId,
        after: Option<u64>,
    ) -> Result<Vec<PushEvent>, DbError> {
        let request = AdminRequest::PushEvents {
            repo: repo.clone(),
            after,
        };
        match self.call(DbRequest::Admin { request }).await? {
            DbResponse::PushEvents(events) => Ok(events),
            other => Err(DbError::Query(format!(
                "unexpected answer to push_events: {other:?}"
            ))),
        }
    }

    async fn record_salvage(&mut self, record: &SalvageRecord) -> Result<(), DbError> {
        let request = AdminRequest::RecordSalvage {
            record: record.clone(),
        };
        match self.call(DbRequest::Admin { request }).await? {
            DbResponse::Done => Ok(()),
            DbResponse::Error(message) => Err(DbError::Query(message)),
            other => Err(DbError::Query(format!(
                "unexpected answer to record_salvage: {other:?}"
            ))),
        }
    }

    async fn salvage_records(&mut self, repo: &RepoId) -> Result<Vec<SalvageRecord>, DbError> {
        let request = AdminRequest::SalvageRecords { repo: repo.clone() };
        match self.call(DbRequest::Admin { request }).await? {
            DbResponse::SalvageRecords(records) => Ok(records),
            other => Err(DbError::Query(format!(
                "unexpected answer to salvage_records: {other:?}"
            ))),
        }
    }
}

#[async_trait]
impl AdminDb for SimDb {
    async fn connect_admin(&self) -> Result<Box<dyn AdminSession>, DbError> {
        Ok(Box::new(self.open().await?))
    }
}

#[cfg(test)]
mod tests {
    use stormcell_model::ids::ServiceId;
    use stormcell_model::rows::{Binding, Device, Service, Topology};

    use super::*;

    #[test]
    fn edits_change_the_configuration_and_refuse_unknown_names() {
        let mut topology = Topology::default();
        let svc = ServiceId::from("svc");
        topology.services.insert(
            svc.clone(),
            Service {
                id: svc.clone(),
                closed: false,
            },
        );
        let mut t = Tables::new(topology);
        let dev = DeviceId::from("repo004");
        let add = ConfigEdit::AddDevice {
            device: Device {
                id: dev.clone(),
                address: "repo004:7000".to_owned(),
            },
        };
        assert_eq!(
            execute_admin(&mut t, &AdminRequest::Edit { edit: add.clone() }),
            DbResponse::Done
        );
        assert!(matches!(
            execute_admin(&mut t, &AdminRequest::Edit { edit: add }),
            DbResponse::Error(_)
        ));
        let bind = ConfigEdit::AddBinding {
            binding: Binding {
                service: svc.clone(),
                device: dev.clone(),
                writable: true,
                disabled: false,
            },
        };
        assert!(t.apply_edit(&bind).is_ok());
        assert!(t
            .apply_edit(&ConfigEdit::SetBinding {
                service: svc.clone(),
                device: dev.clone(),
                writable: Some(false),
                disabled: None,
            })
            .is_ok());
        let b = &t.topology().bindings[0];
        assert!(!b.writable && !b.disabled);
        assert!(t
            .apply_edit(&ConfigEdit::SetMaintenance {
                repo: RepoId::from("R9"),
                message: None
            })
            .is_err());
    }
}
