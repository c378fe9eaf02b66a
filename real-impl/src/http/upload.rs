//! Ref advertisement and `git upload-pack`. A user's advertisement runs the read sync
//! first (PROTOCOL.md 4.1), so a read that starts after a push was acknowledged sees it.
//! A peer fetching objects for its own sync gets the working copy as it is, and may ask
//! for any object (it asks for the exact commits of the snapshot it is mirroring).

use std::process::Stdio;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use stormcell_model::engine::Progress;
use stormcell_model::ids::RepoId;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use super::auth::Caller;
use super::stale::{self, WithNotice};
use super::{no_cache, refusal, text, HttpState, Service};
use crate::pktline;

fn content_type(service: Service, advertisement: bool) -> String {
    if advertisement {
        format!("application/x-{}-advertisement", service.name())
    } else {
        format!("application/x-{}-result", service.name())
    }
}

fn git_command(
    st: &HttpState,
    caller: &Caller,
    path: &std::path::Path,
    service: Service,
    protocol: Option<&str>,
) -> tokio::process::Command {
    let mut cmd = st.git.command(path);
    if matches!(caller, Caller::Peer(_)) {
        cmd.args(["-c", "uploadpack.allowAnySHA1InWant=true"]);
    }
    match service {
        Service::UploadPack => cmd.arg("upload-pack"),
        Service::ReceivePack => cmd.arg("receive-pack"),
    };
    cmd.arg("--stateless-rpc");
    if let Some(p) = protocol {
        cmd.env("GIT_PROTOCOL", p);
    }
    cmd
}

/// `GET info/refs`: read sync, then the advertisement.
pub(super) async fn info_refs(
    st: &HttpState,
    caller: &Caller,
    repo: &RepoId,
    service: Service,
    protocol: Option<String>,
) -> Response {
    let mut possibly_stale = false;
    if let Caller::User(user) = caller {
        let started = std::time::Instant::now();
        match st.engine.read(repo, &Progress::none()).await {
            Ok(receipt) => {
                possibly_stale = receipt.possibly_stale;
                if service == Service::UploadPack {
                    st.metrics.read_done(None);
                    st.metrics.sync_waited(started.elapsed());
                    if possibly_stale {
                        st.metrics.possibly_stale_read();
                        tracing::info!(repo = %repo, user = %user.name, "read served as possibly stale");
                    }
                }
                st.stale.note(&user.name, repo, possibly_stale);
            }
            Err(e) => {
                st.metrics.read_done(Some(e.code()));
                tracing::info!(repo = %repo, error = %e, "read refused");
                return refusal(&e);
            }
        }
    }
    let path = match st.store.ensure(repo).await {
        Ok(p) => p,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.0),
    };
    let mut cmd = git_command(st, caller, &path, service, protocol.as_deref());
    cmd.args(["--advertise-refs", "."]);
    let out = match st.git.run(cmd, b"").await {
        Ok(o) if o.success => o,
        Ok(o) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        }
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.0),
    };
    let mut body = Vec::with_capacity(out.stdout.len() + 64);
    // Protocol v2 starts with its capability list; v0 with the service announcement.
    let v2 = protocol.as_deref().is_some_and(|p| p.contains("version=2"));
    if !(v2 && service == Service::UploadPack) {
        pktline::write(
            &mut body,
            format!("# service={}\n", service.name()).as_bytes(),
        );
        pktline::flush(&mut body);
    }
    body.extend_from_slice(&out.stdout);
    let mut r = ([(header::CONTENT_TYPE, content_type(service, true))], body).into_response();
    no_cache(r.headers_mut());
    if possibly_stale {
        stale::mark(r.headers_mut());
    }
    r
}

/// `POST git-upload-pack`: the negotiation and the pack, streamed from Git.
pub(super) async fn upload_pack(
    st: &Arc<HttpState>,
    caller: &Caller,
    repo: &RepoId,
    protocol: Option<String>,
    body: Bytes,
) -> Response {
    let path = match st.store.ensure(repo).await {
        Ok(p) => p,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.0),
    };
    let mut cmd = git_command(st, caller, &path, Service::UploadPack, protocol.as_deref());
    cmd.arg(".").stdin(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot run git: {e}"),
            )
        }
    };
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "git has no pipes");
    };
    tokio::spawn(async move {
        // Git reads the whole request before it answers; a write error means it exited,
        // which its exit status reports.
        let _ = stdin.write_all(&body).await;
        drop(stdin);
    });
    // The child lives until its output is consumed; waiting here reaps it.
    tokio::spawn(async move {
        if let Ok(status) = child.wait().await {
            if !status.success() {
                tracing::debug!(%status, "upload-pack ended with an error");
            }
        }
    });
    // The read sync ran on this fetch's advertisement; if it could not prove freshness,
    // the pack carries the notice on its side band.
    let possibly_stale = matches!(caller, Caller::User(u) if st.stale.recent(&u.name, repo));
    let body = if possibly_stale {
        Body::from_stream(WithNotice::new(
            ReaderStream::new(stdout),
            &stale::notice(repo),
        ))
    } else {
        Body::from_stream(ReaderStream::new(stdout))
    };
    let mut r = (
        [(
            header::CONTENT_TYPE,
            content_type(Service::UploadPack, false),
        )],
        body,
    )
        .into_response();
    no_cache(r.headers_mut());
    if possibly_stale {
        stale::mark(r.headers_mut());
    }
    r
}
