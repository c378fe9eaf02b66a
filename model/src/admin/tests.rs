//! Unit tests of the pure parts: the plan rules.

use std::collections::BTreeMap;

use super::plan::{graph_queries, plan_demote, plan_promote, Facts, Graph, GraphAnswers, Refs};
use super::{DiscardSource, ThawKind};
use crate::ids::{DeviceId, Oid, RepoId};
use crate::rows::{NewPushEvent, PushEvent, PushKind, RefUpdate, VersionRow};

fn d(s: &str) -> DeviceId {
    DeviceId::from(s)
}

fn row(device: &str, version: u64) -> VersionRow {
    VersionRow {
        repo: RepoId::from("R1"),
        device: d(device),
        version,
        writing: false,
        write_props: None,
        lock_owner: None,
        digest: None,
    }
}

fn refs(pairs: &[(&str, &str)]) -> Refs {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Oid::from(*v)))
        .collect()
}

fn event(id: u64, device: &str, name: &str, new: &str) -> PushEvent {
    PushEvent {
        id,
        event: NewPushEvent {
            repo: RepoId::from("R1"),
            device: d(device),
            user: "u".to_owned(),
            started_ms: 0,
            updates: vec![RefUpdate {
                name: name.to_owned(),
                old: None,
                new: Some(Oid::from(new)),
            }],
            accepted: true,
            kind: PushKind::Push,
        },
    }
}

#[test]
fn demote_of_a_lost_leader_lists_its_unreplicated_pushes_from_the_log() {
    let repo = RepoId::from("R1");
    let rows = [row("a", 5), row("b", 5), row("c", 7)];
    let events = [
        event(5, "a", "refs/heads/main", "m5"),
        event(6, "c", "refs/heads/main", "m6"),
        event(7, "c", "refs/heads/main", "m7"),
    ];
    let kept = refs(&[("refs/heads/main", "m5")]);
    let mut copies = BTreeMap::new();
    copies.insert(d("c"), Err("unreachable".to_owned()));
    let facts = Facts {
        repo: &repo,
        rows: &rows,
        events: &events,
        kept: Some((&d("a"), &kept)),
        copies: &copies,
        graph: Graph::NotAsked,
    };
    let plans = plan_demote(&facts, &[d("c")]);
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].kind, ThawKind::Demote);
    assert_eq!(plans[0].version, Some(7));
    // Only the newest value of the ref is listed: it contains the older one.
    assert_eq!(plans[0].discards.len(), 1);
    assert_eq!(plans[0].discards[0].commit, Oid::from("m7"));
    assert_eq!(
        plans[0].discards[0].source,
        DiscardSource::PushLog { event: 7 }
    );
    assert!(plans[0].notes[0].contains("could not be read"));
}

#[test]
fn demote_of_a_readable_device_lists_what_its_working_copy_holds_beyond_the_leader() {
    let repo = RepoId::from("R1");
    let rows = [row("a", 5), row("b", 5)];
    let kept = refs(&[("refs/heads/main", "m5"), ("refs/heads/x", "x1")]);
    let mut copies = BTreeMap::new();
    copies.insert(
        d("b"),
        Ok(refs(&[("refs/heads/main", "m6"), ("refs/heads/x", "x1")])),
    );
    let facts = Facts {
        repo: &repo,
        rows: &rows,
        events: &[],
        kept: Some((&d("a"), &kept)),
        copies: &copies,
        graph: Graph::NotAsked,
    };
    let plans = plan_demote(&facts, &[d("b")]);
    assert_eq!(plans[0].discards.len(), 1);
    assert_eq!(plans[0].discards[0].ref_name, "refs/heads/main");
    assert_eq!(plans[0].discards[0].source, DiscardSource::WorkingCopy);
}

#[test]
fn demoting_every_device_leaves_the_listing_to_the_promote() {
    let repo = RepoId::from("R1");
    let rows = [row("a", 5), row("b", 5)];
    let events = [event(5, "a", "refs/heads/main", "m5")];
    let copies = BTreeMap::new();
    let facts = Facts {
        repo: &repo,
        rows: &rows,
        events: &events,
        kept: None,
        copies: &copies,
        graph: Graph::NotAsked,
    };
    let plans = plan_demote(&facts, &[d("a"), d("b")]);
    assert_eq!(plans.len(), 2);
    assert!(plans.iter().all(|p| p.discards.is_empty()));
    assert!(plans[0].notes[0].contains("promote"));

    // The promote compares the other devices and the log with the promoted device.
    let kept = refs(&[("refs/heads/main", "m4")]);
    let mut copies = BTreeMap::new();
    copies.insert(d("b"), Ok(refs(&[("refs/heads/main", "m4")])));
    let facts = Facts {
        repo: &repo,
        rows: &[],
        events: &events,
        kept: Some((&d("a"), &kept)),
        copies: &copies,
        graph: Graph::NotAsked,
    };
    let p = plan_promote(&facts, &d("a"));
    assert_eq!(p.discards.len(), 1);
    assert_eq!(p.discards[0].commit, Oid::from("m5"));
    let text = super::ThawPlan { actions: vec![p] }.render();
    assert!(text.contains("promote a"), "{text}");
    assert!(
        text.contains("discards refs/heads/main at m5 (push event 5 on a)"),
        "{text}"
    );
}

