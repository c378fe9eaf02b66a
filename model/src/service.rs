//! The node service: accepts connections on the network port and answers client reads and
//! pushes and peer requests. One request per connection.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::{Engine, Progress};
use crate::error::{ClusterError, ErrorCode};
use crate::ports::{BoxConn, Listener};
use crate::wire::{read_frame, write_frame, Request, Response};

/// How long a caller has to send its request after connecting.
const REQUEST_READ_LIMIT: Duration = Duration::from_secs(30);

/// Serves connections until the listener fails.
pub async fn serve(engine: Arc<Engine>, mut listener: Box<dyn Listener>) -> std::io::Result<()> {
    loop {
        let (conn, _peer) = listener.accept().await?;
        let engine = Arc::clone(&engine);
        let spawn = Arc::clone(&engine.ports().spawn);
        spawn.spawn(Box::pin(handle(engine, conn)));
    }
}

fn error_response(e: &ClusterError) -> Response {
    Response::Error {
        code: e.code(),
        message: e.to_string(),
    }
}

/// Answers one request.
async fn handle(engine: Arc<Engine>, mut conn: BoxConn) {
    let request =
        match tokio::time::timeout(REQUEST_READ_LIMIT, read_frame::<_, Request>(&mut conn)).await {
            Ok(Ok(request)) => request,
            Ok(Err(crate::wire::FrameError::Malformed(reason))) => {
                let reply = Response::Error {
                    code: ErrorCode::Internal,
                    message: format!("bad request: {reason}"),
                };
                let _ = write_frame(&mut conn, &reply).await;
                return;
            }
            // The caller went away or sent nothing; nothing to answer.
            _ => return,
        };
    // Write errors below mean the caller went away; the operation itself has finished
    // and recorded whatever it did, so there is nothing more to do.
    match request {
        Request::Read { repo, progress } => {
            let (sink, lines) = sink(progress);
            let op = engine.read(&repo, &sink);
            let result = with_progress(&mut conn, op, lines).await;
            let reply = match result {
                Ok(r) => Response::ReadOk {
                    refs: r.refs,
                    possibly_stale: r.possibly_stale,
                },
                Err(e) => error_response(&e),
            };
            let _ = write_frame(&mut conn, &reply).await;
        }
        Request::Push {
            repo,
            payload,
            progress,
        } => {
            let (sink, lines) = sink(progress);
            let op = engine.push(&repo, &payload, &sink);
            let result = with_progress(&mut conn, op, lines).await;
            match result {
                Ok(receipt) => {
                    let reply = Response::PushOk {
                        version: receipt.version,
                    };
                    let _ = write_frame(&mut conn, &reply).await;
                    drop(conn);
                    engine.after_ack(&repo, receipt).await;
                }
                Err(e) => {
                    let _ = write_frame(&mut conn, &error_response(&e)).await;
                }
            }
        }
        Request::PeerVersion { repo, read_only } => {
            let reply = match engine.version_for_peer(&repo, read_only).await {
                Ok(claim) => Response::Version {
                    version: claim.version,
                    digest: claim.digest,
                    demotes_seen: claim.demotes_seen,
                },
                Err(e) => error_response(&e),
            };
            let _ = write_frame(&mut conn, &reply).await;
        }
        Request::PeerFetch { repo, unrecorded } => {
            let reply = match engine.export_for_peer(&repo, unrecorded).await {
                Ok(snapshot) => Response::Snapshot { snapshot },
                Err(e) => error_response(&e),
            };
            let _ = write_frame(&mut conn, &reply).await;
        }
        Request::Demoted { repo, demotes } => {
            let reply = match engine.note_demoted(&repo, demotes).await {
                Ok(()) => Response::Notified,
                Err(e) => error_response(&e),
            };
            let _ = write_frame(&mut conn, &reply).await;
        }
        Request::Notify { repo, version: _ } => {
            engine.trigger_pull(repo);
            let _ = write_frame(&mut conn, &Response::Notified).await;
        }
        Request::RecoverProbe { repo, owner } => {
            let reply = match engine.probe(&repo, &owner).await {
                Ok(result) => Response::Probe { result },
                Err(e) => error_response(&e),
            };
            let _ = write_frame(&mut conn, &reply).await;
        }
        Request::PeerAncestry { repo, queries } => {
            let reply = match engine.ancestry_for_peer(&repo, &queries).await {
                Ok(answers) => Response::Ancestry { answers },
                Err(e) => error_response(&e),
            };
            let _ = write_frame(&mut conn, &reply).await;
        }
        Request::SalvageBundle { repo, label, refs } => {
            let reply = match engine.salvage_bundle_for_peer(&repo, &label, &refs).await {
                Ok(bundle) => Response::Bundle { bundle },
                Err(e) => error_response(&e),
            };
            let _ = write_frame(&mut conn, &reply).await;
        }
    }
}

fn sink(
    progress: bool,
) -> (
    Progress,
    Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
) {
    if progress {
        let (p, rx) = Progress::channel();
        (p, Some(rx))
    } else {
        (Progress::none(), None)
    }
}

/// Runs `op` while forwarding its progress lines to the client.
async fn with_progress<T>(
    conn: &mut BoxConn,
    op: impl std::future::Future<Output = T>,
    lines: Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
) -> T {
    let Some(mut lines) = lines else {
        return op.await;
    };
    tokio::pin!(op);
    let mut client_gone = false;
    let result = loop {
        tokio::select! {
            biased;
            result = &mut op => break result,
            Some(line) = lines.recv(), if !client_gone => {
                client_gone = write_frame(conn, &Response::Progress { line }).await.is_err();
            }
        }
    };
    while let Ok(line) = lines.try_recv() {
        if client_gone
            || write_frame(conn, &Response::Progress { line })
                .await
                .is_err()
        {
            break;
        }
    }
    result
}
