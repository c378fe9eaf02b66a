//! **[stormcell]** The thaw plan (PROTOCOL.md 7.1, `--plan`): exactly which refs and
//! commits each demote or promote would discard, found by comparing the discarded devices'
//! working copies and the push log with what the surviving leader holds.
//!
//! A ref value is discarded when the surviving leader's value of that ref neither is it
//! nor descends from it. **[stormcell]** Descent is read from the surviving copy's commit
//! graph (PROTOCOL.md 12), asked of the device that holds it: the push log only says a ref
//! moved from `old` to `new`, which is not descent after a force push (a rewind, or a
//! ref replaced by unrelated history) and misses the commits in between of a push of
//! several. Only when the surviving device cannot answer is descent read off the push log
//! (`old` taken as the parent of `new`), and the plan says so.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, Oid, RepoId, Version};
use crate::rows::{PushEvent, PushKind, VersionRow};
use crate::wire::AncestryQuery;

/// Refs of one working copy.
pub type Refs = BTreeMap<String, Oid>;

/// Demote or promote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThawKind {
    /// Delete the device's version row.
    Demote,
    /// Insert version 0 for the device.
    Promote,
}

/// Where a discarded ref value was seen.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum DiscardSource {
    /// In the device's working copy, which was read: it can be salvaged.
    WorkingCopy,
    /// Only in the push log (the working copy could not be read, or no longer holds it).
    PushLog {
        /// The push event that set it.
        event: u64,
    },
}

/// One ref value the action throws away.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Discard {
    /// The device whose data it is.
    pub device: DeviceId,
    /// The ref.
    pub ref_name: String,
    /// The commit the ref points at there, which the surviving leader does not hold.
    pub commit: Oid,
    /// Where it was seen.
    pub source: DiscardSource,
}

/// The plan of one (device, repository) action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionPlan {
    /// The repository.
    pub repo: RepoId,
    /// The device demoted or promoted.
    pub device: DeviceId,
    /// What happens to it.
    pub kind: ThawKind,
    /// The device's version row before the action, if it has one.
    pub version: Option<Version>,
    /// The device whose refs survive (the surviving leader, or the promoted device).
    pub kept_from: Option<DeviceId>,
    /// Everything the action discards.
    pub discards: Vec<Discard>,
    /// Remarks: what could not be read, what is left to another action.
    pub notes: Vec<String>,
}

/// The plan of a whole thaw command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThawPlan {
    /// One entry per (device, repository), in repository then device order.
    pub actions: Vec<ActionPlan>,
}

impl ThawPlan {
    /// Every discarded value, over all actions.
    pub fn discards(&self) -> impl Iterator<Item = (&RepoId, &Discard)> {
        self.actions
            .iter()
            .flat_map(|a| a.discards.iter().map(move |d| (&a.repo, d)))
    }

    /// The plan as the operator reads it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.actions.is_empty() {
            out.push_str("Nothing to do.\n");
        }
        for a in &self.actions {
            let verb = match a.kind {
                ThawKind::Demote => "demote",
                ThawKind::Promote => "promote",
            };
            let version = a
                .version
                .map_or_else(|| "no version row".to_owned(), |v| format!("version {v}"));
            let _ = write!(
                out,
                "Repository {}: {verb} {} ({version})",
                a.repo, a.device
            );
            match &a.kept_from {
                Some(k) => {
                    let _ = writeln!(out, "; the refs of {k} survive");
                }
                None => out.push('\n'),
            }
            if a.discards.is_empty() {
                out.push_str("  discards nothing\n");
            }
            for d in &a.discards {
                let source = match &d.source {
                    DiscardSource::WorkingCopy => {
                        format!("in the working copy of {}", d.device)
                    }
                    DiscardSource::PushLog { event } => {
                        format!("push event {event} on {}", d.device)
                    }
                };
                let _ = writeln!(out, "  discards {} at {} ({source})", d.ref_name, d.commit);
            }
            for n in &a.notes {
                let _ = writeln!(out, "  note: {n}");
            }
        }
        out
    }
}

