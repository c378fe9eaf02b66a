//! Why an administrative command failed, with the exact message the operator sees.

use std::time::Duration;

use thiserror::Error;

use crate::error::DbError;
use crate::ids::{DeviceId, RepoId, ServiceId};

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A refused or failed administrative command.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AdminError {
    /// A thaw target names neither a device nor a service.
    #[error("No device or service is called \"{0}\".")]
    UnknownName(String),
    /// `--promote` was given a service.
    #[error("\"{0}\" is a service; --promote takes a single device.")]
    PromoteService(String),
    /// A repository name is unknown.
    #[error("Repository \"{0}\" is not known to this cluster.")]
    UnknownRepository(RepoId),
    /// A service name is unknown.
    #[error("Service \"{0}\" is not known to this cluster.")]
    UnknownService(ServiceId),
    /// A repository is on no service, so it has no devices to thaw or lock.
    #[error("Repository \"{0}\" is not on a cluster service.")]
    NotClustered(RepoId),
    /// The selection matched no repository.
    #[error("No repository matches: {0}")]
    NothingSelected(String),
    /// Promote needs an actively bound device.
    #[error(
        "Device \"{device}\" is not actively bound to the service of repository \"{repo}\": \
         only an active device can be promoted."
    )]
    PromoteInactive {
        /// The repository.
        repo: RepoId,
        /// The device.
        device: DeviceId,
    },
    /// Promote with rows on inactive devices only.
    #[error(
        "Repository \"{repo}\" still has version rows on devices that are no longer active \
         ({devices}). Demote them first: `stormcell repository thaw {repo} --demote DEVICE`.",
        devices = join(.devices)
    )]
    DemoteFirst {
        /// The repository.
        repo: RepoId,
        /// The inactive devices with rows.
        devices: Vec<DeviceId>,
    },
    /// Promote with rows on active devices.
    #[error(
        "Repository \"{repo}\" already has unambiguous leaders ({devices}); there is nothing to \
         promote.",
        devices = join(.devices)
    )]
    HasLeaders {
        /// The repository.
        repo: RepoId,
        /// The active devices with rows.
        devices: Vec<DeviceId>,
    },
    /// The operator answered no.
    #[error("Aborted: the possibility of permanent data loss was not accepted. Nothing changed.")]
    Declined,
    /// **[stormcell]** The plan the operator accepted is not what the thaw would do once it
    /// held the locks: something was written or moved meanwhile.
    #[error(
        "Aborted: the cluster changed while the plan was being read (a push or a sync landed \
         on a repository it covers), so the plan you accepted is no longer what the thaw \
         would do. Nothing changed. Run the command again to see the new plan."
    )]
    PlanChanged,
    /// **[stormcell]** No leader that survives a demote holds the copy its row describes
    /// (a copy or a write there is not recorded yet), so what the demote keeps is unknown.
    #[error(
        "Aborted: device \"{device}\", which would keep repository \"{repo}\" after the \
         demote, holds a working copy that is not the version its row records (a copy or a \
         write on it is not recorded yet), so the plan cannot say what survives. Nothing \
         changed. Run the command again in a moment; if this persists, check that device."
    )]
    SurvivorUnsettled {
        /// The repository.
        repo: RepoId,
        /// The surviving leader.
        device: DeviceId,
    },
    /// **[stormcell]** A device whose working copy holds refs the thaw would discard could
    /// not keep them in a salvage bundle, so the thaw stopped before changing any row.
    #[error(
        "Aborted: device \"{device}\" could not write the salvage bundle of repository \
         \"{repo}\" ({reason}), so the refs it holds that the thaw would discard could not be \
         kept. No version row changed. Fix what stops the device from writing (a full or \
         failing disk) and run the command again; to give its data up without a bundle, stop \
         the device first: its copy then cannot be read and the plan lists those values from \
         the push log only."
    )]
    SalvageBundle {
        /// The repository.
        repo: RepoId,
        /// The device whose data is at stake.
        device: DeviceId,
        /// Why the bundle could not be written.
        reason: String,
    },
    /// The write lock could not be taken within the budget.
    #[error(
        "Timed out after {waited:?} waiting for the write lock of repository \"{repo}\". \
         Nothing changed."
    )]
    LockTimeout {
        /// The repository.
        repo: RepoId,
        /// How long we waited.
        waited: Duration,
    },
    /// A maintenance lock met a write interruption.
    #[error(
        "Repository \"{repo}\" is frozen for writes: a write on device \"{device}\" was \
         interrupted. Resolve it first (`stormcell repository thaw {repo} --demote {device}`)."
    )]
    Interrupted {
        /// The repository.
        repo: RepoId,
        /// The interrupted device.
        device: DeviceId,
    },
    /// A device could not be brought up to date or asked about its working copy.
    #[error("Device \"{device}\" could not serve repository \"{repo}\": {reason}")]
    Device {
        /// The repository.
        repo: RepoId,
        /// The device.
        device: DeviceId,
        /// Why.
        reason: String,
    },
    /// Step 6 of a maintenance lock changed no row.
    #[error(
        "The maintenance of repository \"{repo}\" was not recorded: the version row of device \
         \"{device}\" changed while the lock was held (it was demoted or recovered). The \
         changes remain only in that device's working copy."
    )]
    Fenced {
        /// The repository.
        repo: RepoId,
        /// The device.
        device: DeviceId,
    },
    /// No open service can take a new repository.
    #[error("No open service can take repository \"{0}\": every service is closed.")]
    NoOpenService(RepoId),
    /// The plan is a stormcell feature.
    #[error("--plan is not available under the phabricator profile.")]
    NoPlan,
    /// The database refused or could not be reached.
    #[error("{0} Nothing more was changed.")]
    Db(#[from] DbError),
}

impl AdminError {
    /// Whether running the same command again may succeed without anyone acting: the
    /// cluster moved while the thaw looked at it, or the database could not be reached.
    pub fn is_transient(&self) -> bool {
        match self {
            AdminError::PlanChanged | AdminError::SurvivorUnsettled { .. } => true,
            AdminError::Db(e) => e.is_connection(),
            _ => false,
        }
    }
}
