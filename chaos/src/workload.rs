//! The workload: stock `git` clients pushing real commits and reading (ls-remote, clone)
//! against the devices' Git endpoints, every operation recorded with its invocation and
//! completion in the simulator's history format (`stormcell_harness::history`).
//!
//! A commit pushed to a ref always has the value the client expects there as its only
//! parent (or none when it creates the ref), which is the ancestry the checkers derive
//! from the history. Each client draws its choices (operation, repository, device,
//! branches, pauses) from its own stream of the seed, as the simulator's clients do;
//! what it learns from the cluster still steers it, so runs are not bit-identical.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use stormcell_harness::history::{
    ErrorKind, FaultEvent, FaultKind, OpKind, Operation, OperatorAction, Outcome, Phase, RefUpdate,
    Refs,
};

use crate::error::{io, ChaosError, Result};
use crate::node::{TOKEN, USER};

/// A Git command with no prompts and no credential helpers, in `dir`.
pub fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C")
        .arg(dir)
        .args(["-c", "credential.helper=", "-c", "protocol.version=2"])
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR");
    c
}

/// Turns what `git` printed into an outcome: the daemon's refusal codes
/// (`stormcell: CODE: ...`), Git's own compare-and-swap refusals, connection failures
/// before anything was sent; anything else is unknown (the write may have landed).
pub fn classify(ok: bool, stderr: &str) -> Outcome {
    if ok {
        return Outcome::Ok {
            refs: None,
            possibly_stale: false,
        };
    }
    let message = stderr.trim().to_owned();
    if let Some(pos) = stderr.find("stormcell: ") {
        let code = stderr[pos + 11..].split(':').next().unwrap_or("").trim();
        let error = match code {
            "write-interruption" => ErrorKind::WriteInterruption,
            "leader-lost" => ErrorKind::LeaderLost,
            "ambiguous-leader" => ErrorKind::AmbiguousLeader,
            "not-bound" => ErrorKind::NotBound,
            "lock-timeout" => ErrorKind::LockTimeout,
            "rejected" => ErrorKind::Rejected,
            "database-unavailable" => ErrorKind::DatabaseUnavailable,
            "maintenance" => ErrorKind::Maintenance,
            "read-only" => ErrorKind::ReadOnly,
            "not-found" | "internal" => ErrorKind::Other,
            _ => return Outcome::Unknown { reason: message },
        };
        return Outcome::Refused { error, message };
    }
    let rejected = [
        "[rejected]",
        "stale info",
        "fetch first",
        "non-fast-forward",
        "failed to update ref",
    ];
    if rejected.iter().any(|r| stderr.contains(r)) {
        return Outcome::Refused {
            error: ErrorKind::Rejected,
            message,
        };
    }
    if stderr.contains("Failed to connect") || stderr.contains("Couldn't connect") {
        return Outcome::Refused {
            error: ErrorKind::Unreachable,
            message,
        };
    }
    Outcome::Unknown { reason: message }
}

/// A device as the clients see it: its name and Git port.
#[derive(Debug, Clone)]
pub struct Target {
    /// The device.
    pub device: String,
    /// Its Git endpoint's port.
    pub http_port: u16,
}

impl Target {
    fn url(&self, repo: &str) -> String {
        format!(
            "http://{USER}:{TOKEN}@127.0.0.1:{}/{repo}.git",
            self.http_port
        )
    }
}

