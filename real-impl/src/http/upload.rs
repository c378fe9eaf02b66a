//! Ref listings and `git upload-pack`, every one through the engine's read (PROTOCOL.md
//! 4.1): the read sync runs, then the engine checks that no unrecorded write shows and
//! reads the refs under the working-copy guard, and the client is shown exactly those refs
//! ([`super::advertise`]).
//!
//! - `GET info/refs`, protocol v0: the advertisement lists the checked refs;
//! - `GET info/refs`, protocol v2: Git's capability list only (it shows no ref);
//! - `POST git-upload-pack`, protocol v2: `ls-refs` is answered from the checked refs, and
//!   `fetch` (or any other command) runs the same read before Git answers it;
//! - `POST git-upload-pack`, protocol v0: the pack for the advertisement just shown.

use std::process::Stdio;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use stormcell_model::engine::{Progress, ReadReceipt};
use stormcell_model::ids::RepoId;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use super::advertise::{self, Listing, V2Request};
use super::stale::{self, WithNotice};
use super::{no_cache, refusal, refusal_text, text, HttpState, Service};
use crate::config::UserConfig;
use crate::pktline;

/// Refs Git must never show or serve over HTTP: the staging refs of atomic pushes.
const HIDDEN: &str = "refs/stormcell-incoming/";

fn content_type(service: Service, advertisement: bool) -> String {
    if advertisement {
        format!("application/x-{}-advertisement", service.name())
    } else {
        format!("application/x-{}-result", service.name())
    }
}

/// Whether the client speaks protocol v2.
fn is_v2(protocol: Option<&str>) -> bool {
    protocol.is_some_and(|p| p.split(':').any(|kv| kv == "version=2"))
}

/// Which refs a Git command may show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    /// Every ref but the staging refs.
    Refs,
    /// No ref at all: for Git's capability list.
    Nothing,
}

fn git_command(
    st: &HttpState,
    path: &std::path::Path,
    service: Service,
    protocol: Option<&str>,
    shown: Shown,
) -> tokio::process::Command {
    let mut cmd = st.git.command(path);
    // A client may want a commit its listing showed even after the ref moved on (the
    // listing and the pack are separate requests); anything reachable from a shown ref
    // is readable anyway. Staging refs stay hidden, and so does what only they reach.
    cmd.args(["-c", &format!("transfer.hideRefs={HIDDEN}")])
        .args(["-c", "uploadpack.allowReachableSHA1InWant=true"]);
    if shown == Shown::Nothing {
        cmd.args([
            "-c",
            "transfer.hideRefs=refs/",
            "-c",
            "transfer.hideRefs=HEAD",
        ]);
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

/// Git's advertisement with no ref in it: its capability list (v0) or its v2 capability
/// advertisement, which lists no refs by design. It runs with the settings of the command
/// that serves the request, so the capabilities match what that command does.
async fn git_capabilities(
    st: &HttpState,
    path: &std::path::Path,
    service: Service,
    protocol: Option<&str>,
) -> Result<Vec<u8>, Response> {
    let mut cmd = git_command(st, path, service, protocol, Shown::Nothing);
    cmd.args(["--advertise-refs", "."]);
    match st.git.run(cmd, b"").await {
        Ok(o) if o.success => Ok(o.stdout),
        Ok(o) => Err(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )),
        Err(e) => Err(text(StatusCode::INTERNAL_SERVER_ERROR, e.0)),
    }
}

/// How a read is counted in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    /// A client's read: counted, with its sync wait.
    Read,
    /// A second check within one client read (a v2 fetch after its `ls-refs`, a push's
    /// listing): not counted again.
    Quiet,
}

/// The engine's read: the read sync, the check, and the refs under the guard. A refusal
/// comes back as the error the client sees.
async fn checked_read(
    st: &HttpState,
    user: &UserConfig,
    repo: &RepoId,
    count: Count,
) -> Result<ReadReceipt, stormcell_model::error::ClusterError> {
    let started = std::time::Instant::now();
    match st.engine.read(repo, &Progress::none()).await {
        Ok(receipt) => {
            if count == Count::Read {
                st.metrics.read_done(None);
                st.metrics.sync_waited(started.elapsed());
                if receipt.possibly_stale {
                    st.metrics.possibly_stale_read();
                    tracing::info!(repo = %repo, user = %user.name, "read served as possibly stale");
                }
            }
            st.stale.note(&user.name, repo, receipt.possibly_stale);
            Ok(receipt)
        }
        Err(e) => {
            if count == Count::Read {
                st.metrics.read_done(Some(e.code()));
            }
            tracing::info!(repo = %repo, error = %e, "read refused");
            Err(e)
        }
    }
}

