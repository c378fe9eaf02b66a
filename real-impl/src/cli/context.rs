//! What an admin command runs with: the model's `Admin` over the real ports, a way to ask
//! the person at the terminal, and the device identity it presents to peers.
//!
//! Admin commands that reach devices (thaw's plan and salvage, maintenance locks) speak
//! the peer protocol, which admits only registered devices. Rather than a second kind of
//! credential, the command runs on a device host with `--config NODE.toml` and presents
//! that node's name and credential: the operator already needs a shell on a device to
//! change a working copy under a maintenance lock, and nothing new has to be distributed.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use stormcell_model::admin::{Admin, AdminDb, AdminPorts, Confirm};
use stormcell_model::config::ProtocolConfig;
use stormcell_model::error::DbError;
use stormcell_model::plant::Plants;
use stormcell_model::ports::{BoxConn, Event, Events, Listener, Network};
use stormcell_model::rows::Topology;
use stormcell_node::config::NodeConfig;
use stormcell_node::db::admin_session::PgAdminDb;
use stormcell_node::db::credentials::PeerCredentials;
use stormcell_node::db::{PgClusterDb, PgConnector};
use stormcell_node::env::{OsRandom, SystemClock};
use stormcell_node::metrics::Metrics;
use stormcell_node::net::TcpNetwork;

use super::DbTarget;

/// Admin connections fail fast (PROTOCOL.md 9.3: no retry, 2 s).
pub const ADMIN_CONNECT: Duration = Duration::from_secs(2);
/// How long one admin query may take.
pub const ADMIN_QUERY: Duration = Duration::from_secs(30);

/// The primary database of `target`.
pub fn database(target: &DbTarget) -> anyhow::Result<PgClusterDb> {
    Ok(PgClusterDb::new(
        &target.conninfo()?,
        "stormcell-admin",
        ADMIN_CONNECT,
        ADMIN_QUERY,
    )?)
}

/// A network for commands run without `--config`: no identity to present, so every peer
/// request fails, saying how to give one.
struct NoIdentity;

fn no_identity() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        "reaching a device needs a device identity: run this on a device host with \
         --config NODE.toml",
    )
}

#[async_trait]
impl Network for NoIdentity {
    async fn connect(&self, _addr: &str) -> std::io::Result<BoxConn> {
        Err(no_identity())
    }

    async fn listen(&self, _addr: &str) -> std::io::Result<Box<dyn Listener>> {
        Err(no_identity())
    }
}

/// Prints the model's notes on standard error, so standard output stays the result.
struct NotesOnStderr;

impl Events for NotesOnStderr {
    fn emit(&self, event: Event) {
        if let Event::Note { text } = event {
            eprintln!("# {text}");
        }
    }
}

/// The model's admin commands over PostgreSQL and the peer network, and the node
/// configuration they were given (if any).
pub struct Context {
    /// The admin commands.
    pub admin: Admin,
    /// The node configuration of `--config`.
    pub node: Option<NodeConfig>,
    db: PgAdminDb,
}

impl Context {
    /// The cluster's configuration, read through the admin port.
    pub async fn topology(&self) -> Result<Topology, DbError> {
        self.db.connect_admin().await?.topology().await
    }
}

/// Builds the admin commands for `target`.
pub fn context(target: &DbTarget) -> anyhow::Result<Context> {
    let node = target.node_config()?;
    let protocol = match &node {
        Some(n) => n.protocol().map_err(|e| anyhow::anyhow!("{e}"))?,
        None => ProtocolConfig::default(),
    };
    let net: Arc<dyn Network> = match &node {
        Some(n) => {
            // The credential checker is only consulted by listeners; an admin command
            // never listens, but the network needs one.
            let hosts = Arc::new(Mutex::new(n.database.cluster()));
            let connector = PgConnector::new("stormcell-admin", ADMIN_QUERY);
            Arc::new(TcpNetwork::new(
                &n.device,
                &n.credential,
                Arc::new(PeerCredentials::new(hosts, connector)),
                Arc::new(Metrics::new()),
            ))
        }
        None => Arc::new(NoIdentity),
    };
    let db = PgAdminDb::new(database(target)?);
    let ports = AdminPorts {
        db: Arc::new(db.clone()),
        net,
        clock: Arc::new(SystemClock),
        rng: Arc::new(OsRandom),
        events: Arc::new(NotesOnStderr),
    };
    Ok(Context {
        admin: Admin::new(protocol, Plants::none(), ports),
        node,
        db,
    })
}

/// Asks on the terminal; without one, answers no and says to use `--force`.
pub struct TerminalConfirm;

/// Whether a person can answer questions.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Reads one line from standard input (blocking, so off the async workers).
pub async fn read_line() -> Option<String> {
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        match std::io::stdin().lock().read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim().to_owned()),
        }
    })
    .await
    .ok()
    .flatten()
}

#[async_trait]
impl Confirm for TerminalConfirm {
    async fn confirm(&self, question: &str, details: &str) -> bool {
        eprintln!("{}", details.trim_end());
        if !interactive() {
            eprintln!("{question} Not asked: standard input is not a terminal; pass --force.");
            return false;
        }
        eprint!("{question} [y/N] ");
        let _ = std::io::stderr().flush();
        matches!(
            read_line()
                .await
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("y" | "yes")
        )
    }
}
