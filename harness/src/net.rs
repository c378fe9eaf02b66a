//! The simulated network: [`Network`] over turmoil's TCP, so the peer wire protocol of the
//! model runs unchanged between simulated hosts.
//!
//! Turmoil's TCP does not retransmit: a partition silently drops segments, so a stream that
//! crossed one may hang forever. Every user of these streams needs its own timeouts; this
//! module only bounds the connect.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use stormcell_model::ports::{BoxConn, Listener, Network};

/// How long a connect may take by default before it fails with `TimedOut`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// [`Network`] on turmoil's simulated TCP. Must be used from inside a turmoil host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimNet {
    /// A connect that has not completed after this long fails with `TimedOut`. Needed
    /// because a SYN that is held (or whose answer is lost) would otherwise wait forever.
    pub connect_timeout: Duration,
}

impl Default for SimNet {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl SimNet {
    /// A network with the default connect timeout (2 s).
    pub fn new() -> Self {
        Self::default()
    }

    /// A network with the given connect timeout.
    pub fn with_connect_timeout(connect_timeout: Duration) -> Self {
        Self { connect_timeout }
    }
}

/// Connects to `host:port` on the simulated network, failing with `TimedOut` after
/// `timeout`.
pub async fn connect(addr: &str, timeout: Duration) -> io::Result<turmoil::net::TcpStream> {
    match tokio::time::timeout(timeout, turmoil::net::TcpStream::connect(addr)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect to {addr} timed out after {timeout:?}"),
        )),
    }
}

/// The address turmoil accepts for listening on `addr` (`host:port`).
///
/// Turmoil only binds the unspecified address (or loopback), never a host's own name or IP,
/// so the host part is mapped away: a listener always accepts on every address of the
/// current host, which is what a daemon configured with its own name means anyway.
/// An IPv6 literal selects `[::]`; everything else selects `0.0.0.0` (the harness runs
/// turmoil's default IPv4 network).
pub fn bind_addr(addr: &str) -> io::Result<SocketAddr> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(SocketAddr::new(unspecified_like(sa.ip()), sa.port()));
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid address {addr:?}"),
        )
    })?;
    let port: u16 = port.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid port in {addr:?}"),
        )
    })?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = match host.parse::<IpAddr>() {
        Ok(ip) => unspecified_like(ip),
        Err(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    Ok(SocketAddr::new(ip, port))
}

fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Listens on `addr` (`host:port`; the host part is mapped as in [`bind_addr`]).
pub async fn listen(addr: &str) -> io::Result<turmoil::net::TcpListener> {
    turmoil::net::TcpListener::bind(bind_addr(addr)?).await
}

/// A peer's address as `name:port` when turmoil knows the name, for readable traces.
pub fn peer_name(addr: SocketAddr) -> String {
    match turmoil::reverse_lookup(addr.ip()) {
        Some(name) => format!("{name}:{}", addr.port()),
        None => addr.to_string(),
    }
}

/// A turmoil listener behind the [`Listener`] port.
pub struct SimListener {
    inner: turmoil::net::TcpListener,
}

impl SimListener {
    /// The local address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

#[async_trait]
impl Listener for SimListener {
    async fn accept(&mut self) -> io::Result<(BoxConn, String)> {
        let (stream, peer) = self.inner.accept().await?;
        Ok((Box::new(stream), peer_name(peer)))
    }
}

#[async_trait]
impl Network for SimNet {
    async fn connect(&self, addr: &str) -> io::Result<BoxConn> {
        let stream = connect(addr, self.connect_timeout).await?;
        Ok(Box::new(stream))
    }

    async fn listen(&self, addr: &str) -> io::Result<Box<dyn Listener>> {
        let inner = listen(addr).await?;
        Ok(Box::new(SimListener { inner }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use stormcell_model::wire::frame::{read_frame, write_frame};

    use super::*;

    #[test]
    fn bind_addr_maps_the_host_away() {
        let any4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            bind_addr("repo001:7000").unwrap(),
            SocketAddr::new(any4, 7000)
        );
        assert_eq!(
            bind_addr("0.0.0.0:5432").unwrap(),
            SocketAddr::new(any4, 5432)
        );
        assert_eq!(
            bind_addr("192.168.0.3:1").unwrap(),
            SocketAddr::new(any4, 1)
        );
        let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        assert_eq!(bind_addr("[fe80::1]:9").unwrap(), SocketAddr::new(any6, 9));
        assert!(bind_addr("repo001").is_err());
        assert!(bind_addr("repo001:http").is_err());
    }

    #[test]
    fn net_frames_cross_the_simulated_network() {
        let mut sim = turmoil::Builder::new()
            .tick_duration(Duration::from_millis(10))
            .build();
        sim.host("server", || async {
            let mut listener = SimNet::new().listen("server:7000").await?;
            loop {
                let (mut conn, peer) = listener.accept().await?;
                assert!(peer.starts_with("client:"), "{peer}");
                let msg: String = read_frame(&mut conn).await?;
                write_frame(&mut conn, &format!("echo {msg}")).await?;
            }
        });
        let got = Arc::new(Mutex::new(String::new()));
        let got2 = got.clone();
        sim.client("client", async move {
            let mut conn = SimNet::new().connect("server:7000").await?;
            write_frame(&mut conn, "hi").await?;
            let answer: String = read_frame(&mut conn).await?;
            *got2.lock().unwrap() = answer;
            Ok(())
        });
        sim.run().unwrap();
        assert_eq!(*got.lock().unwrap(), "echo hi");
    }

    #[test]
    fn net_connect_times_out_when_the_link_is_held() {
        let mut sim = turmoil::Builder::new()
            .tick_duration(Duration::from_millis(10))
            .build();
        sim.host("server", || async {
            let mut listener = SimNet::new().listen("server:7000").await?;
            loop {
                let _ = listener.accept().await?;
            }
        });
        sim.client("client", async move {
            turmoil::hold("client", "server");
            let start = tokio::time::Instant::now();
            let err = match SimNet::new().connect("server:7000").await {
                Ok(_) => panic!("connect through a held link succeeded"),
                Err(e) => e,
            };
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            let waited = start.elapsed();
            assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(3));
            turmoil::release("client", "server");
            // No listener on that port: refused, promptly.
            assert!(SimNet::new().connect("server:7001").await.is_err());
            Ok(())
        });
        sim.run().unwrap();
    }
}
