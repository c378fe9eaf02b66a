//! The simulated database over turmoil: session rules, timeouts and the conditional update
//! through the wire.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stormcell_model::error::DbError;
use stormcell_model::ids::{DeviceId, Digest, LockOwner, RepoId, ServiceId};
use stormcell_model::ports::{DbSession, FinishWrite, LockName};
use stormcell_model::rows::{
    Binding, Device, NewPushEvent, NewSyncEvent, PushKind, Repository, Service, SyncResult,
    Topology, WriteProps,
};
use stormcell_model::wire::frame::{read_frame, write_frame, FrameError};
use tokio::time::{sleep, Instant};

use super::*;

const ADDR: &str = "db:5432";

fn topology() -> Topology {
    let mut t = Topology::default();
    let svc = ServiceId::new("S1");
    t.services.insert(
        svc.clone(),
        Service {
            id: svc.clone(),
            closed: false,
        },
    );
    for dev in ["repo001", "repo002"] {
        t.devices.insert(
            DeviceId::new(dev),
            Device {
                id: DeviceId::new(dev),
                address: format!("{dev}:7000"),
            },
        );
        t.bindings.push(Binding {
            service: svc.clone(),
            device: DeviceId::new(dev),
            writable: true,
            disabled: false,
        });
    }
    t.repositories.insert(
        RepoId::new("R1"),
        Repository {
            id: RepoId::new("R1"),
            service: Some(svc),
            maintenance: None,
        },
    );
    t
}

fn write_lock() -> LockName {
    LockName::Write(RepoId::new("R1"))
}

/// A simulation with the database host "db" serving `state`.
fn sim_with_db<'a>(state: &Arc<Mutex<DbHostState>>) -> turmoil::Sim<'a> {
    let mut sim = turmoil::Builder::new()
        .tick_duration(Duration::from_millis(10))
        .simulation_duration(Duration::from_secs(600))
        .build();
    let state = state.clone();
    sim.host("db", move || {
        let state = state.clone();
        async move {
            serve(state, 5432).await?;
            Ok(())
        }
    });
    sim
}

fn holder(state: &Arc<Mutex<DbHostState>>) -> Option<SessionId> {
    lock_state(state).tables.lock_holder(&write_lock())
}

