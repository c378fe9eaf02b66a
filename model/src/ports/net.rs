//! The network port: byte streams between hosts. The peer wire protocol runs over these
//! unchanged, on tokio TCP in the daemon and turmoil TCP in the simulator.

use std::io;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// A boxed connection.
pub type BoxConn = Box<dyn Connection>;

/// Accepts incoming connections.
#[async_trait]
pub trait Listener: Send {
    /// Waits for the next connection; returns it and the peer's address.
    async fn accept(&mut self) -> io::Result<(BoxConn, String)>;
}

/// Makes and accepts connections.
#[async_trait]
pub trait Network: Send + Sync {
    /// Connects to `host:port`.
    async fn connect(&self, addr: &str) -> io::Result<BoxConn>;
    /// Listens on `host:port`.
    async fn listen(&self, addr: &str) -> io::Result<Box<dyn Listener>>;
}
