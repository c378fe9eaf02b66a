//! The cluster database port's contract (`model/src/ports/db.rs` and the admin sessions of
//! `model/src/admin/session.rs`), written once over a [`DbEnv`] that can also strike the
//! database hosts the way the nemesis and the operator do.

use std::time::Duration;

use stormcell_model::admin::{AdminDb, ConfigEdit, SalvageRecord};
use stormcell_model::error::DbError;
use stormcell_model::failover::{DbHostConfig, DbRole};
use stormcell_model::ids::{DeviceId, Digest, LockOwner, Oid, RepoId, ServiceId};
use stormcell_model::ports::{ClusterDb, DbSession, FinishWrite, LockName};
use stormcell_model::rows::{
    Binding, Device, NewPushEvent, PushKind, RefUpdate, Repository, WriteProps,
};
use tokio::time::{sleep, Instant};

use crate::Checked;

/// One adapter's database hosts, and what a test may do to them.
pub(crate) trait DbEnv {
    /// Sessions to any host.
    fn db(&self) -> &dyn ClusterDb;
    /// Administrative sessions to the primary.
    fn admin(&self) -> &dyn AdminDb;
    /// The primary.
    fn primary(&self) -> DbHostConfig;
    /// A streaming replica of the primary, when the test asked for one.
    fn replica(&self) -> Option<DbHostConfig>;
    /// The query time limit of sessions (a query without an answer fails after it).
    fn query_timeout(&self) -> Duration;
    /// The host stops answering (stopped process, held link) without closing anything.
    async fn hang(&self, host: &DbHostConfig);
    /// The host answers again.
    async fn resume(&self, host: &DbHostConfig);
    /// The host's server restarts: every session ends, committed data stays.
    async fn restart(&self, host: &DbHostConfig);
    /// An operator promotes the replica to primary.
    async fn promote(&self, host: &DbHostConfig);
}

/// The connect timeout the checks use.
const CONNECT: Duration = Duration::from_secs(1);
/// How late a bounded wait may end, over its bound, on a loaded machine.
const SLACK: Duration = Duration::from_millis(1500);

fn r1() -> RepoId {
    RepoId::new("R1")
}

fn dev(n: u32) -> DeviceId {
    DeviceId::new(format!("repo00{n}"))
}

async fn session<E: DbEnv>(env: &E) -> Result<Box<dyn DbSession>, DbError> {
    env.db().connect(&env.primary(), CONNECT).await
}

/// Registers two devices bound to service `S1` (which every environment starts with) and
/// repository `R1` on it, through the admin port.
pub(crate) async fn seed<E: DbEnv>(env: &E) -> Checked {
    let mut admin = env.admin().connect_admin().await?;
    for n in 1..=2 {
        admin
            .edit(&ConfigEdit::AddDevice {
                device: Device {
                    id: dev(n),
                    address: format!("127.0.0.1:{}", 7000 + n),
                },
            })
            .await?;
        admin
            .edit(&ConfigEdit::AddBinding {
                binding: Binding {
                    service: ServiceId::new("S1"),
                    device: dev(n),
                    writable: true,
                    disabled: false,
                },
            })
            .await?;
    }
    admin
        .edit(&ConfigEdit::AddRepository {
            repository: Repository {
                id: r1(),
                service: Some(ServiceId::new("S1")),
                maintenance: None,
            },
        })
        .await?;
    Ok(())
}

