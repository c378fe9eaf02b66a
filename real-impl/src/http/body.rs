//! Request bodies, decoded as they arrive and never held whole when they can be large.
//!
//! A push's body (a Git pack of any size) is written to a spool file under the device's
//! `data_dir/spool` while it arrives, gzip-decoded on the way when the client compressed
//! it, and the store reads the pack from that file straight into `git receive-pack`. Held
//! in memory instead, a 320 MB push cost the node about three times its size (the body,
//! its decoded copy and the payload's copy). An upload-pack body holds only wants and
//! haves; it is decoded the same way into memory.
//!
//! Every body is bounded by the configured maximum (`[http] max_request_mb`) after
//! decoding, so a small gzip body cannot expand into an unbounded file; a body over it is
//! refused with `413 Payload Too Large` before anything is pushed. The spool file is
//! removed when the push is done, whichever way it ends ([`Spooled`]'s drop), and files
//! left by a process that died mid-push are removed when the next one starts.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::TryStreamExt;
use thiserror::Error;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::text;

/// The default of `[http] max_request_mb`: the largest request body, once decoded.
pub const DEFAULT_MAX_REQUEST_MB: u64 = 4096;

/// How much is read from the client (or the gzip decoder) at a time, and how much of the
/// spool file is buffered before it is written.
const CHUNK: usize = 256 * 1024;

/// Reading a request body failed.
#[derive(Debug, Error)]
pub enum BodyError {
    /// The body, decoded, is larger than the maximum.
    #[error(
        "stormcell: request too large: the request body is larger than the maximum of \
         {limit} bytes ([http] max_request_mb in the node's configuration); nothing was changed"
    )]
    TooLarge {
        /// The maximum, in bytes.
        limit: u64,
    },
    /// The client's body could not be read or is not valid gzip.
    #[error("cannot read request: {0}")]
    Read(std::io::Error),
    /// The spool file could not be written.
    #[error("cannot spool the request to {path}: {source}")]
    Spool {
        /// The spool file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The decoding task failed.
    #[error("request decoding failed: {0}")]
    Task(String),
}

impl BodyError {
    /// The answer the client gets.
    pub fn response(&self) -> Response {
        let status = match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
            BodyError::Spool { .. } | BodyError::Task(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        text(status, self.to_string())
    }
}

/// Marks the error of a raw body that went past its own bound (see [`raw_limit`]), so it
/// is answered as too large rather than as unreadable.
#[derive(Debug, Error)]
#[error("the request body is too large")]
struct RawTooLarge;

/// How many raw bytes a body may have whose decoded size is at most `limit`: gzip makes
/// incompressible data a little larger (well under 0.1%, plus its header), so a
/// compressed body gets that much room and no more.
fn raw_limit(limit: u64) -> u64 {
    limit.saturating_add(limit / 1024).saturating_add(1 << 20)
}

/// The request body as a blocking reader (for the decoder's thread), ending with an error
/// once more than `limit` raw bytes arrived.
fn raw_reader(body: Body, limit: u64) -> SyncIoBridge<impl tokio::io::AsyncRead + Unpin> {
    let mut seen: u64 = 0;
    let stream = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .and_then(move |chunk| {
            seen = seen.saturating_add(chunk.len() as u64);
            std::future::ready(if seen > limit {
                Err(std::io::Error::other(RawTooLarge))
            } else {
                Ok(chunk)
            })
        });
    // Made here, on the runtime: the bridge blocks the decoder's thread, not the runtime.
    SyncIoBridge::new(StreamReader::new(stream))
}

/// Copies the (gzip-decoded when `gzip`) body read from `raw` into `out`, refusing it once
/// more than `limit` bytes came out. Runs on a blocking thread. Returns the decoded size.
fn decode(
    raw: impl Read,
    gzip: bool,
    limit: u64,
    mut out: impl FnMut(&[u8]) -> Result<(), BodyError>,
) -> Result<u64, BodyError> {
    let mut reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(raw))
    } else {
        Box::new(raw)
    };
    let mut buf = vec![0u8; CHUNK];
    let mut total: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.get_ref().is_some_and(|inner| inner.is::<RawTooLarge>()) => {
                return Err(BodyError::TooLarge { limit })
            }
            Err(e) => return Err(BodyError::Read(e)),
        };
        total += n as u64;
        if total > limit {
            return Err(BodyError::TooLarge { limit });
        }
        out(&buf[..n])?;
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BodyError> + Send + 'static,
) -> Result<T, BodyError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BodyError::Task(e.to_string()))?
}

