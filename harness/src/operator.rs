//! The operator: runs a scenario's steps inside the simulation, each at its virtual time or
//! once its condition holds, through the model's admin code (the same code the
//! `stormcell repository ...` commands run), and records every action in the history.
//!
//! What a person does outside the cluster software (changing refs in a working copy,
//! pulling a plug, restoring a backup) is done here on the simulated parts directly, or
//! asked of the driver through the [`OperatorBoard`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use stormcell_model::admin::{
    Admin, AdminError, BindingChange, Confirm, MaintenanceLock, RepoSelection, ThawOutcome,
    ThawRequest, ThawTarget,
};
use stormcell_model::ids::{DeviceId, Oid, RepoId, ServiceId};
use stormcell_model::ports::{PushPayload, Store};
use stormcell_model::rows::RefUpdate as ModelRefUpdate;

use crate::env::SIM_EPOCH_MS;
use crate::history::{OpKind, Operation, OperatorAction, Outcome, Phase, RefUpdate};
use crate::scenario::{Action, Condition, Operator, Step, ThawStep};
use crate::store::{encode_commits, Commit, SimStore, StoreBackup};
use crate::trace::{sim_now_ms, Trace};
use crate::workload::{Recorder, DEVICE_PORT};

/// How a restore from backup starts in the history: it may bring back what a thaw
/// discarded, and the durability checker lets it.
pub const RESTORE_COMMAND: &str = "restore ";

/// How long the operator keeps running again a thaw refused for a passing reason (the
/// plan changed while it looked, a surviving copy not recorded yet, the database out of
/// reach) before giving up: a person whose cluster is frozen does not stop after a few
/// seconds, but waits longer between tries the longer it lasts.
const THAW_PATIENCE: Duration = Duration::from_secs(180);

/// The pause before the second try of a refused thaw; each later pause doubles, up to
/// [`DATABASE_RETRY`].
const THAW_FIRST_PAUSE: Duration = Duration::from_millis(500);

/// How long a person waits before running a thaw again that could not reach the database.
const DATABASE_RETRY: Duration = Duration::from_secs(10);

/// A fault the operator asks the driver to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverRequest {
    /// Crash a device; restart it after `down_ms`, or at a restart request.
    Strike {
        /// The device.
        device: String,
        /// Downtime.
        down_ms: Option<u64>,
    },
    /// Restart a struck device.
    Restart {
        /// The device.
        device: String,
    },
    /// Cut the links between two groups of hosts.
    Partition {
        /// One side.
        a: Vec<String>,
        /// The other.
        b: Vec<String>,
        /// How long.
        duration_ms: u64,
    },
}

/// Shared between the operator and the driver: the operator's requests, and what the
/// driver did that the operator refers to (`@struck`, `@cut`) or waits for.
#[derive(Debug, Default)]
pub struct OperatorBoard {
    /// Requests not yet applied.
    pub requests: Vec<DriverRequest>,
    /// Devices struck, oldest first.
    pub struck: Vec<String>,
    /// Devices whose database link was cut, oldest first.
    pub cut: Vec<String>,
    /// Devices down now.
    pub down: BTreeSet<String>,
}

/// Locks an operator board, ignoring poisoning.
pub fn lock_board(board: &Mutex<OperatorBoard>) -> std::sync::MutexGuard<'_, OperatorBoard> {
    board.lock().unwrap_or_else(|e| e.into_inner())
}

/// Answers confirmations after a pause, as a person reading the plan would.
struct Person {
    pause: Duration,
    trace: Trace,
}

#[async_trait]
impl Confirm for Person {
    async fn confirm(&self, question: &str, details: &str) -> bool {
        for line in details.lines() {
            self.trace
                .record(sim_now_ms(), "operator", format!("| {line}"));
        }
        tokio::time::sleep(self.pause).await;
        self.trace
            .record(sim_now_ms(), "operator", format!("{question} yes"));
        true
    }
}

