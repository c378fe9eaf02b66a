//! The network port over tokio TCP, with a per-device credential handshake (PROTOCOL.md
//! section 10).
//!
//! Before anything else, the connecting device sends one line,
//! `stormcell-peer 1 <device> <credential>\n`, and the listener answers `ok\n` or
//! `denied\n`. A wrong or missing credential is refused and logged; the model's peer
//! protocol then runs unchanged on the stream, once the node's [`PeerGate`] has checked
//! the request is one the device may make ([`crate::access`]). A connection introduced
//! with `stormcell-objects 1 <device> <credential>\n` instead is an object transfer
//! ([`crate::objects`]), which the gate serves itself. Credentials are compared in
//! constant time.
//!
//! With [`PeerTls`] (the node's `[tls]` section), every connection is first a mutually
//! verified TLS session, and the handshake above runs inside it: the certificate proves
//! the connection comes from a cluster member, the credential which member it is.

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use stormcell_model::ports::{BoxConn, Listener, Network};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::db::credentials::PeerCredentials;
use crate::metrics::Metrics;
use crate::tls::PeerTls;

/// The handshake's first word and version, for the peer protocol.
const GREETING: &str = "stormcell-peer 1";
/// The same for an object transfer.
const OBJECTS_GREETING: &str = "stormcell-objects 1";

/// What a peer connection is for, as its handshake line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The model's peer protocol.
    Protocol,
    /// An object transfer.
    Objects,
}

impl Purpose {
    fn greeting(self) -> &'static str {
        match self {
            Purpose::Protocol => GREETING,
            Purpose::Objects => OBJECTS_GREETING,
        }
    }
}

/// What the node checks and serves on admitted connections (PROTOCOL.md section 10).
#[async_trait]
pub trait PeerGate: Send + Sync {
    /// Reads the first request of an admitted peer-protocol connection from `device` and
    /// refuses it (answering the peer) unless the device may make it; an allowed request
    /// comes back with the connection, to be read again by the node service.
    async fn screen(&self, device: &str, conn: BoxConn) -> Option<BoxConn>;
    /// Serves an object transfer to `device`.
    async fn serve_objects(&self, device: &str, conn: BoxConn);
}
/// The longest handshake line accepted.
const MAX_HANDSHAKE: usize = 1024;
/// How long a connecting peer has to introduce itself.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// How long [`Network::connect`] may take by default, handshakes included: the same bound
/// the simulated network puts on a connect, so a peer whose host stops answering fails the
/// call as unreachable in both, rather than only when the caller's own limit runs out.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// TCP between devices, authenticated per device.
pub struct TcpNetwork {
    device: String,
    credential: String,
    credentials: Arc<PeerCredentials>,
    metrics: Arc<Metrics>,
    tls: Option<PeerTls>,
    connect_timeout: Duration,
    gate: Arc<OnceLock<Arc<dyn PeerGate>>>,
}

impl TcpNetwork {
    /// This device (`device`, presenting `credential`), checking peers with `credentials`.
    pub fn new(
        device: &str,
        credential: &str,
        credentials: Arc<PeerCredentials>,
        metrics: Arc<Metrics>,
    ) -> Self {
        TcpNetwork {
            device: device.to_owned(),
            credential: credential.to_owned(),
            credentials,
            metrics,
            tls: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            gate: Arc::new(OnceLock::new()),
        }
    }

    /// Checks every request admitted connections make with `gate`, and lets it serve object
    /// transfers. Without a gate (tests of the port alone), requests pass unchecked and
    /// object transfers are refused. Set once, before listening.
    pub fn set_gate(&self, gate: Arc<dyn PeerGate>) {
        let _ = self.gate.set(gate);
    }

    /// Connects to a peer for an object transfer ([`crate::objects`]), with the same TLS,
    /// handshake and time bound as [`Network::connect`].
    pub async fn connect_objects(&self, addr: &str) -> io::Result<BoxConn> {
        self.connect_for(addr, Purpose::Objects).await
    }