#[test]
fn db_lock_blocks_others_and_a_dropped_handle_releases_at_once() {
    let state = DbHostState::shared(Tables::new(topology()));
    let mut sim = sim_with_db(&state);
    let st = state.clone();
    sim.client("test", async move {
        let db = SimDb::new(ADDR);
        let mut a = db.open().await?;
        let mut b = db.open().await?;
        assert!(a.try_lock(&write_lock()).await?);
        assert!(a.try_lock(&write_lock()).await?, "own lock again");
        assert!(!b.try_lock(&write_lock()).await?);
        let a_session = holder(&st);
        assert!(a_session.is_some());

        drop(a);
        let dropped = Instant::now();
        while !b.try_lock(&write_lock()).await? {
            sleep(Duration::from_millis(10)).await;
        }
        assert!(
            dropped.elapsed() < Duration::from_secs(1),
            "{:?}",
            dropped.elapsed()
        );
        assert_ne!(holder(&st), a_session);

        b.unlock(&write_lock()).await?;
        assert_eq!(holder(&st), None);
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn db_idle_live_session_keeps_its_lock_past_the_session_timeout() {
    let state = DbHostState::shared(Tables::new(topology()));
    let mut sim = sim_with_db(&state);
    let st = state.clone();
    sim.client("test", async move {
        let db = SimDb::new(ADDR);
        let mut a = db.open().await?;
        assert!(a.try_lock(&write_lock()).await?);
        // Idle for more than twice the session timeout: the keepalive holds the session.
        sleep(Duration::from_secs(75)).await;
        let mut b = db.open().await?;
        assert!(!b.try_lock(&write_lock()).await?);
        a.ping().await?;
        assert_eq!(lock_state(&st).expired_sessions, 0);
        drop(a);
        sleep(Duration::from_millis(500)).await;
        assert!(b.try_lock(&write_lock()).await?);
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn db_crashed_client_keeps_its_lock_until_the_session_timeout() {
    let state = DbHostState::shared(Tables::new(topology()));
    let mut sim = sim_with_db(&state);
    let locked = Arc::new(AtomicBool::new(false));
    let l = locked.clone();
    sim.host("holder", move || {
        let locked = l.clone();
        async move {
            let mut a = SimDb::new(ADDR).open().await?;
            assert!(a.try_lock(&write_lock()).await?);
            locked.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let acquired_at: Rc<Cell<Option<Duration>>> = Rc::new(Cell::new(None));
    let acq = acquired_at.clone();
    let l = locked.clone();
    sim.client("observer", async move {
        while !l.load(Ordering::SeqCst) {
            sleep(Duration::from_millis(10)).await;
        }
        let mut b = SimDb::new(ADDR).open().await?;
        while !b.try_lock(&write_lock()).await? {
            sleep(Duration::from_millis(250)).await;
        }
        acq.set(turmoil::sim_elapsed());
        Ok(())
    });

    let mut crashed_at = None;
    loop {
        let done = sim.step().unwrap();
        if crashed_at.is_none() && locked.load(Ordering::SeqCst) {
            // Lightning: the holder's software dies; its sockets send a FIN as they drop.
            sim.crash("holder");
            crashed_at = Some(sim.elapsed());
        }
        if done {
            break;
        }
    }
    let crashed_at = crashed_at.unwrap();
    let acquired_at = acquired_at.get().unwrap();
    let waited = acquired_at - crashed_at;
    assert!(
        waited >= Duration::from_secs(29) && waited <= Duration::from_secs(32),
        "lock freed {waited:?} after the crash"
    );
    assert_eq!(lock_state(&state).expired_sessions, 1);
}

#[test]
fn db_partition_breaks_the_session_within_the_query_timeout() {
    let state = DbHostState::shared(Tables::new(topology()));
    let mut sim = sim_with_db(&state);
    sim.client("test", async move {
        let db = SimDb::new(ADDR);
        let mut a = db.open().await?;
        assert!(a.try_lock(&write_lock()).await?);
        turmoil::partition("test", "db");

        let start = Instant::now();
        let err = a.rows(&RepoId::new("R1")).await.unwrap_err();
        assert!(err.is_connection(), "{err}");
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(30) && waited < Duration::from_millis(30_500),
            "{waited:?}"
        );
        // Broken for good, without touching the network.
        let start = Instant::now();
        assert!(matches!(a.ping().await, Err(DbError::Connection(_))));
        assert!(a.try_lock(&write_lock()).await.unwrap_err().is_connection());
        assert!(start.elapsed() < Duration::from_millis(10));

        // A new connection cannot get through either, and says so within its timeout.
        let start = Instant::now();
        let err = db.open().await.err().unwrap();
        assert!(err.is_connection(), "{err}");
        assert!(start.elapsed() <= Duration::from_millis(2_100));

        turmoil::repair("test", "db");
        // The server expires the silent session (its last request was at time zero) by
        // its next reaper round after 30 s; the Close sent after the timeout was lost in
        // the partition.
        let mut b = db.open().await?;
        while !b.try_lock(&write_lock()).await? {
            sleep(Duration::from_millis(100)).await;
        }
        assert!(turmoil::sim_elapsed().unwrap() < Duration::from_millis(31_500));
        Ok(())
    });
    sim.run().unwrap();
    assert_eq!(lock_state(&state).expired_sessions, 1);
}

#[test]
fn db_silent_raw_session_expires_and_is_hung_up() {
    let state = DbHostState::shared(Tables::new(topology()));
    let mut sim = sim_with_db(&state);
    let st = state.clone();
    sim.client("test", async move {
        let mut raw = crate::net::connect(ADDR, Duration::from_secs(2)).await?;
        write_frame(&mut raw, &DbRequest::TryLock { lock: write_lock() }).await?;
        let resp: DbResponse = read_frame(&mut raw).await?;
        assert_eq!(resp, DbResponse::Locked(true));
        sleep(Duration::from_secs(29)).await;
        assert!(holder(&st).is_some());
        sleep(Duration::from_millis(2_500)).await;
        assert_eq!(holder(&st), None);
        // The server hung up on the expired session.
        let next: Result<DbResponse, _> = read_frame(&mut raw).await;
        assert!(matches!(next, Err(FrameError::Closed)), "{next:?}");
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn db_restart_keeps_tables_and_drops_sessions() {
    let state = DbHostState::shared(Tables::new(topology()));
    let mut sim = sim_with_db(&state);
    // 0: starting, 1: lock taken and row written, 2: database restarted.
    let phase = Rc::new(Cell::new(0u8));
    let p = phase.clone();
    sim.client("test", async move {
        let db = SimDb::new(ADDR);
        let mut a = db.open().await?;
        assert!(a.try_lock(&write_lock()).await?);
        a.set_version(
            &RepoId::new("R1"),
            &DeviceId::new("repo001"),
            4,
            Some(Digest(1)),
            None,
        )
        .await?;
        p.set(1);
        while p.get() != 2 {
            sleep(Duration::from_millis(10)).await;
        }
        // The old connection died with the server's software.
        assert!(a.ping().await.unwrap_err().is_connection());
        let mut b = db.open().await?;
        assert!(
            b.try_lock(&write_lock()).await?,
            "locks do not survive a restart"
        );
        let rows = b.rows(&RepoId::new("R1")).await?;
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].version, rows[0].digest), (4, Some(Digest(1))));
        Ok(())
    });
    let mut crashed_at = None;
    loop {
        let done = sim.step().unwrap();
        if done {
            break;
        }
        if phase.get() == 1 && crashed_at.is_none() {
            sim.crash("db");
            crashed_at = Some(sim.elapsed());
        }
        if let Some(at) = crashed_at {
            if phase.get() == 1 && sim.elapsed() >= at + Duration::from_secs(1) {
                sim.bounce("db");
                phase.set(2);
            }
        }
    }
}

#[test]
fn db_operations_round_trip_through_the_wire() {
    let state = DbHostState::shared(Tables::new(topology()));
    let mut sim = sim_with_db(&state);
    sim.client("test", async move {
        let db = SimDb::new(ADDR);
        let mut s = db.open().await?;
        let r1 = RepoId::new("R1");
        let d1 = DeviceId::new("repo001");
        let d2 = DeviceId::new("repo002");

        assert_eq!(s.topology().await?, topology());
        assert!(s.insert_initial(&r1, &d1, Some(Digest(7))).await?);
        assert!(!s.insert_initial(&r1, &d2, None).await?);
        assert_eq!(s.out_of_sync(&d2).await?, vec![r1.clone()]);
        assert!(s.out_of_sync(&d1).await?.is_empty());

        let props = WriteProps {
            user: "alice".to_owned(),
            device: d1.clone(),
            since_ms: 1,
            pre_digest: Some(Digest(7)),
        };
        let owner = LockOwner::new("tok-1");
        s.begin_write(&r1, &d1, &props, &owner).await?;
        let rows = s.rows(&r1).await?;
        assert!(rows[0].writing);

        let event = NewPushEvent {
            repo: r1.clone(),
            device: d1.clone(),
            user: "alice".to_owned(),
            started_ms: 1,
            updates: vec![],
            accepted: true,
            kind: PushKind::Push,
        };
        assert_eq!(s.newest_push_id(&r1).await?, None);
        let id = s.record_push(&event).await?;
        assert_eq!(id, 1);
        assert_eq!(s.newest_push_id(&r1).await?, Some(1));

        let finish = |old, who: &str| FinishWrite {
            repo: r1.clone(),
            device: d1.clone(),
            old_version: old,
            owner: LockOwner::new(who),
            new_version: id,
            digest: Some(Digest(8)),
        };
        assert_eq!(
            s.finish_write(&finish(3, "tok-1")).await?,
            0,
            "wrong version"
        );
        assert_eq!(s.finish_write(&finish(0, "tok-2")).await?, 0, "wrong owner");
        assert_eq!(s.finish_write(&finish(0, "tok-1")).await?, 1);
        assert_eq!(
            s.finish_write(&finish(0, "tok-1")).await?,
            0,
            "writing cleared"
        );
        let row = s.rows(&r1).await?.remove(0);
        assert_eq!(
            (row.version, row.writing, row.digest),
            (1, false, Some(Digest(8)))
        );
        assert_eq!(row.lock_owner, None);
        assert_eq!(row.write_props, Some(props));

        s.set_version(&r1, &d2, 1, Some(Digest(8)), None).await?;
        assert!(s.out_of_sync(&d2).await?.is_empty());
        s.record_sync(&NewSyncEvent {
            repo: r1.clone(),
            device: d2.clone(),
            from_device: d1.clone(),
            version_before: None,
            version_after: Some(1),
            waited_ms: 0,
            result: SyncResult::Sync,
        })
        .await?;
        s.ping().await?;
        Ok(())
    });
    sim.run().unwrap();
    let st = lock_state(&state);
    assert_eq!(st.tables.sync_events().len(), 1);
    assert_eq!(st.tables.push_events().len(), 1);
}

#[test]
fn db_wire_messages_round_trip_as_json() {
    let reqs = vec![
        DbRequest::TryLock { lock: write_lock() },
        DbRequest::Topology,
        DbRequest::Ping,
        DbRequest::Close,
        DbRequest::SetVersion {
            repo: RepoId::new("R1"),
            device: DeviceId::new("repo001"),
            version: 3,
            digest: None,
            expected: Some(vec![(DeviceId::new("repo001"), 2)]),
        },
        DbRequest::Generation,
    ];
    for req in reqs {
        let json = serde_json::to_vec(&req).unwrap();
        assert_eq!(serde_json::from_slice::<DbRequest>(&json).unwrap(), req);
    }
    for resp in [
        DbResponse::Done,
        DbResponse::Locked(true),
        DbResponse::NewestPushId(None),
        DbResponse::Error("no".to_owned()),
    ] {
        let json = serde_json::to_vec(&resp).unwrap();
        assert_eq!(serde_json::from_slice::<DbResponse>(&json).unwrap(), resp);
    }
}
