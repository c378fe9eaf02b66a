//! The operator part of a scenario: scripted steps that follow a documented procedure, each
//! run at a virtual time or once a condition holds, and the sampling of status.
//!
//! ```toml
//! [operator]
//! status_every_s = 5
//! confirm_s = 2
//!
//! [[operator.steps]]
//! when = { frozen = "R1" }
//! action = { thaw = { demote = "@writing", repos = ["R1"] } }
//! ```
//!
//! Device names may be written as they are (`repo002`) or as `@struck` (the device the
//! nemesis or the operator struck last), `@cut` (the device whose database link was cut
//! last), `@writing` (the device holding `writing` in the repository a `frozen` condition
//! found) and, in lists, `@all` (every device of the cluster at the start).

use serde::{Deserialize, Serialize};

/// The repository name a `not_intact` condition takes to look at every repository; a
/// thaw's `repos` may then name `@not-intact`, every repository the device was found in.
pub const ANY_REPOSITORY: &str = "@any";

/// What the operator does during a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Operator {
    /// Seconds between two samples of the service status shown in the run's report; 0
    /// samples only when there are steps (every 5 s then).
    pub status_every_s: u64,
    /// Seconds the operator takes to read a plan or a warning and answer its confirmation.
    pub confirm_s: u64,
    /// The steps, run one after the other.
    pub steps: Vec<Step>,
}

impl Operator {
    /// Whether the scenario has an operator at all.
    pub fn is_active(&self) -> bool {
        !self.steps.is_empty() || self.status_every_s > 0
    }

    /// The sampling interval in seconds (5 when steps exist and none is given).
    pub fn sampling_s(&self) -> u64 {
        if self.status_every_s > 0 {
            self.status_every_s
        } else if self.steps.is_empty() {
            0
        } else {
            5
        }
    }
}

/// One step: when it may run and what it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Not before this virtual second.
    #[serde(default)]
    pub at_s: u64,
    /// Not before this many seconds after the previous step ended.
    #[serde(default)]
    pub after_s: u64,
    /// Wait (checking every second) until this holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
    /// Give up waiting for the condition at this virtual second (default: the end of the
    /// workload). A step given up is recorded as skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub give_up_s: Option<u64>,
    /// What to do.
    pub action: Action,
}

/// A condition a step waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The repository is frozen for writes by an interrupted write: a row says `writing`
    /// while the write lock is free.
    Frozen(String),
    /// The service status is Synchronized and no active device is writing.
    Synchronized,
    /// The repository has no version rows.
    Ambiguous(String),
    /// Every device at the repository's largest version is down.
    LeadersDown(String),
    /// Every device at the repository's largest version is up and its working copy is not
    /// the version its row claims (a lost or restored disk), as a person looking at the
    /// devices would find (PROTOCOL.md 12). `@not-intact` names the first such device (and,
    /// in a thaw's `repos`, every repository it is found in); `@any` looks at every repository.
    NotIntact(String),
}

/// `repository thaw`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThawStep {
    /// `--demote DEVICE|SERVICE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demote: Option<String>,
    /// `--promote DEVICE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promote: Option<String>,
    /// The repositories.
    pub repos: Vec<String>,
    /// `--all-repositories`.
    pub all_repositories: bool,
    /// `--force`: no confirmation.
    pub force: bool,
}

/// What a step does. Each administrative action goes through the same code as the
/// `stormcell repository ...` commands; the others stand for what a person does on a
/// machine (shell commands in a working copy, pulling a plug, restoring a backup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `repository thaw`.
    Thaw(ThawStep),
    /// `repository lock REPO...` on a device; held until `confirm` or `abandon`.
    Lock {
        /// The device whose working copy will be changed.
        device: String,
        /// The repositories.
        repos: Vec<String>,
    },
    /// Changes refs directly in the locked device's working copy: one new commit on each.
    Maintain {
        /// The repository.
        repo: String,
        /// The refs.
        refs: Vec<String>,
    },
    /// Answers yes to "ready to release the locks?".
    Confirm,
    /// The locking process dies: the lock is given up without recording anything.
    Abandon,
    /// Changes a device's binding.
    Binding {
        /// The device.
        device: String,
        /// Allow Writes or Prevent Writes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        writable: Option<bool>,
        /// Disabled or enabled.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disabled: Option<bool>,
    },
    /// Registers a spare device and binds it actively to the service.
    AddDevice {
        /// The device (a spare of the topology).
        device: String,
    },
    /// `repository clusterize` onto the service, for each repository.
    Clusterize {
        /// The repositories.
        repos: Vec<String>,
    },
    /// Strikes devices; they come back after `down_s`, or at a `restart` step.
    Strike {
        /// The devices.
        devices: Vec<String>,
        /// Seconds down; absent means until a `restart` step (or the end of the workload).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        down_s: Option<u64>,
    },
    /// Restarts struck devices.
    Restart {
        /// The devices.
        devices: Vec<String>,
    },
    /// Cuts the links between two groups of hosts for a while.
    Partition {
        /// One side.
        a: Vec<String>,
        /// The other side.
        b: Vec<String>,
        /// Seconds until the links are repaired.
        duration_s: u64,
    },
    /// Takes a backup of every device's working copies.
    Backup,
    /// Replaces devices' working copies with the last backup (do it while they are down).
    RestoreBackup {
        /// The devices.
        devices: Vec<String>,
    },
}