/// Reads a whole (small) body into memory, decoded, at most `limit` bytes of it.
pub async fn read_to_memory(body: Body, gzip: bool, limit: u64) -> Result<Vec<u8>, BodyError> {
    let raw = raw_reader(body, raw_limit(limit));
    blocking(move || {
        let mut out = Vec::new();
        decode(raw, gzip, limit, |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(out)
    })
    .await
}

/// Where push bodies wait while their push runs: `<data_dir>/spool`.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    limit: u64,
    next: AtomicU64,
}

impl Spool {
    /// The spool of the device whose data lives in `data_dir`, taking bodies of at most
    /// `limit` bytes (decoded). Files left there by an earlier process (one that died
    /// mid-push) are removed: no push of this process can be using them.
    pub fn new(data_dir: &Path, limit: u64) -> Result<Self, BodyError> {
        let dir = data_dir.join("spool");
        let err = |path: &Path, source| BodyError::Spool {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
        for entry in std::fs::read_dir(&dir).map_err(|e| err(&dir, e))? {
            let path = entry.map_err(|e| err(&dir, e))?.path();
            std::fs::remove_file(&path).map_err(|e| err(&path, e))?;
            tracing::info!(file = %path.display(), "removed a push body left by an earlier process");
        }
        Ok(Spool {
            dir,
            limit,
            next: AtomicU64::new(0),
        })
    }

    /// The largest body taken, in bytes (decoded).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Writes `body` (gzip-decoded when `gzip`) to a new spool file as it arrives. On any
    /// failure, the limit included, the file is gone when this returns.
    pub async fn receive(&self, body: Body, gzip: bool) -> Result<Spooled, BodyError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("push-{}-{n}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| BodyError::Spool {
                path: path.clone(),
                source,
            })?;
        // From here on the guard removes the file, however this ends.
        let mut spooled = Spooled {
            path: path.clone(),
            len: 0,
        };
        let raw = raw_reader(body, raw_limit(self.limit));
        let limit = self.limit;
        spooled.len = blocking(move || {
            let mut out = std::io::BufWriter::with_capacity(CHUNK, file);
            let spool_err = |source| BodyError::Spool {
                path: path.clone(),
                source,
            };
            let len = decode(raw, gzip, limit, |chunk| {
                out.write_all(chunk).map_err(spool_err)
            })?;
            // No fsync: the file is read back by this process and never outlives it.
            out.flush().map_err(spool_err)?;
            Ok(len)
        })
        .await?;
        Ok(spooled)
    }
}

/// A request body in a spool file, removed when this is dropped.
#[derive(Debug)]
pub struct Spooled {
    path: PathBuf,
    len: u64,
}

impl Spooled {
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The body's size, decoded.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole body, when it is at most `max` bytes (Git's probe before a large push is
    /// four).
    pub async fn small_contents(&self, max: u64) -> Option<Vec<u8>> {
        if self.len > max {
            return None;
        }
        tokio::fs::read(&self.path).await.ok()
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot remove a spooled push body")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("in memory");
        e.finish().expect("in memory")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bodies_are_decoded_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::new(dir.path(), 1000).expect("spool");
        let data = vec![7u8; 1000];

        let plain = spool
            .receive(Body::from(data.clone()), false)
            .await
            .expect("plain body");
        assert_eq!(std::fs::read(plain.path()).expect("spooled"), data);
        let zipped = spool
            .receive(Body::from(gzip(&data)), true)
            .await
            .expect("gzip body");
        assert_eq!(zipped.len(), 1000);
        assert_eq!(std::fs::read(zipped.path()).expect("spooled"), data);
        let path = zipped.path().to_owned();
        drop(zipped);
        assert!(!path.exists(), "the spool file is removed with its guard");

        // One byte over, compressed or not: refused, and no file stays.
        let over = vec![7u8; 1001];
        let zipped_over = spool.receive(Body::from(gzip(&over)), true).await;
        assert!(matches!(
            zipped_over,
            Err(BodyError::TooLarge { limit: 1000 })
        ));
        let plain_over = spool.receive(Body::from(over.clone()), false).await;
        assert!(matches!(
            plain_over,
            Err(BodyError::TooLarge { limit: 1000 })
        ));
        let bad = spool.receive(Body::from(b"not gzip".to_vec()), true).await;
        assert!(matches!(bad, Err(BodyError::Read(_))));
        drop(plain);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("spool"))
            .expect("spool dir")
            .collect();
        assert!(left.is_empty(), "files left behind: {left:?}");

        assert_eq!(
            read_to_memory(Body::from(gzip(b"0000")), true, 10)
                .await
                .expect("small body"),
            b"0000"
        );
    }

    #[test]
    fn leftovers_of_an_earlier_process_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("spool")).expect("dir");
        std::fs::write(dir.path().join("spool/push-1-0"), b"old").expect("leftover");
        Spool::new(dir.path(), 10).expect("spool");
        assert!(!dir.path().join("spool/push-1-0").exists());
    }
}
