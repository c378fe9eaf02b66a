//! The working-copy port over bare Git repositories (ARCHITECTURE.md, "Ports").
//!
//! Each repository is a bare repository `<data>/repos/<name>.git`, with the device's
//! durable local version beside it in `<data>/repos/<name>.version` (and, while a push is
//! unsettled, its write marker in `<data>/repos/<name>.writing`; once it was demoted, the
//! demotes it took note of in `<data>/repos/<name>.demoted`). Refs and digests are
//! read with gix; pushes go through `git receive-pack`; mirroring a leader fetches the
//! objects the copy lacks from the device the snapshot names, through an
//! [`ObjectFetcher`] (the daemon's goes over the peer connection, [`crate::objects`]), and
//! then sets every ref in one transaction. Git is configured to fsync objects and refs; [`Store::sync`] adds
//! the directories.
//!
//! **[stormcell]** Salvage bundles (PROTOCOL.md 12) are real Git bundles under
//! `<data>/salvage/<name>/<label>.bundle`, made by `git bundle create` in a scratch bare
//! repository that borrows the working copy's objects (an alternate) and holds only the refs
//! to keep, so the working copy's own refs never change. Ancestry questions go to
//! `git merge-base --is-ancestor`.

pub mod durable;
pub mod git;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use stormcell_model::error::StoreError;
use stormcell_model::ids::{Digest, Generation, Oid, RepoId, Version};
use stormcell_model::ports::{
    check_salvage_request, PushApplied, PushPayload, SalvageBundle, Snapshot, Store,
};
use stormcell_model::rows::RefUpdate;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};
use tokio::sync::Mutex;

use crate::pktline::{self, RefStatus};
use git::Git;

/// Settings every working copy gets when it is created. Objects and refs are fsynced by
/// Git itself; pushed and fetched objects always stay packs, so an object that is present
/// always comes with everything it needs (a pack appears whole or not at all).
const REPO_CONFIG: &str = "\
[core]
\tfsync = committed,derived-metadata
\tfsyncMethod = fsync
\tlogAllRefUpdates = false
[gc]
\tauto = 0
[receive]
\tunpackLimit = 1
\tautogc = false
[fetch]
\tunpackLimit = 1
[transfer]
\tunpackLimit = 1
";

/// Where a push's refs wait, as seen by receive-pack, until the push's own ref transaction
/// moves the client's refs (see `GitStore::receive`). Never part of what the store shows.
const INCOMING: &str = "refs/stormcell-incoming/";

/// The object id Git uses for "no object".
const ZERO: &str = "0000000000000000000000000000000000000000";

fn is_zero(oid: &str) -> bool {
    oid.bytes().all(|b| b == b'0')
}

/// A name for one push's staging refs, unique within this process.
fn staging_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where a peer finds the objects of a snapshot: the exporting device, by name. This is
/// what [`Snapshot::objects`] holds for this store. A name, never an address: the device
/// that imports the snapshot looks the address up itself, among the devices registered and
/// bound to the repository's service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectSource {
    /// The exporting device.
    pub device: String,
}

/// Gets the objects a working copy lacks from another device's copy of the repository.
#[async_trait]
pub trait ObjectFetcher: Send + Sync {
    /// Copies every object `wants` reach (that the refs of the repository at `into` do not
    /// already reach) from device `from`'s copy of `repo` into `into`; on success all of
    /// them are present.
    async fn fetch(
        &self,
        repo: &RepoId,
        from: &str,
        into: &Path,
        wants: &[String],
    ) -> Result<(), StoreError>;
}

/// The working copies of this device.
pub struct GitStore {
    root: PathBuf,
    /// `<data>/salvage`: one directory of bundles per repository.
    salvage: PathBuf,
    git: Git,
    device: String,
    objects: OnceLock<Arc<dyn ObjectFetcher>>,
    creating: Mutex<()>,
}

/// Checks that a repository name is safe to use as a file name.
pub fn check_name(repo: &str) -> Result<(), StoreError> {
    let ok = !repo.is_empty()
        && repo.len() <= 100
        && !repo.starts_with('.')
        && repo
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError(format!("invalid repository name {repo:?}")))
    }
}

fn io_err(what: &str, path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{what} {}: {e}", path.display()))
}

impl GitStore {
    /// Working copies of device `device` under `data_dir/repos`. Until
    /// [`GitStore::set_object_fetcher`], it cannot copy objects from other devices.
    pub fn new(data_dir: &Path, git: Git, device: &str) -> Result<Self, StoreError> {
        let root = data_dir.join("repos");
        std::fs::create_dir_all(&root).map_err(|e| io_err("cannot create", &root, e))?;
        Ok(GitStore {
            root,
            salvage: data_dir.join("salvage"),
            git,
            device: device.to_owned(),
            objects: OnceLock::new(),
            creating: Mutex::new(()),
        })
    }