/// Waits until `session` takes `lock`, failing the check after `bound`.
async fn take_within(session: &mut dyn DbSession, lock: &LockName, bound: Duration) -> Checked {
    let start = Instant::now();
    while !session.try_lock(lock).await? {
        assert!(
            start.elapsed() < bound,
            "{lock} still held {:?} after its holder's session ended",
            start.elapsed()
        );
        sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A named lock is held by one session at a time; names are independent; a session that
/// holds it may ask again; unlocking or dropping the session frees it at once.
pub(crate) async fn locks_exclude_and_end_with_their_session<E: DbEnv>(env: E) -> Checked {
    let write = LockName::Write(r1());
    let mut a = session(&env).await?;
    let mut b = session(&env).await?;
    assert!(a.try_lock(&write).await?);
    assert!(a.try_lock(&write).await?, "the holder asks again");
    assert!(!b.try_lock(&write).await?);
    // Other names are other locks.
    assert!(b.try_lock(&LockName::Write(RepoId::new("R2"))).await?);
    assert!(b.try_lock(&LockName::Read(r1(), dev(1))).await?);
    assert!(a.try_lock(&LockName::Read(r1(), dev(2))).await?);
    assert!(!a.try_lock(&LockName::Read(r1(), dev(1))).await?);
    assert!(a.try_lock(&LockName::Pull(r1(), dev(1))).await?);

    a.unlock(&write).await?;
    assert!(b.try_lock(&write).await?);
    assert!(!a.try_lock(&write).await?);

    // The holder's session ends (a live client closing it): the lock is free at once.
    drop(b);
    take_within(a.as_mut(), &write, Duration::from_secs(2)).await?;
    let mut c = session(&env).await?;
    assert!(c.try_lock(&LockName::Read(r1(), dev(1))).await?);
    assert!(!c.try_lock(&write).await?);
    Ok(())
}

/// **[stormcell]** Lock hand-off (PROTOCOL.md 12): waiters queue in the database, a release
/// hands the lock to the first of them at once (a newcomer's `try_lock` cannot jump the
/// queue), a wait that runs out leaves the queue holding nothing, and a holder's session
/// ending hands the lock over as a release does.
pub(crate) async fn a_release_hands_the_lock_to_the_first_waiter<E: DbEnv>(env: E) -> Checked {
    let write = LockName::Write(r1());
    let long = Duration::from_secs(10);
    let mut a = session(&env).await?;
    let mut b = session(&env).await?;
    let mut c = session(&env).await?;
    let mut d = session(&env).await?;
    assert!(a.try_lock(&write).await?);

    // b queues first, c second; a releases; b holds it a moment, then releases.
    let (first, second, released) = tokio::join!(
        async {
            let got = b.lock_wait(&write, long).await?;
            let at = Instant::now();
            sleep(Duration::from_millis(300)).await;
            let newcomer_while_held = d.try_lock(&write).await?;
            b.unlock(&write).await?;
            let newcomer_after_release = d.try_lock(&write).await?;
            Ok::<_, DbError>((got, at, newcomer_while_held, newcomer_after_release))
        },
        async {
            sleep(Duration::from_millis(200)).await;
            let got = c.lock_wait(&write, long).await?;
            Ok::<_, DbError>((got, Instant::now()))
        },
        async {
            sleep(Duration::from_millis(600)).await;
            let at = Instant::now();
            a.unlock(&write).await?;
            Ok::<_, DbError>(at)
        },
    );
    let (b_got, b_at, newcomer_while_held, newcomer_after_release) = first?;
    let (c_got, c_at) = second?;
    let released = released?;
    assert!(
        b_got && c_got,
        "both waiters get the lock within their patience"
    );
    assert!(
        b_at.duration_since(released) < SLACK,
        "the first waiter was woken {:?} after the release",
        b_at.duration_since(released)
    );
    assert!(!newcomer_while_held, "a newcomer took a held lock");
    assert!(
        !newcomer_after_release,
        "a newcomer took the lock a waiter was queued for"
    );
    assert!(
        c_at > b_at + Duration::from_millis(300),
        "the second waiter got the lock before the first released it"
    );
    assert!(
        c_at.duration_since(b_at + Duration::from_millis(300)) < SLACK,
        "the second waiter was woken {:?} after the first released",
        c_at.duration_since(b_at)
    );

    // c holds it. A wait that runs out answers `false` and leaves the queue.
    let start = Instant::now();
    assert!(!a.lock_wait(&write, Duration::from_millis(300)).await?);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(300) + SLACK,
        "a 300 ms wait took {waited:?}"
    );
    c.unlock(&write).await?;
    assert!(
        d.try_lock(&write).await?,
        "a waiter that gave up still stood in the queue"
    );

    // d holds it; its session ends while a waits: a gets it at once.
    let (got, ended) = tokio::join!(
        async {
            let got = a.lock_wait(&write, long).await?;
            Ok::<_, DbError>((got, Instant::now()))
        },
        async move {
            sleep(Duration::from_millis(300)).await;
            drop(d);
            Instant::now()
        },
    );
    let (got, at) = got?;
    assert!(
        got,
        "the waiter did not get the lock of a session that ended"
    );
    assert!(
        at.duration_since(ended) < SLACK,
        "the waiter was woken {:?} after the holder's session ended",
        at.duration_since(ended)
    );
    Ok(())
}

/// A server restart ends every session: the holder's calls fail as connection errors,
/// and its locks are free for a new session.
pub(crate) async fn a_lost_session_loses_its_locks<E: DbEnv>(env: E) -> Checked {
    let write = LockName::Write(r1());
    let mut a = session(&env).await?;
    assert!(a.try_lock(&write).await?);
    env.restart(&env.primary()).await;
    match a.ping().await {
        Err(DbError::Connection(_)) => {}
        other => panic!("a session the server ended answered {other:?}"),
    }
    let mut b = session(&env).await?;
    take_within(b.as_mut(), &write, Duration::from_secs(5)).await?;
    // The old session stays broken: it does not come back holding anything.
    assert!(a.try_lock(&write).await.is_err());
    Ok(())
}

/// A session handed out by `connect` is live: one whose server went away while it sat
/// idle (in a pool, say) is not handed out again.
pub(crate) async fn connect_never_hands_out_a_dead_session<E: DbEnv>(env: E) -> Checked {
    for _ in 0..3 {
        let mut s = session(&env).await?;
        s.ping().await?;
    }
    env.restart(&env.primary()).await;
    let mut s = session(&env).await?;
    s.ping().await?;
    assert!(s.try_lock(&LockName::Write(r1())).await?);
    Ok(())
}

/// A host that stops answering costs a bounded wait: a connect fails within its timeout
/// (also when idle sessions to the host are at hand), a query within the query timeout,
/// and a session that missed an answer is never used again.
pub(crate) async fn a_hung_host_costs_bounded_waits<E: DbEnv>(env: E) -> Checked {
    let primary = env.primary();
    let mut a = session(&env).await?;
    a.ping().await?;
    for _ in 0..2 {
        let mut idle = session(&env).await?;
        idle.ping().await?;
    }
    env.hang(&primary).await;

    let start = Instant::now();
    let connected = env.db().connect(&primary, CONNECT).await;
    let waited = start.elapsed();
    assert!(
        connected.is_err(),
        "connect to a hung host handed out a session"
    );
    assert!(waited < CONNECT + SLACK, "connect took {waited:?}");

    let start = Instant::now();
    let answer = a.ping().await;
    let waited = start.elapsed();
    assert!(
        matches!(answer, Err(DbError::Connection(_))),
        "a hung host answered {answer:?}"
    );
    assert!(
        waited < env.query_timeout() + SLACK,
        "a query waited {waited:?}"
    );

    env.resume(&primary).await;
    let mut b = session(&env).await?;
    b.ping().await?;
    // The late answer to the missed query must not be taken for another one's.
    assert!(
        a.ping().await.is_err(),
        "a session that missed an answer was reused"
    );
    assert!(a.try_lock(&LockName::Write(r1())).await.is_err());
    Ok(())
}

/// The first row is inserted once; `set_version` with `expected` changes the row only
/// while the repository's rows are exactly the expected ones.
pub(crate) async fn set_version_is_conditional_on_the_rows<E: DbEnv>(env: E) -> Checked {
    seed(&env).await?;
    let r = r1();
    let mut a = session(&env).await?;
    let mut b = session(&env).await?;
    assert!(a.insert_initial(&r, &dev(1), Some(Digest(11))).await?);
    assert!(!b.insert_initial(&r, &dev(2), None).await?, "a row exists");
    let rows = a.rows(&r).await?;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].device.clone(), rows[0].version), (dev(1), 0));
    assert_eq!(rows[0].digest, Some(Digest(11)));

    let read = vec![(dev(1), 0)];
    assert!(
        a.set_version(&r, &dev(2), 0, None, Some(&read)).await?,
        "the rows are as read"
    );
    // The rows changed (repo002's row appeared): the same condition fails now.
    assert!(!a.set_version(&r, &dev(2), 5, None, Some(&read)).await?);
    // Someone else moves repo001 on.
    assert!(
        b.set_version(&r, &dev(1), 3, Some(Digest(33)), None)
            .await?
    );
    let stale = vec![(dev(1), 0), (dev(2), 0)];
    assert!(
        !a.set_version(&r, &dev(2), 3, Some(Digest(33)), Some(&stale))
            .await?
    );
    let rows = a.rows(&r).await?;
    let versions: Vec<_> = rows.iter().map(|r| (r.device.clone(), r.version)).collect();
    assert_eq!(versions, vec![(dev(1), 3), (dev(2), 0)], "nothing changed");
    let current = vec![(dev(1), 3), (dev(2), 0)];
    assert!(
        a.set_version(&r, &dev(2), 3, Some(Digest(33)), Some(&current))
            .await?
    );
    let rows = a.rows(&r).await?;
    assert_eq!(rows[1].version, 3);
    assert_eq!(rows[1].digest, Some(Digest(33)));
    Ok(())
}