/// The record of a run: operations and faults, on one clock started with it, and the
/// scratch repository every client makes its commits in (so every client has every
/// commit it may name as a parent).
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Operation>>,
    faults: Mutex<Vec<FaultEvent>>,
    operator: Mutex<Vec<OperatorAction>>,
    dir: PathBuf,
    scratch: PathBuf,
    empty_tree: String,
    commits: AtomicU64,
    scratch_files: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Recorder {
    /// A recorder whose clients work in `dir` (created).
    pub fn new(dir: &Path) -> Result<Recorder> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let scratch = dir.join("scratch.git");
        run_git(
            Command::new("git")
                .args(["init", "-q", "--bare"])
                .arg(&scratch),
        )?;
        run_git(git(&scratch).args(["config", "gc.auto", "0"]))?;
        let empty_tree = run_git(git(&scratch).args(["mktree"]))?.trim().to_owned();
        Ok(Recorder {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            operator: Mutex::new(Vec::new()),
            dir: dir.to_owned(),
            scratch,
            empty_tree,
            commits: AtomicU64::new(0),
            scratch_files: AtomicU64::new(0),
        })
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records a fault event now.
    pub fn fault(&self, kind: FaultKind, hosts: Vec<String>, detail: &str) {
        let at_ms = self.now_ms();
        lock(&self.faults).push(FaultEvent {
            at_ms,
            kind,
            hosts,
            detail: detail.to_owned(),
        });
    }

    /// Records what the operator did.
    pub fn operator(&self, action: OperatorAction) {
        lock(&self.operator).push(action);
    }

    /// Everything recorded so far: operations in invocation order, faults in time order,
    /// operator actions in order.
    pub fn take(&self) -> (Vec<Operation>, Vec<FaultEvent>, Vec<OperatorAction>) {
        let ops = lock(&self.ops).clone();
        let mut faults = lock(&self.faults).clone();
        faults.sort_by_key(|f| f.at_ms);
        (ops, faults, lock(&self.operator).clone())
    }

    /// A new commit whose only parent is `parent` (a root commit without one).
    pub fn commit(&self, parent: Option<&str>) -> Result<String> {
        let n = self.commits.fetch_add(1, Ordering::Relaxed) + 1;
        let mut c = git(&self.scratch);
        c.args([
            "commit-tree",
            &self.empty_tree,
            "-m",
            &format!("commit {n}"),
        ])
        .env("GIT_AUTHOR_NAME", USER)
        .env("GIT_AUTHOR_EMAIL", "alice@example.com")
        .env("GIT_COMMITTER_NAME", USER)
        .env("GIT_COMMITTER_EMAIL", "alice@example.com");
        if let Some(p) = parent {
            c.args(["-p", p]);
        }
        Ok(run_git(&mut c)?.trim().to_owned())
    }

    /// Registers an operation as invoked now; its outcome is unknown until completed.
    fn invoke(&self, client: &str, target: &Target, repo: &str, phase: Phase, kind: OpKind) -> u64 {
        let mut ops = lock(&self.ops);
        let id = ops.len() as u64 + 1;
        ops.push(Operation {
            id,
            client: client.to_owned(),
            device: target.device.clone(),
            repo: repo.to_owned(),
            phase,
            invoked_ms: self.now_ms(),
            completed_ms: 0,
            kind,
            outcome: Outcome::Unknown {
                reason: "never completed".to_owned(),
            },
        });
        id
    }

    fn complete(&self, id: u64, outcome: Outcome) {
        let now = self.now_ms();
        if let Some(op) = lock(&self.ops).iter_mut().find(|o| o.id == id) {
            op.completed_ms = now;
            op.outcome = outcome;
        }
    }

    fn scratch_path(&self, what: &str) -> PathBuf {
        let n = self.scratch_files.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{what}-{n}"))
    }

    /// Pushes each `(ref, old, new)` of `updates` (atomically when there are several),
    /// each expecting its ref at `old`, and records the push.
    pub fn push(
        &self,
        client: &str,
        target: &Target,
        repo: &str,
        updates: &[RefUpdate],
        phase: Phase,
        timeout: Duration,
    ) -> Outcome {
        let id = self.invoke(
            client,
            target,
            repo,
            phase,
            OpKind::Push {
                updates: updates.to_vec(),
            },
        );
        let mut c = git(&self.scratch);
        c.args(["push", "--porcelain"]);
        if updates.len() > 1 {
            c.arg("--atomic");
        }
        for u in updates {
            c.arg(format!(
                "--force-with-lease={}:{}",
                u.name,
                u.old.as_deref().unwrap_or("")
            ));
        }
        c.arg(target.url(repo));
        for u in updates {
            c.arg(format!("{}:{}", u.new, u.name));
        }
        let outcome = match run_bounded(c, timeout) {
            Ok(out) => classify(out.status.success(), &both(&out)),
            Err(reason) => Outcome::Unknown { reason },
        };
        self.complete(id, outcome.clone());
        outcome
    }

    /// Reads every ref of `repo` on `target`: `git clone --mirror` when `clone` is set
    /// (the pack's side band carries the daemon's possibly-stale notice), else `git
    /// ls-remote` (the notice is a response header, found in Git's curl trace).
    pub fn read(
        &self,
        client: &str,
        target: &Target,
        repo: &str,
        clone: bool,
        phase: Phase,
        timeout: Duration,
    ) -> Outcome {
        let id = self.invoke(client, target, repo, phase, OpKind::Read);
        let outcome = if clone {
            self.clone_refs(target, repo, timeout)
        } else {
            self.ls_remote(target, repo, timeout)
        };
        self.complete(id, outcome.clone());
        outcome
    }

    fn ls_remote(&self, target: &Target, repo: &str, timeout: Duration) -> Outcome {
        let trace = self.scratch_path("curl-trace");
        let mut c = git(&self.scratch);
        c.args(["ls-remote", &target.url(repo)])
            .env("GIT_TRACE_CURL", &trace)
            .env("GIT_TRACE_CURL_NO_DATA", "1");
        let result = run_bounded(c, timeout);
        let headers = std::fs::read_to_string(&trace).unwrap_or_default();
        let _ = std::fs::remove_file(&trace);
        let out = match result {
            Ok(out) => out,
            Err(reason) => return Outcome::Unknown { reason },
        };
        let mut outcome = classify(out.status.success(), &String::from_utf8_lossy(&out.stderr));
        if let Outcome::Ok {
            refs,
            possibly_stale,
        } = &mut outcome
        {
            *possibly_stale = headers
                .to_ascii_lowercase()
                .contains("x-stormcell-possibly-stale: 1");
            *refs = Some(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| l.split_once('\t'))
                    .filter(|(_, r)| r.starts_with("refs/") && !r.ends_with("^{}"))
                    .map(|(o, r)| (r.to_owned(), o.to_owned()))
                    .collect(),
            );
        }
        outcome
    }

    fn clone_refs(&self, target: &Target, repo: &str, timeout: Duration) -> Outcome {
        let into = self.scratch_path("clone");
        let mut c = git(&self.dir);
        c.args(["clone", "-q", "--mirror", &target.url(repo)])
            .arg(&into);
        let outcome = match run_bounded(c, timeout) {
            Ok(out) => {
                let text = both(&out);
                let mut outcome = classify(out.status.success(), &text);
                if let Outcome::Ok {
                    refs,
                    possibly_stale,
                } = &mut outcome
                {
                    *possibly_stale = text.contains("this read may be stale");
                    *refs = Some(crate::node::refs_at(&into));
                }
                outcome
            }
            Err(reason) => Outcome::Unknown { reason },
        };
        let _ = std::fs::remove_dir_all(&into);
        outcome
    }
}

fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_git(c: &mut Command) -> Result<String> {
    crate::postgres::run(c)
}

/// Runs `command` with its output captured, killing it (`kill -9`) past `timeout`; the
/// error says it timed out.
fn run_bounded(mut command: Command, timeout: Duration) -> std::result::Result<Output, String> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run git: {e}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(format!("git did not finish: {e}")),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
            let _ = rx.recv_timeout(Duration::from_secs(5));
            Err(format!(
                "no answer within {:.1}s: gave up",
                timeout.as_secs_f64()
            ))
        }
    }
}

/// What one workload client does, drawn from its seeded stream.
#[derive(Debug, Clone)]
pub struct ClientPlan {
    /// Its name in the history (`client1`, ...).
    pub name: String,
    /// Devices it reads from (and pushes to, unless `push_to` says otherwise).
    pub targets: Vec<Target>,
    /// Devices it pushes to, when not every device.
    pub push_to: Vec<Target>,
    /// Repositories.
    pub repos: Vec<String>,
    /// The branches pushes update (`refs/heads/b0`, ...).
    pub branches: Vec<String>,
    /// How many refs one push updates, drawn per push.
    pub refs_per_push: (u32, u32),
    /// Relative weights of pushes and reads.
    pub weights: (u32, u32),
    /// Pause between operations, milliseconds, drawn per operation.
    pub think_ms: (u64, u64),
    /// How long it waits for an answer before recording the outcome as unknown.
    pub timeout: Duration,
    /// When it stops starting operations (milliseconds since the run started).
    pub until_ms: u64,
}