    /// Where this store gets objects from other devices (set once; the daemon's needs the
    /// engine, which is built on this store).
    pub fn set_object_fetcher(&self, fetcher: Arc<dyn ObjectFetcher>) {
        let _ = self.objects.set(fetcher);
    }

    /// The path of a repository's working copy (which may not exist yet).
    pub fn path(&self, repo: &RepoId) -> Result<PathBuf, StoreError> {
        check_name(repo.as_str())?;
        Ok(self.root.join(format!("{repo}.git")))
    }

    fn version_path(&self, repo: &RepoId) -> Result<PathBuf, StoreError> {
        check_name(repo.as_str())?;
        Ok(self.root.join(format!("{repo}.version")))
    }

    /// Where the pre-write digest of a write in progress is kept (PROTOCOL.md 12).
    fn marker_path(&self, repo: &RepoId) -> Result<PathBuf, StoreError> {
        check_name(repo.as_str())?;
        Ok(self.root.join(format!("{repo}.writing")))
    }

    /// Where the count of this device's demotes its local version took note of is kept
    /// (PROTOCOL.md 12).
    fn demotes_path(&self, repo: &RepoId) -> Result<PathBuf, StoreError> {
        check_name(repo.as_str())?;
        Ok(self.root.join(format!("{repo}.demoted")))
    }

    /// Where the generation whose rows were last verified is kept (PROTOCOL.md 12).
    fn generation_path(&self, repo: &RepoId) -> Result<PathBuf, StoreError> {
        check_name(repo.as_str())?;
        Ok(self.root.join(format!("{repo}.generation")))
    }

    /// The directory of a repository's salvage bundles (which may not exist yet).
    pub fn salvage_dir(&self, repo: &RepoId) -> Result<PathBuf, StoreError> {
        check_name(repo.as_str())?;
        Ok(self.salvage.join(repo.as_str()))
    }

    /// Writes the bundle of `refs` at `file` through a scratch repository at `scratch`
    /// whose only objects are the working copy's at `path` (an alternate).
    async fn create_bundle(
        &self,
        path: &Path,
        scratch: &Path,
        file: &Path,
        refs: &BTreeMap<String, Oid>,
    ) -> Result<(), StoreError> {
        let dir = scratch
            .parent()
            .ok_or_else(|| StoreError(format!("no parent of {}", scratch.display())))?
            .to_path_buf();
        let mut cmd = self.git.command(&dir);
        cmd.args(["init", "--bare", "--quiet"]).arg(scratch);
        self.git.run_ok(cmd, b"", "git init").await?;
        let objects = std::path::absolute(path.join("objects"))
            .map_err(|e| io_err("cannot resolve", path, e))?;
        let alternates = scratch.join("objects").join("info").join("alternates");
        std::fs::write(&alternates, format!("{}\n", objects.display()))
            .map_err(|e| io_err("cannot write", &alternates, e))?;
        let mut script = String::new();
        for (name, oid) in refs {
            script.push_str(&format!("create {name} {oid}\n"));
        }
        let mut cmd = self.git.command(scratch);
        cmd.args(["update-ref", "--stdin"]);
        self.git
            .run_ok(cmd, script.as_bytes(), "setting the salvage refs")
            .await?;
        let mut cmd = self.git.command(scratch);
        cmd.args(["bundle", "create", "--quiet"]).arg(file);
        cmd.args(refs.keys());
        self.git.run_ok(cmd, b"", "git bundle create").await?;
        Ok(())
    }

