//! A stock `git` client that records what it did and saw as a history in the simulator's
//! format (`stormcell_harness::history`), so the simulator's checkers judge real runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use stormcell_harness::history::{
    ErrorKind, FaultEvent, FaultKind, FinalExpectation, FinalState, History, OpKind, Operation,
    OperatorAction, Outcome, Phase, RefUpdate, RepositoryStart,
};
use stormcell_model::admin::ThawOutcome;

use super::Node;

// The chaos runner's client drives `git` and reads its answers the same way.
pub use stormcell_chaos::workload::{classify, git};

/// A push still running in the background.
pub struct PendingPush {
    child: Child,
    op: Operation,
}

/// Makes commits, pushes and reads, and records them.
pub struct Recorder {
    start: Instant,
    scratch: PathBuf,
    history: History,
    commits: u64,
}

impl Recorder {
    /// A client working in `dir`, against `devices`, on repository `repo` (created empty,
    /// with version rows).
    pub fn new(dir: &Path, scenario: &str, devices: &[&Node], repo: &str) -> Recorder {
        std::fs::create_dir_all(dir).expect("client dir");
        let scratch = dir.join("scratch");
        let out = Command::new("git")
            .args(["init", "-q"])
            .arg(&scratch)
            .output()
            .expect("git init");
        assert!(out.status.success());
        Recorder {
            start: Instant::now(),
            scratch,
            commits: 0,
            history: History {
                scenario: scenario.to_owned(),
                seed: 0,
                profile: "stormcell".to_owned(),
                devices: devices.iter().map(|n| n.name.clone()).collect(),
                repositories: vec![RepositoryStart {
                    name: repo.to_owned(),
                    initial_refs: BTreeMap::new(),
                    has_rows: true,
                }],
                ops: Vec::new(),
                faults: Vec::new(),
                database: None,
                operator: Vec::new(),
                expect: FinalExpectation::Converged,
                availability: Default::default(),
                final_state: FinalState::default(),
            },
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// A new commit whose parent is `parent` (a root commit without one).
    pub fn commit(&mut self, parent: Option<&str>) -> String {
        self.commits += 1;
        let tree = run_ok(git(&self.scratch).args(["mktree"]).stdin(Stdio::null()));
        let mut c = git(&self.scratch);
        c.args([
            "commit-tree",
            tree.trim(),
            "-m",
            &format!("commit {}", self.commits),
        ])
        .env("GIT_AUTHOR_NAME", "alice")
        .env("GIT_AUTHOR_EMAIL", "alice@example.com")
        .env("GIT_COMMITTER_NAME", "alice")
        .env("GIT_COMMITTER_EMAIL", "alice@example.com");
        if let Some(p) = parent {
            c.args(["-p", p]);
        }
        run_ok(&mut c).trim().to_owned()
    }

    fn push_command(
        &self,
        node: &Node,
        repo: &str,
        name: &str,
        old: Option<&str>,
        new: &str,
    ) -> Command {
        let mut c = git(&self.scratch);
        c.args(["push", "--porcelain"])
            .arg(format!("--force-with-lease={name}:{}", old.unwrap_or("")))
            .arg(node.url(repo))
            .arg(format!("{new}:{name}"));
        c
    }

    fn op(&self, node: &Node, repo: &str, phase: Phase, kind: OpKind) -> Operation {
        Operation {
            id: self.history.ops.len() as u64 + 1,
            client: "git".to_owned(),
            device: node.name.clone(),
            repo: repo.to_owned(),
            phase,
            invoked_ms: self.now(),
            completed_ms: 0,
            kind,
            outcome: Outcome::Unknown {
                reason: "running".to_owned(),
            },
        }
    }

    fn push_kind(name: &str, old: Option<&str>, new: &str) -> OpKind {
        OpKind::Push {
            updates: vec![RefUpdate {
                name: name.to_owned(),
                old: old.map(str::to_owned),
                new: new.to_owned(),
            }],
        }
    }

    /// Pushes `new` to `name` on `node` every half second until it is acknowledged, while
    /// the only refusal is read-only (the device recovering from a lost primary); fails
    /// on any other outcome or after two minutes.
    pub fn push_until_writable(
        &mut self,
        node: &Node,
        repo: &str,
        name: &str,
        old: Option<&str>,
        new: &str,
    ) {
        let start = Instant::now();
        loop {
            let (o, text) = self.push(node, repo, name, old, new, Phase::Workload);
            if o.is_ok() {
                return;
            }
            assert!(
                matches!(
                    o,
                    Outcome::Refused {
                        error: ErrorKind::ReadOnly,
                        ..
                    }
                ),
                "only the read-only refusal while recovering: {text}"
            );
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "writes never came back: {text}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Pushes `new` to ref `name` on `node`, expecting the ref at `old`.
    pub fn push(
        &mut self,
        node: &Node,
        repo: &str,
        name: &str,
        old: Option<&str>,
        new: &str,
        phase: Phase,
    ) -> (Outcome, String) {
        let mut op = self.op(node, repo, phase, Self::push_kind(name, old, new));
        let out = self
            .push_command(node, repo, name, old, new)
            .output()
            .expect("git push runs");
        let text = both(&out);
        op.completed_ms = self.now();
        op.outcome = classify(out.status.success(), &text);
        let outcome = op.outcome.clone();
        self.history.ops.push(op);
        (outcome, text)
    }

    /// Starts a push in the background.
    pub fn start_push(
        &mut self,
        node: &Node,
        repo: &str,
        name: &str,
        old: Option<&str>,
        new: &str,
    ) -> PendingPush {
        let op = self.op(node, repo, Phase::Workload, Self::push_kind(name, old, new));
        let child = self
            .push_command(node, repo, name, old, new)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("git push starts");
        // Reserve the id now: operations are listed in invocation order.
        self.history.ops.push(op.clone());
        PendingPush { child, op }
    }

    /// Waits for a background push and records how it ended.
    pub fn finish_push(&mut self, pending: PendingPush) -> (Outcome, String) {
        let out = pending.child.wait_with_output().expect("git push ends");
        let text = both(&out);
        let outcome = classify(out.status.success(), &text);
        let completed = self.now();
        if let Some(op) = self.history.ops.iter_mut().find(|o| o.id == pending.op.id) {
            op.completed_ms = completed;
            op.outcome = outcome.clone();
        }
        (outcome, text)
    }

    /// Lists every ref of `repo` on `node` (a read: the device syncs first).
    pub fn read(&mut self, node: &Node, repo: &str, phase: Phase) -> (Outcome, String) {
        let mut op = self.op(node, repo, phase, OpKind::Read);
        let out = git(&self.scratch)
            .args(["ls-remote", &node.url(repo)])
            .output()
            .expect("git ls-remote runs");
        let text = both(&out);
        op.completed_ms = self.now();
        op.outcome = classify(out.status.success(), &text);
        if let Outcome::Ok { refs, .. } = &mut op.outcome {
            *refs = Some(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| l.split_once('\t'))
                    .filter(|(_, r)| r.starts_with("refs/") && !r.ends_with("^{}"))
                    .map(|(o, r)| (r.to_owned(), o.to_owned()))
                    .collect(),
            );
        }
        let outcome = op.outcome.clone();
        self.history.ops.push(op);
        (outcome, text)
    }

    /// Clones `repo` from `node` (a read, like [`Recorder::read`], but with a pack, so the
    /// server's side-band lines reach the client): the refs are those the clone got, and
    /// the read counts as possibly stale when Git printed the server's notice.
    pub fn clone(&mut self, node: &Node, repo: &str, phase: Phase) -> (Outcome, String) {
        let mut op = self.op(node, repo, phase, OpKind::Read);
        let target = self.scratch.join(format!("clone-{}", op.id));
        let out = git(&self.scratch)
            .args(["clone", "--mirror", &node.url(repo)])
            .arg(&target)
            .output()
            .expect("git clone runs");
        let text = both(&out);
        op.completed_ms = self.now();
        op.outcome = classify(out.status.success(), &text);
        if let Outcome::Ok {
            refs,
            possibly_stale,
        } = &mut op.outcome
        {
            *possibly_stale = text.contains("this read may be stale");
            *refs = Some(super::refs_at(&target));
        }
        let outcome = op.outcome.clone();
        self.history.ops.push(op);
        (outcome, text)
    }

    /// Tells the checkers which database hosts the run had.
    pub fn database_hosts(&mut self, primary: &str, replicas: &[&str]) {
        self.history.database = Some(stormcell_harness::history::DatabaseHosts {
            primary: primary.to_owned(),
            replicas: replicas.iter().map(|r| (*r).to_owned()).collect(),
            health_flips: Vec::new(),
        });
    }

    /// Milliseconds since the history started.
    pub fn now_ms(&self) -> u64 {
        self.now()
    }

    /// Records an operator command that started at `started_ms`; a thaw's JSON outcome
    /// (`stormcell repository thaw --json`) gives the rows it changed and the plan it
    /// printed, as the simulator's operator records them.
    pub fn operator(
        &mut self,
        started_ms: u64,
        command: &str,
        ok: bool,
        result: &str,
        thaw: Option<&ThawOutcome>,
    ) {
        let mut action = OperatorAction {
            applied_ms: None,
            started_ms,
            completed_ms: self.now(),
            command: command.to_owned(),
            ok,
            result: result.to_owned(),
            demoted: Vec::new(),
            promoted: Vec::new(),
            plan: None,
        };
        if let Some(outcome) = thaw {
            action.record_thaw(outcome);
        }
        self.history.operator.push(action);
    }

    /// Records a fault on `host`.
    pub fn fault(&mut self, kind: FaultKind, host: &str, detail: &str) {
        let at_ms = self.now();
        self.history.faults.push(FaultEvent {
            at_ms,
            kind,
            hosts: vec![host.to_owned()],
            detail: detail.to_owned(),
        });
    }

    /// The final probes: one push (to a ref of each device's own) and one read per device;
    /// then the working copies' refs as the final state.
    pub fn final_phase(&mut self, nodes: &[&Node], repo: &str) {
        let failed = self.try_final_phase(nodes, repo);
        assert!(
            failed.is_empty(),
            "final probes failed:\n{}",
            failed.join("\n")
        );
    }

    /// Like [`Recorder::final_phase`], returning the probes that failed instead of
    /// failing the test (for runs with a planted bug, where the checkers judge).
    pub fn try_final_phase(&mut self, nodes: &[&Node], repo: &str) -> Vec<String> {
        let mut failed = Vec::new();
        for node in nodes {
            let c = self.commit(None);
            let (o, text) = self.push(
                node,
                repo,
                &format!("refs/heads/final-{}", node.name),
                None,
                &c,
                Phase::Final,
            );
            if !o.is_ok() {
                failed.push(format!("final push on {} failed: {text}", node.name));
            }
        }
        for node in nodes {
            let (o, text) = self.read(node, repo, Phase::Final);
            if !o.is_ok() {
                failed.push(format!("final read on {} failed: {text}", node.name));
            }
        }
        self.history.final_state = FinalState {
            active_devices: nodes.iter().map(|n| n.name.clone()).collect(),
            refs: nodes
                .iter()
                .map(|n| {
                    let mut repos = BTreeMap::new();
                    repos.insert(repo.to_owned(), n.disk_refs(repo));
                    (n.name.clone(), repos)
                })
                .collect(),
        };
        failed
    }

    /// Writes the history to `path` and returns every failing checker's verdict.
    pub fn violations(&self, path: &Path) -> Vec<String> {
        let json = serde_json::to_string_pretty(&self.history).expect("history serializes");
        std::fs::write(path, json).expect("history written");
        stormcell_harness::checker::check_all(&self.history)
            .iter()
            .filter(|v| !v.passed())
            .map(|v| v.to_string())
            .collect()
    }

    /// Runs the simulator's checkers on the history (also written to `path` for
    /// `stormcell-sim check`), and fails the test on any violation.
    pub fn check(&self, path: &Path) {
        let failed = self.violations(path);
        assert!(
            failed.is_empty(),
            "checkers failed on {}:\n{}",
            path.display(),
            failed.join("\n")
        );
        eprintln!(
            "history {} passed every checker over {} operations",
            path.display(),
            self.history.ops.len()
        );
    }
}

fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_ok(c: &mut Command) -> String {
    let out = c.output().expect("git runs");
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