/// What a repository's plan is computed from.
pub(crate) struct Facts<'a> {
    pub repo: &'a RepoId,
    /// Every version row.
    pub rows: &'a [VersionRow],
    /// Every push event of the repository, oldest first.
    pub events: &'a [PushEvent],
    /// The device whose refs survive and those refs, when they could be read.
    pub kept: Option<(&'a DeviceId, &'a Refs)>,
    /// The working copies of the devices whose data is at stake: refs, or why unreadable.
    pub copies: &'a BTreeMap<DeviceId, Result<Refs, String>>,
    /// What the kept device's commit graph said about the questions of [`graph_queries`].
    pub graph: Graph<'a>,
}

/// Answers of the kept device's commit graph: `(ancestor, descendant)` to whether the first
/// is the second or one of its ancestors.
pub(crate) type GraphAnswers = BTreeMap<(Oid, Oid), bool>;

/// Where descent comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Graph<'a> {
    /// Nothing was asked: no kept copy to compare with, or nothing to ask.
    NotAsked,
    /// The kept device's commit graph answered.
    Read(&'a GraphAnswers),
    /// The kept device could not answer (why): descent is read off the push log.
    Unreadable(&'a str),
}

/// The ancestry questions a plan may need answered by the kept copy's commit graph: for
/// every value of a ref that the copies at stake or the push log hold and the kept copy
/// holds at another commit, whether that value is an ancestor of the kept one. A superset
/// of what [`plan_demote`] and [`plan_promote`] look up, in a stable order.
pub(crate) fn graph_queries(
    kept: &Refs,
    copies: &BTreeMap<DeviceId, Result<Refs, String>>,
    events: &[PushEvent],
) -> Vec<AncestryQuery> {
    let mut pairs: BTreeSet<(Oid, Oid)> = BTreeSet::new();
    let mut ask = |name: &str, commit: &Oid| {
        if let Some(have) = kept.get(name) {
            if have != commit {
                pairs.insert((commit.clone(), have.clone()));
            }
        }
    };
    for refs in copies.values().flatten() {
        for (name, commit) in refs {
            ask(name, commit);
        }
    }
    // The newest logged value per ref over every event contains the newest after any id.
    let (latest, _) = logged_values(events, None);
    for (name, (commit, _, _)) in &latest {
        ask(name, commit);
    }
    pairs
        .into_iter()
        .map(|(ancestor, descendant)| AncestryQuery {
            ancestor,
            descendant,
        })
        .collect()
}

/// The note a plan carries when descent had to be read off the push log.
fn log_note(kept: &DeviceId, why: &str) -> String {
    format!(
        "the commit graph of {kept} could not be read ({why}): descent was read off the push \
         log, which a force push or a push of several commits can mislead"
    )
}

fn row_version(rows: &[VersionRow], device: &DeviceId) -> Option<Version> {
    rows.iter().find(|r| &r.device == device).map(|r| r.version)
}

/// Per ref: the newest value, the event that set it and its device.
type Logged = BTreeMap<String, (Oid, u64, DeviceId)>;

/// The newest value per ref set by accepted push events with an id above `after`, with the
/// event and device; and the adopted writes of unknown content among them.
fn logged_values(events: &[PushEvent], after: Option<Version>) -> (Logged, Vec<&PushEvent>) {
    let mut latest = BTreeMap::new();
    let mut opaque = Vec::new();
    for e in events {
        if after.is_some_and(|a| e.id <= a) || !e.event.accepted {
            continue;
        }
        if e.event.kind != PushKind::Push && e.event.updates.is_empty() {
            opaque.push(e);
        }
        for u in &e.event.updates {
            match &u.new {
                Some(new) => {
                    latest.insert(u.name.clone(), (new.clone(), e.id, e.event.device.clone()));
                }
                None => {
                    latest.remove(&u.name);
                }
            }
        }
    }
    (latest, opaque)
}

/// Descent: the kept copy's commit graph where it answered, else parent links read off
/// the push log (`new` to `old` of every update).
pub(crate) struct Ancestry<'a> {
    log: BTreeMap<Oid, Oid>,
    graph: Option<&'a GraphAnswers>,
}