fn update(id: u64, device: &str, name: &str, old: &str, new: &str) -> PushEvent {
    let mut e = event(id, device, name, new);
    e.event.updates[0].old = Some(Oid::from(old));
    e
}

/// The kept copy's answers to every question the plan asks, from a parent map standing in
/// for its commit graph.
fn answers(
    kept: &Refs,
    copies: &BTreeMap<DeviceId, Result<Refs, String>>,
    events: &[PushEvent],
    parents: &[(&str, &str)],
) -> GraphAnswers {
    let parents: BTreeMap<&str, &str> = parents.iter().copied().collect();
    graph_queries(kept, copies, events)
        .into_iter()
        .map(|q| {
            let mut at = Some(q.descendant.as_str());
            let mut found = false;
            while let Some(c) = at {
                if c == q.ancestor.as_str() {
                    found = true;
                    break;
                }
                at = parents.get(c).copied();
            }
            ((q.ancestor, q.descendant), found)
        })
        .collect()
}

#[test]
fn a_force_push_that_rewinds_the_survivor_does_not_hide_a_discard() {
    // b holds m6; the survivor a was force-pushed from m6 back to m4. The log says m4
    // follows m6, the commit graph says m4 is m6's grandparent.
    let repo = RepoId::from("R1");
    let rows = [row("a", 7), row("b", 6)];
    let events = [
        update(5, "a", "refs/heads/main", "m4", "m5"),
        update(6, "a", "refs/heads/main", "m5", "m6"),
        update(7, "a", "refs/heads/main", "m6", "m4"),
    ];
    let kept = refs(&[("refs/heads/main", "m4")]);
    let mut copies = BTreeMap::new();
    copies.insert(d("b"), Ok(refs(&[("refs/heads/main", "m6")])));
    let graph = answers(&kept, &copies, &events, &[("m6", "m5"), ("m5", "m4")]);
    assert_eq!(graph.get(&(Oid::from("m6"), Oid::from("m4"))), Some(&false));
    let mut facts = Facts {
        repo: &repo,
        rows: &rows,
        events: &events,
        kept: Some((&d("a"), &kept)),
        copies: &copies,
        graph: Graph::Read(&graph),
    };
    let plans = plan_demote(&facts, &[d("b")]);
    assert_eq!(plans[0].discards.len(), 1, "{plans:?}");
    assert_eq!(plans[0].discards[0].commit, Oid::from("m6"));
    assert_eq!(plans[0].discards[0].source, DiscardSource::WorkingCopy);
    assert!(plans[0].notes.is_empty(), "{:?}", plans[0].notes);

    // Without the graph the log's false descent hides it, and the plan says it guessed.
    facts.graph = Graph::Unreadable("device unreachable");
    let plans = plan_demote(&facts, &[d("b")]);
    assert!(plans[0].discards.is_empty(), "{plans:?}");
    assert!(
        plans[0]
            .notes
            .iter()
            .any(|n| n.contains("commit graph of a could not be read (device unreachable)")),
        "{:?}",
        plans[0].notes
    );
}

