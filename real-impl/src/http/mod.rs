//! Git smart HTTP in front of the protocol engine (ARCHITECTURE.md, "The real daemon").
//!
//! - `GET /<repo>.git/info/refs?service=git-upload-pack|git-receive-pack`: the engine's
//!   read (the read sync of PROTOCOL.md 4.1 and its check) runs first, and the
//!   advertisement lists exactly the refs it checked ([`advertise`]);
//! - `POST /<repo>.git/git-upload-pack`: protocol v2 `ls-refs` answered from the refs the
//!   engine's read checked, and `fetch` run by `git upload-pack` after the same read;
//!   protocol v0 the pack for the advertisement just shown;
//! - `POST /<repo>.git/git-receive-pack`: the write path of 4.2 around
//!   `git receive-pack`, the body streamed through a spool file ([`body`]); progress lines go to the client's side band while it runs, and
//!   receive-pack's status report only once the version is recorded. Git's probe before
//!   a large push (a body of one flush packet) is answered at once, with no write;
//! - a read that may be stale (read-only mode, freshness unproven) is marked with a header
//!   and a progress line ([`stale`]);
//! - `GET /metrics`: Prometheus metrics.

mod advertise;
pub mod auth;
pub mod body;
mod receive;
pub mod stale;
mod upload;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use stormcell_model::engine::Engine;
use stormcell_model::error::{ClusterError, ErrorCode};
use stormcell_model::ids::RepoId;

use crate::config::UserConfig;
use crate::metrics::{code_name, Metrics};
use crate::store::git::Git;
use crate::store::GitStore;
use auth::Denied;

/// What the HTTP front end works with.
pub struct HttpState {
    /// This device's engine.
    pub engine: Arc<Engine>,
    /// This device's working copies.
    pub store: Arc<GitStore>,
    /// How to run Git.
    pub git: Git,
    /// Users and their permissions.
    pub users: Vec<UserConfig>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Users whose latest read may be stale.
    pub stale: stale::StaleReads,
    /// Where push bodies wait while their push runs, and the largest body taken.
    pub spool: body::Spool,
}

/// The router of the Git endpoint.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

/// Which Git service a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    UploadPack,
    ReceivePack,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::UploadPack => "git-upload-pack",
            Service::ReceivePack => "git-receive-pack",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        match s {
            "git-upload-pack" => Some(Service::UploadPack),
            "git-receive-pack" => Some(Service::ReceivePack),
            _ => None,
        }
    }
}

/// A parsed request path.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    InfoRefs(String),
    Rpc(String, Service),
}

fn route(method: &Method, path: &str, query: Option<&str>) -> Option<(Route, Option<Service>)> {
    if method == Method::GET && path == "/metrics" {
        return Some((Route::Metrics, None));
    }
    let rest = path.strip_prefix('/')?;
    let (repo, tail) = rest.split_once(".git/")?;
    match (method, tail) {
        (&Method::GET, "info/refs") => {
            let service = query?
                .split('&')
                .find_map(|kv| kv.strip_prefix("service="))
                .and_then(Service::from_name)?;
            Some((Route::InfoRefs(repo.to_owned()), Some(service)))
        }
        (&Method::POST, svc) => {
            let service = Service::from_name(svc)?;
            Some((Route::Rpc(repo.to_owned(), service), Some(service)))
        }
        _ => None,
    }
}

/// A plain-text answer; Git shows text/plain error bodies to its user as `remote:` lines.
fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body: String = message.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The text a client sees for a refusal: the cause's code, then the message.
pub fn refusal_text(e: &ClusterError) -> String {
    format!("stormcell: {}: {e}", code_name(e.code()))
}

fn refusal(e: &ClusterError) -> Response {
    let status = match e.code() {
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::NotBound => StatusCode::MISDIRECTED_REQUEST,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    text(status, refusal_text(e))
}

fn no_cache(headers: &mut HeaderMap) {
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, max-age=0, must-revalidate"),
    );
    headers.insert(header::PRAGMA, header::HeaderValue::from_static("no-cache"));
}

