//! The rows of the cluster database (PROTOCOL.md section 1): version rows, push and sync
//! events, and the configuration (devices, services, bindings, repositories).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, Digest, LockOwner, Oid, RepoId, ServiceId, Version};

/// Who is writing, since when, and from what state (`write_props`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteProps {
    /// The pushing user.
    pub user: String,
    /// The device receiving the write.
    pub device: DeviceId,
    /// Wall-clock milliseconds when the write started.
    pub since_ms: u64,
    /// **[stormcell]** The working copy's ref digest before the write; fenced recovery
    /// compares against it.
    pub pre_digest: Option<Digest>,
}

/// One row per (repository, device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRow {
    /// The repository.
    pub repo: RepoId,
    /// The device.
    pub device: DeviceId,
    /// The version the device holds.
    pub version: Version,
    /// A write is in progress (or was interrupted) on this device.
    pub writing: bool,
    /// Who is writing.
    pub write_props: Option<WriteProps>,
    /// The token of the writer holding `writing`.
    pub lock_owner: Option<LockOwner>,
    /// **[stormcell]** The ref digest the device had when it reached `version`.
    pub digest: Option<Digest>,
}

/// What kind of change a push event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PushKind {
    /// A user's push.
    Push,
    /// A maintenance lock session (PROTOCOL.md 7.2).
    Maintenance,
    /// **[stormcell]** An interrupted write adopted by fenced recovery.
    Recovered,
}

/// One ref update: compare-and-swap from `old` to `new`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefUpdate {
    /// Full ref name.
    pub name: String,
    /// Expected current value; `None` creates the ref.
    pub old: Option<Oid>,
    /// New value; `None` deletes the ref.
    pub new: Option<Oid>,
}

/// A push event to record (its id is assigned by the database).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPushEvent {
    /// The repository.
    pub repo: RepoId,
    /// The device that received the write.
    pub device: DeviceId,
    /// The pushing user.
    pub user: String,
    /// Wall-clock milliseconds when the write started.
    pub started_ms: u64,
    /// The ref updates.
    pub updates: Vec<RefUpdate>,
    /// Whether the updates were applied.
    pub accepted: bool,
    /// Push, maintenance or recovered.
    pub kind: PushKind,
}

/// A recorded push event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEvent {
    /// Monotonic id; the newest one is the repository's next version.
    pub id: u64,
    /// What was recorded.
    pub event: NewPushEvent,
}

/// How a peer fetch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncResult {
    /// The fetch succeeded.
    Sync,
    /// The fetch failed.
    Error,
    /// The fetch ran past its time limit.
    Timeout,
}

/// A sync event to record: one peer fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSyncEvent {
    /// The repository.
    pub repo: RepoId,
    /// The device that fetched.
    pub device: DeviceId,
    /// The device fetched from.
    pub from_device: DeviceId,
    /// Version before the fetch.
    pub version_before: Option<Version>,
    /// Version after the fetch.
    pub version_after: Option<Version>,
    /// Milliseconds spent waiting for the read lock.
    pub waited_ms: u64,
    /// The result.
    pub result: SyncResult,
}

/// A device registered with the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Its name.
    pub id: DeviceId,
    /// The address its peers and clients connect to (`host:port`).
    pub address: String,
}

/// A binding of a device to a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The service.
    pub service: ServiceId,
    /// The device.
    pub device: DeviceId,
    /// "Allow Writes" (true) or "Prevent Writes" (false).
    pub writable: bool,
    /// A disabled binding is not active.
    pub disabled: bool,
}

impl Binding {
    /// A binding that is not disabled is active.
    pub fn is_active(&self) -> bool {
        !self.disabled
    }
}

/// A service: a named group of bindings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Its name.
    pub id: ServiceId,
    /// A closed service takes no new repositories.
    pub closed: bool,
}

/// A repository's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    /// Its name.
    pub id: RepoId,
    /// The service it is assigned to, if clustered.
    pub service: Option<ServiceId>,
    /// Read-only maintenance message, when set.
    pub maintenance: Option<String>,
}

/// The cluster's configuration as loaded from the database in one query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Devices by name.
    pub devices: BTreeMap<DeviceId, Device>,
    /// Services by name.
    pub services: BTreeMap<ServiceId, Service>,
    /// Every binding.
    pub bindings: Vec<Binding>,
    /// Repositories by name.
    pub repositories: BTreeMap<RepoId, Repository>,
}

impl Topology {
    /// The bindings of the service a repository is assigned to.
    pub fn bindings_of(&self, repo: &RepoId) -> Vec<&Binding> {
        let Some(service) = self.repositories.get(repo).and_then(|r| r.service.as_ref()) else {
            return Vec::new();
        };
        self.bindings
            .iter()
            .filter(|b| &b.service == service)
            .collect()
    }

    /// Devices actively bound to a repository's service, in name order.
    pub fn active_devices(&self, repo: &RepoId) -> Vec<DeviceId> {
        let mut v: Vec<DeviceId> = self
            .bindings_of(repo)
            .into_iter()
            .filter(|b| b.is_active())
            .map(|b| b.device.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Whether a device is actively bound to the repository's service.
    pub fn is_active(&self, repo: &RepoId, device: &DeviceId) -> bool {
        self.bindings_of(repo)
            .iter()
            .any(|b| &b.device == device && b.is_active())
    }

    /// Whether a device holds an active, writable binding for the repository.
    pub fn is_writable(&self, repo: &RepoId, device: &DeviceId) -> bool {
        self.bindings_of(repo)
            .iter()
            .any(|b| &b.device == device && b.is_active() && b.writable)
    }

    /// Repositories whose service has an active binding for the device, in name order.
    pub fn repositories_on(&self, device: &DeviceId) -> Vec<RepoId> {
        self.repositories
            .keys()
            .filter(|r| self.is_active(r, device))
            .cloned()
            .collect()
    }

    /// The address of a device.
    pub fn address_of(&self, device: &DeviceId) -> Option<&str> {
        self.devices.get(device).map(|d| d.address.as_str())
    }
}

/// The (device, version) pairs of a repository's rows, in device order: what a read sync
/// saw, for its conditional update (PROTOCOL.md 12).
pub fn row_versions(rows: &[VersionRow]) -> Vec<(DeviceId, Version)> {
    let mut seen: Vec<(DeviceId, Version)> =
        rows.iter().map(|r| (r.device.clone(), r.version)).collect();
    seen.sort();
    seen
}
