//! What operator actions discarded on purpose (PROTOCOL.md 7.1): the ref values a thaw's
//! printed plan listed, which checkers 1 and 2 then accept as gone, and the salvage refs
//! (`refs/salvage/<device>/<version>/<ref>`) that must keep them under the stormcell
//! profile.
//!
//! A plan excuses a value only on the terms it was printed on: it was about one device's
//! data, so the value must have been on that device (the push went there, or a read there
//! saw it, or a push there built on it, or a push of unknown outcome there wrote it, before
//! the action ended, or a salvage ref of that device keeps it at the end), and it can only
//! discard what existed when it changed the rows, so the push must have been acknowledged
//! before then.

use std::collections::BTreeMap;

use super::graph::CommitGraph;
use super::ok_read;
use crate::history::{History, OpKind, Refs};

/// The prefix of salvage refs.
pub const SALVAGE_PREFIX: &str = "refs/salvage/";

/// One ref value a plan listed.
#[derive(Debug, Clone)]
pub(crate) struct Listed<'h> {
    pub repo: &'h str,
    pub device: &'h str,
    pub name: &'h str,
    pub commit: &'h str,
    pub salvageable: bool,
    /// A salvage bundle the thaw recorded keeps it.
    pub bundled: bool,
    /// When the action that listed it changed the rows (or, when the history does not say,
    /// when it started): the values it lists were given up then.
    pub at_ms: u64,
    /// When that action ended.
    pub ended_ms: u64,
    /// The command, for explanations.
    pub command: &'h str,
}

/// `(device, commit, at_ms)`: the history shows `commit` on `device` at `at_ms`.
type Holding<'h> = (&'h str, &'h str, u64);

/// Every value listed by the plans of successful operator actions.
#[derive(Debug, Default)]
pub(crate) struct Discards<'h> {
    pub listed: Vec<Listed<'h>>,
    /// (repository, ref name) to where the history shows a value of it: `(device, commit,
    /// at_ms)` for acknowledged pushes (their old and new values), acknowledged reads, and
    /// the new values of pushes of unknown outcome (which may have landed on their device).
    held: BTreeMap<(&'h str, &'h str), Vec<Holding<'h>>>,
    /// `(repository, device, started_ms)` of every row a successful thaw demoted.
    demoted: Vec<(&'h str, &'h str, u64)>,
    /// `(repository, device, ref name, commit)` of every salvage ref in the final refs of
    /// an active device: the named device's copy held that commit once, whether or not a
    /// client saw it there (syncs are invisible to clients).
    salvaged: Vec<(&'h str, &'h str, &'h str, &'h str)>,
}

impl<'h> Discards<'h> {
    pub(crate) fn of(history: &'h History) -> Self {
        let mut listed = Vec::new();
        for action in history.operator.iter().filter(|a| a.ok) {
            for d in action.plan.iter().flatten() {
                listed.push(Listed {
                    repo: &d.repo,
                    device: &d.device,
                    name: &d.name,
                    commit: &d.commit,
                    salvageable: d.salvageable,
                    bundled: d.bundled,
                    at_ms: action.applied_ms.unwrap_or(action.started_ms),
                    ended_ms: action.completed_ms,
                    command: &action.command,
                });
            }
        }
        let demoted = history
            .operator
            .iter()
            .filter(|a| a.ok)
            .flat_map(|a| {
                a.demoted
                    .iter()
                    .map(move |d| (d.repo.as_str(), d.device.as_str(), a.started_ms))
            })
            .collect();
        let mut held: BTreeMap<(&str, &str), Vec<Holding<'_>>> = BTreeMap::new();
        if !listed.is_empty() {
            for op in &history.ops {
                if let Some((refs, _)) = ok_read(op) {
                    for (name, commit) in refs {
                        held.entry((op.repo.as_str(), name.as_str()))
                            .or_default()
                            .push((op.device.as_str(), commit.as_str(), op.completed_ms));
                    }
                }
                let OpKind::Push { updates } = &op.kind else {
                    continue;
                };
                for u in updates {
                    let list = held.entry((op.repo.as_str(), u.name.as_str())).or_default();
                    if op.outcome.is_ok() {
                        list.push((op.device.as_str(), u.new.as_str(), op.completed_ms));
                        if let Some(old) = &u.old {
                            list.push((op.device.as_str(), old.as_str(), op.invoked_ms));
                        }
                    } else if op.outcome.is_unknown() {
                        // It may have taken effect on its device any time after it was
                        // invoked; a plan listing its value there is the evidence that it
                        // did.
                        list.push((op.device.as_str(), u.new.as_str(), op.invoked_ms));
                    }
                }
            }
        }
        let mut salvaged = Vec::new();
        for device in &history.final_state.active_devices {
            for (repo, refs) in history.final_state.refs.get(device).into_iter().flatten() {
                for (name, commit) in refs {
                    if let Some((from, original)) = salvaged_name(name) {
                        salvaged.push((repo.as_str(), from, original, commit.as_str()));
                    }
                }
            }
        }
        Discards {
            listed,
            held,
            demoted,
            salvaged,
        }
    }

