//! The network port's contract (`model/src/ports/net.rs`) over a [`NetEnv`], and its two
//! adapters: turmoil TCP (`SimNet`) and the daemon's TCP with its credential handshake
//! (`TcpNetwork`) on loopback.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use stormcell_harness::net::SimNet;
use stormcell_model::failover::{DbClusterConfig, StaleReads};
use stormcell_model::ports::Network;
use stormcell_node::db::credentials::PeerCredentials;
use stormcell_node::db::PgConnector;
use stormcell_node::metrics::Metrics;
use stormcell_node::net::TcpNetwork;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::Checked;

/// How late a bounded wait may end, over its bound, on a loaded machine.
const SLACK: Duration = Duration::from_millis(1500);
/// The connect bound both adapters are built with.
const CONNECT: Duration = Duration::from_secs(2);

/// One adapter and addresses to use it with.
pub(crate) trait NetEnv {
    /// The adapter.
    type N: Network;
    /// The network of this host.
    fn net(&self) -> &Self::N;
    /// Where to listen, and how a connect from this host reaches that listener.
    fn listen_and_dial(&self) -> (String, String);
    /// An address nothing listens on.
    fn unused(&self) -> String;
    /// The address of a host that takes connections and never answers.
    async fn hung(&mut self) -> String;
}

/// Bytes cross both ways unchanged, in order, and each side sees the other's close.
pub(crate) async fn bytes_cross_both_ways_and_a_close_is_seen<E: NetEnv>(env: E) -> Checked {
    let (listen, dial) = env.listen_and_dial();
    let mut listener = env.net().listen(&listen).await?;
    let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let len = sent.len();
    let server = async {
        let (mut conn, peer) = listener.accept().await?;
        assert!(!peer.is_empty(), "the listener names its peer");
        let mut got = vec![0u8; len];
        conn.read_exact(&mut got).await?;
        got.reverse();
        conn.write_all(&got).await?;
        conn.flush().await?;
        // The client's close arrives as the end of the stream.
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).await?;
        assert!(rest.is_empty(), "bytes after the request: {}", rest.len());
        Ok::<_, io::Error>(())
    };
    let client = async {
        let mut conn = env.net().connect(&dial).await?;
        conn.write_all(&sent).await?;
        conn.flush().await?;
        let mut back = vec![0u8; len];
        conn.read_exact(&mut back).await?;
        back.reverse();
        assert!(back == sent, "the bytes came back changed");
        conn.shutdown().await?;
        Ok::<_, io::Error>(())
    };
    let (s, c) = tokio::join!(server, client);
    s?;
    c?;
    Ok(())
}

/// A connect where nothing listens (or no longer listens) fails promptly.
pub(crate) async fn a_connect_where_nothing_listens_fails_promptly<E: NetEnv>(env: E) -> Checked {
    let start = Instant::now();
    assert!(env.net().connect(&env.unused()).await.is_err());
    assert!(start.elapsed() < SLACK, "{:?}", start.elapsed());

    let (listen, dial) = env.listen_and_dial();
    let listener = env.net().listen(&listen).await?;
    drop(listener);
    let start = Instant::now();
    assert!(
        env.net().connect(&dial).await.is_err(),
        "a dropped listener still took a connection"
    );
    assert!(start.elapsed() < SLACK, "{:?}", start.elapsed());
    Ok(())
}

/// A connect to a host that never answers fails as timed out within the connect bound,
/// so the caller's own limit is not what ends it.
pub(crate) async fn a_connect_to_a_hung_host_is_bounded<E: NetEnv>(mut env: E) -> Checked {
    let hung = env.hung().await;
    let start = Instant::now();
    let result = env.net().connect(&hung).await;
    let waited = start.elapsed();
    match result {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}"),
        Ok(_) => panic!("a hung host completed a connect"),
    }
    assert!(waited < CONNECT + SLACK, "the connect took {waited:?}");
    Ok(())
}

// ----- the simulated adapter -----

/// Turmoil TCP: the check runs on host `test`; host `peer` listens on 7200 and never
/// answers once its link is held.
pub(crate) struct SimNetEnv {
    net: SimNet,
}

impl NetEnv for SimNetEnv {
    type N = SimNet;

    fn net(&self) -> &SimNet {
        &self.net
    }

    fn listen_and_dial(&self) -> (String, String) {
        ("0.0.0.0:7100".to_owned(), "127.0.0.1:7100".to_owned())
    }

    fn unused(&self) -> String {
        "peer:7999".to_owned()
    }

    async fn hung(&mut self) -> String {
        turmoil::hold("test", "peer");
        turmoil::hold("peer", "test");
        "peer:7200".to_owned()
    }
}

/// Runs `check` on the simulated network.
pub(crate) fn run_sim<F, Fut>(check: F)
where
    F: FnOnce(SimNetEnv) -> Fut + 'static,
    Fut: Future<Output = Checked> + 'static,
{
    let mut sim = turmoil::Builder::new()
        .tick_duration(Duration::from_millis(1))
        .simulation_duration(Duration::from_secs(120))
        .build();
    sim.host("peer", || async {
        let listener = stormcell_harness::net::listen("0.0.0.0:7200").await?;
        let mut open = Vec::new();
        loop {
            let (conn, _) = listener.accept().await?;
            open.push(conn);
        }
    });
    sim.client(
        "test",
        check(SimNetEnv {
            net: SimNet::with_connect_timeout(CONNECT),
        }),
    );
    sim.run().expect("the contract check passes");
}

// ----- the daemon's adapter -----

/// The daemon's TCP on loopback, as device `repo001` talking to itself; a hung host is a
/// socket that listens and never accepts.
pub(crate) struct TcpNetEnv {
    net: TcpNetwork,
    hung: Option<std::net::TcpListener>,
}

impl NetEnv for TcpNetEnv {
    type N = TcpNetwork;

    fn net(&self) -> &TcpNetwork {
        &self.net
    }

    fn listen_and_dial(&self) -> (String, String) {
        let addr = format!("127.0.0.1:{}", crate::free_port());
        (addr.clone(), addr)
    }

    fn unused(&self) -> String {
        format!("127.0.0.1:{}", crate::free_port())
    }

    async fn hung(&mut self) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        self.hung = Some(listener);
        addr
    }
}

/// Runs `check` on the daemon's network adapter.
pub(crate) fn run_tcp<F, Fut>(check: F)
where
    F: FnOnce(TcpNetEnv) -> Fut,
    Fut: Future<Output = Checked>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        // No database: the device's own credential is known up front.
        let hosts = DbClusterConfig {
            hosts: Vec::new(),
            read_only: false,
            stale_reads: StaleReads::default(),
        };
        let credentials = PeerCredentials::new(
            Arc::new(std::sync::Mutex::new(hosts)),
            PgConnector::new("contract", Duration::from_secs(1)),
        );
        credentials.remember("repo001", "credential-of-repo001");
        let net = TcpNetwork::new(
            "repo001",
            "credential-of-repo001",
            Arc::new(credentials),
            Arc::new(Metrics::new()),
        )
        .with_connect_timeout(CONNECT);
        if let Err(e) = check(TcpNetEnv { net, hung: None }).await {
            panic!("contract failed on TCP: {e}");
        }
    });
}