/// Step 6 of a write changes exactly the row that still has the old version, `writing`
/// and the writer's token.
pub(crate) async fn finish_write_changes_only_the_writers_row<E: DbEnv>(env: E) -> Checked {
    seed(&env).await?;
    let r = r1();
    let mut s = session(&env).await?;
    assert!(s.set_version(&r, &dev(1), 4, None, None).await?);
    let props = WriteProps {
        user: "alice".to_owned(),
        device: dev(1),
        since_ms: 1_700_000_000_000,
        pre_digest: Some(Digest(5)),
    };
    let owner = LockOwner::new("owner-1");
    s.begin_write(&r, &dev(1), &props, &owner).await?;
    let row = s.rows(&r).await?.remove(0);
    assert!(row.writing);
    assert_eq!(row.version, 4, "begin_write leaves the version");
    assert_eq!(row.write_props, Some(props.clone()));
    assert_eq!(row.lock_owner, Some(owner.clone()));
    // A new device's row starts at version 0.
    s.begin_write(&r, &dev(2), &props, &LockOwner::new("owner-2"))
        .await?;
    assert_eq!(s.rows(&r).await?[1].version, 0);

    let finish = FinishWrite {
        repo: r.clone(),
        device: dev(1),
        old_version: 4,
        owner: owner.clone(),
        new_version: 9,
        digest: Some(Digest(99)),
    };
    let wrong_owner = FinishWrite {
        owner: LockOwner::new("someone-else"),
        ..finish.clone()
    };
    let wrong_version = FinishWrite {
        old_version: 3,
        ..finish.clone()
    };
    assert_eq!(s.finish_write(&wrong_owner).await?, 0);
    assert_eq!(s.finish_write(&wrong_version).await?, 0);
    assert_eq!(s.finish_write(&finish).await?, 1);
    let row = s.rows(&r).await?.remove(0);
    assert_eq!((row.version, row.writing, row.lock_owner), (9, false, None));
    assert_eq!(row.digest, Some(Digest(99)));
    assert_eq!(s.finish_write(&finish).await?, 0, "only once");
    Ok(())
}