/// A maintenance change made directly in a working copy, waiting for its lock's outcome.
struct Change {
    op: Operation,
}

/// Everything the operator works with.
pub struct OperatorRun {
    /// The admin commands.
    pub admin: Arc<Admin>,
    /// The steps.
    pub script: Operator,
    /// The devices of the cluster at the start.
    pub devices: Vec<String>,
    /// The service every repository is on.
    pub service: ServiceId,
    /// Every device's working copies.
    pub stores: BTreeMap<String, SimStore>,
    /// Shared with the driver.
    pub board: Arc<Mutex<OperatorBoard>>,
    /// Where maintenance changes are recorded as operations.
    pub recorder: Recorder,
    /// The trace.
    pub trace: Trace,
    /// Where actions are recorded.
    pub actions: Arc<Mutex<Vec<OperatorAction>>>,
    /// When the workload ends: conditions are given up then, unless the cluster's
    /// status could not be read at the last look.
    pub workload_ms: u64,
    /// When the final probes start: a condition that could not be looked at (the cluster
    /// database down) is given up then at the latest.
    pub final_start_ms: u64,
}

/// What one look at a repository's newest copies found.
enum IntactLook {
    /// Some device at the newest version holds it (or the repository has no rows).
    Intact,
    /// Every device at the newest version is up and none holds it: the first of them.
    Lost(String),
    /// None that is up holds it, and one of them is down: nothing can be said yet.
    HolderDown,
}

/// The operator's own state between steps.
#[derive(Default)]
struct State {
    lock: Option<MaintenanceLock>,
    /// When the lock was taken: its rows said `writing` from then on.
    locked_ms: u64,
    changes: Vec<Change>,
    backup: BTreeMap<String, StoreBackup>,
    writing: Option<String>,
    /// The device a `not_intact` condition found.
    not_intact: Option<String>,
    /// Every repository it was found in, in name order.
    not_intact_repos: Vec<String>,
    commits: u64,
}

/// What one step did, for the history.
struct Done {
    command: String,
    result: Result<(), String>,
    thaw: Option<ThawOutcome>,
    /// When the attempt that produced this result began, when it is not the step's start
    /// (a thaw run again after the cluster moved while it looked).
    started_ms: Option<u64>,
}

impl Done {
    fn of(command: String, result: Result<(), String>) -> Self {
        Done {
            command,
            result,
            thaw: None,
            started_ms: None,
        }
    }
}

impl OperatorRun {
    /// Runs every step in order.
    pub async fn run(self) {
        let mut state = State::default();
        let mut last_end = 0u64;
        for step in &self.script.steps {
            let not_before = (step.at_s * 1000).max(last_end + step.after_s * 1000);
            let now = sim_now_ms();
            if not_before > now {
                tokio::time::sleep(Duration::from_millis(not_before - now)).await;
            }
            let started = sim_now_ms();
            if !self.wait_for(step, &mut state).await {
                self.record(
                    started,
                    Done::of(
                        format!("{} (waiting for {:?})", step.action.name(), step.when),
                        Err("skipped: the condition never held".to_owned()),
                    ),
                );
                last_end = sim_now_ms();
                continue;
            }
            let started = sim_now_ms();
            let done = self.act(&step.action, &mut state).await;
            self.record(started, done);
            last_end = sim_now_ms();
        }
        // A lock still held at the end was never confirmed.
        if let Some(lock) = state.lock.take() {
            lock.abandon();
            self.settle_changes(&mut state, None);
        }
    }

