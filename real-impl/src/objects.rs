//! Object transfer between devices over the peer connection (PROTOCOL.md section 10).
//!
//! A device copying a leader's snapshot needs the objects its refs point at. It connects
//! to the source's peer port like any peer (TLS when configured, then the credential
//! handshake, see [`crate::net`]), but introduces the connection as an object transfer.
//! The source is the device the snapshot names, reached only at its registered address
//! and only while it is actively bound to the repository's service
//! ([`crate::access::object_source`]); the source in turn sends objects only to a device
//! actively bound to that service. No credential ever travels outside the peer
//! connection, and no address is ever taken from a peer's message.
//!
//! On the connection: one frame [`ObjectsRequest`] (the objects wanted, and the ones the
//! asker already has so the pack can leave them out), one frame [`ObjectsAnswer`], then,
//! when the answer is [`ObjectsAnswer::Pack`], a Git pack until the source closes. The
//! source writes it with `git pack-objects`; the asker stores it with `git index-pack`
//! and checks that everything the wanted objects reach is present before any ref moves.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use stormcell_model::error::StoreError;
use stormcell_model::ids::{DeviceId, RepoId};
use stormcell_model::ports::BoxConn;
use stormcell_model::wire::{read_frame, write_frame, FrameError};
use thiserror::Error;
use tokio::io::AsyncWriteExt;

use crate::access::{object_source, ClusterView};
use crate::net::TcpNetwork;
use crate::store::git::Git;
use crate::store::{GitStore, ObjectFetcher};

/// What a device asks a source for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectsRequest {
    /// The repository.
    pub repo: RepoId,
    /// Objects wanted, with everything they reach.
    pub wants: Vec<String>,
    /// Objects the asker has, with everything they reach (the source ignores the ones it
    /// does not know).
    pub haves: Vec<String>,
}

/// The source's answer, before the pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "kebab-case")]
pub enum ObjectsAnswer {
    /// A pack follows, until the connection closes.
    Pack,
    /// Nothing follows.
    Refused {
        /// Why.
        message: String,
    },
}

/// Serving an object request failed.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The request could not be read or the answer written.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The request did not come in time.
    #[error("no object request within {0:?}")]
    Slow(Duration),
    /// The working copy could not be read.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Sending the pack failed.
    #[error("sending the pack failed: {0}")]
    Io(#[from] std::io::Error),
    /// The pack took longer than the copy limit.
    #[error("the pack took longer than the copy limit ({0:?})")]
    CopyLimit(Duration),
}

/// Whether `s` looks like a Git object id (SHA-1 or SHA-256, lower-case hex).
fn is_object_id(s: &str) -> bool {
    matches!(s.len(), 40 | 64)
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Reads the request of an admitted object-transfer connection.
pub async fn read_request(
    conn: &mut BoxConn,
    limit: Duration,
) -> Result<ObjectsRequest, ServeError> {
    tokio::time::timeout(limit, read_frame(conn))
        .await
        .map_err(|_| ServeError::Slow(limit))?
        .map_err(ServeError::from)
}

/// Refuses a request, saying why.
pub async fn refuse(conn: &mut BoxConn, message: &str) {
    let answer = ObjectsAnswer::Refused {
        message: message.to_owned(),
    };
    // A peer that went away needs no answer.
    let _ = write_frame(conn, &answer).await;
}

/// Which of `oids` the repository at `path` lacks.
async fn missing(git: &Git, path: &Path, oids: &[String]) -> Result<Vec<String>, StoreError> {
    if oids.is_empty() {
        return Ok(Vec::new());
    }
    let mut cmd = git.command(path);
    cmd.args(["cat-file", "--batch-check"]);
    let input: String = oids.iter().map(|o| format!("{o}\n")).collect();
    let out = git.run_ok(cmd, input.as_bytes(), "git cat-file").await?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(" missing"))
        .map(str::to_owned)
        .collect())
}

