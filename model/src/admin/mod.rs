//! Operator actions (PROTOCOL.md sections 7 and 8): thaw with its plan and salvage,
//! maintenance locks, read-only maintenance, clusterize, bindings, devices, allocation of
//! new repositories, and status. The `stormcell repository ...` commands and the
//! simulator's operator both call these functions; nothing here knows which one runs it.

mod bindings;
mod clusterize;
mod error;
mod maintenance;
mod plan;
mod session;
mod status;
mod thaw;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::ProtocolConfig;
use crate::ids::{DeviceId, RepoId};
use crate::lock_wait::LockWaiter;
use crate::peer;
use crate::plant::Plants;
use crate::ports::{Clock, DbSession, Event, Events, LockName, Network, Random, Snapshot};
use crate::rows::Topology;
use crate::wire::{Request, Response};

pub use bindings::BindingChange;
pub use error::AdminError;
pub use maintenance::MaintenanceLock;
pub use plan::{ActionPlan, Discard, DiscardSource, ThawKind, ThawPlan};
pub use session::{AdminDb, AdminSession, ConfigEdit, SalvageRecord};
pub use status::{sync_text, RepositoryStatus, ServiceStatus};
pub use thaw::{RepoSelection, Salvaged, ThawOutcome, ThawRequest, ThawTarget, Unbundled};

/// The user recorded on writes an operator command makes.
pub const OPERATOR_USER: &str = "stormcell-operator";

/// Asks the person running a command to confirm a risky step.
#[async_trait]
pub trait Confirm: Send + Sync {
    /// Shows `details` (a plan, a warning), asks `question` and returns the answer.
    async fn confirm(&self, question: &str, details: &str) -> bool;
}

/// Answers yes to everything (`--force`).
#[derive(Debug, Default, Clone, Copy)]
pub struct AlwaysYes;

#[async_trait]
impl Confirm for AlwaysYes {
    async fn confirm(&self, _question: &str, _details: &str) -> bool {
        true
    }
}

/// The ports an administrative command works through.
#[derive(Clone)]
pub struct AdminPorts {
    /// The cluster database.
    pub db: Arc<dyn AdminDb>,
    /// The network, to reach devices.
    pub net: Arc<dyn Network>,
    /// Wall-clock timestamps.
    pub clock: Arc<dyn Clock>,
    /// Randomness (allocation of new repositories).
    pub rng: Arc<dyn Random>,
    /// Where events go.
    pub events: Arc<dyn Events>,
}

/// The administrative commands, over their ports.
pub struct Admin {
    config: ProtocolConfig,
    plants: Plants,
    ports: AdminPorts,
}

impl Admin {
    /// Administrative commands with this configuration.
    pub fn new(config: ProtocolConfig, plants: Plants, ports: AdminPorts) -> Self {
        Admin {
            config,
            plants,
            ports,
        }
    }

    /// The protocol configuration.
    pub fn config(&self) -> &ProtocolConfig {
        &self.config
    }

    fn emit(&self, text: String) {
        self.ports.events.emit(Event::Note { text });
    }

    async fn connect(&self) -> Result<Box<dyn AdminSession>, AdminError> {
        Ok(self.ports.db.connect_admin().await?)
    }

    /// Takes `write(repo)` on `session`, waiting within `budget` (section 2).
    async fn acquire_write(
        &self,
        session: &mut dyn AdminSession,
        repo: &RepoId,
        budget: Duration,
    ) -> Result<(), AdminError> {
        self.acquire(session, &LockName::Write(repo.clone()), budget)
            .await
    }

    /// Takes `lock` on `session`, waiting within `budget` (sections 2 and 12).
    async fn acquire(
        &self,
        session: &mut dyn AdminSession,
        lock: &LockName,
        budget: Duration,
    ) -> Result<(), AdminError> {
        let mut waiter = LockWaiter::new(budget, self.config.rules().lock_hand_off);
        let mut taken = session.try_lock(lock).await?;
        loop {
            if taken {
                self.ports.events.emit(Event::LockAcquired {
                    lock: lock.to_string(),
                    waited_ms: waiter.waited().as_millis() as u64,
                });
                return Ok(());
            }
            let Some(pause) = waiter.next_pause() else {
                return Err(AdminError::LockTimeout {
                    repo: lock.repo().clone(),
                    waited: waiter.waited(),
                });
            };
            taken = waiter.wait(session, lock, pause).await?;
        }
    }

    /// Releases `write(repo)`; a failure only means the session's end releases it.
    async fn release_write(&self, session: &mut dyn DbSession, repo: &RepoId) {
        self.release(session, &LockName::Write(repo.clone())).await;
    }

    /// Releases a lock; a failure only means the session's end releases it.
    async fn release(&self, session: &mut dyn DbSession, lock: &LockName) {
        match session.unlock(lock).await {
            Ok(()) => self.ports.events.emit(Event::LockReleased {
                lock: lock.to_string(),
            }),
            Err(e) => self.emit(format!(
                "releasing {lock} failed ({e}); it ends with the session"
            )),
        }
    }

    /// Sends one request to a device's node service.
    async fn call(
        &self,
        topology: &Topology,
        device: &DeviceId,
        request: &Request,
        limit: Duration,
    ) -> Result<Response, String> {
        let addr = topology
            .address_of(device)
            .ok_or_else(|| format!("device \"{device}\" has no address"))?;
        peer::call(self.ports.net.as_ref(), device, addr, request, limit)
            .await
            .map_err(|e| e.to_string())
    }

    /// Everything a device's working copy holds, or why it could not be read.
    async fn snapshot_of(
        &self,
        topology: &Topology,
        repo: &RepoId,
        device: &DeviceId,
    ) -> Result<Snapshot, String> {
        let request = Request::PeerFetch {
            repo: repo.clone(),
            unrecorded: true,
        };
        let limit = self.config.timing.peer_request * 3;
        match self.call(topology, device, &request, limit).await? {
            Response::Snapshot { snapshot } => Ok(snapshot),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests;
