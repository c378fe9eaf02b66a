//! The working-copy port's contract (`model/src/ports/store.rs`), written once over a
//! [`StoreKit`] that makes devices and objects in the adapter's own encoding.

use std::collections::BTreeMap;

use stormcell_model::ids::{Digest, Generation, Oid, RepoId};
use stormcell_model::ports::{PushPayload, Store};
use stormcell_model::rows::RefUpdate;

use crate::Checked;

/// How a contract check makes devices and content for one adapter.
pub trait StoreKit {
    /// The adapter.
    type S: Store;
    /// A new device with no working copies.
    fn device(&mut self) -> Self::S;
    /// The same device after its process (or host) restarted: only what the port calls
    /// durable is left.
    fn restart(&mut self, store: Self::S) -> Self::S;
    /// A new commit on top of `parent`, known to the kit (not to any store yet).
    fn commit(&mut self, parent: Option<&Oid>) -> Oid;
    /// A push of `updates` carrying the objects of every commit the kit made that their new
    /// values need; an id the kit never made travels without objects.
    fn payload(&mut self, updates: Vec<RefUpdate>) -> PushPayload;
    /// An object id no store has.
    fn unknown_oid(&self) -> Oid;
}

fn repo() -> RepoId {
    RepoId::new("R1")
}

fn update(name: &str, old: Option<&Oid>, new: Option<&Oid>) -> RefUpdate {
    RefUpdate {
        name: name.to_owned(),
        old: old.cloned(),
        new: new.cloned(),
    }
}

fn refs(pairs: &[(&str, &Oid)]) -> BTreeMap<String, Oid> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).clone()))
        .collect()
}

