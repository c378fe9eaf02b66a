//! What operator actions discarded on purpose (PROTOCOL.md 7.1): the ref values a thaw's
//! printed plan listed, which checkers 1 and 2 then accept as gone, and the salvage refs
//! (`refs/salvage/<device>/<version>/<ref>`) that must keep them under the stormcell
//! profile.

use super::graph::CommitGraph;
use crate::history::{History, Refs};

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
    /// When the action that listed it started: the earliest it can have taken effect.
    pub at_ms: u64,
    /// The command, for explanations.
    pub command: &'h str,
}

/// Every value listed by the plans of successful operator actions.
#[derive(Debug, Default)]
pub(crate) struct Discards<'h> {
    pub listed: Vec<Listed<'h>>,
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
                    at_ms: action.started_ms,
                    command: &action.command,
                });
            }
        }
        Discards { listed }
    }

    /// The listing that accounts for `commit` of ref `name` being gone: it listed that
    /// commit or a descendant, by an action that started no later than `before_ms`.
    pub(crate) fn covering(
        &self,
        graph: &CommitGraph,
        repo: &str,
        name: &str,
        commit: &str,
        before_ms: u64,
    ) -> Option<&Listed<'h>> {
        self.listed.iter().find(|l| {
            l.repo == repo
                && l.name == name
                && l.at_ms <= before_ms
                && graph.is_descendant_or_equal(l.commit, commit)
        })
    }
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
