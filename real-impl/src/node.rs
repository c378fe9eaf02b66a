//! Assembling and running one device: the real ports, the model's engine, node service and
//! background replication, and the Git HTTP front end.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use stormcell_model::engine::{Engine, Ports};
use stormcell_model::ids::DeviceId;
use stormcell_model::plant::Plants;
use thiserror::Error;

use crate::access::{ClusterView, Gatekeeper};
use crate::config::NodeConfig;
use crate::db::credentials::PeerCredentials;
use crate::db::observed::ObservedDb;
use crate::db::PgConnector;
use crate::env::{HoldAt, LoggedEvents, OsRandom, SystemClock};
use crate::http::{self, HttpState};
use crate::metrics::Metrics;
use crate::net::TcpNetwork;
use crate::objects::PeerObjects;
use crate::store::git::Git;
use crate::store::GitStore;

/// Why a node stopped or could not start.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The cluster database settings are unusable.
    #[error("{0}")]
    Database(#[from] stormcell_model::error::DbError),
    /// The data directory is unusable.
    #[error("{0}")]
    Store(#[from] stormcell_model::error::StoreError),
    /// The spool directory for push bodies is unusable.
    #[error("{0}")]
    Spool(#[from] crate::http::body::BodyError),
    /// The `[tls]` section is unusable.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The device's name or credential is not the registered one.
    #[error("{0}")]
    Identity(#[from] crate::startup::IdentityError),
    /// A listener failed.
    #[error("cannot serve on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the device described by `config` until a listener fails or the process is asked
/// to stop. With the file it came from, `path`, the node re-reads its `[database]`
/// section when the file changes or on SIGHUP ([`crate::reload`]).
pub async fn run(config: NodeConfig, path: Option<PathBuf>) -> Result<(), NodeError> {
    let protocol = config.protocol().map_err(NodeError::Config)?;
    let tls = crate::tls::PeerTls::configured(config.tls.as_ref())?;
    let metrics = Arc::new(Metrics::new());
    let connector = PgConnector::new(
        &format!("stormcell-{}", config.device),
        protocol.failover.query_timeout,
    )
    .with_round_trip_limit(protocol.failover.unhealthy_connect);
    let db_hosts = Arc::new(Mutex::new(config.database.cluster()));
    if let Some(path) = path {
        tokio::spawn(crate::reload::watch(path, Arc::clone(&db_hosts)));
    }
    let peers = Arc::new(PeerCredentials::new(
        Arc::clone(&db_hosts),
        connector.clone(),
    ));
    let net = Arc::new(
        TcpNetwork::new(
            &config.device,
            &config.credential,
            Arc::clone(&peers),
            Arc::clone(&metrics),
        )
        .with_tls(tls),
    );
    match crate::startup::registered_devices(&config.database.cluster(), &connector).await {
        Some(devices) => {
            crate::startup::check_registration(&devices, &config.device, &config.credential)?;
            crate::startup::check_with_a_peer(&devices, &config.device, net.as_ref()).await?;
        }
        None => tracing::warn!(
            "no database host answered at start: the device's registration and credential \
             are not checked"
        ),
    }
    let git = Git::new(config.git.clone());
    let store = Arc::new(GitStore::new(
        &config.data_dir,
        git.clone(),
        &config.device,
    )?);
    // What peers may ask and where objects come from depend on the cluster's topology,
    // which the engine reads; both are connected to it once it exists.
    let view = Arc::new(ClusterView::new());
    store.set_object_fetcher(Arc::new(PeerObjects::new(
        Arc::clone(&view),
        Arc::clone(&net),
        git.clone(),
    )));
    let failpoints = match &config.failpoint {
        Some(f) => HoldAt::new(f.point, f.marker.clone()).armed_by(f.armed_by.clone()),
        None => HoldAt::new(None, None),
    };
    let ports = Ports {
        db: Arc::new(ObservedDb::new(
            connector,
            DeviceId::new(config.device.clone()),
            Arc::clone(&metrics),
        )),
        db_hosts,
        store: store.clone(),
        net: Arc::clone(&net) as Arc<dyn stormcell_model::ports::Network>,
        clock: Arc::new(SystemClock),
        rng: Arc::new(OsRandom),
        failpoints: Arc::new(failpoints),
        events: Arc::new(LoggedEvents::new(&config.device, Arc::clone(&metrics))),
        spawn: Arc::new(stormcell_model::ports::TokioSpawn),
    };
    let (engine, triggers) = Engine::new(
        DeviceId::new(config.device.clone()),
        protocol,
        planted()?,
        ports,
    );
    view.set_engine(&engine);
    net.set_gate(Arc::new(Gatekeeper::new(
        Arc::clone(&view),
        config.users.clone(),
        Arc::clone(&store),
        git.clone(),
        Arc::clone(&metrics),
    )));
    let spool = http::body::Spool::new(&config.data_dir, config.http.max_request_bytes())?;
    let http_listener = tokio::net::TcpListener::bind(&config.listen_http)
        .await
        .map_err(|source| NodeError::Listen {
            addr: config.listen_http.clone(),
            source,
        })?;
    let state = Arc::new(HttpState {
        engine: Arc::clone(&engine),
        store,
        git,
        users: config.users.clone(),
        metrics,
        stale: Default::default(),
        spool,
    });
    tracing::info!(
        device = %config.device,
        peer = %config.listen_peer,
        http = %config.listen_http,
        profile = %config.profile,
        tls = config.tls.is_some(),
        "node started"
    );
    let peer_addr = config.listen_peer.clone();
    tokio::select! {
        biased;
        _ = shutdown_signal() => {
            tracing::info!("stopping on request");
            Ok(())
        }
        served = stormcell_model::node::run(engine, triggers, &peer_addr) => {
            served.map_err(|source| NodeError::Listen { addr: peer_addr.clone(), source })
        }
        served = http::serve(http_listener, state) => {
            served.map_err(|source| NodeError::Listen { addr: config.listen_http.clone(), source })
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    biased;
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// The planted bug named by `STORMCELL_PLANT`, in a daemon built with the `plant` feature
/// for the tests that show the checkers catch a restored anomaly against real processes.
/// A release build has no such feature, so no environment can switch a bug on there.
#[cfg(feature = "plant")]
fn planted() -> Result<Plants, NodeError> {
    let Ok(name) = std::env::var("STORMCELL_PLANT") else {
        return Ok(Plants::none());
    };
    let bug: stormcell_model::plant::Bug = name
        .parse()
        .map_err(|e: String| NodeError::Config(format!("STORMCELL_PLANT: {e}")))?;
    tracing::warn!(%bug, "a planted bug is switched on: this daemon may lose data");
    Ok(Plants::with(Some(bug)))
}

/// No planted bug: the daemon is built without the `plant` feature.
#[cfg(not(feature = "plant"))]
fn planted() -> Result<Plants, NodeError> {
    Ok(Plants::none())
}