/// Push ids rise and stay above every version a row of the repository holds; the admin
/// port reads the log back as recorded.
pub(crate) async fn push_ids_rise_above_every_version<E: DbEnv>(env: E) -> Checked {
    seed(&env).await?;
    let r = r1();
    let mut s = session(&env).await?;
    assert_eq!(s.newest_push_id(&r).await?, None);
    assert!(s.set_version(&r, &dev(1), 40, None, None).await?);
    let event = NewPushEvent {
        repo: r.clone(),
        device: dev(1),
        user: "alice".to_owned(),
        started_ms: 1_700_000_000_000,
        updates: vec![RefUpdate {
            name: "refs/heads/main".to_owned(),
            old: None,
            new: Some(Oid::new("0123456789abcdef0123456789abcdef01234567")),
        }],
        accepted: true,
        kind: PushKind::Push,
    };
    let first = s.record_push(&event).await?;
    assert!(first > 40, "push id {first} is not above version 40");
    let refused = NewPushEvent {
        updates: Vec::new(),
        accepted: false,
        ..event.clone()
    };
    let second = s.record_push(&refused).await?;
    assert!(second > first);
    assert_eq!(s.newest_push_id(&r).await?, Some(second));

    let mut admin = env.admin().connect_admin().await?;
    let log = admin.push_events(&r, None).await?;
    let ids: Vec<u64> = log.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![first, second]);
    assert_eq!(log[0].event, event);
    assert_eq!(log[1].event, refused);
    assert_eq!(admin.push_events(&r, Some(first)).await?.len(), 1);
    Ok(())
}

