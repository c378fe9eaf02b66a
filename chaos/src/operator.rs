//! The scenario's operator against real processes, for the steps a person takes after a
//! lost disk (PROTOCOL.md 12): wait until a repository is frozen because a device's
//! working copy is not the version its row claims, then give that device's data up with
//! `stormcell repository thaw REPO --demote DEVICE --force`, recorded (with the plan the
//! thaw printed) as the simulator's operator records it.
//!
//! The condition is found as a person finds it: the daemon's refusal of a read names the
//! device whose copy is not intact and the command that resolves it. Other conditions and
//! actions are not supported yet ([`unsupported`] says which).

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use stormcell_harness::history::OperatorAction;
use stormcell_harness::scenario::{Action, Condition, Step, ANY_REPOSITORY};
use stormcell_model::admin::ThawOutcome;

use crate::workload::{git, Recorder, Target};

/// The marker of a device whose working copy is not the version its row claims, in the
/// daemon's refusal.
const NOT_INTACT: &str = "its working copy does not hold that version";
/// The spelling of "the device the condition found".
const FOUND: &str = "@not-intact";

/// Why `step` cannot be run against real processes, if it cannot.
pub fn unsupported(step: &Step) -> Option<String> {
    let thaw = match &step.action {
        Action::Thaw(thaw) => thaw,
        other => return Some(format!("operator action {other:?}")),
    };
    match &step.when {
        Some(Condition::NotIntact(_)) => {}
        other => return Some(format!("operator condition {other:?}")),
    }
    if thaw.demote.is_none() || thaw.promote.is_some() || thaw.all_repositories {
        return Some("an operator thaw other than --demote of named repositories".to_owned());
    }
    None
}

/// What the operator needs of the cluster.
#[derive(Debug, Clone)]
pub struct Desk {
    /// The devices, for probing.
    pub targets: Vec<Target>,
    /// Every device's configuration file (the thaw runs as one of them).
    pub configs: Vec<(String, String)>,
    /// The `stormcell` binary.
    pub bin: std::path::PathBuf,
    /// Repositories of the run.
    pub repos: Vec<String>,
    /// Multiplies the steps' times.
    pub time_scale: f64,
}

/// Runs the supported steps in order until `stop`; unsupported ones are skipped.
pub fn run(steps: &[Step], desk: &Desk, recorder: &Recorder, stop: &AtomicBool) {
    let scale = |s: u64| (s as f64 * 1000.0 * desk.time_scale).round() as u64;
    let mut last_end = 0;
    for step in steps {
        if unsupported(step).is_some() {
            continue;
        }
        let not_before = scale(step.at_s).max(last_end + scale(step.after_s));
        let give_up = step.give_up_s.map(scale);
        let found = loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let now = recorder.now_ms();
            if give_up.is_some_and(|g| now >= g) {
                break None;
            }
            if now >= not_before {
                if let Some(found) = not_intact(step, desk) {
                    break Some(found);
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        let Some((device, repos)) = found else {
            eprintln!("operator: gave up waiting for {:?}", step.when);
            continue;
        };
        if let Action::Thaw(thaw) = &step.action {
            let demote = match thaw.demote.as_deref() {
                Some(FOUND) | None => device.clone(),
                Some(named) => named.to_owned(),
            };
            let repos: Vec<String> =
                if thaw.repos.iter().any(|r| r == FOUND) || thaw.repos.is_empty() {
                    repos
                } else {
                    thaw.repos.clone()
                };
            thaw_demote(desk, recorder, &repos, &demote);
        }
        last_end = recorder.now_ms();
    }
}

/// The device and repositories a `not_intact` condition finds now, by reading every
/// device's answer for the repositories it names.
fn not_intact(step: &Step, desk: &Desk) -> Option<(String, Vec<String>)> {
    let Some(Condition::NotIntact(repo)) = &step.when else {
        return None;
    };
    let repos: Vec<String> = if repo == ANY_REPOSITORY {
        desk.repos.clone()
    } else {
        vec![repo.clone()]
    };
    let mut found: Option<(String, Vec<String>)> = None;
    for repo in &repos {
        for target in &desk.targets {
            let url = format!(
                "http://{}:{}@127.0.0.1:{}/{repo}.git",
                crate::node::USER,
                crate::node::TOKEN,
                target.http_port
            );
            let Ok(out) = git(std::path::Path::new("/"))
                .args(["ls-remote", &url])
                .output()
            else {
                continue;
            };
            let text = String::from_utf8_lossy(&out.stderr);
            let Some(device) = text
                .contains(NOT_INTACT)
                .then(|| {
                    text.split("is frozen on device \"")
                        .nth(1)?
                        .split('"')
                        .next()
                })
                .flatten()
            else {
                continue;
            };
            match &mut found {
                None => found = Some((device.to_owned(), vec![repo.clone()])),
                Some((d, held)) if d == device && !held.contains(repo) => held.push(repo.clone()),
                Some(_) => {}
            }
        }
    }
    found
}

/// `stormcell --json repository thaw REPO... --demote DEVICE --force`, run as a device
/// other than the demoted one (on the primary its configuration names), recorded as an
/// operator action.
fn thaw_demote(desk: &Desk, recorder: &Recorder, repos: &[String], demote: &str) {
    let started_ms = recorder.now_ms();
    let Some((_, config)) = desk
        .configs
        .iter()
        .find(|(d, _)| d != demote)
        .or(desk.configs.first())
    else {
        return;
    };
    let mut args: Vec<&str> = vec!["--json", "repository", "thaw"];
    args.extend(repos.iter().map(String::as_str));
    args.extend(["--demote", demote, "--force", "--config", config]);
    let command = format!("stormcell {}", args.join(" "));
    eprintln!("operator: {command}");
    let out = Command::new(&desk.bin)
        .args(&args)
        .env_remove("STORMCELL_DATABASE")
        .stdin(std::process::Stdio::null())
        .output();
    let mut action = OperatorAction {
        started_ms,
        completed_ms: 0,
        command,
        ok: false,
        result: String::new(),
        demoted: Vec::new(),
        promoted: Vec::new(),
        plan: None,
        applied_ms: None,
    };
    match out {
        Ok(out) if out.status.success() => {
            match serde_json::from_slice::<ThawOutcome>(&out.stdout) {
                Ok(outcome) => {
                    action.ok = true;
                    action.result = "ok".to_owned();
                    action.record_thaw(&outcome);
                }
                Err(e) => action.result = format!("unreadable outcome: {e}"),
            }
        }
        Ok(out) => {
            action.result = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        }
        Err(e) => action.result = format!("cannot run stormcell: {e}"),
    }
    if !action.ok {
        eprintln!("operator: the thaw failed: {}", action.result);
    }
    action.completed_ms = recorder.now_ms();
    recorder.operator(action);
}