    /// The refs a bundle file holds (`git bundle list-heads`), after `git bundle verify`
    /// accepted it in the working copy at `path`.
    async fn bundle_heads(
        &self,
        path: &Path,
        file: &Path,
    ) -> Result<BTreeMap<String, Oid>, StoreError> {
        let mut cmd = self.git.command(path);
        cmd.args(["bundle", "verify", "--quiet"]).arg(file);
        self.git.run_ok(cmd, b"", "git bundle verify").await?;
        let mut cmd = self.git.command(path);
        cmd.args(["bundle", "list-heads"]).arg(file);
        let out = self.git.run_ok(cmd, b"", "git bundle list-heads").await?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(oid, name)| (name.to_owned(), Oid::new(oid)))
            .collect())
    }

    /// The working copy's path, creating an empty repository first if there is none.
    pub async fn ensure(&self, repo: &RepoId) -> Result<PathBuf, StoreError> {
        let path = self.path(repo)?;
        if path.join("HEAD").exists() {
            return Ok(path);
        }
        let _one_at_a_time = self.creating.lock().await;
        if path.join("HEAD").exists() {
            return Ok(path);
        }
        // Built aside and renamed into place, so a crash never leaves half a repository.
        let tmp = self.root.join(format!(".new-{repo}"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io_err("cannot clear", &tmp, e))?;
        }
        let mut cmd = self.git.command(&self.root);
        cmd.args(["init", "--bare", "--quiet", "--initial-branch=main"])
            .arg(&tmp);
        self.git.run_ok(cmd, b"", "git init").await?;
        let config = tmp.join("config");
        let mut text =
            std::fs::read_to_string(&config).map_err(|e| io_err("cannot read", &config, e))?;
        text.push_str(REPO_CONFIG);
        std::fs::write(&config, text).map_err(|e| io_err("cannot write", &config, e))?;
        let root = self.root.clone();
        let tmp2 = tmp.clone();
        let path2 = path.clone();
        blocking(move || {
            durable::fsync_tree(&tmp2, true).map_err(|e| io_err("cannot sync", &tmp2, e))?;
            std::fs::rename(&tmp2, &path2).map_err(|e| io_err("cannot move", &tmp2, e))?;
            durable::fsync(&root).map_err(|e| io_err("cannot sync", &root, e))
        })
        .await?;
        tracing::info!(repo = %repo, path = %path.display(), "created working copy");
        Ok(path)
    }

    async fn read_refs(&self, repo: &RepoId) -> Result<BTreeMap<String, Oid>, StoreError> {
        let path = self.ensure(repo).await?;
        blocking(move || read_refs(&path)).await
    }

    /// Fetches whichever of `wanted` the working copy at `path` lacks from the device
    /// `objects` names (what [`Store::export`] put in a snapshot).
    async fn fetch_missing(
        &self,
        repo: &RepoId,
        path: &Path,
        wanted: &[&str],
        objects: &[u8],
    ) -> Result<(), StoreError> {
        let missing = self.missing_objects(path, wanted).await?;
        if missing.is_empty() {
            return Ok(());
        }
        let source: ObjectSource = serde_json::from_slice(objects)
            .map_err(|e| StoreError(format!("snapshot names no object source: {e}")))?;
        let fetcher = self.objects.get().ok_or_else(|| {
            StoreError("this store cannot fetch objects from other devices".to_owned())
        })?;
        fetcher.fetch(repo, &source.device, path, &missing).await
    }

    /// A push whose objects are on another device rather than in a pack: an operator's
    /// salvage of refs read off a demoted device's working copy. The objects are fetched
    /// from that device, then every update is applied in one compare-and-swap
    /// transaction (all or nothing).
    async fn apply_sourced_push(
        &self,
        repo: &RepoId,
        path: &Path,
        push: &PushPayload,
    ) -> Result<PushApplied, StoreError> {
        let wanted: Vec<&str> = push
            .updates
            .iter()
            .filter_map(|u| u.new.as_ref().map(Oid::as_str))
            .collect();
        // Nothing is written until the objects are here, so a source that cannot (or may
        // not) give them makes a clean refusal rather than a write of unknown outcome.
        if let Err(e) = self.fetch_missing(repo, path, &wanted, &push.pack).await {
            return Ok(PushApplied {
                accepted: false,
                reason: Some(format!("the objects could not be fetched: {e}")),
                report: Vec::new(),
            });
        }
        let out = self.update_refs(path, &push.updates).await?;
        let reason = (!out.success).then(|| {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            if stderr.is_empty() {
                "the ref transaction failed".to_owned()
            } else {
                stderr
            }
        });
        Ok(PushApplied {
            accepted: out.success,
            reason,
            report: Vec::new(),
        })
    }

    /// Applies `updates` as one compare-and-swap ref transaction: every ref is locked and
    /// checked against its expected old value at `prepare`, and only then are all moved at
    /// `commit`. Any failure aborts the transaction, leaving every ref as it was.
    async fn update_refs(
        &self,
        path: &Path,
        updates: &[RefUpdate],
    ) -> Result<git::Output, StoreError> {
        let mut script = String::from("start\n");
        for u in updates {
            let old = u.old.as_ref().map_or(ZERO, Oid::as_str);
            match &u.new {
                Some(new) => script.push_str(&format!("update {} {new} {old}\n", u.name)),
                None => script.push_str(&format!("delete {} {old}\n", u.name)),
            }
        }
        script.push_str("prepare\ncommit\n");
        let mut cmd = self.git.command(path);
        cmd.args(["update-ref", "--stdin"]);
        self.git.run(cmd, script.as_bytes()).await
    }

    /// Receives a push all or nothing (the port's contract). `git receive-pack` only
    /// receives the objects: each command is handed to it as the creation of a staging ref
    /// under [`INCOMING`], so the objects pass its quarantine and connectivity check and
    /// stay reachable. The client's refs then move in one ref transaction of our own, which
    /// also drops the staging refs, or none moves. (Receive-pack's own `atomic` mode is not
    /// enough: a command that fails its connectivity check is left out of the transaction
    /// while the others still apply.) The status report for the client is written here.
    ///
    /// The request is read twice, never held whole: its command list first, then (after
    /// the restaged command list) everything behind it streams into receive-pack.
    async fn receive(&self, path: &Path, body: PushBody<'_>) -> Result<PushApplied, StoreError> {
        let (head, rest): (Vec<u8>, Box<dyn AsyncRead + Unpin + Send + '_>) = match body {
            PushBody::Bytes(bytes) => {
                let len = pktline::push_head_len(bytes)
                    .map_err(|e| StoreError(e.to_string()))?
                    .ok_or_else(|| StoreError("the push's command list is cut short".into()))?;
                (bytes[..len].to_vec(), Box::new(&bytes[len..]))
            }
            PushBody::Spooled(file) => match read_push_head(file).await {
                Ok((head, rest)) => (head, Box::new(rest)),
                // Nothing is written yet, so the push is refused, not of unknown outcome.
                Err(e) => {
                    tracing::warn!(error = %e, "push refused: its spooled request could not be read");
                    return Ok(refused(format!("cannot read the push: {e}")));
                }
            },
        };
        let request = pktline::parse_push(&head).map_err(|e| StoreError(e.to_string()))?;
        self.drop_staging(path).await?;
        let token = staging_token();
        // Staged: (index of the command, staging ref).
        let staged: Vec<(usize, pktline::Command)> = request
            .commands
            .iter()
            .enumerate()
            .filter(|(_, c)| !is_zero(&c.new))
            .map(|(i, c)| {
                let staging = pktline::Command {
                    old: ZERO.to_owned(),
                    new: c.new.clone(),
                    name: format!("{INCOMING}{token}/{i}"),
                };
                (i, staging)
            })
            .collect();
        let mut failures: Vec<Option<String>> = vec![None; request.commands.len()];
        let mut unpack = "ok".to_owned();
        if !staged.is_empty() {
            let mut caps: Vec<String> = request
                .capabilities
                .iter()
                .filter(|c| !matches!(c.as_str(), "atomic" | "report-status-v2"))
                .cloned()
                .collect();
            // Our own reading of what receive-pack did needs its report.
            if !caps.iter().any(|c| c == "report-status") {
                caps.push("report-status".to_owned());
            }
            let commands: Vec<pktline::Command> = staged.iter().map(|(_, c)| c.clone()).collect();
            let staged_head =
                pktline::restage(&head, &commands, &caps).map_err(|e| StoreError(e.to_string()))?;
            let mut cmd = self.git.command(path);
            cmd.args(["receive-pack", "--stateless-rpc", "."]);
            let out = self
                .git
                .run_streamed(cmd, staged_head.as_slice().chain(rest))
                .await?;
            if let Some(e) = &out.input_error {
                // Receive-pack saw the pack cut short; whatever it made of that, none of
                // the client's refs has moved yet, so the push is refused as a whole.
                self.drop_staging(path).await?;
                tracing::warn!(path = %path.display(), error = %e, "push refused: its spooled request could not be read");
                return Ok(refused(format!("cannot read the pushed objects: {e}")));
            }
            let (unpacked, statuses) = pktline::parse_report(&out.stdout, request.sideband())
                .map_err(|e| StoreError(format!("receive-pack answered badly: {e}")))?;
            if !out.success && statuses.is_empty() {
                self.drop_staging(path).await?;
                return Err(StoreError(format!(
                    "receive-pack failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            unpack = unpacked;
            for (i, staging) in &staged {
                let status = statuses.iter().find(|s| match s {
                    RefStatus::Ok(n) | RefStatus::Ng(n, _) => n == &staging.name,
                });
                failures[*i] = match status {
                    Some(RefStatus::Ok(_)) if unpack == "ok" => None,
                    Some(RefStatus::Ng(_, why)) => Some(why.clone()),
                    _ => Some(format!("unpack failed: {unpack}")),
                };
            }
        }
        let mut accepted = failures.iter().all(Option::is_none);
        if accepted {
            let mut updates: Vec<RefUpdate> = request
                .commands
                .iter()
                .map(|c| RefUpdate {
                    name: c.name.clone(),
                    old: (!is_zero(&c.old)).then(|| Oid::new(c.old.as_str())),
                    new: (!is_zero(&c.new)).then(|| Oid::new(c.new.as_str())),
                })
                .collect();
            updates.extend(staged.iter().map(|(_, s)| RefUpdate {
                name: s.name.clone(),
                old: Some(Oid::new(s.new.as_str())),
                new: None,
            }));
            let out = self.update_refs(path, &updates).await?;
            if !out.success {
                accepted = false;
                let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
                for (c, failure) in request.commands.iter().zip(failures.iter_mut()) {
                    *failure = Some(if stderr.contains(&format!("'{}'", c.name)) {
                        stderr.clone()
                    } else {
                        "atomic push failure".to_owned()
                    });
                }
            }
        } else {
            for failure in failures.iter_mut().filter(|f| f.is_none()) {
                *failure = Some("atomic push failure".to_owned());
            }
        }
        if !accepted {
            self.drop_staging(path).await?;
        }
        let reason = (!accepted).then(|| {
            let mut reasons: Vec<String> = request
                .commands
                .iter()
                .zip(&failures)
                .filter_map(|(c, f)| match f.as_deref() {
                    Some("atomic push failure") | None => None,
                    Some(why) => Some(format!("{}: {why}", c.name)),
                })
                .collect();
            if unpack != "ok" && !unpack.is_empty() {
                reasons.insert(0, format!("unpack failed: {unpack}"));
            }
            if reasons.is_empty() {
                "the ref transaction failed".to_owned()
            } else {
                reasons.join("; ")
            }
        });
        let wants_report = request.has("report-status") || request.has("report-status-v2");
        let report = if wants_report {
            let statuses: Vec<(&str, Option<&str>)> = request
                .commands
                .iter()
                .zip(&failures)
                .map(|(c, f)| (c.name.as_str(), f.as_deref()))
                .collect();
            pktline::status_report(&unpack, &statuses, request.sideband())
        } else {
            Vec::new()
        };
        Ok(PushApplied {
            accepted,
            reason,
            report,
        })
    }

    /// Deletes every staging ref (left by a push that failed, or by a crash mid-push).
    async fn drop_staging(&self, path: &Path) -> Result<(), StoreError> {
        let mut cmd = self.git.command(path);
        cmd.args(["for-each-ref", "--format=delete %(refname)", INCOMING]);
        let out = self.git.run_ok(cmd, b"", "git for-each-ref").await?;
        if out.stdout.is_empty() {
            return Ok(());
        }
        let mut cmd = self.git.command(path);
        cmd.args(["update-ref", "--stdin"]);
        self.git
            .run_ok(cmd, &out.stdout, "dropping staging refs")
            .await?;
        Ok(())
    }

    async fn missing_objects(&self, path: &Path, oids: &[&str]) -> Result<Vec<String>, StoreError> {
        if oids.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = self.git.command(path);
        cmd.args(["cat-file", "--batch-check"]);
        let input: String = oids.iter().map(|o| format!("{o}\n")).collect();
        let out = self
            .git
            .run_ok(cmd, input.as_bytes(), "git cat-file")
            .await?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_suffix(" missing"))
            .map(str::to_owned)
            .collect())
    }
}

/// A push refused before any of the client's refs moved. No report: the client of a
/// refused push is answered from the refusal ([`PushApplied::reason`]).
fn refused(why: String) -> PushApplied {
    PushApplied {
        accepted: false,
        reason: Some(why),
        report: Vec::new(),
    }
}

/// Where the request of a push is: in memory (a peer's relayed push, the contract tests)
/// or in the file the HTTP front end spooled it to.
#[derive(Debug, Clone, Copy)]
enum PushBody<'a> {
    Bytes(&'a [u8]),
    Spooled(&'a Path),
}

/// How much of a spooled request is read at a time while looking for the end of its
/// command list.
const HEAD_CHUNK: usize = 64 * 1024;

/// The command list at the start of the receive-pack request spooled at `file` (its
/// closing packet included), and the file positioned right behind it, where the rest of
/// the request (push options, the pack) starts.
pub(crate) async fn read_push_head(file: &Path) -> Result<(Vec<u8>, tokio::fs::File), StoreError> {
    let mut f = tokio::fs::File::open(file)
        .await
        .map_err(|e| io_err("cannot open", file, e))?;
    let mut head = Vec::new();
    let mut chunk = vec![0u8; HEAD_CHUNK];
    let len = loop {
        if let Some(len) = pktline::push_head_len(&head).map_err(|e| StoreError(e.to_string()))? {
            break len;
        }
        let n = f
            .read(&mut chunk)
            .await
            .map_err(|e| io_err("cannot read", file, e))?;
        if n == 0 {
            return Err(StoreError(format!(
                "the push's command list in {} is cut short",
                file.display()
            )));
        }
        head.extend_from_slice(&chunk[..n]);
    };
    head.truncate(len);
    // The last read went past the command list; the rest starts right behind it.
    f.seek(std::io::SeekFrom::Start(len as u64))
        .await
        .map_err(|e| io_err("cannot seek in", file, e))?;
    Ok((head, f))
}

/// Runs blocking file-system work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError(format!("file-system task failed: {e}")))?
}

/// Every direct ref under `refs/` of the repository at `path`, read with gix (staging refs
/// left out).
pub(crate) fn read_refs(path: &Path) -> Result<BTreeMap<String, Oid>, StoreError> {
    let err = |e: &dyn std::fmt::Display| io_err("cannot read refs of", path, e);
    let repo = gix::open_opts(path, gix::open::Options::isolated()).map_err(|e| err(&e))?;
    let platform = repo.references().map_err(|e| err(&e))?;
    let mut refs = BTreeMap::new();
    for r in platform.all().map_err(|e| err(&e))? {
        let r = r.map_err(|e| err(&e))?;
        let name = r.name().as_bstr().to_string();
        if !name.starts_with("refs/") || name.starts_with(INCOMING) {
            continue;
        }
        // Symbolic refs point at other refs, which are listed themselves.
        if let Some(id) = r.target().try_id() {
            refs.insert(name, Oid::new(id.to_string()));
        }
    }
    Ok(refs)
}

#[async_trait]
impl Store for GitStore {
    async fn refs(&self, repo: &RepoId) -> Result<BTreeMap<String, Oid>, StoreError> {
        self.read_refs(repo).await
    }

    async fn apply_push(
        &self,
        repo: &RepoId,
        push: &PushPayload,
    ) -> Result<PushApplied, StoreError> {
        let path = self.ensure(repo).await?;
        if let Some(file) = &push.spool {
            return self.receive(&path, PushBody::Spooled(file)).await;
        }
        // A pkt-line body starts with four hex digits; an object source is JSON.
        if push.pack.first() == Some(&b'{') {
            return self.apply_sourced_push(repo, &path, push).await;
        }
        self.receive(&path, PushBody::Bytes(&push.pack)).await
    }

    async fn sync(&self, repo: &RepoId) -> Result<(), StoreError> {
        let path = self.ensure(repo).await?;
        blocking(move || {
            let e = |p: &Path, e: std::io::Error| io_err("cannot sync", p, e);
            durable::fsync_tree(&path.join("refs"), true).map_err(|x| e(&path, x))?;
            let packed = path.join("packed-refs");
            if packed.exists() {
                durable::fsync(&packed).map_err(|x| e(&packed, x))?;
            }
            // Object files were fsynced by Git; their directories were not.
            durable::fsync_tree(&path.join("objects"), false).map_err(|x| e(&path, x))?;
            durable::fsync(&path).map_err(|x| e(&path, x))
        })
        .await
    }

    async fn export(&self, repo: &RepoId) -> Result<Snapshot, StoreError> {
        let refs = self.read_refs(repo).await?;
        let source = ObjectSource {
            device: self.device.clone(),
        };
        let objects = serde_json::to_vec(&source).map_err(|e| StoreError(e.to_string()))?;
        Ok(Snapshot { refs, objects })
    }

    async fn import(&self, repo: &RepoId, snapshot: &Snapshot) -> Result<(), StoreError> {
        let path = self.ensure(repo).await?;
        let wanted: Vec<&str> = {
            let mut v: Vec<&str> = snapshot.refs.values().map(|o| o.as_str()).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        self.fetch_missing(repo, &path, &wanted, &snapshot.objects)
            .await?;
        let current = self.read_refs(repo).await?;
        let mut script = String::new();
        for (name, oid) in &snapshot.refs {
            if current.get(name) != Some(oid) {
                script.push_str(&format!("update {name} {oid}\n"));
            }
        }
        for name in current.keys() {
            if !snapshot.refs.contains_key(name) {
                script.push_str(&format!("delete {name}\n"));
            }
        }
        if script.is_empty() {
            return Ok(());
        }
        let mut cmd = self.git.command(&path);
        cmd.args(["update-ref", "--stdin"]);
        self.git
            .run_ok(cmd, script.as_bytes(), "git update-ref")
            .await?;
        Ok(())
    }

    async fn local_version(&self, repo: &RepoId) -> Result<Option<Version>, StoreError> {
        let path = self.version_path(repo)?;
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => text
                .trim()
                .parse::<Version>()
                .map(Some)
                .map_err(|e| io_err("corrupt version in", &path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot read", &path, e)),
        }
    }

    async fn set_local_version(&self, repo: &RepoId, version: Version) -> Result<(), StoreError> {
        let path = self.version_path(repo)?;
        blocking(move || {
            durable::write_atomic(&path, version.to_string().as_bytes())
                .map_err(|e| io_err("cannot write", &path, e))
        })
        .await
    }

    async fn demotes_seen(&self, repo: &RepoId) -> Result<u64, StoreError> {
        let path = self.demotes_path(repo)?;
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|e| io_err("corrupt demote count in", &path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err("cannot read", &path, e)),
        }
    }

    async fn forget_claim(&self, repo: &RepoId, demotes_seen: u64) -> Result<(), StoreError> {
        let version = self.version_path(repo)?;
        let demotes = self.demotes_path(repo)?;
        let root = self.root.clone();
        blocking(move || {
            match std::fs::remove_file(&version) {
                // The removal must be durable before the count says it happened.
                Ok(()) => durable::fsync(&root).map_err(|e| io_err("cannot sync", &root, e))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("cannot remove", &version, e)),
            }
            durable::write_atomic(&demotes, demotes_seen.to_string().as_bytes())
                .map_err(|e| io_err("cannot write", &demotes, e))
        })
        .await
    }

    async fn write_marker(&self, repo: &RepoId) -> Result<Option<Digest>, StoreError> {
        let path = self.marker_path(repo)?;
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map(|d| Some(Digest(d)))
                .map_err(|e| io_err("corrupt write marker in", &path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot read", &path, e)),
        }
    }

    async fn set_write_marker(&self, repo: &RepoId, pre: Option<Digest>) -> Result<(), StoreError> {
        let path = self.marker_path(repo)?;
        let root = self.root.clone();
        blocking(move || match pre {
            Some(d) => durable::write_atomic(&path, d.0.to_string().as_bytes())
                .map_err(|e| io_err("cannot write", &path, e)),
            None => match std::fs::remove_file(&path) {
                // The removal itself must survive a crash, or the marker comes back.
                Ok(()) => durable::fsync(&root).map_err(|e| io_err("cannot sync", &root, e)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err("cannot remove", &path, e)),
            },
        })
        .await
    }

    async fn verified_generation(&self, repo: &RepoId) -> Result<Option<Generation>, StoreError> {
        let path = self.generation_path(repo)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io_err("corrupt generation in", &path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot read", &path, e)),
        }
    }

    async fn set_verified_generation(
        &self,
        repo: &RepoId,
        generation: &Generation,
    ) -> Result<(), StoreError> {
        let path = self.generation_path(repo)?;
        let bytes = serde_json::to_vec(generation)
            .map_err(|e| StoreError(format!("cannot encode generation: {e}")))?;
        blocking(move || {
            durable::write_atomic(&path, &bytes).map_err(|e| io_err("cannot write", &path, e))
        })
        .await
    }

    async fn is_ancestor(
        &self,
        repo: &RepoId,
        ancestor: &Oid,
        descendant: &Oid,
    ) -> Result<bool, StoreError> {
        let path = self.ensure(repo).await?;
        let wanted = [ancestor.as_str(), descendant.as_str()];
        if !self.missing_objects(&path, &wanted).await?.is_empty() {
            return Ok(false);
        }
        let mut cmd = self.git.command(&path);
        cmd.args([
            "merge-base",
            "--is-ancestor",
            ancestor.as_str(),
            descendant.as_str(),
        ]);
        let out = self.git.run(cmd, b"").await?;
        // Exit 1 is Git's "no"; anything else but 0 is a failure to answer.
        match out.code {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(StoreError(format!(
                "git merge-base --is-ancestor {ancestor} {descendant} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
        }
    }

    async fn write_salvage_bundle(
        &self,
        repo: &RepoId,
        label: &str,
        refs: &BTreeMap<String, Oid>,
    ) -> Result<SalvageBundle, StoreError> {
        check_salvage_request(repo, label, refs)?;
        if let Some(name) = refs.keys().find(|n| !n.starts_with("refs/")) {
            return Err(StoreError(format!(
                "salvage bundle {label} of {repo}: {name:?} is not a ref under refs/"
            )));
        }
        let path = self.ensure(repo).await?;
        let wanted: Vec<&str> = refs.values().map(Oid::as_str).collect();
        let missing = self.missing_objects(&path, &wanted).await?;
        if let Some(oid) = missing.first() {
            return Err(StoreError(format!(
                "salvage bundle {label} of {repo}: missing object {oid}"
            )));
        }
        let dir = self.salvage_dir(repo)?;
        let dir2 = dir.clone();
        blocking(move || {
            std::fs::create_dir_all(&dir2).map_err(|e| io_err("cannot create", &dir2, e))
        })
        .await?;
        let scratch = dir.join(format!(".scratch-{label}.git"));
        let partial = dir.join(format!(".{label}.bundle.partial"));
        let file = dir.join(format!("{label}.bundle"));
        for leftover in [&scratch, &partial] {
            if leftover.is_dir() {
                std::fs::remove_dir_all(leftover)
                    .map_err(|e| io_err("cannot clear", leftover, e))?;
            } else if leftover.exists() {
                std::fs::remove_file(leftover).map_err(|e| io_err("cannot clear", leftover, e))?;
            }
        }
        let made = self.create_bundle(&path, &scratch, &partial, refs).await;
        let _ = std::fs::remove_dir_all(&scratch);
        if let Err(e) = made {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        // Durable before it is named: the file, then its name in the directory.
        let (partial2, file2, dir2) = (partial.clone(), file.clone(), dir.clone());
        let placed = blocking(move || {
            durable::fsync(&partial2).map_err(|e| io_err("cannot sync", &partial2, e))?;
            std::fs::rename(&partial2, &file2).map_err(|e| io_err("cannot move", &partial2, e))?;
            durable::fsync(&dir2).map_err(|e| io_err("cannot sync", &dir2, e))?;
            if let Some(parent) = dir2.parent() {
                durable::fsync(parent).map_err(|e| io_err("cannot sync", parent, e))?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        let held = self.bundle_heads(&path, &file).await?;
        if &held != refs {
            return Err(StoreError(format!(
                "salvage bundle {} holds {} ref(s), not the {} asked for",
                file.display(),
                held.len(),
                refs.len()
            )));
        }
        tracing::info!(repo = %repo, bundle = %file.display(), refs = refs.len(), "wrote salvage bundle");
        Ok(SalvageBundle {
            location: file.display().to_string(),
            refs: held,
        })
    }

    async fn salvage_bundles(&self, repo: &RepoId) -> Result<Vec<SalvageBundle>, StoreError> {
        let dir = self.salvage_dir(repo)?;
        let mut files = Vec::new();
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|e| io_err("cannot list", &dir, e))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !name.starts_with('.') && name.ends_with(".bundle") {
                        files.push(entry.path());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("cannot list", &dir, e)),
        }
        files.sort();
        let path = self.ensure(repo).await?;
        let mut out = Vec::new();
        for file in files {
            let refs = self.bundle_heads(&path, &file).await?;
            out.push(SalvageBundle {
                location: file.display().to_string(),
                refs,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A receive-pack request creating `refs/heads/main` at a new commit of `client`,
    /// and that commit.
    fn request(client: &Path) -> (Vec<u8>, String) {
        git(client, &["init", "-q"]);
        std::fs::write(client.join("f"), "content\n").expect("file");
        git(client, &["add", "f"]);
        git(client, &["commit", "-q", "-m", "one"]);
        let commit = git(client, &["rev-parse", "HEAD"]);
        let line = format!("{ZERO} {commit} refs/heads/main\0report-status\n");
        let mut body = format!("{:04x}{line}0000", line.len() + 4).into_bytes();
        let mut pack = Command::new("git")
            .arg("-C")
            .arg(client)
            .args(["pack-objects", "--stdout", "--revs", "-q"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("pack-objects");
        {
            use std::io::Write;
            let mut stdin = pack.stdin.take().expect("stdin");
            stdin
                .write_all(format!("{commit}\n").as_bytes())
                .expect("revs");
        }
        let out = pack.wait_with_output().expect("pack-objects runs");
        body.extend_from_slice(&out.stdout);
        (body, commit)
    }

    fn payload(spool: Option<PathBuf>) -> PushPayload {
        PushPayload {
            user: "alice".into(),
            updates: Vec::new(),
            pack: Vec::new(),
            spool,
        }
    }

    #[tokio::test]
    async fn a_spooled_push_applies_and_an_unreadable_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            GitStore::new(&dir.path().join("data"), Git::new("git".into()), "d1").expect("store");
        let repo = RepoId::new("R1");
        let client = dir.path().join("client");
        std::fs::create_dir_all(&client).expect("client");
        let (body, commit) = request(&client);

        // The spool file is gone (or was never there): refused, nothing written.
        let gone = store
            .apply_push(&repo, &payload(Some(dir.path().join("no-such-file"))))
            .await
            .expect("a refusal, not a failure of unknown outcome");
        assert!(!gone.accepted);
        assert!(store.refs(&repo).await.expect("refs").is_empty());

        // Cut short inside the pack: receive-pack cannot unpack it; nothing moves.
        let short = dir.path().join("short");
        std::fs::write(&short, &body[..body.len() - 30]).expect("spool");
        let cut = store
            .apply_push(&repo, &payload(Some(short)))
            .await
            .expect("applied or not");
        assert!(!cut.accepted);
        assert!(store.refs(&repo).await.expect("refs").is_empty());

        // Whole: applied, with receive-pack's report for the client.
        let whole = dir.path().join("whole");
        std::fs::write(&whole, &body).expect("spool");
        let applied = store
            .apply_push(&repo, &payload(Some(whole)))
            .await
            .expect("applied");
        assert!(applied.accepted, "{:?}", applied.reason);
        assert!(String::from_utf8_lossy(&applied.report).contains("ok refs/heads/main"));
        assert_eq!(
            store
                .refs(&repo)
                .await
                .expect("refs")
                .get("refs/heads/main"),
            Some(&Oid::new(commit))
        );
    }
}