    async fn connect_for(&self, addr: &str, purpose: Purpose) -> io::Result<BoxConn> {
        // A host that accepts in its kernel but never answers (stopped, hung) would hold a
        // connect, or the handshake after it, for as long as TCP keeps trying.
        match tokio::time::timeout(self.connect_timeout, self.connect_unbounded(addr, purpose))
            .await
        {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "connect to {addr} timed out after {:?}",
                    self.connect_timeout
                ),
            )),
        }
    }

    /// Bounds every connect (TCP, TLS and the credential handshake) by `timeout`.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Runs every peer connection over TLS with `tls`; `None` keeps plain TCP.
    pub fn with_tls(mut self, tls: Option<PeerTls>) -> Self {
        self.tls = tls;
        self
    }
}

/// Reads one `\n`-terminated line, byte by byte so nothing after it is consumed.
async fn read_line<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<String> {
    let mut line = Vec::new();
    loop {
        let b = stream.read_u8().await?;
        if b == b'\n' {
            break;
        }
        line.push(b);
        if line.len() > MAX_HANDSHAKE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "handshake line too long",
            ));
        }
    }
    String::from_utf8(line)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "handshake is not text"))
}

/// Splits a handshake line into purpose, device and credential.
fn parse_hello(line: &str) -> Option<(Purpose, &str, &str)> {
    let (purpose, rest) = [Purpose::Protocol, Purpose::Objects]
        .into_iter()
        .find_map(|p| Some((p, line.strip_prefix(p.greeting())?.strip_prefix(' ')?)))?;
    let (device, credential) = rest.split_once(' ')?;
    (!device.is_empty() && !credential.is_empty()).then_some((purpose, device, credential))
}

#[async_trait]
impl Network for TcpNetwork {
    async fn connect(&self, addr: &str) -> io::Result<BoxConn> {
        self.connect_for(addr, Purpose::Protocol).await
    }

    async fn listen(&self, addr: &str) -> io::Result<Box<dyn Listener>> {
        let listener = TcpListener::bind(addr).await?;
        let (tx, rx) = mpsc::channel(64);
        let credentials = Arc::clone(&self.credentials);
        let metrics = Arc::clone(&self.metrics);
        let tls = self.tls.clone();
        let gate = Arc::clone(&self.gate);
        // Handshakes run beside the accept loop, so one slow peer cannot hold up others.
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let tx = tx.clone();
                let credentials = Arc::clone(&credentials);
                let metrics = Arc::clone(&metrics);
                let tls = tls.clone();
                let gate = gate.get().cloned();
                tokio::spawn(async move {
                    let admitted = tokio::time::timeout(
                        HANDSHAKE_LIMIT,
                        admit_over(tls.as_ref(), stream, &credentials),
                    )
                    .await;
                    match admitted {
                        Ok(Ok((stream, device, purpose))) => {
                            let stream = match (purpose, gate) {
                                (Purpose::Protocol, None) => stream,
                                (Purpose::Protocol, Some(gate)) => {
                                    match gate.screen(&device, stream).await {
                                        Some(stream) => stream,
                                        None => return,
                                    }
                                }
                                (Purpose::Objects, Some(gate)) => {
                                    gate.serve_objects(&device, stream).await;
                                    return;
                                }
                                (Purpose::Objects, None) => {
                                    tracing::warn!(peer = %peer, "object transfer refused: this listener serves none");
                                    return;
                                }
                            };
                            let _ = tx.send(Ok((stream, format!("{device}@{peer}")))).await;
                        }
                        Ok(Err(reason)) => {
                            metrics.peer_auth_failed();
                            tracing::warn!(peer = %peer, reason = %reason, "peer connection refused");
                        }
                        Err(_) => {
                            metrics.peer_auth_failed();
                            tracing::warn!(peer = %peer, "peer connection refused: no handshake in time");
                        }
                    }
                });
            }
        });
        Ok(Box::new(TcpPeerListener {
            admitted: rx,
            accepting,
        }))
    }
}