/// Answers an allowed request: the pack of everything the wanted objects reach, less what
/// the asker has, written by `git pack-objects` within `copy_limit`.
pub async fn send_pack(
    mut conn: BoxConn,
    store: &GitStore,
    git: &Git,
    request: &ObjectsRequest,
    copy_limit: Duration,
) -> Result<(), ServeError> {
    if let Some(bad) = request
        .wants
        .iter()
        .chain(&request.haves)
        .find(|o| !is_object_id(o))
    {
        refuse(&mut conn, &format!("{bad:?} is not an object id")).await;
        return Ok(());
    }
    let path = store.ensure(&request.repo).await?;
    let lacking = missing(git, &path, &request.wants).await?;
    if !lacking.is_empty() {
        let message = format!(
            "this device lacks {} of the wanted objects of \"{}\" (first {})",
            lacking.len(),
            request.repo,
            lacking[0]
        );
        refuse(&mut conn, &message).await;
        return Ok(());
    }
    let unknown = missing(git, &path, &request.haves).await?;
    let mut input = String::new();
    for want in &request.wants {
        input.push_str(want);
        input.push('\n');
    }
    for have in request.haves.iter().filter(|h| !unknown.contains(h)) {
        input.push('^');
        input.push_str(have);
        input.push('\n');
    }
    write_frame(&mut conn, &ObjectsAnswer::Pack).await?;
    let mut cmd = git.command(&path);
    cmd.args([
        "pack-objects",
        "--revs",
        "--stdout",
        "--delta-base-offset",
        "--quiet",
    ])
    .stdin(Stdio::piped())
    .stderr(Stdio::null());
    let mut child = cmd.spawn()?;
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(ServeError::Io(std::io::Error::other("git has no pipes")));
    };
    let feed = async move {
        stdin.write_all(input.as_bytes()).await?;
        stdin.shutdown().await
    };
    let send = async {
        let (fed, sent) = tokio::join!(feed, tokio::io::copy(&mut stdout, &mut conn));
        fed?;
        sent?;
        conn.shutdown().await?;
        let status = child.wait().await?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("git pack-objects: {status}")))
        }
    };
    // Past the limit the future is dropped, which kills pack-objects and closes the
    // connection, so the asker sees a truncated pack and stores nothing.
    tokio::time::timeout(copy_limit, send)
        .await
        .map_err(|_| ServeError::CopyLimit(copy_limit))??;
    Ok(())
}

/// Fetches objects from other devices over the peer connection.
pub struct PeerObjects {
    view: Arc<ClusterView>,
    net: Arc<TcpNetwork>,
    git: Git,
}

impl PeerObjects {
    /// Fetches with `net`, choosing sources from `view`'s topology.
    pub fn new(view: Arc<ClusterView>, net: Arc<TcpNetwork>, git: Git) -> Self {
        PeerObjects { view, net, git }
    }
}

#[async_trait]
impl ObjectFetcher for PeerObjects {
    async fn fetch(
        &self,
        repo: &RepoId,
        from: &str,
        into: &Path,
        wants: &[String],
    ) -> Result<(), StoreError> {
        let source = DeviceId::new(from);
        let topology = self
            .view
            .topology()
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        let addr = object_source(&topology, repo, &source)
            .map_err(|e| StoreError(format!("will not fetch objects from \"{from}\": {e}")))?
            .to_owned();
        let haves: Vec<String> = {
            let into = into.to_owned();
            let refs = tokio::task::spawn_blocking(move || crate::store::read_refs(&into))
                .await
                .map_err(|e| StoreError(format!("ref reading task failed: {e}")))??;
            let mut v: Vec<String> = refs.values().map(|o| o.as_str().to_owned()).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let failed = |e: &dyn std::fmt::Display| {
            StoreError(format!("fetching objects from \"{from}\" at {addr}: {e}"))
        };
        let mut conn = self
            .net
            .connect_objects(&addr)
            .await
            .map_err(|e| failed(&e))?;
        let request = ObjectsRequest {
            repo: repo.clone(),
            wants: wants.to_vec(),
            haves,
        };
        write_frame(&mut conn, &request)
            .await
            .map_err(|e| failed(&e))?;
        match read_frame::<_, ObjectsAnswer>(&mut conn)
            .await
            .map_err(|e| failed(&e))?
        {
            ObjectsAnswer::Pack => {}
            ObjectsAnswer::Refused { message } => return Err(failed(&message)),
        }
        let mut cmd = self.git.command(into);
        cmd.args(["index-pack", "--stdin"]).stdin(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| failed(&e))?;
        let Some(mut stdin) = child.stdin.take() else {
            return Err(failed(&"git has no pipes"));
        };
        let copied = tokio::io::copy(&mut conn, &mut stdin).await;
        drop(stdin);
        let out = child.wait_with_output().await.map_err(|e| failed(&e))?;
        copied.map_err(|e| failed(&e))?;
        if !out.status.success() {
            return Err(failed(&format!(
                "git index-pack: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        // Everything the wanted objects reach must be here now (what the refs reach
        // already was), or no ref may point at them.
        let mut cmd = self.git.command(into);
        cmd.args([
            "rev-list",
            "--objects",
            "--quiet",
            "--stdin",
            "--not",
            "--all",
        ]);
        let input: String = wants.iter().map(|o| format!("{o}\n")).collect();
        self.git
            .run_ok(cmd, input.as_bytes(), "checking the fetched objects")
            .await
            .map_err(|e| failed(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hex_object_ids_are_passed_to_git() {
        assert!(is_object_id(&"a".repeat(40)));
        assert!(is_object_id(&"0123456789abcdef".repeat(4)));
        assert!(!is_object_id("--all"));
        assert!(!is_object_id(&"A".repeat(40)));
        assert!(!is_object_id(&format!("^{}", "a".repeat(39))));
    }

    #[test]
    fn answers_have_a_stable_wire_form() {
        let json = serde_json::to_string(&ObjectsAnswer::Refused {
            message: "no".into(),
        })
        .unwrap();
        assert_eq!(json, r#"{"answer":"refused","message":"no"}"#);
    }
}
