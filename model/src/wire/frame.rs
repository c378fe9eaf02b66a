//! Framing: a 4-byte big-endian length, then that many bytes of JSON.

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame accepted; a peer announcing more is refused before anything is read.
pub const MAX_FRAME: usize = 256 * 1024 * 1024;

/// Reading or writing a frame failed.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The stream broke or closed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the stream before a frame began.
    #[error("connection closed")]
    Closed,
    /// The frame was larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes is larger than the limit")]
    TooLarge(usize),
    /// The frame was not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Writes one message as a frame and flushes it.
pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin + ?Sized,
    T: Serialize + ?Sized,
{
    let body = serde_json::to_vec(msg).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge(body.len()))?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame and decodes it.
pub async fn read_frame<R, T>(r: &mut R) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin + ?Sized,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(FrameError::Io(e)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(|e| FrameError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_reject_garbage() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, &vec!["x".to_owned(), "y".to_owned()])
            .await
            .unwrap();
        let got: Vec<String> = read_frame(&mut b).await.unwrap();
        assert_eq!(got, vec!["x", "y"]);

        a.write_all(&3u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{{{").await.unwrap();
        let bad: Result<Vec<String>, _> = read_frame(&mut b).await;
        assert!(matches!(bad, Err(FrameError::Malformed(_))));

        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let big: Result<Vec<String>, _> = read_frame(&mut b).await;
        assert!(matches!(big, Err(FrameError::TooLarge(_))));

        drop(a);
        let closed: Result<Vec<String>, _> = read_frame(&mut b).await;
        assert!(matches!(closed, Err(FrameError::Closed)));
    }
}