    /// Whether a thaw that began no later than `before_ms` demoted `device`'s row of
    /// `repo`. A demote gives up what only that device had and the cluster never recorded
    /// (PROTOCOL.md 7.1): a write of unknown outcome seen only there may go with it.
    pub(crate) fn demoted(&self, repo: &str, device: &str, before_ms: u64) -> bool {
        self.demoted
            .iter()
            .any(|&(r, d, at)| r == repo && d == device && at <= before_ms)
    }

    /// The listing that accounts for `commit` of ref `name` being gone: it listed that
    /// commit or a descendant as the data of a device the history shows holding it, by an
    /// action that took effect no later than `before_ms` and no earlier than the value was
    /// acknowledged or seen.
    pub(crate) fn covering(
        &self,
        graph: &CommitGraph,
        value: Value<'_>,
        before_ms: u64,
    ) -> Option<&Listed<'h>> {
        self.listed.iter().find(|l| {
            l.repo == value.repo
                && l.name == value.name
                && l.at_ms <= before_ms
                && value.acked_ms <= l.at_ms
                && graph.is_descendant_or_equal(l.commit, value.commit)
                && self.was_on(graph, l, value)
        })
    }

    /// Whether the history shows `value` (or a descendant) on the device `l` was about
    /// before the action ended.
    fn was_on(&self, graph: &CommitGraph, l: &Listed<'_>, value: Value<'_>) -> bool {
        if value.device == l.device || l.bundled {
            return true;
        }
        let kept = self.salvaged.iter().any(|&(repo, device, name, commit)| {
            repo == value.repo
                && device == l.device
                && name == value.name
                && graph.is_descendant_or_equal(commit, value.commit)
        });
        kept || self
            .held
            .get(&(value.repo, value.name))
            .is_some_and(|list| {
                list.iter().any(|&(device, commit, at)| {
                    device == l.device
                        && at <= l.ended_ms
                        && graph.is_descendant_or_equal(commit, value.commit)
                })
            })
    }
}

/// A ref value a checker wants excused: what it is, where it was first, and since when it
/// had to be kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Value<'a> {
    pub repo: &'a str,
    pub name: &'a str,
    pub commit: &'a str,
    /// The device the push went to, or the read was served by.
    pub device: &'a str,
    /// When the push was acknowledged or the read completed: a plan can only give up
    /// what the cluster had acknowledged by the time the rows changed. (A push recorded
    /// before a demote whose answer comes back after it looks, from outside, like one the
    /// demote kept from being recorded and that was acknowledged anyway.)
    pub acked_ms: u64,
}

/// The original ref name a salvage ref keeps, with the device it came from:
/// `refs/salvage/repo002/17/refs/heads/b0` is `refs/heads/b0` of `repo002`. Salvage of a
/// salvage ref unwraps once per level.
pub fn salvaged_name(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(SALVAGE_PREFIX)?;
    let (device, rest) = rest.split_once('/')?;
    let (_version, original) = rest.split_once('/')?;
    Some((device, original))
}

/// Whether `refs` keeps `commit` (or a descendant) of `device`'s ref `name` under a
/// salvage ref.
pub(crate) fn salvaged_in(
    graph: &CommitGraph,
    refs: &Refs,
    device: &str,
    name: &str,
    commit: &str,
) -> bool {
    refs.iter().any(|(r, value)| {
        salvaged_name(r).is_some_and(|(d, original)| d == device && original == name)
            && graph.is_descendant_or_equal(value, commit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salvage_names_unwrap() {
        assert_eq!(
            salvaged_name("refs/salvage/repo002/17/refs/heads/b0"),
            Some(("repo002", "refs/heads/b0"))
        );
        assert_eq!(salvaged_name("refs/heads/b0"), None);
        assert_eq!(salvaged_name("refs/salvage/repo002"), None);
    }
}