#[test]
fn a_force_push_over_unrelated_history_is_a_discard_in_the_log_and_in_a_promote() {
    // The lost leader c force-pushed x1 (unrelated to m5) over m5 and nobody else has it;
    // later a pushed m6 on top of m5 from the log's point of view: old m5 is all it says.
    let repo = RepoId::from("R1");
    let events = [
        update(5, "a", "refs/heads/main", "m4", "m5"),
        update(6, "c", "refs/heads/main", "m5", "x1"),
        update(7, "c", "refs/heads/main", "x1", "m6"),
    ];
    // The promoted device a holds m6, whose real parent is m5: x1 is not in its history.
    let kept = refs(&[("refs/heads/main", "m6")]);
    let copies = BTreeMap::new();
    let graph = answers(&kept, &copies, &events, &[("m6", "m5"), ("m5", "m4")]);
    let facts = Facts {
        repo: &repo,
        rows: &[],
        events: &events,
        kept: Some((&d("a"), &kept)),
        copies: &copies,
        graph: Graph::Read(&graph),
    };
    let p = plan_promote(&facts, &d("a"));
    // m6 is kept; nothing newer is in the log, so nothing is listed from it...
    assert!(p.discards.is_empty(), "{p:?}");
    // ...but b's working copy at x1 is listed once it is read.
    let mut copies = BTreeMap::new();
    copies.insert(d("b"), Ok(refs(&[("refs/heads/main", "x1")])));
    let graph = answers(&kept, &copies, &events, &[("m6", "m5"), ("m5", "m4")]);
    let facts = Facts {
        copies: &copies,
        graph: Graph::Read(&graph),
        ..facts
    };
    let p = plan_promote(&facts, &d("a"));
    assert_eq!(p.discards.len(), 1, "{p:?}");
    assert_eq!(p.discards[0].commit, Oid::from("x1"));
    assert_eq!(p.discards[0].device, d("b"));
}

#[test]
fn a_push_of_several_commits_is_judged_by_the_commit_graph() {
    // c (lost) pushed m6, m7, m8 in one push m5 -> m8; its copy cannot be read. b's copy
    // holds m7, an intermediate commit the log never names.
    let repo = RepoId::from("R1");
    let rows = [row("a", 5), row("b", 5), row("c", 6)];
    let events = [
        update(5, "a", "refs/heads/main", "m4", "m5"),
        update(6, "c", "refs/heads/main", "m5", "m8"),
    ];
    let parents = [("m8", "m7"), ("m7", "m6"), ("m6", "m5"), ("m5", "m4")];
    // The survivor lacks them all: the tip is listed from the log for c, and b's m7 from
    // its working copy.
    let kept = refs(&[("refs/heads/main", "m5")]);
    let mut copies = BTreeMap::new();
    copies.insert(d("b"), Ok(refs(&[("refs/heads/main", "m7")])));
    copies.insert(d("c"), Err("unreachable".to_owned()));
    let graph = answers(&kept, &copies, &events, &[("m5", "m4")]);
    let facts = Facts {
        repo: &repo,
        rows: &rows,
        events: &events,
        kept: Some((&d("a"), &kept)),
        copies: &copies,
        graph: Graph::Read(&graph),
    };
    let plans = plan_demote(&facts, &[d("b"), d("c")]);
    let listed: Vec<(&str, &str)> = plans
        .iter()
        .flat_map(|p| p.discards.iter())
        .map(|x| (x.device.as_str(), x.commit.as_str()))
        .collect();
    assert_eq!(listed, vec![("b", "m7"), ("c", "m8")], "{plans:?}");

    // A survivor that holds the push (m8) keeps m7 too: the graph says so, where the log
    // (m8 follows m5) would have listed m7 as lost.
    let kept = refs(&[("refs/heads/main", "m8")]);
    let graph = answers(&kept, &copies, &events, &parents);
    let facts = Facts {
        kept: Some((&d("a"), &kept)),
        graph: Graph::Read(&graph),
        ..facts
    };
    let plans = plan_demote(&facts, &[d("b"), d("c")]);
    assert!(plans.iter().all(|p| p.discards.is_empty()), "{plans:?}");
    let facts = Facts {
        graph: Graph::Unreadable("no answer"),
        ..facts
    };
    let plans = plan_demote(&facts, &[d("b"), d("c")]);
    assert_eq!(
        plans[0].discards.len(),
        1,
        "the log alone lists m7: {plans:?}"
    );
}

#[test]
fn graph_queries_ask_only_where_the_kept_copy_differs() {
    let kept = refs(&[("refs/heads/main", "m5"), ("refs/heads/x", "x1")]);
    let mut copies = BTreeMap::new();
    copies.insert(
        d("b"),
        Ok(refs(&[
            ("refs/heads/main", "m6"),
            ("refs/heads/x", "x1"),
            ("refs/heads/new", "n1"),
        ])),
    );
    copies.insert(d("c"), Err("unreachable".to_owned()));
    let events = [update(6, "c", "refs/heads/main", "m5", "m7")];
    let q: Vec<(String, String)> = graph_queries(&kept, &copies, &events)
        .into_iter()
        .map(|q| (q.ancestor.to_string(), q.descendant.to_string()))
        .collect();
    assert_eq!(
        q,
        vec![
            ("m6".to_owned(), "m5".to_owned()),
            ("m7".to_owned(), "m5".to_owned())
        ]
    );
}