/// Configuration edits refuse duplicates and unknown names; a demote deletes one row.
pub(crate) async fn admin_edits_and_demotes<E: DbEnv>(env: E) -> Checked {
    seed(&env).await?;
    let mut admin = env.admin().connect_admin().await?;
    let again = admin
        .edit(&ConfigEdit::AddDevice {
            device: Device {
                id: dev(1),
                address: "127.0.0.1:1".to_owned(),
            },
        })
        .await;
    assert!(matches!(again, Err(DbError::Query(_))), "{again:?}");
    let unknown = admin
        .edit(&ConfigEdit::SetMaintenance {
            repo: RepoId::new("R9"),
            message: Some("no".to_owned()),
        })
        .await;
    assert!(matches!(unknown, Err(DbError::Query(_))), "{unknown:?}");
    admin
        .edit(&ConfigEdit::SetBinding {
            service: ServiceId::new("S1"),
            device: dev(2),
            writable: Some(false),
            disabled: None,
        })
        .await?;
    let t = admin.topology().await?;
    assert_eq!(t.devices.len(), 2);
    let b2 = t
        .bindings
        .iter()
        .find(|b| b.device == dev(2))
        .expect("repo002's binding");
    assert!(!b2.writable && !b2.disabled);
    assert_eq!(t.repositories[&r1()].service, Some(ServiceId::new("S1")));

    assert!(admin.set_version(&r1(), &dev(1), 2, None, None).await?);
    assert!(admin.set_version(&r1(), &dev(2), 1, None, None).await?);
    // A demote conditional on rows that have moved on changes nothing...
    let stale = [(dev(1), 2), (dev(2), 0)];
    assert_eq!(admin.delete_rows(&r1(), &[dev(1)], Some(&stale)).await?, 0);
    assert_eq!(admin.rows(&r1()).await?.len(), 2);
    // ...and on the rows as they are, deletes.
    let current = [(dev(1), 2), (dev(2), 1)];
    assert_eq!(
        admin.delete_rows(&r1(), &[dev(1)], Some(&current)).await?,
        1
    );
    assert_eq!(admin.delete_rows(&r1(), &[dev(1)], None).await?, 0);
    // Each deletion of a row counts as a demote of its device, in the same change; a
    // demote that deleted nothing counts nothing (PROTOCOL.md 12).
    let counts = admin.demotions(&r1()).await?;
    assert_eq!(counts.into_iter().collect::<Vec<_>>(), vec![(dev(1), 1)]);
    assert_eq!(admin.delete_rows(&r1(), &[dev(1), dev(2)], None).await?, 1);
    assert!(admin.rows(&r1()).await?.is_empty());
    assert!(admin.set_version(&r1(), &dev(1), 3, None, None).await?);
    assert_eq!(admin.delete_rows(&r1(), &[dev(1)], None).await?, 1);
    let counts = admin.demotions(&r1()).await?;
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        vec![(dev(1), 2), (dev(2), 1)]
    );
    assert!(admin.demotions(&RepoId::new("R2")).await?.is_empty());
    // A device applies again a demote the database lost: only where the database counts
    // fewer demotes than the device, deleting its row and taking its count.
    assert!(admin.set_version(&r1(), &dev(1), 4, None, None).await?);
    assert!(!admin.restore_demote(&r1(), &dev(1), 2).await?);
    assert_eq!(admin.rows(&r1()).await?.len(), 1);
    assert!(admin.restore_demote(&r1(), &dev(1), 5).await?);
    assert!(admin.rows(&r1()).await?.is_empty());
    assert_eq!(admin.demotions(&r1()).await?.get(&dev(1)), Some(&5));
    assert!(!admin.restore_demote(&r1(), &dev(1), 5).await?);
    Ok(())
}