impl<'a> Ancestry<'a> {
    pub(crate) fn of(events: &[PushEvent], graph: Graph<'a>) -> Self {
        let mut log = BTreeMap::new();
        for e in events {
            for u in &e.event.updates {
                if let (Some(old), Some(new)) = (&u.old, &u.new) {
                    log.insert(new.clone(), old.clone());
                }
            }
        }
        let graph = match graph {
            Graph::Read(answers) => Some(answers),
            Graph::NotAsked | Graph::Unreadable(_) => None,
        };
        Ancestry { log, graph }
    }

    /// Whether `descendant` is `ancestor` or descends from it.
    fn reaches(&self, descendant: &Oid, ancestor: &Oid) -> bool {
        if descendant == ancestor {
            return true;
        }
        // The graph answers every question `graph_queries` asked; the log stands in only
        // for a question nobody could ask.
        if let Some(answer) = self
            .graph
            .and_then(|g| g.get(&(ancestor.clone(), descendant.clone())))
        {
            return *answer;
        }
        let mut current = descendant;
        // Bounded by the number of links, so a malformed log cannot loop forever.
        for _ in 0..=self.log.len() {
            if current == ancestor {
                return true;
            }
            match self.log.get(current) {
                Some(parent) => current = parent,
                None => return false,
            }
        }
        false
    }
}

/// Whether `commit` of ref `name` is gone once only `kept` survives.
fn differs(kept: Option<&Refs>, ancestry: &Ancestry<'_>, name: &str, commit: &Oid) -> bool {
    kept.is_none_or(|k| {
        k.get(name)
            .is_none_or(|have| !ancestry.reaches(have, commit))
    })
}

/// Plans demoting `targets` (devices selected for this repository).
pub(crate) fn plan_demote(facts: &Facts<'_>, targets: &[DeviceId]) -> Vec<ActionPlan> {
    let survivors: Vec<&VersionRow> = facts
        .rows
        .iter()
        .filter(|r| !targets.contains(&r.device))
        .collect();
    let new_max = survivors.iter().map(|r| r.version).max();
    let kept_refs = facts.kept.map(|(_, r)| r);
    let ancestry = Ancestry::of(facts.events, facts.graph);
    let mut actions: Vec<ActionPlan> = targets
        .iter()
        .map(|d| ActionPlan {
            repo: facts.repo.clone(),
            device: d.clone(),
            kind: ThawKind::Demote,
            version: row_version(facts.rows, d),
            kept_from: facts.kept.map(|(k, _)| k.clone()),
            discards: Vec::new(),
            notes: Vec::new(),
        })
        .collect();
    if actions.is_empty() {
        return actions;
    }
    if new_max.is_none() {
        for a in &mut actions {
            a.notes.push(
                "no device keeps a version row: the repository is frozen as an ambiguous \
                 leader until a device is promoted, and that promote's plan lists what it \
                 discards"
                    .to_owned(),
            );
        }
        return actions;
    }
    // The device whose action a logged value belongs to: its writer when demoted here, else
    // the demoted device with the highest version (the leader being given up).
    let fallback = targets
        .iter()
        .max_by_key(|d| (row_version(facts.rows, d), std::cmp::Reverse((*d).clone())))
        .cloned()
        .unwrap_or_else(|| targets[0].clone());
    let mut seen: BTreeMap<(String, Oid), ()> = BTreeMap::new();
    for a in &mut actions {
        match facts.copies.get(&a.device) {
            Some(Ok(refs)) => {
                for (name, commit) in refs {
                    if differs(kept_refs, &ancestry, name, commit) && kept_refs.is_some() {
                        seen.insert((name.clone(), commit.clone()), ());
                        a.discards.push(Discard {
                            device: a.device.clone(),
                            ref_name: name.clone(),
                            commit: commit.clone(),
                            source: DiscardSource::WorkingCopy,
                        });
                    }
                }
            }
            Some(Err(why)) => a.notes.push(format!(
                "the working copy of {} could not be read ({why}): writes on it that were \
                 never recorded cannot be listed",
                a.device
            )),
            None => {}
        }
        if kept_refs.is_none() {
            a.notes.push(
                "no surviving leader could be read: only the push log was compared".to_owned(),
            );
        }
        if let (Some((k, _)), Graph::Unreadable(why)) = (facts.kept, facts.graph) {
            a.notes.push(log_note(k, why));
        }
    }
    let (latest, opaque) = logged_values(facts.events, new_max);
    for (name, (commit, event, writer)) in latest {
        if !differs(kept_refs, &ancestry, &name, &commit)
            || seen.contains_key(&(name.clone(), commit.clone()))
        {
            continue;
        }
        let owner = if targets.contains(&writer) {
            writer.clone()
        } else {
            fallback.clone()
        };
        if let Some(a) = actions.iter_mut().find(|a| a.device == owner) {
            a.discards.push(Discard {
                device: writer,
                ref_name: name,
                commit,
                source: DiscardSource::PushLog { event },
            });
        }
    }
    for e in opaque {
        if let Some(a) = actions.iter_mut().find(|a| a.device == e.event.device) {
            a.notes.push(format!(
                "push event {} adopted an interrupted write whose refs the log does not name",
                e.id
            ));
        }
    }
    for a in &mut actions {
        a.discards.sort();
    }
    actions
}