    fn record(&self, started_ms: u64, done: Done) {
        let completed_ms = sim_now_ms();
        let (ok, result) = match &done.result {
            Ok(()) => (true, "ok".to_owned()),
            Err(e) => (false, e.clone()),
        };
        self.trace.record(
            completed_ms,
            "operator",
            format!("{}: {result}", done.command),
        );
        let mut action = OperatorAction {
            applied_ms: None,
            started_ms: done.started_ms.unwrap_or(started_ms),
            completed_ms,
            command: done.command,
            ok,
            result,
            demoted: Vec::new(),
            promoted: Vec::new(),
            plan: None,
        };
        if let Some(outcome) = done.thaw {
            action.record_thaw(&outcome);
            for repo in &outcome.unchanged {
                self.trace.record(
                    completed_ms,
                    "operator",
                    format!("{repo}: left alone (its rows changed while the plan was made)"),
                );
            }
            action.applied_ms = outcome
                .applied_at_ms
                .map(|at| at.saturating_sub(SIM_EPOCH_MS));
            for s in &outcome.salvaged {
                self.trace.record(
                    completed_ms,
                    "operator",
                    format!(
                        "salvage of {} for {}: {} ref(s) {}",
                        s.device,
                        s.repo,
                        s.refs.len(),
                        match (&s.to, &s.error) {
                            (Some(to), _) => format!("kept on {to}"),
                            (None, Some(e)) => format!("FAILED: {e}"),
                            (None, None) => "not kept".to_owned(),
                        }
                    ),
                );
            }
        }
        self.actions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(action);
    }