impl Action {
    /// A short name for traces and histories.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Thaw(_) => "thaw",
            Action::Lock { .. } => "lock",
            Action::Maintain { .. } => "maintain",
            Action::Confirm => "confirm",
            Action::Abandon => "abandon",
            Action::Binding { .. } => "binding",
            Action::AddDevice { .. } => "add_device",
            Action::Clusterize { .. } => "clusterize",
            Action::Strike { .. } => "strike",
            Action::Restart { .. } => "restart",
            Action::Partition { .. } => "partition",
            Action::Backup => "backup",
            Action::RestoreBackup { .. } => "restore_backup",
        }
    }
}

/// Checks the operator section; errors name `operator.steps[i].field`.
pub(super) fn check(
    operator: &Operator,
    devices: u32,
    spares: u32,
    repositories: u32,
    duration_s: u64,
) -> Result<(), super::validate::Invalid> {
    let invalid = |field: String, message: String| Err(super::validate::Invalid { field, message });
    let total = devices + spares;
    let known_device = |name: &str| {
        name.starts_with('@')
            && ["@struck", "@cut", "@writing", "@not-intact", "@all"].contains(&name)
            || name == "svc"
            || name
                .strip_prefix("repo")
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n >= 1 && n <= total)
    };
    let known_repo = |name: &str| {
        name.strip_prefix('R')
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n >= 1 && n <= repositories)
    };
    let mut lock_held = false;
    for (i, step) in operator.steps.iter().enumerate() {
        let at = |f: &str| format!("operator.steps[{i}].{f}");
        if step.at_s >= duration_s {
            return invalid(
                at("at_s"),
                format!(
                    "{} is not before the end of the workload ({duration_s} s)",
                    step.at_s
                ),
            );
        }
        if let Some(
            Condition::Frozen(r)
            | Condition::Ambiguous(r)
            | Condition::LeadersDown(r)
            | Condition::NotIntact(r),
        ) = &step.when
        {
            let any = matches!(&step.when, Some(Condition::NotIntact(_))) && r == ANY_REPOSITORY;
            if !any && !known_repo(r) {
                return invalid(
                    at("when"),
                    format!("no repository `{r}` (R1..R{repositories})"),
                );
            }
        }
        let devices_of: Vec<&String> = match &step.action {
            Action::Thaw(t) => {
                if t.demote.is_some() == t.promote.is_some() {
                    return invalid(
                        at("action.thaw"),
                        "give exactly one of `demote` and `promote`".to_owned(),
                    );
                }
                if t.repos.is_empty() != t.all_repositories {
                    return invalid(
                        at("action.thaw.repos"),
                        "name repositories or set `all_repositories`, not both or neither"
                            .to_owned(),
                    );
                }
                if let Some(r) = t
                    .repos
                    .iter()
                    .find(|r| !known_repo(r) && r.as_str() != "@not-intact")
                {
                    return invalid(at("action.thaw.repos"), format!("no repository `{r}`"));
                }
                t.demote.iter().chain(t.promote.iter()).collect()
            }
            Action::Lock { device, repos } => {
                if lock_held {
                    return invalid(
                        at("action.lock"),
                        "a maintenance lock is already held".to_owned(),
                    );
                }
                lock_held = true;
                if let Some(r) = repos.iter().find(|r| !known_repo(r)) {
                    return invalid(at("action.lock.repos"), format!("no repository `{r}`"));
                }
                vec![device]
            }
            Action::Maintain { repo, refs } => {
                if !lock_held {
                    return invalid(
                        at("action.maintain"),
                        "needs a `lock` step before it".to_owned(),
                    );
                }
                if !known_repo(repo) {
                    return invalid(
                        at("action.maintain.repo"),
                        format!("no repository `{repo}`"),
                    );
                }
                if refs.is_empty() {
                    return invalid(
                        at("action.maintain.refs"),
                        "must name at least one ref".to_owned(),
                    );
                }
                Vec::new()
            }
            Action::Confirm | Action::Abandon => {
                if !lock_held {
                    return invalid(at("action"), "needs a `lock` step before it".to_owned());
                }
                lock_held = false;
                Vec::new()
            }
            Action::Binding {
                device,
                writable,
                disabled,
            } => {
                if writable.is_none() && disabled.is_none() {
                    return invalid(
                        at("action.binding"),
                        "change `writable`, `disabled` or both".to_owned(),
                    );
                }
                vec![device]
            }
            Action::AddDevice { device } => {
                let spare = device
                    .strip_prefix("repo")
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n > devices && n <= total);
                if !spare {
                    return invalid(
                        at("action.add_device.device"),
                        format!("`{device}` is not a spare device (topology.spare_devices)"),
                    );
                }
                Vec::new()
            }
            Action::Clusterize { repos } => {
                if let Some(r) = repos.iter().find(|r| !known_repo(r)) {
                    return invalid(
                        at("action.clusterize.repos"),
                        format!("no repository `{r}`"),
                    );
                }
                Vec::new()
            }
            Action::Strike { devices, .. }
            | Action::Restart { devices }
            | Action::RestoreBackup { devices } => devices.iter().collect(),
            Action::Partition { a, b, .. } => {
                a.iter().chain(b.iter()).filter(|h| *h != "db").collect()
            }
            Action::Backup => Vec::new(),
        };
        if let Some(d) = devices_of.into_iter().find(|d| !known_device(d)) {
            return invalid(
                at("action"),
                format!(
                    "no device `{d}` (repo001..repo{total:03}, svc, @struck, @cut, @writing, @all)"
                ),
            );
        }
    }
    Ok(())
}