/// Runs one client until `plan.until_ms` or until `stop` is set.
pub fn run_client(
    plan: &ClientPlan,
    mut rng: ChaCha8Rng,
    recorder: &Recorder,
    stop: &AtomicBool,
) -> Result<()> {
    // What the client believes each branch holds, per repository.
    let mut known: BTreeMap<(String, String), Option<String>> = BTreeMap::new();
    let mut reread: Option<String> = None;
    let pick = |rng: &mut ChaCha8Rng, n: usize| rng.random_range(0..n.max(1));
    if plan.targets.is_empty() || plan.repos.is_empty() || plan.branches.is_empty() {
        return Err(ChaosError::Setup(format!(
            "{}: nothing to work on",
            plan.name
        )));
    }
    loop {
        let think = rng.random_range(plan.think_ms.0..=plan.think_ms.1.max(plan.think_ms.0));
        std::thread::sleep(Duration::from_millis(think));
        if stop.load(Ordering::Relaxed) || recorder.now_ms() >= plan.until_ms {
            return Ok(());
        }
        let (pw, rw) = plan.weights;
        let push = rng.random_range(0..(pw + rw).max(1)) < pw;
        let repo = plan.repos[pick(&mut rng, plan.repos.len())].clone();
        // After a push it could not judge, the client looks before it pushes again.
        let (push, repo) = match reread.take() {
            Some(r) => (false, r),
            None => (push, repo),
        };
        let targets = if push && !plan.push_to.is_empty() {
            &plan.push_to
        } else {
            &plan.targets
        };
        let target = &targets[pick(&mut rng, targets.len())];
        if push {
            let n = rng
                .random_range(plan.refs_per_push.0..=plan.refs_per_push.1.max(plan.refs_per_push.0))
                .clamp(1, plan.branches.len() as u32) as usize;
            let mut branches = plan.branches.clone();
            let mut updates = Vec::new();
            for _ in 0..n {
                let name = branches.remove(pick(&mut rng, branches.len()));
                let old = known.get(&(repo.clone(), name.clone())).cloned().flatten();
                let new = recorder.commit(old.as_deref())?;
                updates.push(RefUpdate { name, old, new });
            }
            let outcome = recorder.push(
                &plan.name,
                target,
                &repo,
                &updates,
                Phase::Workload,
                plan.timeout,
            );
            if outcome.is_ok() {
                for u in updates {
                    known.insert((repo.clone(), u.name), Some(u.new));
                }
            } else {
                reread = Some(repo);
            }
        } else {
            let clone = rng.random_bool(0.5);
            let outcome = recorder.read(
                &plan.name,
                target,
                &repo,
                clone,
                Phase::Workload,
                plan.timeout,
            );
            if let Outcome::Ok {
                refs: Some(refs), ..
            } = &outcome
            {
                learn(&mut known, &repo, &plan.branches, refs);
            }
        }
    }
}

fn learn(
    known: &mut BTreeMap<(String, String), Option<String>>,
    repo: &str,
    branches: &[String],
    refs: &Refs,
) {
    for b in branches {
        known.insert((repo.to_owned(), b.clone()), refs.get(b).cloned());
    }
}