    /// Waits for the step's condition; `false` when given up.
    async fn wait_for(&self, step: &Step, state: &mut State) -> bool {
        let Some(condition) = &step.when else {
            return true;
        };
        // A person who cannot read the cluster's status at the end of the workload (its
        // database is down) keeps looking until the final probes, rather than give up on a
        // condition nobody could check; an explicit `give_up_s` is kept to the second.
        let (give_up, unseen_give_up) = match step.give_up_s {
            Some(s) => (s * 1000, s * 1000),
            None => (self.workload_ms, self.final_start_ms.max(self.workload_ms)),
        };
        loop {
            let look = self.holds(condition, state).await;
            if look == Some(true) {
                return true;
            }
            let now = sim_now_ms();
            let limit = if look.is_some() {
                give_up
            } else {
                unseen_give_up
            };
            if now >= limit {
                return false;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Whether `condition` holds; `None` when the status it needs could not be read.
    async fn holds(&self, condition: &Condition, state: &mut State) -> Option<bool> {
        match condition {
            Condition::Frozen(repo) => match self.admin.write_frozen(&RepoId::new(repo)).await {
                Ok(Some(row)) => {
                    state.writing = Some(row.device.to_string());
                    Some(true)
                }
                Ok(None) => Some(false),
                Err(_) => None,
            },
            Condition::Synchronized => {
                let s = self.admin.service_status(&self.service).await.ok()?;
                Some(
                    s.sync == stormcell_model::status::ServiceSync::Synchronized
                        && s.writing.is_empty(),
                )
            }
            Condition::Ambiguous(repo) => {
                let s = self
                    .admin
                    .repository_status(&RepoId::new(repo))
                    .await
                    .ok()?;
                Some(s.lines.is_empty())
            }
            Condition::LeadersDown(repo) => {
                let s = self
                    .admin
                    .repository_status(&RepoId::new(repo))
                    .await
                    .ok()?;
                let Some(max) = s.lines.iter().map(|l| l.version).max() else {
                    return Some(false);
                };
                let board = lock_board(&self.board);
                Some(
                    s.lines
                        .iter()
                        .filter(|l| l.version == max)
                        .all(|l| board.down.contains(l.device.as_str())),
                )
            }
            Condition::NotIntact(name) => {
                // `@any` looks at every repository of the service, in name order.
                let repos = if name == crate::scenario::ANY_REPOSITORY {
                    match self.admin.service_status(&self.service).await {
                        Ok(s) => s.repos.into_iter().map(|(r, _)| r).collect(),
                        Err(_) => return None,
                    }
                } else {
                    vec![RepoId::new(name)]
                };
                // The first lost device found, with every repository it alone held the
                // newest version of: a person who finds one frozen repository on a lost
                // disk gives up what that disk held in all of them at once.
                let mut found: Option<(String, Vec<String>)> = None;
                // One look at which devices are down for every repository: a device that
                // comes back in the middle must not count as down in some and up in others.
                // A look during which some device went down or came back is no look at
                // all (its early answers may predate the loss): the person looks again.
                let board_now = || {
                    let board = lock_board(&self.board);
                    (board.down.clone(), board.struck.len())
                };
                let seen = board_now();
                // A repository whose newest copies are on a device that is down says
                // nothing yet: the person waits for the device to come back.
                let mut unseen = false;
                for repo in repos {
                    // A status that cannot be read now says nothing: the person looks again
                    // later rather than give up only what the readable ones showed.
                    let Ok(look) = self.not_intact(&repo, &seen.0).await else {
                        return None;
                    };
                    let device = match look {
                        IntactLook::Lost(device) => device,
                        IntactLook::Intact => continue,
                        IntactLook::HolderDown => {
                            unseen = true;
                            continue;
                        }
                    };
                    match &mut found {
                        None => found = Some((device, vec![repo.to_string()])),
                        Some((first, held)) if *first == device => held.push(repo.to_string()),
                        Some(_) => {}
                    }
                }
                if board_now() != seen {
                    return None;
                }
                match found {
                    Some((device, held)) => {
                        state.not_intact = Some(device);
                        state.not_intact_repos = held;
                        Some(true)
                    }
                    None if unseen => None,
                    None => Some(false),
                }
            }
        }
    }

    /// Whether some device at `repo`'s largest version holds the version its row claims:
    /// the first that does not, when every such device is up and none does; an error when
    /// the repository's status could not be read. `down` is the devices known to be down.
    async fn not_intact(
        &self,
        repo: &RepoId,
        down: &BTreeSet<String>,
    ) -> Result<IntactLook, AdminError> {
        let s = self.admin.repository_status(repo).await?;
        let Some(max) = s.lines.iter().map(|l| l.version).max() else {
            return Ok(IntactLook::Intact);
        };
        let mut lost = Vec::new();
        let mut holder_down = false;
        for line in s.lines.iter().filter(|l| l.version == max) {
            let device = line.device.as_str();
            let (on_disk, local) = match self.stores.get(device) {
                Some(store) => (
                    store.digest(repo).await.ok(),
                    store.local_version(repo).await.ok().flatten(),
                ),
                None => (None, None),
            };
            // A copy being written is judged by the version it started from.
            let intact = if line.writing_since_ms.is_some() {
                local == Some(line.version)
            } else {
                line.digest.is_none() || on_disk == line.digest
            };
            if intact {
                return Ok(IntactLook::Intact);
            }
            if down.contains(device) {
                holder_down = true;
            } else {
                lost.push(device.to_owned());
            }
        }
        Ok(match lost.into_iter().next() {
            _ if holder_down => IntactLook::HolderDown,
            Some(device) => IntactLook::Lost(device),
            None => IntactLook::Intact,
        })
    }

    /// The device a name stands for (`@struck`, `@cut`, `@writing` or itself).
    fn device(&self, name: &str, state: &State) -> String {
        let board = lock_board(&self.board);
        let found = match name {
            "@struck" => board.struck.last().cloned(),
            "@cut" => board.cut.last().cloned(),
            "@writing" => state.writing.clone(),
            "@not-intact" => state.not_intact.clone(),
            _ => Some(name.to_owned()),
        };
        found.unwrap_or_else(|| name.to_owned())
    }

    fn devices(&self, names: &[String], state: &State) -> Vec<String> {
        let mut out = Vec::new();
        for n in names {
            if n == "@all" {
                out.extend(self.devices.iter().cloned());
            } else {
                out.push(self.device(n, state));
            }
        }
        out
    }

    async fn act(&self, action: &Action, state: &mut State) -> Done {
        let err = |e: AdminError| e.to_string();
        match action {
            Action::Thaw(t) => self.thaw(t, state).await,
            Action::Lock { device, repos } => {
                let device = self.device(device, state);
                let repos: Vec<RepoId> = repos.iter().map(RepoId::new).collect();
                let command = format!("stormcell repository lock {} (on {device})", join(&repos));
                match self.admin.lock(&DeviceId::new(device), &repos).await {
                    Ok(lock) => {
                        state.lock = Some(lock);
                        Done::of(command, Ok(()))
                    }
                    Err(e) => Done::of(command, Err(err(e))),
                }
            }
            Action::Maintain { repo, refs } => self.maintain(repo, refs, state).await,
            Action::Confirm => {
                let command = "Ready to release the locks? yes".to_owned();
                let Some(lock) = state.lock.take() else {
                    return Done::of(command, Err("no maintenance lock is held".to_owned()));
                };
                match self.admin.confirm_maintenance(lock).await {
                    Ok(versions) => {
                        let recorded: BTreeSet<String> =
                            versions.keys().map(ToString::to_string).collect();
                        self.settle_changes(state, Some(&recorded));
                        Done::of(command, Ok(()))
                    }
                    Err(e) => {
                        self.settle_changes(state, None);
                        Done::of(command, Err(err(e)))
                    }
                }
            }
            Action::Abandon => {
                if let Some(lock) = state.lock.take() {
                    lock.abandon();
                }
                self.settle_changes(state, None);
                Done::of("the locking process dies".to_owned(), Ok(()))
            }
            Action::Binding {
                device,
                writable,
                disabled,
            } => {
                let device = self.device(device, state);
                let command = format!(
                    "binding {}/{device}:{}{}",
                    self.service,
                    writable.map_or(String::new(), |w| if w {
                        " Allow Writes".to_owned()
                    } else {
                        " Prevent Writes".to_owned()
                    }),
                    disabled.map_or(String::new(), |d| if d {
                        " disabled".to_owned()
                    } else {
                        " enabled".to_owned()
                    })
                );
                let change = BindingChange {
                    writable: *writable,
                    disabled: *disabled,
                };
                let result = self
                    .admin
                    .set_binding(Some(&self.service), &DeviceId::new(device), change)
                    .await;
                Done::of(command, result.map_err(err))
            }
            Action::AddDevice { device } => {
                let command = format!("add device {device} to {}", self.service);
                let result = self
                    .admin
                    .add_device(
                        &DeviceId::new(device.clone()),
                        &format!("{device}:{DEVICE_PORT}"),
                        &self.service,
                        true,
                    )
                    .await;
                Done::of(command, result.map_err(err))
            }
            Action::Clusterize { repos } => {
                let mut result = Ok(());
                for r in repos {
                    let confirm = self.person();
                    let outcome = self
                        .admin
                        .clusterize(&RepoId::new(r), Some(&self.service), false, &confirm)
                        .await;
                    if let Err(e) = outcome {
                        result = Err(err(e));
                        break;
                    }
                }
                Done::of(
                    format!(
                        "stormcell repository clusterize {} --service {}",
                        repos.join(" "),
                        self.service
                    ),
                    result,
                )
            }
            Action::Strike { devices, down_s } => {
                let devices = self.devices(devices, state);
                {
                    let mut board = lock_board(&self.board);
                    for d in &devices {
                        board.requests.push(DriverRequest::Strike {
                            device: d.clone(),
                            down_ms: down_s.map(|s| s * 1000),
                        });
                    }
                }
                // The driver acts between simulation steps.
                tokio::time::sleep(Duration::from_millis(100)).await;
                Done::of(format!("strike {}", devices.join(" ")), Ok(()))
            }
            Action::Restart { devices } => {
                let devices = self.devices(devices, state);
                {
                    let mut board = lock_board(&self.board);
                    for d in &devices {
                        board
                            .requests
                            .push(DriverRequest::Restart { device: d.clone() });
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                Done::of(format!("restart {}", devices.join(" ")), Ok(()))
            }
            Action::Partition { a, b, duration_s } => {
                let a = self.devices(a, state);
                let b = self.devices(b, state);
                lock_board(&self.board)
                    .requests
                    .push(DriverRequest::Partition {
                        a: a.clone(),
                        b: b.clone(),
                        duration_ms: duration_s * 1000,
                    });
                tokio::time::sleep(Duration::from_millis(100)).await;
                Done::of(
                    format!("partition {{{}}} from {{{}}}", a.join(","), b.join(",")),
                    Ok(()),
                )
            }
            Action::Backup => {
                state.backup = self
                    .stores
                    .iter()
                    .map(|(d, s)| (d.clone(), s.backup()))
                    .collect();
                Done::of("back up every device".to_owned(), Ok(()))
            }
            Action::RestoreBackup { devices } => {
                let devices = self.devices(devices, state);
                for d in &devices {
                    if let (Some(store), Some(backup)) = (self.stores.get(d), state.backup.get(d)) {
                        store.restore(backup);
                    }
                }
                Done::of(
                    format!("{RESTORE_COMMAND}{} from the backup", devices.join(" ")),
                    Ok(()),
                )
            }
        }
    }

    fn person(&self) -> Person {
        Person {
            pause: Duration::from_secs(self.script.confirm_s),
            trace: self.trace.clone(),
        }
    }

    async fn thaw(&self, t: &ThawStep, state: &State) -> Done {
        let target = match (&t.demote, &t.promote) {
            (Some(d), _) => ThawTarget::Demote(self.device(d, state)),
            (None, Some(p)) => ThawTarget::Promote(self.device(p, state)),
            (None, None) => ThawTarget::Demote(String::new()),
        };
        let repos = if t.all_repositories {
            RepoSelection::All
        } else {
            RepoSelection::Named(
                t.repos
                    .iter()
                    .flat_map(|r| match r.as_str() {
                        "@not-intact" if !state.not_intact_repos.is_empty() => {
                            state.not_intact_repos.iter().map(RepoId::new).collect()
                        }
                        _ => vec![RepoId::new(r)],
                    })
                    .collect(),
            )
        };
        let command = format!(
            "stormcell repository thaw {} {}{}",
            match &repos {
                RepoSelection::All => "--all-repositories".to_owned(),
                RepoSelection::Named(r) => join(r),
            },
            match &target {
                ThawTarget::Demote(d) => format!("--demote {d}"),
                ThawTarget::Promote(p) => format!("--promote {p}"),
            },
            if t.force { " --force" } else { "" }
        );
        let request = ThawRequest {
            repos,
            target,
            force: t.force,
        };
        let confirm = self.person();
        // A person told that the plan changed while they read it runs the command again
        // and reads the new plan; under load that can take a few tries.
        let first_ms = sim_now_ms();
        let mut started_ms = first_ms;
        let mut pause = THAW_FIRST_PAUSE;
        loop {
            match self.admin.thaw(&request, &confirm).await {
                Ok(outcome) => {
                    return Done {
                        command,
                        result: Ok(()),
                        thaw: Some(outcome),
                        started_ms: Some(started_ms),
                    }
                }
                Err(e)
                    if e.is_transient()
                        && sim_now_ms().saturating_sub(first_ms)
                            < THAW_PATIENCE.as_millis() as u64 =>
                {
                    // Each attempt is an action of its own in the history: the refused
                    // ones changed nothing but held the write lock for a moment.
                    self.record(started_ms, Done::of(command.clone(), Err(e.to_string())));
                    // The database out of reach: a person waits a while first.
                    let wait = if matches!(e, AdminError::Db(_)) {
                        DATABASE_RETRY
                    } else {
                        pause
                    };
                    tokio::time::sleep(wait).await;
                    pause = (pause * 2).min(DATABASE_RETRY);
                    started_ms = sim_now_ms();
                }
                Err(e) => {
                    return Done {
                        started_ms: Some(started_ms),
                        ..Done::of(command, Err(e.to_string()))
                    }
                }
            }
        }
    }

    /// Changes refs in the locked device's working copy, as `git update-ref` there would.
    async fn maintain(&self, repo: &str, refs: &[String], state: &mut State) -> Done {
        let command = format!("update {} in {repo} by hand", refs.join(" "));
        let Some(lock) = &state.lock else {
            return Done::of(command, Err("no maintenance lock is held".to_owned()));
        };
        let device = lock.device().to_string();
        let Some(store) = self.stores.get(&device) else {
            return Done::of(command, Err(format!("no working copies of {device}")));
        };
        let repo_id = RepoId::new(repo);
        let current = match store.refs(&repo_id).await {
            Ok(r) => r,
            Err(e) => return Done::of(command, Err(e.to_string())),
        };
        let mut updates = Vec::new();
        let mut commits = Vec::new();
        for name in refs {
            state.commits += 1;
            let new = format!("maintenance-{}", state.commits);
            let old = current.get(name).map(|o| o.to_string());
            commits.push(Commit {
                id: new.clone(),
                parent: old.clone(),
            });
            updates.push(RefUpdate {
                name: name.clone(),
                old,
                new,
            });
        }
        let payload = PushPayload {
            user: "operator".to_owned(),
            updates: updates
                .iter()
                .map(|u| ModelRefUpdate {
                    name: u.name.clone(),
                    old: u.old.clone().map(Oid),
                    new: Some(Oid(u.new.clone())),
                })
                .collect(),
            pack: encode_commits(&commits),
            spool: None,
        };
        // The change is part of the locked write, which began when the lock was taken.
        let invoked_ms = state.locked_ms;
        let applied = async {
            let applied = store.apply_push(&repo_id, &payload).await?;
            store.sync(&repo_id).await?;
            Ok::<_, stormcell_model::error::StoreError>(applied)
        }
        .await;
        match applied {
            Ok(a) if a.accepted => {
                state.changes.push(Change {
                    op: Operation {
                        id: self.recorder.next_id(),
                        client: "operator".to_owned(),
                        device,
                        repo: repo.to_owned(),
                        phase: Phase::Workload,
                        invoked_ms,
                        completed_ms: invoked_ms,
                        kind: OpKind::Push { updates },
                        outcome: Outcome::Unknown {
                            reason: "maintenance not confirmed yet".to_owned(),
                        },
                    },
                });
                Done::of(command, Ok(()))
            }
            Ok(a) => Done::of(command, Err(a.reason.unwrap_or_default())),
            Err(e) => Done::of(command, Err(e.to_string())),
        }
    }

    /// Records the maintenance changes made under the lock that just ended: acknowledged
    /// where the maintenance was recorded (`recorded` repositories), unknown otherwise.
    fn settle_changes(&self, state: &mut State, recorded: Option<&BTreeSet<String>>) {
        let now = sim_now_ms();
        for mut change in std::mem::take(&mut state.changes) {
            change.op.completed_ms = now;
            if recorded.is_some_and(|r| r.contains(&change.op.repo)) {
                change.op.outcome = Outcome::Ok {
                    refs: None,
                    possibly_stale: false,
                };
            } else {
                change.op.outcome = Outcome::Unknown {
                    reason: "the maintenance lock ended without recording the change".to_owned(),
                };
            }
            self.trace.record(
                now,
                "operator",
                format!(
                    "op {} maintenance change: {:?}",
                    change.op.id, change.op.outcome
                ),
            );
            self.recorder.push(change.op);
        }
    }
}

fn join(repos: &[RepoId]) -> String {
    repos
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}