/// `GET info/refs`.
pub(super) async fn info_refs(
    st: &HttpState,
    user: &UserConfig,
    repo: &RepoId,
    service: Service,
    protocol: Option<String>,
) -> Response {
    let path = match st.store.ensure(repo).await {
        Ok(p) => p,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.0),
    };
    if service == Service::UploadPack && is_v2(protocol.as_deref()) {
        // Capabilities only; the refs come with `ls-refs`, which runs the read.
        let body = match git_capabilities(st, &path, service, protocol.as_deref()).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let mut r = ([(header::CONTENT_TYPE, content_type(service, true))], body).into_response();
        no_cache(r.headers_mut());
        return r;
    }
    let count = if service == Service::UploadPack {
        Count::Read
    } else {
        Count::Quiet
    };
    let receipt = match checked_read(st, user, repo, count).await {
        Ok(r) => r,
        Err(e) => return refusal(&e),
    };
    let (caps, listing) = tokio::join!(
        git_capabilities(st, &path, service, protocol.as_deref()),
        Listing::describe(path.clone(), receipt.refs)
    );
    let caps = match caps.map(|c| advertise::capabilities(&c)) {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(r) => return r,
    };
    let listing = match listing {
        Ok(l) => l,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.0),
    };
    let mut body = Vec::new();
    pktline::write(
        &mut body,
        format!("# service={}\n", service.name()).as_bytes(),
    );
    pktline::flush(&mut body);
    body.extend_from_slice(&match service {
        Service::UploadPack => listing.upload_pack_v0(&caps),
        Service::ReceivePack => listing.receive_pack_v0(&caps),
    });
    let mut r = ([(header::CONTENT_TYPE, content_type(service, true))], body).into_response();
    no_cache(r.headers_mut());
    if receipt.possibly_stale {
        stale::mark(r.headers_mut());
    }
    r
}

/// A protocol v2 answer that makes Git stop with `remote error: <refusal>`.
fn v2_refusal(e: &stormcell_model::error::ClusterError) -> Response {
    let mut r = (
        [(
            header::CONTENT_TYPE,
            content_type(Service::UploadPack, false),
        )],
        advertise::error_packet(&refusal_text(e)),
    )
        .into_response();
    no_cache(r.headers_mut());
    r
}

/// `POST git-upload-pack`.
pub(super) async fn upload_pack(
    st: &Arc<HttpState>,
    user: &UserConfig,
    repo: &RepoId,
    protocol: Option<String>,
    body: Bytes,
) -> Response {
    let path = match st.store.ensure(repo).await {
        Ok(p) => p,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.0),
    };
    let possibly_stale = if is_v2(protocol.as_deref()) {
        let request = match advertise::parse_v2(&body) {
            Ok(r) => r,
            Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let count = match request {
            V2Request::LsRefs(_) => Count::Read,
            V2Request::Other(_) => Count::Quiet,
        };
        let receipt = match checked_read(st, user, repo, count).await {
            Ok(r) => r,
            Err(e) => return v2_refusal(&e),
        };
        if let V2Request::LsRefs(args) = request {
            let listing = match Listing::describe(path, receipt.refs).await {
                Ok(l) => l,
                Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.0),
            };
            let mut r = (
                [(
                    header::CONTENT_TYPE,
                    content_type(Service::UploadPack, false),
                )],
                listing.ls_refs(&args),
            )
                .into_response();
            no_cache(r.headers_mut());
            if receipt.possibly_stale {
                stale::mark(r.headers_mut());
            }
            return r;
        }
        receipt.possibly_stale
    } else {
        // The read ran on this fetch's advertisement; if it could not prove freshness,
        // the pack carries the notice on its side band.
        st.stale.recent(&user.name, repo)
    };
    let mut cmd = git_command(
        st,
        &path,
        Service::UploadPack,
        protocol.as_deref(),
        Shown::Refs,
    );
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