impl TcpNetwork {
    /// TCP, TLS when configured, then the credential handshake, with no time limit.
    async fn connect_unbounded(&self, addr: &str, purpose: Purpose) -> io::Result<BoxConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Box::new(self.hello(addr, stream, purpose).await?)),
            Some(tls) => {
                let stream = tls.connect(addr, stream).await.inspect_err(|e| {
                    tracing::warn!(peer = %addr, error = %e, "connection to peer failed");
                })?;
                Ok(Box::new(self.hello(addr, stream, purpose).await?))
            }
        }
    }

    /// Runs the connecting side of the credential handshake on `stream`.
    async fn hello<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        addr: &str,
        mut stream: S,
        purpose: Purpose,
    ) -> io::Result<S> {
        let hello = format!(
            "{} {} {}\n",
            purpose.greeting(),
            self.device,
            self.credential
        );
        stream.write_all(hello.as_bytes()).await?;
        stream.flush().await?;
        let answer = read_line(&mut stream).await?;
        if answer != "ok" {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("peer at {addr} refused this device's credential"),
            ));
        }
        Ok(stream)
    }
}

/// Runs the listener's side: the TLS handshake when configured, then the credential
/// handshake.
async fn admit_over(
    tls: Option<&PeerTls>,
    stream: TcpStream,
    credentials: &PeerCredentials,
) -> Result<(BoxConn, String, Purpose), String> {
    let _ = stream.set_nodelay(true);
    match tls {
        None => {
            let (stream, device, purpose) = admit(stream, credentials).await?;
            Ok((Box::new(stream), device, purpose))
        }
        Some(tls) => {
            let stream = tls
                .accept(stream)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            let (stream, device, purpose) = admit(stream, credentials).await?;
            Ok((Box::new(stream), device, purpose))
        }
    }
}

/// Runs the listener's side of the credential handshake.
async fn admit<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    credentials: &PeerCredentials,
) -> Result<(S, String, Purpose), String> {
    let line = read_line(&mut stream).await.map_err(|e| e.to_string())?;
    let Some((purpose, device, credential)) = parse_hello(&line) else {
        let _ = stream.write_all(b"denied\n").await;
        let _ = stream.flush().await;
        return Err("no credential presented".to_owned());
    };
    if !credentials.check(device, credential).await {
        let _ = stream.write_all(b"denied\n").await;
        let _ = stream.flush().await;
        return Err(format!("wrong credential for device \"{device}\""));
    }
    let device = device.to_owned();
    stream.write_all(b"ok\n").await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    Ok((stream, device, purpose))
}

/// A connection whose first bytes were already read (a screened request): they are read
/// again, then the rest of the stream.
pub struct Replayed {
    head: Vec<u8>,
    read: usize,
    inner: BoxConn,
}

impl Replayed {
    /// `head` first, then `inner`.
    pub fn new(head: Vec<u8>, inner: BoxConn) -> Self {
        Replayed {
            head,
            read: 0,
            inner,
        }
    }
}

