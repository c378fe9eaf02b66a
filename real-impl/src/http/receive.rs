//! `POST git-receive-pack`: a push through the write path of PROTOCOL.md 4.2.
//!
//! The request's command list becomes the push's ref updates and the whole request, in
//! its spool file ([`super::body`]), is the payload the store streams into
//! `git receive-pack`. While the engine works, its progress lines (section 11) go to the
//! client's side band; receive-pack's status report, which is what makes the client count
//! the push as done, is sent only after the engine returns, that is after the new version
//! is recorded; the push's locks are released once that answer has gone out
//! (`Engine::after_ack`), so nothing that needs the write lock acts on the version first.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use stormcell_model::engine::Progress;
use stormcell_model::ids::{Oid, RepoId};
use stormcell_model::ports::PushPayload;
use stormcell_model::rows::RefUpdate;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::body::Spooled;
use super::{no_cache, refusal_text, text, HttpState};
use crate::config::UserConfig;
use crate::pktline;
use crate::store::read_push_head;

fn oid(hex: &str) -> Option<Oid> {
    (!hex.bytes().all(|b| b == b'0')).then(|| Oid::new(hex))
}

/// A progress line on the side band, when the client has one.
fn progress_packet(line: &str) -> Bytes {
    let mut out = Vec::new();
    pktline::sideband(&mut out, 2, format!("{line}\n").as_bytes());
    Bytes::from(out)
}

/// Whether a request body is Git's authentication probe: before sending a push too large
/// for one buffer, Git posts a lone flush packet to learn whether its credentials work.
/// It carries no command, so it is not a push: no write lock, no push recorded.
pub(super) async fn is_probe(body: &Spooled) -> bool {
    body.small_contents(4).await.as_deref() == Some(b"0000")
}

/// The answer `git receive-pack` gives an empty request: success and nothing to say.
pub(super) fn probe_answer() -> Response {
    tracing::debug!("authentication probe answered");
    let mut r = (
        [(
            header::CONTENT_TYPE,
            "application/x-git-receive-pack-result",
        )],
        Body::empty(),
    )
        .into_response();
    no_cache(r.headers_mut());
    r
}

pub(super) async fn receive_pack(
    st: Arc<HttpState>,
    repo: RepoId,
    user: UserConfig,
    body: Spooled,
) -> Response {
    // Only the command list is read here; the store streams the pack from the file.
    let request = match read_push_head(body.path()).await {
        Ok((head, _)) => match pktline::parse_push(&head) {
            Ok(r) => r,
            Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
        },
        Err(e) => return text(StatusCode::BAD_REQUEST, e.0),
    };
    let sideband = request.sideband();
    let payload = PushPayload {
        user: user.name.clone(),
        updates: request
            .commands
            .iter()
            .map(|c| RefUpdate {
                name: c.name.clone(),
                old: oid(&c.old),
                new: oid(&c.new),
            })
            .collect(),
        pack: Vec::new(),
        spool: Some(body.path().to_owned()),
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let (progress, mut lines) = Progress::channel();
        // The push runs to its end even if the client goes away: what it recorded
        // stands, and sends to a closed channel are simply dropped.
        let result = {
            let push = st.engine.push(&repo, &payload, &progress);
            tokio::pin!(push);
            loop {
                tokio::select! {
                    biased;
                    result = &mut push => break result,
                    Some(line) = lines.recv() => {
                        if sideband {
                            let _ = tx.send(Ok(progress_packet(&line))).await;
                        }
                    }
                }
            }
        };
        // The store has read all it needs of the body; the file goes now, not after the
        // peers are told.
        drop(body);
        drop(progress);
        while let Ok(line) = lines.try_recv() {
            if sideband {
                let _ = tx.send(Ok(progress_packet(&line))).await;
            }
        }
        match result {
            Ok(receipt) => {
                st.metrics.push_done(None);
                tracing::info!(repo = %repo, user = %user.name, version = receipt.version, "push recorded");
                let _ = tx
                    .send(Ok(Bytes::from(receipt.applied.report.clone())))
                    .await;
                // The client has its answer once the body ends; then peers are told.
                drop(tx);
                st.engine.after_ack(&repo, receipt).await;
            }
            Err(e) => {
                st.metrics.push_done(Some(e.code()));
                tracing::info!(repo = %repo, user = %user.name, error = %e, "push refused");
                let message = refusal_text(&e);
                let report = pktline::refusal_report(&request.commands, &message);
                let mut out = Vec::new();
                if sideband {
                    pktline::sideband(&mut out, 2, format!("{message}\n").as_bytes());
                    pktline::sideband(&mut out, 1, &report);
                    pktline::flush(&mut out);
                } else {
                    out = report;
                }
                let _ = tx.send(Ok(Bytes::from(out))).await;
            }
        }
    });
    let mut r = (
        [(
            header::CONTENT_TYPE,
            "application/x-git-receive-pack-result",
        )],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response();
    no_cache(r.headers_mut());
    r
}
