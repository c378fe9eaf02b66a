//! The cluster engine: what one device does to serve reads and writes consistently
//! (PROTOCOL.md sections 2 to 6). One engine runs per device, over that device's ports.

mod demotes;
mod local;
mod locks;
mod read_only;
mod read_sync;
mod recovery;
mod salvage;
mod write_sync;

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::config::ProtocolConfig;
use crate::error::ClusterError;
use crate::failover::{DbLink, Failover, Intent, SharedDbConfig};
use crate::ids::{DeviceId, RepoId};
use crate::plant::Plants;
use crate::ports::{
    Clock, ClusterDb, DbSession, Event, Events, Failpoints, Network, Random, Spawn, Store,
};

pub use local::LocalWrites;
pub use read_sync::{ReadReceipt, SyncOutcome};
pub use write_sync::PushReceipt;

/// The ports one device's engine works through.
#[derive(Clone)]
pub struct Ports {
    /// The cluster database's hosts.
    pub db: Arc<dyn ClusterDb>,
    /// Which database hosts to use (an operator may re-point them while the node runs).
    pub db_hosts: SharedDbConfig,
    /// This device's working copies.
    pub store: Arc<dyn Store>,
    /// The network, for peers.
    pub net: Arc<dyn Network>,
    /// Wall-clock timestamps.
    pub clock: Arc<dyn Clock>,
    /// Randomness.
    pub rng: Arc<dyn Random>,
    /// Write-path hooks.
    pub failpoints: Arc<dyn Failpoints>,
    /// Where events go.
    pub events: Arc<dyn Events>,
    /// Background tasks.
    pub spawn: Arc<dyn Spawn>,
}

/// Progress lines for the client of one request (PROTOCOL.md section 11).
#[derive(Debug, Clone, Default)]
pub struct Progress(Option<mpsc::UnboundedSender<String>>);

impl Progress {
    /// A sink that drops every line.
    pub fn none() -> Self {
        Progress(None)
    }

    /// A sink forwarding lines to a channel, and its receiving end.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Progress(Some(tx)), rx)
    }

    /// Tells the client one line; `# ` is added.
    pub fn say(&self, line: impl AsRef<str>) {
        if let Some(tx) = &self.0 {
            // A client that went away does not stop the operation.
            let _ = tx.send(format!("# {}", line.as_ref()));
        }
    }
}

/// One device's protocol engine.
pub struct Engine {
    device: DeviceId,
    config: ProtocolConfig,
    plants: Plants,
    ports: Ports,
    local: LocalWrites,
    failover: Arc<Failover>,
    /// Per repository, the primary epoch whose rows this device has checked against its
    /// peers' durable versions (see `read_only.rs`).
    verified: Mutex<std::collections::BTreeMap<RepoId, u64>>,
    /// **[stormcell]** Repositories whose working copy this process has checked against
    /// its row on the primary since it started: only for those can it vouch for its local
    /// version to a read-only peer (a restart may have come with a restored disk).
    confirmed: Mutex<std::collections::BTreeSet<RepoId>>,
    /// Sessions kept open on purpose on error paths under the phabricator profile, which
    /// leaked their locks until the process exited.
    leaked: Mutex<Vec<Box<dyn DbSession>>>,
    pull_trigger: mpsc::UnboundedSender<RepoId>,
}

impl Engine {
    /// Builds the engine of `device`. The receiver gets the repositories peers asked this
    /// device to pull at once; the background replication loop consumes it.
    pub fn new(
        device: DeviceId,
        config: ProtocolConfig,
        plants: Plants,
        ports: Ports,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<RepoId>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let failover = Arc::new(Failover::new(
            ports.db_hosts.clone(),
            Arc::clone(&ports.db),
            config.profile,
            plants,
            config.failover.clone(),
            Arc::clone(&ports.events),
        ));
        let engine = Engine {
            device,
            config,
            plants,
            failover,
            verified: Mutex::new(std::collections::BTreeMap::new()),
            confirmed: Mutex::new(std::collections::BTreeSet::new()),
            ports,
            local: LocalWrites::default(),
            leaked: Mutex::new(Vec::new()),
            pull_trigger: tx,
        };
        (Arc::new(engine), rx)
    }

    /// This device.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    /// The protocol configuration.
    pub fn config(&self) -> &ProtocolConfig {
        &self.config
    }

    /// The ports.
    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    /// The planted bugs switched on (simulator only).
    pub fn plants(&self) -> Plants {
        self.plants
    }

    /// Asks the background replication to pull `repo` at once.
    pub fn trigger_pull(&self, repo: RepoId) {
        // The loop is gone only when the node is shutting down.
        let _ = self.pull_trigger.send(repo);
    }

    fn emit(&self, event: Event) {
        self.ports.events.emit(event);
    }

    /// The database side of this device: host choice, health, read-only mode.
    pub fn failover(&self) -> &Arc<Failover> {
        &self.failover
    }

    pub(crate) async fn connect(&self, intent: Intent) -> Result<DbLink, ClusterError> {
        self.failover.connect(intent).await
    }

    /// Ends a background pull's session after a failure: under the phabricator profile it
    /// stays open, so its pull lock leaks until the process exits, as in the seed design
    /// (background pulls of that repository stop; reads still synchronize on demand).
    pub(crate) fn end_failed_session(&self, session: Box<dyn DbSession>, what: &str) {
        if self.config.rules().release_locks_on_every_path {
            drop(session);
            return;
        }
        self.emit(Event::LockLeaked {
            lock: what.to_owned(),
        });
        self.leaked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(session);
    }
}
