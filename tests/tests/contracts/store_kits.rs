//! The two adapters of the working-copy port under the suite in `store.rs`: the
//! simulator's `SimStore` and the daemon's `GitStore`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use stormcell_harness::store::{encode_commits, Commit, SimStore};
use stormcell_model::ids::Oid;
use stormcell_model::ports::PushPayload;
use stormcell_model::rows::RefUpdate;
use stormcell_node::pktline;
use stormcell_node::store::git::Git;
use stormcell_node::store::{GitStore, ObjectFetcher};

use crate::store::StoreKit;

/// Simulated working copies; a restart is a crash (which keeps exactly what was synced).
#[derive(Default)]
pub struct SimKit {
    commits: BTreeMap<String, Commit>,
    next: u64,
    crashes: u64,
}

impl SimKit {
    /// The commit and its ancestors the kit made.
    fn history(&self, id: &str) -> Vec<Commit> {
        let mut out = Vec::new();
        let mut at = self.commits.get(id);
        while let Some(c) = at {
            out.push(c.clone());
            at = c.parent.as_deref().and_then(|p| self.commits.get(p));
        }
        out.reverse();
        out
    }
}

impl StoreKit for SimKit {
    type S = SimStore;

    fn device(&mut self) -> SimStore {
        SimStore::new()
    }

    fn restart(&mut self, store: SimStore) -> SimStore {
        self.crashes += 1;
        store.crash(&mut ChaCha8Rng::seed_from_u64(self.crashes));
        store
    }

    fn commit(&mut self, parent: Option<&Oid>) -> Oid {
        self.next += 1;
        let id = format!("c{}", self.next);
        let c = Commit::new(id.clone(), parent.map(Oid::as_str));
        self.commits.insert(id.clone(), c);
        Oid::new(id)
    }

    fn payload(&mut self, updates: Vec<RefUpdate>) -> PushPayload {
        let mut commits: Vec<Commit> = Vec::new();
        for u in &updates {
            if let Some(new) = &u.new {
                for c in self.history(new.as_str()) {
                    if !commits.contains(&c) {
                        commits.push(c);
                    }
                }
            }
        }
        PushPayload {
            user: "alice".to_owned(),
            updates,
            pack: encode_commits(&commits),
            spool: None,
        }
    }

    fn unknown_oid(&self) -> Oid {
        Oid::new("nowhere")
    }
}

/// Bare repositories on disk driven by the `git` binary. Commits are made in a scratch
/// repository (the "client") and pushed in Git's own receive-pack request format, as the
/// daemon's HTTP front end hands them to the store.
pub struct GitKit {
    dir: tempfile::TempDir,
    bench: PathBuf,
    devices: u32,
    next: u64,
}

const ZERO: &str = "0000000000000000000000000000000000000000";

fn git(dir: &Path, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "contract")
        .env("GIT_AUTHOR_EMAIL", "contract@example.invalid")
        .env("GIT_COMMITTER_NAME", "contract")
        .env("GIT_COMMITTER_EMAIL", "contract@example.invalid")
        .env("GIT_AUTHOR_DATE", "1700000000 +0000")
        .env("GIT_COMMITTER_DATE", "1700000000 +0000")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("git reads its input");
    let out = child.wait_with_output().expect("git finishes");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl GitKit {
    /// A kit in a new temporary directory.
    pub fn new() -> GitKit {
        let dir = tempfile::tempdir().expect("tempdir");
        let bench = dir.path().join("client.git");
        let status = Command::new("git")
            .args(["init", "--bare", "--quiet"])
            .arg(&bench)
            .status()
            .expect("git init runs");
        assert!(status.success(), "git init failed");
        GitKit {
            dir,
            bench,
            devices: 0,
            next: 0,
        }
    }

    fn open(&self, data: &Path) -> GitStore {
        // A snapshot names the device it came from; the kit's devices are directories
        // side by side, so objects are fetched from the named one's directory.
        let device = data
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a UTF-8 device directory");
        let store = GitStore::new(data, Git::new(PathBuf::from("git")), device)
            .expect("a store in a new directory");
        store.set_object_fetcher(std::sync::Arc::new(SideBySide {
            root: self.dir.path().to_owned(),
        }));
        store
    }

    fn data_dir(&self, store: &GitStore) -> PathBuf {
        // `<data>/repos/R1.git` is where the store keeps R1.
        let path = store
            .path(&stormcell_model::ids::RepoId::new("R1"))
            .expect("a valid name");
        path.parent()
            .and_then(Path::parent)
            .expect("the data directory")
            .to_owned()
    }
}