/// Plans promoting `device`: the other active devices' working copies (in `facts.copies`)
/// are discarded once they synchronize from it.
pub(crate) fn plan_promote(facts: &Facts<'_>, device: &DeviceId) -> ActionPlan {
    let kept_refs = facts.kept.map(|(_, r)| r);
    let ancestry = Ancestry::of(facts.events, facts.graph);
    let mut a = ActionPlan {
        repo: facts.repo.clone(),
        device: device.clone(),
        kind: ThawKind::Promote,
        version: row_version(facts.rows, device),
        kept_from: Some(device.clone()),
        discards: Vec::new(),
        notes: Vec::new(),
    };
    let Some(kept) = kept_refs else {
        a.notes.push(format!(
            "the working copy of {device} could not be read: what the other devices hold \
             cannot be compared with it"
        ));
        return a;
    };
    if let Graph::Unreadable(why) = facts.graph {
        a.notes.push(log_note(device, why));
    }
    let mut seen: BTreeMap<(String, Oid), ()> = BTreeMap::new();
    for (other, copy) in facts.copies {
        if other == device {
            continue;
        }
        match copy {
            Ok(refs) => {
                for (name, commit) in refs {
                    if differs(Some(kept), &ancestry, name, commit)
                        && seen.insert((name.clone(), commit.clone()), ()).is_none()
                    {
                        a.discards.push(Discard {
                            device: other.clone(),
                            ref_name: name.clone(),
                            commit: commit.clone(),
                            source: DiscardSource::WorkingCopy,
                        });
                    }
                }
            }
            Err(why) => a.notes.push(format!(
                "the working copy of {other} could not be read ({why})"
            )),
        }
    }
    let (latest, _) = logged_values(facts.events, None);
    for (name, (commit, event, writer)) in latest {
        if differs(Some(kept), &ancestry, &name, &commit)
            && !seen.contains_key(&(name.clone(), commit.clone()))
        {
            a.discards.push(Discard {
                device: writer,
                ref_name: name,
                commit,
                source: DiscardSource::PushLog { event },
            });
        }
    }
    a.discards.sort();
    a
}

/// The salvage ref that keeps `discard` (section 7.1): `refs/salvage/<device>/<version>/<ref>`.
pub fn salvage_ref(device: &DeviceId, version: Option<Version>, ref_name: &str) -> String {
    format!("refs/salvage/{device}/{}/{ref_name}", version.unwrap_or(0))
}
