//! The network port over tokio TCP, with a per-device credential handshake (PROTOCOL.md
//! section 10).
//!
//! Before any peer-protocol frame, the connecting device sends one line,
//! `stormcell-peer 1 <device> <credential>\n`, and the listener answers `ok\n` or
//! `denied\n`. A wrong or missing credential is refused and logged; the model's peer
//! protocol then runs unchanged on the stream.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use stormcell_model::ports::{BoxConn, Listener, Network};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::db::credentials::PeerCredentials;
use crate::metrics::Metrics;

/// The handshake's first word and version.
const GREETING: &str = "stormcell-peer 1";
/// The longest handshake line accepted.
const MAX_HANDSHAKE: usize = 1024;
/// How long a connecting peer has to introduce itself.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// TCP between devices, authenticated per device.
pub struct TcpNetwork {
    device: String,
    credential: String,
    credentials: Arc<PeerCredentials>,
    metrics: Arc<Metrics>,
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
        }
    }
}

/// Reads one `\n`-terminated line, byte by byte so nothing after it is consumed.
async fn read_line(stream: &mut TcpStream) -> io::Result<String> {
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

/// Splits a handshake line into device and credential.
fn parse_hello(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix(GREETING)?.strip_prefix(' ')?;
    let (device, credential) = rest.split_once(' ')?;
    (!device.is_empty() && !credential.is_empty()).then_some((device, credential))
}

#[async_trait]
impl Network for TcpNetwork {
    async fn connect(&self, addr: &str) -> io::Result<BoxConn> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let hello = format!("{GREETING} {} {}\n", self.device, self.credential);
        stream.write_all(hello.as_bytes()).await?;
        let answer = read_line(&mut stream).await?;
        if answer != "ok" {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("peer at {addr} refused this device's credential"),
            ));
        }
        Ok(Box::new(stream))
    }

    async fn listen(&self, addr: &str) -> io::Result<Box<dyn Listener>> {
        let listener = TcpListener::bind(addr).await?;
        let (tx, rx) = mpsc::channel(64);
        let credentials = Arc::clone(&self.credentials);
        let metrics = Arc::clone(&self.metrics);
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
                tokio::spawn(async move {
                    let admitted =
                        tokio::time::timeout(HANDSHAKE_LIMIT, admit(stream, &credentials)).await;
                    match admitted {
                        Ok(Ok((stream, device))) => {
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

/// Runs the listener's side of the handshake.
async fn admit(
    mut stream: TcpStream,
    credentials: &PeerCredentials,
) -> Result<(TcpStream, String), String> {
    let line = read_line(&mut stream).await.map_err(|e| e.to_string())?;
    let Some((device, credential)) = parse_hello(&line) else {
        let _ = stream.write_all(b"denied\n").await;
        return Err("no credential presented".to_owned());
    };
    if !credentials.check(device, credential).await {
        let _ = stream.write_all(b"denied\n").await;
        return Err(format!("wrong credential for device \"{device}\""));
    }
    let device = device.to_owned();
    stream.write_all(b"ok\n").await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    Ok((stream, device))
}

/// Connections that passed the handshake.
struct TcpPeerListener {
    admitted: mpsc::Receiver<io::Result<(TcpStream, String)>>,
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
            Some(Ok((stream, who))) => Ok((Box::new(stream), who)),
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

    #[test]
    fn handshake_lines_parse() {
        assert_eq!(
            parse_hello("stormcell-peer 1 repo001 s3cret"),
            Some(("repo001", "s3cret"))
        );
        assert_eq!(parse_hello("stormcell-peer 1 repo001"), None);
        assert_eq!(parse_hello("stormcell-peer 2 repo001 s3cret"), None);
        assert_eq!(parse_hello("GET / HTTP/1.1"), None);
    }
}