fn digest_of(refs: &BTreeMap<String, Oid>) -> Digest {
    Digest::of(refs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Pushes `updates` and fails the check unless the push was accepted.
async fn push_ok<K: StoreKit>(kit: &mut K, s: &K::S, updates: Vec<RefUpdate>) -> Checked {
    let payload = kit.payload(updates);
    let applied = s.apply_push(&repo(), &payload).await?;
    assert!(applied.accepted, "push refused: {:?}", applied.reason);
    assert_eq!(applied.reason, None);
    Ok(())
}

/// Pushes `updates`, expects a refusal, and returns its reason.
async fn push_refused<K: StoreKit>(kit: &mut K, s: &K::S, updates: Vec<RefUpdate>) -> String {
    let payload = kit.payload(updates);
    let applied = s
        .apply_push(&repo(), &payload)
        .await
        .expect("a refused push is an answer, not an error of the working copy");
    assert!(!applied.accepted, "push accepted: {payload:?}");
    applied.reason.expect("a refused push says why")
}

/// A working copy nobody wrote to is empty and has no local version or generation.
pub async fn an_unknown_repository_is_empty<K: StoreKit>(mut kit: K) -> Checked {
    let s = kit.device();
    let r = repo();
    assert!(s.refs(&r).await?.is_empty());
    assert_eq!(s.digest(&r).await?, digest_of(&BTreeMap::new()));
    assert_eq!(s.local_version(&r).await?, None);
    assert_eq!(s.verified_generation(&r).await?, None);
    let snap = s.export(&r).await?;
    assert!(snap.refs.is_empty());
    assert_eq!(snap.digest(), digest_of(&BTreeMap::new()));
    Ok(())
}

/// Every update is a compare-and-swap: it applies only where the ref still has the old
/// value the update names (none: the ref must not exist).
pub async fn ref_updates_are_compare_and_swap<K: StoreKit>(mut kit: K) -> Checked {
    let s = kit.device();
    let r = repo();
    let main = "refs/heads/main";
    let c1 = kit.commit(None);
    let c2 = kit.commit(Some(&c1));
    let c3 = kit.commit(Some(&c2));
    let c4 = kit.commit(Some(&c2));

    push_ok(&mut kit, &s, vec![update(main, None, Some(&c1))]).await?;
    assert_eq!(s.refs(&r).await?, refs(&[(main, &c1)]));
    // Creating a ref that exists, or moving one from a value it does not have, is refused.
    let why = push_refused(&mut kit, &s, vec![update(main, None, Some(&c2))]).await;
    assert!(why.contains(main), "{why}");
    let why = push_refused(&mut kit, &s, vec![update(main, Some(&c2), Some(&c3))]).await;
    assert!(why.contains(main), "{why}");
    assert_eq!(s.refs(&r).await?, refs(&[(main, &c1)]));

    // Two writers from the same base: the first wins, the second is refused.
    push_ok(&mut kit, &s, vec![update(main, Some(&c1), Some(&c2))]).await?;
    push_ok(&mut kit, &s, vec![update(main, Some(&c2), Some(&c3))]).await?;
    push_refused(&mut kit, &s, vec![update(main, Some(&c2), Some(&c4))]).await;
    assert_eq!(s.refs(&r).await?, refs(&[(main, &c3)]));

    // Deleting needs the current value too.
    push_refused(&mut kit, &s, vec![update(main, Some(&c2), None)]).await;
    assert_eq!(s.refs(&r).await?, refs(&[(main, &c3)]));
    push_ok(&mut kit, &s, vec![update(main, Some(&c3), None)]).await?;
    assert!(s.refs(&r).await?.is_empty());
    Ok(())
}

/// A push applies all or nothing: with one failing update (a stale old value, or an object
/// that is not there), no ref moves, and what the store says afterwards, before and after
/// a sync and a restart, is what it held before the push.
pub async fn a_push_with_one_failing_ref_applies_nothing<K: StoreKit>(mut kit: K) -> Checked {
    let mut s = kit.device();
    let r = repo();
    let (main, dev, tag) = ("refs/heads/main", "refs/heads/dev", "refs/tags/v1");
    let c1 = kit.commit(None);
    let c2 = kit.commit(Some(&c1));
    let stale = kit.commit(None);
    push_ok(
        &mut kit,
        &s,
        vec![update(main, None, Some(&c1)), update(dev, None, Some(&c1))],
    )
    .await?;
    let before = s.refs(&r).await?;
    let digest = s.digest(&r).await?;

    // The failing update sits between two good ones, so an adapter that applies in order
    // and stops at the first failure shows too.
    let why = push_refused(
        &mut kit,
        &s,
        vec![
            update(main, Some(&c1), Some(&c2)),
            update(dev, Some(&stale), Some(&c2)),
            update(tag, None, Some(&c2)),
        ],
    )
    .await;
    assert!(why.contains(dev), "the reason names the failing ref: {why}");
    assert_eq!(s.refs(&r).await?, before);
    assert_eq!(s.digest(&r).await?, digest);

    // An update whose object is nowhere fails the whole push too.
    let missing = kit.unknown_oid();
    push_refused(
        &mut kit,
        &s,
        vec![
            update(main, Some(&c1), Some(&c2)),
            update(tag, None, Some(&missing)),
        ],
    )
    .await;
    assert_eq!(s.refs(&r).await?, before);

    s.sync(&r).await?;
    s = kit.restart(s);
    assert_eq!(s.refs(&r).await?, before);
    assert_eq!(s.digest(&r).await?, digest);

    // The same updates with the right old values apply together.
    push_ok(
        &mut kit,
        &s,
        vec![
            update(main, Some(&c1), Some(&c2)),
            update(dev, Some(&c1), Some(&c2)),
            update(tag, None, Some(&c2)),
        ],
    )
    .await?;
    assert_eq!(
        s.refs(&r).await?,
        refs(&[(dev, &c2), (main, &c2), (tag, &c2)])
    );
    Ok(())
}

/// After `sync` the refs survive a restart; the local version and the verified
/// generation are durable as soon as they are set.
pub async fn what_sync_made_durable_survives_a_restart<K: StoreKit>(mut kit: K) -> Checked {
    let mut s = kit.device();
    let r = repo();
    let c1 = kit.commit(None);
    let c2 = kit.commit(Some(&c1));
    push_ok(
        &mut kit,
        &s,
        vec![
            update("refs/heads/main", None, Some(&c2)),
            update("refs/tags/first", None, Some(&c1)),
        ],
    )
    .await?;
    s.sync(&r).await?;
    let held = s.refs(&r).await?;
    let digest = s.digest(&r).await?;
    let generation = Generation {
        promotions: 2,
        lineage: "contract".to_owned(),
    };
    s.set_local_version(&r, 7).await?;
    s.set_verified_generation(&r, &generation).await?;

    s = kit.restart(s);
    assert_eq!(s.refs(&r).await?, held);
    assert_eq!(s.digest(&r).await?, digest);
    assert_eq!(s.local_version(&r).await?, Some(7));
    assert_eq!(s.verified_generation(&r).await?, Some(generation.clone()));

    // A later value replaces the earlier one, durably.
    s.set_local_version(&r, 9).await?;
    s = kit.restart(s);
    assert_eq!(s.local_version(&r).await?, Some(9));
    assert_eq!(s.verified_generation(&r).await?, Some(generation));
    // Other repositories are untouched.
    assert_eq!(s.local_version(&RepoId::new("R2")).await?, None);
    Ok(())
}

/// **[stormcell]** The write marker (PROTOCOL.md 12) is durable at once, survives a
/// restart, is kept per repository, and is gone once cleared (clearing twice is fine).
pub async fn a_write_marker_survives_a_restart_until_cleared<K: StoreKit>(mut kit: K) -> Checked {
    let mut s = kit.device();
    let r = repo();
    assert_eq!(s.write_marker(&r).await?, None);
    s.set_local_version(&r, 3).await?;
    s.set_write_marker(&r, Some(Digest(41))).await?;
    s = kit.restart(s);
    assert_eq!(s.write_marker(&r).await?, Some(Digest(41)));
    assert_eq!(s.write_marker(&RepoId::new("R2")).await?, None);
    s.set_write_marker(&r, Some(Digest(42))).await?;
    s = kit.restart(s);
    assert_eq!(s.write_marker(&r).await?, Some(Digest(42)));
    s.set_write_marker(&r, None).await?;
    s.set_write_marker(&r, None).await?;
    s = kit.restart(s);
    assert_eq!(s.write_marker(&r).await?, None);
    assert_eq!(s.local_version(&r).await?, Some(3));
    Ok(())
}

/// A forgotten claim (after a demote, PROTOCOL.md 12) stays forgotten across a restart:
/// no local version, and the demotes taken note of are kept; other repositories keep
/// theirs.
pub async fn a_forgotten_claim_stays_forgotten<K: StoreKit>(mut kit: K) -> Checked {
    let mut s = kit.device();
    let r = repo();
    let other = RepoId::new("R2");
    assert_eq!(s.demotes_seen(&r).await?, 0);
    s.set_local_version(&r, 7).await?;
    s.set_local_version(&other, 5).await?;
    s.forget_claim(&r, 2).await?;
    s = kit.restart(s);
    assert_eq!(s.local_version(&r).await?, None);
    assert_eq!(s.demotes_seen(&r).await?, 2);
    assert_eq!(s.local_version(&other).await?, Some(5));
    assert_eq!(s.demotes_seen(&other).await?, 0);
    // A copy synchronized afterwards claims its new version, and the count stays.
    s.set_local_version(&r, 9).await?;
    s = kit.restart(s);
    assert_eq!(s.local_version(&r).await?, Some(9));
    assert_eq!(s.demotes_seen(&r).await?, 2);
    // Forgetting with no local version on disk only records the count.
    s.forget_claim(&other, 1).await?;
    s.forget_claim(&other, 1).await?;
    assert_eq!(s.local_version(&other).await?, None);
    assert_eq!(s.demotes_seen(&other).await?, 1);
    Ok(())
}

/// Two working copies holding the same refs have the same digest, and a mirror of an
/// export (`+refs/*:refs/*` with prune) holds exactly the exported refs.
pub async fn equal_refs_have_equal_digests_and_a_mirror_is_exact<K: StoreKit>(
    mut kit: K,
) -> Checked {
    let a = kit.device();
    let b = kit.device();
    let r = repo();
    let c1 = kit.commit(None);
    let c2 = kit.commit(Some(&c1));
    let side = kit.commit(Some(&c1));
    for s in [&a, &b] {
        push_ok(
            &mut kit,
            s,
            vec![
                update("refs/heads/main", None, Some(&c2)),
                update("refs/heads/side", None, Some(&side)),
            ],
        )
        .await?;
    }
    let held = a.refs(&r).await?;
    assert_eq!(b.refs(&r).await?, held);
    assert_eq!(a.digest(&r).await?, b.digest(&r).await?);
    assert_eq!(a.digest(&r).await?, digest_of(&held));
    let snap = a.export(&r).await?;
    assert_eq!(snap.refs, held);
    assert_eq!(snap.digest(), a.digest(&r).await?);

    // A device holding other refs mirrors the export: new refs appear, moved refs move,
    // refs the leader lacks are pruned.
    let mut c = kit.device();
    let other = kit.commit(None);
    push_ok(
        &mut kit,
        &c,
        vec![
            update("refs/heads/main", None, Some(&c1)),
            update("refs/heads/stale", None, Some(&other)),
        ],
    )
    .await?;
    assert_ne!(c.digest(&r).await?, snap.digest());
    c.import(&r, &snap).await?;
    assert_eq!(c.refs(&r).await?, held);
    assert_eq!(c.digest(&r).await?, snap.digest());
    c.sync(&r).await?;
    c = kit.restart(c);
    assert_eq!(c.refs(&r).await?, held);
    // Its own export is the same refs again, and importing twice changes nothing.
    assert_eq!(c.export(&r).await?.refs, held);
    c.import(&r, &snap).await?;
    assert_eq!(c.digest(&r).await?, a.digest(&r).await?);
    Ok(())
}

/// A mirror that would leave a ref pointing at an object neither the snapshot nor the
/// working copy has is refused before any ref moves.
pub async fn an_import_with_a_missing_object_changes_nothing<K: StoreKit>(mut kit: K) -> Checked {
    let a = kit.device();
    let b = kit.device();
    let r = repo();
    let c1 = kit.commit(None);
    let c2 = kit.commit(Some(&c1));
    push_ok(
        &mut kit,
        &a,
        vec![update("refs/heads/main", None, Some(&c2))],
    )
    .await?;
    push_ok(
        &mut kit,
        &b,
        vec![update("refs/heads/main", None, Some(&c1))],
    )
    .await?;
    let before = b.refs(&r).await?;
    let mut snap = a.export(&r).await?;
    snap.refs
        .insert("refs/heads/ghost".to_owned(), kit.unknown_oid());
    assert!(b.import(&r, &snap).await.is_err());
    assert_eq!(b.refs(&r).await?, before);
    Ok(())
}

/// Ancestry comes from the commit graph: the commits in between of a push of several
/// count, and a force push that moves a ref to unrelated history is no descent, whatever
/// the ref's old value was.
pub async fn ancestry_is_read_from_the_commit_graph<K: StoreKit>(mut kit: K) -> Checked {
    let mut s = kit.device();
    let r = repo();
    let main = "refs/heads/main";
    let c1 = kit.commit(None);
    let c2 = kit.commit(Some(&c1));
    let c3 = kit.commit(Some(&c2));
    let side = kit.commit(Some(&c2));
    let other = kit.commit(None);
    let unknown = kit.unknown_oid();
    // Nothing is an ancestor of anything in an empty copy, not even of itself.
    assert!(!s.is_ancestor(&r, &c1, &c1).await?);

    // One push of three commits.
    push_ok(&mut kit, &s, vec![update(main, None, Some(&c3))]).await?;
    push_ok(
        &mut kit,
        &s,
        vec![update("refs/heads/side", None, Some(&side))],
    )
    .await?;
    for (a, d, expected) in [
        (&c1, &c3, true),
        (&c2, &c3, true),
        (&c3, &c3, true),
        (&c3, &c1, false),
        (&side, &c3, false),
        (&c2, &side, true),
        (&unknown, &c3, false),
        (&c3, &unknown, false),
    ] {
        assert_eq!(s.is_ancestor(&r, a, d).await?, expected, "{a} of {d}");
    }

    // A force push to unrelated history: c3 is not an ancestor of the new value, and the
    // commits it left behind are still in the graph.
    push_ok(&mut kit, &s, vec![update(main, Some(&c3), Some(&other))]).await?;
    assert!(!s.is_ancestor(&r, &c3, &other).await?);
    assert!(!s.is_ancestor(&r, &other, &c3).await?);
    assert!(s.is_ancestor(&r, &c1, &c3).await?);
    // A rewind: main back to c1, which c3 descends from, not the other way round.
    push_ok(&mut kit, &s, vec![update(main, Some(&other), Some(&c1))]).await?;
    assert!(!s.is_ancestor(&r, &c3, &c1).await?);
    assert!(s.is_ancestor(&r, &c1, &c3).await?);

    s.sync(&r).await?;
    s = kit.restart(s);
    assert!(s.is_ancestor(&r, &c2, &side).await?);
    assert!(!s.is_ancestor(&r, &side, &c2).await?);
    Ok(())
}

/// A salvage bundle keeps the refs it is given with their objects, even commits no ref
/// of the working copy points at any more; it is durable when written, leaves the working
/// copy's refs alone, is listed in label order, and a bundle that cannot be complete (a
/// missing commit), has nothing in it or an unsafe label is refused and not kept.
pub async fn a_salvage_bundle_keeps_refs_the_copy_no_longer_holds<K: StoreKit>(
    mut kit: K,
) -> Checked {
    let mut s = kit.device();
    let r = repo();
    let main = "refs/heads/main";
    let c1 = kit.commit(None);
    let c2 = kit.commit(Some(&c1));
    let c3 = kit.commit(Some(&c2));
    let other = kit.commit(None);
    push_ok(&mut kit, &s, vec![update(main, None, Some(&c3))]).await?;
    push_ok(&mut kit, &s, vec![update(main, Some(&c3), Some(&other))]).await?;
    s.sync(&r).await?;
    let refs_before = s.refs(&r).await?;
    let digest = s.digest(&r).await?;
    assert!(s.salvage_bundles(&r).await?.is_empty());

    let kept = refs(&[(main, &c3), ("refs/tags/t", &c1)]);
    let first = s.write_salvage_bundle(&r, "b-second", &kept).await?;
    assert_eq!(first.refs, kept);
    assert!(first.location.contains("b-second"), "{}", first.location);
    let second = s
        .write_salvage_bundle(&r, "a-first", &refs(&[(main, &other)]))
        .await?;
    assert_eq!(s.refs(&r).await?, refs_before, "a bundle moves no ref");
    assert_eq!(s.digest(&r).await?, digest);

    // Refused, and nothing kept: a missing commit, no refs, labels that are not a name.
    let missing = refs(&[(main, &kit.unknown_oid())]);
    assert!(s
        .write_salvage_bundle(&r, "c-missing", &missing)
        .await
        .is_err());
    assert!(s
        .write_salvage_bundle(&r, "c-empty", &BTreeMap::new())
        .await
        .is_err());
    for label in ["../escape", "a/b", ".hidden", ""] {
        assert!(
            s.write_salvage_bundle(&r, label, &kept).await.is_err(),
            "label {label:?}"
        );
    }

    // Durable as written: no sync after it.
    s = kit.restart(s);
    let listed = s.salvage_bundles(&r).await?;
    assert_eq!(listed, vec![second, first]);
    assert!(s.salvage_bundles(&RepoId::new("R2")).await?.is_empty());
    // The commits behind a bundled ref are still an answerable history.
    assert!(s.is_ancestor(&r, &c1, &c3).await?);
    Ok(())
}