/// The `Git-Protocol` header, when it is well formed.
fn git_protocol(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("Git-Protocol")?.to_str().ok()?;
    let ok = v.len() < 256
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '=' | ':' | '.' | '-' | '_'));
    ok.then(|| v.to_owned())
}

/// Whether the client compressed its request body.
fn is_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip"))
}

async fn handle(State(st): State<Arc<HttpState>>, req: Request) -> Response {
    let (parts, request_body) = req.into_parts();
    let Some((route, service)) = route(&parts.method, parts.uri.path(), parts.uri.query()) else {
        return text(
            StatusCode::NOT_FOUND,
            "Not found: this server speaks Git's smart HTTP protocol only.",
        );
    };
    if route == Route::Metrics {
        return (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            st.metrics.render(),
        )
            .into_response();
    }
    let user = match auth::authenticate(&parts.headers, &st.users) {
        Ok(u) => u,
        Err(denied) => {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                if denied == Denied::Missing {
                    "Authentication required."
                } else {
                    "Authentication failed: unknown user or wrong token."
                },
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"stormcell\""),
            );
            return r;
        }
    };
    let (repo, service) = match (route, service) {
        (Route::InfoRefs(r), Some(s)) | (Route::Rpc(r, _), Some(s)) => (r, s),
        _ => return text(StatusCode::NOT_FOUND, "Not found."),
    };
    if let Err(e) = crate::store::check_name(&repo) {
        return text(StatusCode::NOT_FOUND, e.0);
    }
    let allowed = match service {
        Service::UploadPack => user.can_read(&repo),
        Service::ReceivePack => user.can_write(&repo),
    };
    if !allowed {
        let what = if service == Service::ReceivePack {
            "write"
        } else {
            "read"
        };
        return text(
            StatusCode::FORBIDDEN,
            format!("You may not {what} repository \"{repo}\"."),
        );
    }
    let repo = RepoId::new(repo);
    let protocol = git_protocol(&parts.headers);
    let is_info_refs = parts.uri.path().ends_with("/info/refs");
    if is_info_refs {
        return upload::info_refs(&st, &user, &repo, service, protocol).await;
    }
    let gzip = is_gzip(&parts.headers);
    match service {
        Service::UploadPack => {
            let body = match body::read_to_memory(request_body, gzip, st.spool.limit()).await {
                Ok(b) => Bytes::from(b),
                Err(e) => return e.response(),
            };
            upload::upload_pack(&st, &user, &repo, protocol, body).await
        }
        Service::ReceivePack => {
            // Spooled whole before anything is locked or written, as the in-memory body
            // was: a body that cannot be read, or is too large, changes nothing.
            let spooled = match st.spool.receive(request_body, gzip).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::info!(repo = %repo, user = %user.name, error = %e, "push body refused");
                    return e.response();
                }
            };
            if receive::is_probe(&spooled).await {
                return receive::probe_answer();
            }
            receive::receive_pack(Arc::clone(&st), repo, user, spooled).await
        }
    }
}

/// Serves the Git endpoint on `listener` until it fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<HttpState>,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_to_services() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(
            route(&get, "/R1.git/info/refs", Some("service=git-upload-pack")),
            Some((Route::InfoRefs("R1".into()), Some(Service::UploadPack)))
        );
        assert_eq!(
            route(&post, "/R1.git/git-receive-pack", None),
            Some((
                Route::Rpc("R1".into(), Service::ReceivePack),
                Some(Service::ReceivePack)
            ))
        );
        assert_eq!(route(&get, "/R1.git/info/refs", None), None);
        assert_eq!(route(&get, "/R1.git/HEAD", None), None);
        assert_eq!(route(&get, "/metrics", None), Some((Route::Metrics, None)));
    }
}
