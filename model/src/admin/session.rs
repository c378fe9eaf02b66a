//! The database operations only administrative commands need (PROTOCOL.md section 7), kept
//! apart from the [`DbSession`] every request uses: configuration edits, deleting a version
//! row, and reading the push log.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::DbError;
use crate::ids::{DeviceId, Oid, RepoId, ServiceId, Version};
use crate::ports::DbSession;
use crate::rows::{Binding, Device, PushEvent, Repository};

/// One change to the cluster's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "edit", rename_all = "kebab-case")]
pub enum ConfigEdit {
    /// Registers a device (an error if the name is taken).
    AddDevice {
        /// The device.
        device: Device,
    },
    /// Adds a binding (an error if the device or service is unknown, or already bound).
    AddBinding {
        /// The binding.
        binding: Binding,
    },
    /// Changes a binding's properties; `None` leaves a property alone.
    SetBinding {
        /// The service.
        service: ServiceId,
        /// The device.
        device: DeviceId,
        /// Allow Writes (`true`) or Prevent Writes (`false`).
        writable: Option<bool>,
        /// Disabled or enabled.
        disabled: Option<bool>,
    },
    /// Opens or closes a service to new repositories.
    SetServiceClosed {
        /// The service.
        service: ServiceId,
        /// Whether it is closed.
        closed: bool,
    },
    /// Adds a repository (an error if the name is taken).
    AddRepository {
        /// The repository.
        repository: Repository,
    },
    /// Assigns a repository to a service, or to none.
    SetRepositoryService {
        /// The repository.
        repo: RepoId,
        /// The service.
        service: Option<ServiceId>,
    },
    /// Sets or clears read-only maintenance.
    SetMaintenance {
        /// The repository.
        repo: RepoId,
        /// The message, or `None` to end maintenance.
        message: Option<String>,
    },
}

/// **[stormcell]** A salvage bundle as the cluster database records it (PROTOCOL.md 12):
/// written by a thaw on the device whose data it keeps, before that thaw changed the
/// device's version row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalvageRecord {
    /// The repository.
    pub repo: RepoId,
    /// The device whose refs the bundle keeps, and which holds the bundle.
    pub device: DeviceId,
    /// The device's version row before the thaw (`None`: it had none).
    pub version: Option<Version>,
    /// When the bundle was written (the clock port's milliseconds).
    pub at_ms: u64,
    /// Where the bundle is on that device (for the daemon, the file's path).
    pub location: String,
    /// The refs it holds, under their names in the discarded working copy.
    pub refs: BTreeMap<String, Oid>,
}

/// A database session that can also run administrative operations.
#[async_trait]
pub trait AdminSession: DbSession {
    /// Applies one configuration change; an unknown name or a duplicate is a query error.
    async fn edit(&mut self, edit: &ConfigEdit) -> Result<(), DbError>;
    /// Deletes devices' version rows of a repository (a demote); returns how many existed.
    /// With `expected`, only if the repository's rows are exactly those (device and
    /// version, sorted by device), checked and applied atomically (0 when they are not): a
    /// thaw's demote then discards exactly what its plan saw.
    async fn delete_rows(
        &mut self,
        repo: &RepoId,
        devices: &[DeviceId],
        expected: Option<&[(DeviceId, Version)]>,
    ) -> Result<u64, DbError>;
    /// The push events of a repository with an id greater than `after` (all with `None`),
    /// oldest first.
    async fn push_events(
        &mut self,
        repo: &RepoId,
        after: Option<u64>,
    ) -> Result<Vec<PushEvent>, DbError>;
    /// **[stormcell]** Records a salvage bundle.
    async fn record_salvage(&mut self, record: &SalvageRecord) -> Result<(), DbError>;
    /// **[stormcell]** The salvage bundles recorded for a repository, oldest first.
    async fn salvage_records(&mut self, repo: &RepoId) -> Result<Vec<SalvageRecord>, DbError>;
}

/// The cluster database, as administrative commands reach it.
#[async_trait]
pub trait AdminDb: Send + Sync {
    /// Opens a new administrative session.
    async fn connect_admin(&self) -> Result<Box<dyn AdminSession>, DbError>;
}