/// Salvage bundles are recorded with device, version, time, location and refs, and read
/// back per repository, oldest first, on a new session.
pub(crate) async fn salvage_bundles_are_recorded<E: DbEnv>(env: E) -> Checked {
    seed(&env).await?;
    let mut admin = env.admin().connect_admin().await?;
    assert!(admin.salvage_records(&r1()).await?.is_empty());
    let record = |device: u32, version: Option<u64>, at_ms: u64, repo: &str| SalvageRecord {
        repo: RepoId::new(repo),
        device: dev(device),
        version,
        at_ms,
        location: format!("/data/salvage/{repo}/repo00{device}-{at_ms}.bundle"),
        refs: [
            ("refs/heads/main".to_owned(), Oid::new("c3")),
            ("refs/tags/t".to_owned(), Oid::new("c1")),
        ]
        .into_iter()
        .collect(),
    };
    let later = record(1, Some(7), 2_000, "R1");
    let earlier = record(2, None, 1_000, "R1");
    admin.record_salvage(&later).await?;
    admin.record_salvage(&earlier).await?;
    admin.record_salvage(&record(1, Some(3), 500, "R2")).await?;
    drop(admin);
    let mut admin = env.admin().connect_admin().await?;
    // Oldest first is the order they were recorded in, not their times.
    assert_eq!(admin.salvage_records(&r1()).await?, vec![later, earlier]);
    assert_eq!(admin.salvage_records(&RepoId::new("R2")).await?.len(), 1);
    Ok(())
}

/// A replica says so and refuses writes; after an operator promotes it, it takes writes
/// and reports a new generation.
pub(crate) async fn a_promotion_starts_a_new_generation<E: DbEnv>(env: E) -> Checked {
    seed(&env).await?;
    let replica = env.replica().expect("this check runs with a replica");
    let mut p = session(&env).await?;
    let before = p.generation().await?;
    assert_eq!(p.replication().await?.role, DbRole::Primary);
    assert!(p.set_version(&r1(), &dev(1), 1, None, None).await?);

    let mut r = env.db().connect(&replica, CONNECT).await?;
    assert_eq!(r.replication().await?.role, DbRole::Replica);
    // The replica applies what the primary committed, after a while.
    let start = Instant::now();
    while r.rows(&r1()).await?.first().map(|row| row.version) != Some(1) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the replica never received the primary's write"
        );
        sleep(Duration::from_millis(100)).await;
    }
    let refused = r.set_version(&r1(), &dev(2), 1, None, None).await;
    assert!(refused.is_err(), "a replica took a write: {refused:?}");
    drop(r);

    env.promote(&replica).await;
    let mut r = env.db().connect(&replica, CONNECT).await?;
    assert_eq!(r.replication().await?.role, DbRole::Primary);
    let after = r.generation().await?;
    assert_ne!(after, before);
    assert!(
        after.promotions > before.promotions,
        "{before:?} -> {after:?}"
    );
    assert!(r.set_version(&r1(), &dev(2), 1, None, None).await?);
    Ok(())
}