impl AsyncRead for Replayed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let this = &mut *self;
        if this.read < this.head.len() {
            let n = buf.remaining().min(this.head.len() - this.read);
            buf.put_slice(&this.head[this.read..this.read + n]);
            this.read += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replayed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connections that passed the handshake.
struct TcpPeerListener {
    admitted: mpsc::Receiver<io::Result<(BoxConn, String)>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for TcpPeerListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

#[async_trait]
impl Listener for TcpPeerListener {
    async fn accept(&mut self) -> io::Result<(BoxConn, String)> {
        match self.admitted.recv().await {
            Some(Ok(admitted)) => Ok(admitted),
            Some(Err(e)) => Err(e),
            None => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "listener stopped",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testing::Ca;
    use crate::tls::{TlsConfig, TlsError};
    use stormcell_model::failover::{DbClusterConfig, StaleReads};

    fn files() -> TlsConfig {
        TlsConfig {
            cert: "node.pem".into(),
            key: "node.key".into(),
            ca: "ca.pem".into(),
        }
    }

    /// Device `device`'s TLS: its certificate from `issuer`, trusting `trusted`.
    fn tls(issuer: &Ca, device: &str, trusted: &Ca) -> Result<PeerTls, TlsError> {
        let (cert, key) = issuer.issue(device);
        PeerTls::from_pem(
            &files(),
            cert.as_bytes(),
            key.as_bytes(),
            trusted.pem().as_bytes(),
        )
    }

    /// Credentials that know `repo002`'s and need no database.
    fn credentials() -> Arc<PeerCredentials> {
        let hosts = DbClusterConfig {
            hosts: Vec::new(),
            read_only: false,
            stale_reads: StaleReads::default(),
        };
        let c = PeerCredentials::new(
            Arc::new(std::sync::Mutex::new(hosts)),
            crate::db::PgConnector::new("test", Duration::from_secs(1)),
        );
        c.remember("repo002", "credential-of-repo002");
        Arc::new(c)
    }

    fn device(name: &str, tls: Option<PeerTls>) -> (TcpNetwork, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let net = TcpNetwork::new(
            name,
            &format!("credential-of-{name}"),
            credentials(),
            Arc::clone(&metrics),
        )
        .with_tls(tls);
        (net, metrics)
    }

    fn free_addr() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("127.0.0.1:{}", l.local_addr().expect("addr").port())
    }

    /// Waits until the listener has refused `n` connections.
    async fn refusals(metrics: &Metrics, n: u32) {
        let wanted = format!("stormcell_peer_auth_failures_total {n}");
        for _ in 0..200 {
            if metrics.render().contains(&wanted) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("expected {wanted}:\n{}", metrics.render());
    }

    #[tokio::test]
    async fn tls_peers_of_one_ca_talk_and_others_are_refused() {
        let cluster = Ca::new("stormcell cluster");
        let other = Ca::new("somebody else");
        let addr = free_addr();
        let (server, server_metrics) =
            device("repo001", Some(tls(&cluster, "repo001", &cluster).unwrap()));
        let mut listener = server.listen(&addr).await.expect("listen");

        // A member of the cluster: TLS both ways, then the credential, then data.
        let (member, _) = device("repo002", Some(tls(&cluster, "repo002", &cluster).unwrap()));
        let mut conn = member
            .connect(&addr)
            .await
            .expect("a cluster member connects");
        conn.write_all(b"ping").await.expect("write");
        conn.flush().await.expect("flush");
        let (mut accepted, who) = listener.accept().await.expect("accepted");
        assert!(who.starts_with("repo002@127.0.0.1:"), "{who}");
        let mut buf = [0u8; 4];
        accepted.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ping");

        // A certificate from another CA is refused, though the credential is right.
        let (stranger, _) = device("repo002", Some(tls(&other, "repo002", &cluster).unwrap()));
        assert!(stranger.connect(&addr).await.is_err());
        refusals(&server_metrics, 1).await;

        // Plain TCP to a TLS listener is refused too.
        let (plain, _) = device("repo002", None);
        assert!(plain.connect(&addr).await.is_err());
        refusals(&server_metrics, 2).await;

        // And a listener whose certificate comes from another CA is not trusted.
        let (wary, _) = device("repo002", Some(tls(&cluster, "repo002", &other).unwrap()));
        let e = match wary.connect(&addr).await {
            Ok(_) => panic!("a listener from another CA was trusted"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains(&format!("TLS handshake with peer at {addr} failed")),
            "{e}"
        );

        // Nothing that failed reached the peer protocol.
        let nothing = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(nothing.is_err(), "a refused peer was admitted");
    }

    #[test]
    fn handshake_lines_parse() {
        assert_eq!(
            parse_hello("stormcell-peer 1 repo001 s3cret"),
            Some((Purpose::Protocol, "repo001", "s3cret"))
        );
        assert_eq!(
            parse_hello("stormcell-objects 1 repo001 s3cret"),
            Some((Purpose::Objects, "repo001", "s3cret"))
        );
        assert_eq!(parse_hello("stormcell-objects 2 repo001 s3cret"), None);
        assert_eq!(parse_hello("stormcell-peer 1 repo001"), None);
        assert_eq!(parse_hello("stormcell-peer 2 repo001 s3cret"), None);
        assert_eq!(parse_hello("GET / HTTP/1.1"), None);
    }
}
