//! Unit tests of the pure parts: the plan rules.

use std::collections::BTreeMap;

use super::plan::{plan_demote, plan_promote, Facts, Refs};
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