/// Fetches objects from the kit's other devices, with Git's local transport.
struct SideBySide {
    root: PathBuf,
}

#[async_trait::async_trait]
impl ObjectFetcher for SideBySide {
    async fn fetch(
        &self,
        repo: &stormcell_model::ids::RepoId,
        from: &str,
        into: &Path,
        wants: &[String],
    ) -> Result<(), stormcell_model::error::StoreError> {
        let source = self
            .root
            .join(from)
            .join("repos")
            .join(format!("{repo}.git"));
        let input: String = wants.iter().map(|o| format!("{o}\n")).collect();
        let mut child = tokio::process::Command::new("git")
            .arg("-C")
            .arg(into)
            .args([
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-write-fetch-head",
                "--stdin",
            ])
            .arg(&source)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| stormcell_model::error::StoreError(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            // A fetch that exits early reports why in its status.
            let _ = stdin.write_all(input.as_bytes()).await;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| stormcell_model::error::StoreError(e.to_string()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(stormcell_model::error::StoreError(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        }
    }
}

impl StoreKit for GitKit {
    type S = GitStore;

    fn device(&mut self) -> GitStore {
        self.devices += 1;
        let data = self.dir.path().join(format!("device{}", self.devices));
        self.open(&data)
    }

    fn restart(&mut self, store: GitStore) -> GitStore {
        let data = self.data_dir(&store);
        drop(store);
        self.open(&data)
    }

    fn commit(&mut self, parent: Option<&Oid>) -> Oid {
        self.next += 1;
        let tree = String::from_utf8(git(&self.bench, &["mktree"], b"")).expect("hex");
        let message = format!("commit {}", self.next);
        let mut args = vec!["commit-tree", tree.trim(), "-m", &message];
        if let Some(p) = parent {
            args.extend(["-p", p.as_str()]);
        }
        let id = String::from_utf8(git(&self.bench, &args, b"")).expect("hex");
        Oid::new(id.trim())
    }

    fn payload(&mut self, updates: Vec<RefUpdate>) -> PushPayload {
        let mut body = Vec::new();
        for (i, u) in updates.iter().enumerate() {
            let old = u.old.as_ref().map_or(ZERO, Oid::as_str);
            let new = u.new.as_ref().map_or(ZERO, Oid::as_str);
            let caps = if i == 0 {
                "\0report-status side-band-64k agent=contract"
            } else {
                ""
            };
            pktline::write(
                &mut body,
                format!("{old} {new} {}{caps}\n", u.name).as_bytes(),
            );
        }
        pktline::flush(&mut body);
        // Like a Git client: a pack unless every command deletes; it holds what the kit
        // has of each new value's history.
        if updates.iter().any(|u| u.new.is_some()) {
            let mut revs = String::new();
            for new in updates.iter().filter_map(|u| u.new.as_ref()) {
                let known = Command::new("git")
                    .arg("-C")
                    .arg(&self.bench)
                    .args(["cat-file", "-e", new.as_str()])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if known {
                    revs.push_str(&format!("{new}\n"));
                }
            }
            let pack = git(
                &self.bench,
                &["pack-objects", "--stdout", "--revs", "--quiet"],
                revs.as_bytes(),
            );
            body.extend_from_slice(&pack);
        }
        PushPayload {
            user: "alice".to_owned(),
            updates,
            spool: None,
            pack: body,
        }
    }

    fn unknown_oid(&self) -> Oid {
        Oid::new("0123456789abcdef0123456789abcdef01234567")
    }
}
