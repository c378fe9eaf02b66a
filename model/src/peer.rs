//! Calling a peer device: one request per connection, any number of progress frames, one
//! answer, all within a time limit. A broken or timed-out connection is never reused (the
//! simulated network, like a real one under partition, may lose frames).

use std::time::Duration;

use crate::error::PeerError;
use crate::ids::DeviceId;
use crate::ports::Network;
use crate::wire::{read_frame, write_frame, Request, Response};

/// Sends `request` to `device` at `addr` and waits at most `limit` for its answer.
pub async fn call(
    net: &dyn Network,
    device: &DeviceId,
    addr: &str,
    request: &Request,
    limit: Duration,
) -> Result<Response, PeerError> {
    let exchange = async {
        let mut conn = net.connect(addr).await.map_err(|e| PeerError::Connect {
            device: device.clone(),
            reason: e.to_string(),
        })?;
        let io = |e: crate::wire::FrameError| PeerError::Io {
            device: device.clone(),
            reason: e.to_string(),
        };
        write_frame(&mut conn, request).await.map_err(io)?;
        loop {
            match read_frame::<_, Response>(&mut conn).await.map_err(io)? {
                Response::Progress { .. } => continue,
                Response::Error { message, .. } => {
                    return Err(PeerError::Refused {
                        device: device.clone(),
                        message,
                    })
                }
                answer => return Ok(answer),
            }
        }
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(result) => result,
        Err(_) => Err(PeerError::Timeout {
            device: device.clone(),
            limit,
        }),
    }
}
