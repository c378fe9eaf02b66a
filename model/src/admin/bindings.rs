//! Growing and shrinking a cluster (PROTOCOL.md 7.5): binding properties (Allow/Prevent
//! Writes, disabled), registering a device, closing a service, and allocating a new
//! repository on a random open service.

use serde::{Deserialize, Serialize};

use super::{Admin, AdminError, AdminSession, ConfigEdit};
use crate::ids::{DeviceId, RepoId, ServiceId};
use crate::ports::env::shuffle;
use crate::rows::{Binding, Device, Repository};

/// A change to a binding's properties; `None` leaves a property as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingChange {
    /// Allow Writes (`true`) or Prevent Writes (`false`).
    pub writable: Option<bool>,
    /// Disable (`true`) or enable (`false`).
    pub disabled: Option<bool>,
}

impl Admin {
    /// Changes the bindings of `device`: to `service` only, or every binding it has.
    pub async fn set_binding(
        &self,
        service: Option<&ServiceId>,
        device: &DeviceId,
        change: BindingChange,
    ) -> Result<(), AdminError> {
        let mut session = self.connect().await?;
        let topology = session.topology().await?;
        if !topology.devices.contains_key(device) {
            return Err(AdminError::UnknownName(device.to_string()));
        }
        let mut services: Vec<ServiceId> = topology
            .bindings
            .iter()
            .filter(|b| &b.device == device && service.is_none_or(|s| &b.service == s))
            .map(|b| b.service.clone())
            .collect();
        services.sort();
        services.dedup();
        if services.is_empty() {
            return Err(AdminError::NothingSelected(format!(
                "device {device} has no binding{}",
                service.map_or(String::new(), |s| format!(" to service {s}"))
            )));
        }
        for s in services {
            session
                .edit(&ConfigEdit::SetBinding {
                    service: s.clone(),
                    device: device.clone(),
                    writable: change.writable,
                    disabled: change.disabled,
                })
                .await?;
            self.emit(format!("binding {s}/{device} changed: {change:?}"));
        }
        Ok(())
    }

    /// Expands a cluster: registers `device` at `address` (unless it is registered) and
    /// binds it actively to `service`. It needs sync for every repository of the service
    /// and catches up by itself.
    pub async fn add_device(
        &self,
        device: &DeviceId,
        address: &str,
        service: &ServiceId,
        writable: bool,
    ) -> Result<(), AdminError> {
        let mut session = self.connect().await?;
        let topology = session.topology().await?;
        if !topology.services.contains_key(service) {
            return Err(AdminError::UnknownService(service.clone()));
        }
        if !topology.devices.contains_key(device) {
            session
                .edit(&ConfigEdit::AddDevice {
                    device: Device {
                        id: device.clone(),
                        address: address.to_owned(),
                    },
                })
                .await?;
        }
        session
            .edit(&ConfigEdit::AddBinding {
                binding: Binding {
                    service: service.clone(),
                    device: device.clone(),
                    writable,
                    disabled: false,
                },
            })
            .await?;
        self.emit(format!("device {device} added to service {service}"));
        Ok(())
    }

    /// Opens or closes a service to new repositories.
    pub async fn set_service_closed(
        &self,
        service: &ServiceId,
        closed: bool,
    ) -> Result<(), AdminError> {
        let mut session = self.connect().await?;
        let topology = session.topology().await?;
        if !topology.services.contains_key(service) {
            return Err(AdminError::UnknownService(service.clone()));
        }
        session
            .edit(&ConfigEdit::SetServiceClosed {
                service: service.clone(),
                closed,
            })
            .await?;
        Ok(())
    }

    /// Registers `device` at `address` without binding it to any service (an error if
    /// the name is taken).
    pub async fn register_device(
        &self,
        device: &DeviceId,
        address: &str,
    ) -> Result<(), AdminError> {
        let mut session = self.connect().await?;
        session
            .edit(&ConfigEdit::AddDevice {
                device: Device {
                    id: device.clone(),
                    address: address.to_owned(),
                },
            })
            .await?;
        self.emit(format!("device {device} registered at {address}"));
        Ok(())
    }

    /// Creates a repository on a random open service; every active device of that service
    /// starts with a version 0 row (all are leaders). Returns the service.
    pub async fn create_repository(&self, repo: &RepoId) -> Result<ServiceId, AdminError> {
        let mut session = self.connect().await?;
        let topology = session.topology().await?;
        if topology.repositories.contains_key(repo) {
            return Err(AdminError::NothingSelected(format!(
                "repository {repo} already exists"
            )));
        }
        let mut open: Vec<ServiceId> = topology
            .services
            .values()
            .filter(|s| !s.closed)
            .map(|s| s.id.clone())
            .collect();
        shuffle(self.ports.rng.as_ref(), &mut open);
        let Some(service) = open.into_iter().next() else {
            return Err(AdminError::NoOpenService(repo.clone()));
        };
        self.add_repository(session.as_mut(), repo, &service)
            .await?;
        Ok(service)
    }

    /// Creates a repository on `service` (open or closed: the operator chose it), with a
    /// version 0 row for every active device of the service.
    pub async fn create_repository_on(
        &self,
        repo: &RepoId,
        service: &ServiceId,
    ) -> Result<(), AdminError> {
        let mut session = self.connect().await?;
        let topology = session.topology().await?;
        if topology.repositories.contains_key(repo) {
            return Err(AdminError::NothingSelected(format!(
                "repository {repo} already exists"
            )));
        }
        if !topology.services.contains_key(service) {
            return Err(AdminError::UnknownService(service.clone()));
        }
        self.add_repository(session.as_mut(), repo, service).await
    }

    async fn add_repository(
        &self,
        session: &mut dyn AdminSession,
        repo: &RepoId,
        service: &ServiceId,
    ) -> Result<(), AdminError> {
        session
            .edit(&ConfigEdit::AddRepository {
                repository: Repository {
                    id: repo.clone(),
                    service: Some(service.clone()),
                    maintenance: None,
                },
            })
            .await?;
        let topology = session.topology().await?;
        for device in topology.active_devices(repo) {
            session.set_version(repo, &device, 0, None, None).await?;
        }
        self.emit(format!("repository {repo} allocated on service {service}"));
        Ok(())
    }
}
