//! The cluster database's state as pure data: the tables of PROTOCOL.md section 1 and the
//! session-scoped named locks of section 2, with one method per operation of the
//! [`DbSession`](stormcell_model::ports::DbSession) port. No networking and no time here,
//! so the semantics can be tested directly and reused by replicas.

use std::collections::{BTreeMap, VecDeque};

use stormcell_model::admin::SalvageRecord;
use stormcell_model::ids::{DeviceId, Digest, Generation, LockOwner, RepoId, Version};
use stormcell_model::ports::{FinishWrite, LockName};
use stormcell_model::rows::{
    NewPushEvent, NewSyncEvent, PushEvent, Topology, VersionRow, WriteProps,
};

/// A database session (one client connection), as the server numbers them.
pub type SessionId = u64;

/// How many sync events are kept (older ones are dropped, like a log table that is pruned).
pub const SYNC_EVENTS_KEPT: usize = 1000;

/// The cluster database: configuration, version rows, push and sync events, named locks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tables {
    topology: Topology,
    rows: BTreeMap<(RepoId, DeviceId), VersionRow>,
    push_events: Vec<PushEvent>,
    next_push_id: u64,
    newest_push: BTreeMap<RepoId, u64>,
    sync_events: VecDeque<NewSyncEvent>,
    sync_events_total: u64,
    locks: BTreeMap<LockName, SessionId>,
    /// Sessions queued for a held lock, first come first served. A free lock has no
    /// queue: a release hands the lock to the first waiter at once.
    waiters: BTreeMap<LockName, VecDeque<SessionId>>,
    generation: Generation,
    /// **[stormcell]** How many times each (repository, device) row was deleted.
    demotions: BTreeMap<(RepoId, DeviceId), u64>,
    /// **[stormcell]** Salvage bundles thaws wrote, oldest first.
    salvage: Vec<SalvageRecord>,
}

impl Tables {
    /// A database holding the given configuration and no rows, events or locks.
    pub fn new(topology: Topology) -> Self {
        Self {
            topology,
            next_push_id: 1,
            ..Self::default()
        }
    }

    /// A database holding the given configuration and version rows (seeding at time zero).
    pub fn with(topology: Topology, rows: Vec<VersionRow>) -> Self {
        let mut tables = Self::new(topology);
        for row in rows {
            tables.put_row(row);
        }
        tables
    }

    /// The generation of the primary this data comes from (PROTOCOL.md 12).
    pub fn generation(&self) -> &Generation {
        &self.generation
    }

    /// A replica becomes the primary: a new generation begins.
    pub fn promoted(&mut self, host: &str) {
        self.generation = Generation {
            promotions: self.generation.promotions + 1,
            lineage: host.to_owned(),
        };
    }

    // ----- configuration -----

    /// The configuration (devices, services, bindings, repositories).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The configuration, for administrative edits (binding changes, new devices, ...).
    pub fn topology_mut(&mut self) -> &mut Topology {
        &mut self.topology
    }

    // ----- version rows -----

    /// Every version row of a repository, in device order.
    pub fn rows(&self, repo: &RepoId) -> Vec<VersionRow> {
        self.repo_rows(repo).cloned().collect()
    }

    fn repo_rows<'a>(&'a self, repo: &'a RepoId) -> impl Iterator<Item = &'a VersionRow> + 'a {
        self.rows
            .iter()
            .filter(move |((r, _), _)| r == repo)
            .map(|(_, row)| row)
    }

    /// Every version row, in (repository, device) order.
    pub fn all_rows(&self) -> Vec<VersionRow> {
        self.rows.values().cloned().collect()
    }

    /// One row, if it exists.
    pub fn row(&self, repo: &RepoId, device: &DeviceId) -> Option<&VersionRow> {
        self.rows.get(&(repo.clone(), device.clone()))
    }

    /// Inserts or replaces a row as given (seeding and administrative edits).
    pub fn put_row(&mut self, row: VersionRow) {
        self.rows
            .insert((row.repo.clone(), row.device.clone()), row);
    }

    /// Deletes a row (a thaw's demote) and counts the demote; returns whether it existed.
    pub fn delete_row(&mut self, repo: &RepoId, device: &DeviceId) -> bool {
        let key = (repo.clone(), device.clone());
        let existed = self.rows.remove(&key).is_some();
        if existed {
            *self.demotions.entry(key).or_default() += 1;
        }
        existed
    }

    /// Applies again a demote the device counted as its `demotes`-th and this database
    /// lost: deletes its row and raises its count, when the count is lower.
    pub fn restore_demote(&mut self, repo: &RepoId, device: &DeviceId, demotes: u64) -> bool {
        let key = (repo.clone(), device.clone());
        let counted = self.demotions.get(&key).copied().unwrap_or(0);
        if counted >= demotes {
            return false;
        }
        let existed = self.rows.remove(&key).is_some();
        self.demotions.insert(key, demotes);
        existed
    }

    /// How many times each device's row of `repo` was deleted, for devices demoted at
    /// least once.
    pub fn demotions(&self, repo: &RepoId) -> BTreeMap<DeviceId, u64> {
        self.demotions
            .iter()
            .filter(|((r, _), _)| r == repo)
            .map(|((_, d), n)| (d.clone(), *n))
            .collect()
    }

    fn empty_row(repo: &RepoId, device: &DeviceId) -> VersionRow {
        VersionRow {
            repo: repo.clone(),
            device: device.clone(),
            version: 0,
            writing: false,
            write_props: None,
            lock_owner: None,
            digest: None,
        }
    }

    /// Repositories whose service has an active binding for `device` and that have some
    /// row, where the device has no row or is below `max`; in name order. A repository with
    /// no rows at all is not listed: there is nothing to sync from (it is either new or an
    /// ambiguous leader, which the read sync reports).
    pub fn out_of_sync(&self, device: &DeviceId) -> Vec<RepoId> {
        self.topology
            .repositories_on(device)
            .into_iter()
            .filter(|repo| {
                let Some(max) = self.repo_rows(repo).map(|r| r.version).max() else {
                    return false;
                };
                match self.row(repo, device) {
                    None => true,
                    Some(row) => row.version < max,
                }
            })
            .collect()
    }

    /// Step 4 of a write: upsert the device's row with `writing = true`, `write_props` and
    /// `lock_owner`, leaving its version and digest unchanged (a new row starts at 0).
    pub fn begin_write(
        &mut self,
        repo: &RepoId,
        device: &DeviceId,
        props: &WriteProps,
        owner: &LockOwner,
    ) {
        let row = self
            .rows
            .entry((repo.clone(), device.clone()))
            .or_insert_with(|| Self::empty_row(repo, device));
        row.writing = true;
        row.write_props = Some(props.clone());
        row.lock_owner = Some(owner.clone());
    }

    /// Step 6 of a write: where the row still has `old_version`, `writing = true` and this
    /// `lock_owner`, set the new version and digest and clear `writing` and `lock_owner`
    /// (`write_props` stays, as the record of the last writer). Returns the rows changed.
    pub fn finish_write(&mut self, f: &FinishWrite) -> u64 {
        let Some(row) = self.rows.get_mut(&(f.repo.clone(), f.device.clone())) else {
            return 0;
        };
        if row.version != f.old_version || !row.writing || row.lock_owner.as_ref() != Some(&f.owner)
        {
            return 0;
        }
        row.version = f.new_version;
        row.digest = f.digest;
        row.writing = false;
        row.lock_owner = None;
        1
    }

    /// After a sync: upsert the device's version and digest (`writing` and `lock_owner` are
    /// left as they are).
    pub fn set_version(
        &mut self,
        repo: &RepoId,
        device: &DeviceId,
        version: Version,
        digest: Option<Digest>,
    ) {
        let row = self
            .rows
            .entry((repo.clone(), device.clone()))
            .or_insert_with(|| Self::empty_row(repo, device));
        row.version = version;
        row.digest = digest;
    }

    /// Inserts version 0 for the device unless the repository has any row; returns whether
    /// it inserted.
    pub fn insert_initial(
        &mut self,
        repo: &RepoId,
        device: &DeviceId,
        digest: Option<Digest>,
    ) -> bool {
        if self.repo_rows(repo).next().is_some() {
            return false;
        }
        let mut row = Self::empty_row(repo, device);
        row.digest = digest;
        self.put_row(row);
        true
    }

    // ----- events -----

    /// Appends a push event; ids are monotonic from 1, shared by all repositories, and
    /// above every version the repository's rows hold. After a promotion the new primary
    /// may lack events whose ids devices already hold as versions; reusing such an id would
    /// give two different states the same version.
    pub fn record_push(&mut self, event: &NewPushEvent) -> u64 {
        let floor = self
            .repo_rows(&event.repo)
            .map(|r| r.version)
            .max()
            .unwrap_or(0);
        let id = self.next_push_id.max(floor + 1).max(1);
        self.next_push_id = id + 1;
        self.newest_push.insert(event.repo.clone(), id);
        self.push_events.push(PushEvent {
            id,
            event: event.clone(),
        });
        id
    }

    /// The id of the newest push event of a repository.
    pub fn newest_push_id(&self, repo: &RepoId) -> Option<u64> {
        self.newest_push.get(repo).copied()
    }

    /// Every push event, oldest first.
    pub fn push_events(&self) -> &[PushEvent] {
        &self.push_events
    }

    /// Records a salvage bundle.
    pub fn record_salvage(&mut self, record: &SalvageRecord) {
        self.salvage.push(record.clone());
    }

    /// The salvage bundles recorded for a repository, oldest first.
    pub fn salvage_records(&self, repo: &RepoId) -> Vec<SalvageRecord> {
        self.salvage
            .iter()
            .filter(|r| &r.repo == repo)
            .cloned()
            .collect()
    }

    /// Appends a sync event, dropping the oldest beyond [`SYNC_EVENTS_KEPT`].
    pub fn record_sync(&mut self, event: &NewSyncEvent) {
        if self.sync_events.len() == SYNC_EVENTS_KEPT {
            self.sync_events.pop_front();
        }
        self.sync_events.push_back(event.clone());
        self.sync_events_total += 1;
    }

    /// The kept sync events, oldest first.
    pub fn sync_events(&self) -> Vec<NewSyncEvent> {
        self.sync_events.iter().cloned().collect()
    }

    /// How many sync events were ever recorded (kept or dropped).
    pub fn sync_events_total(&self) -> u64 {
        self.sync_events_total
    }

    // ----- locks -----

    /// Takes a named lock for a session: succeeds when it is free or this session already
    /// holds it (taking it twice does not nest; one unlock releases it).
    pub fn try_lock(&mut self, session: SessionId, lock: &LockName) -> bool {
        match self.locks.get(lock) {
            Some(&holder) => holder == session,
            None => {
                self.locks.insert(lock.clone(), session);
                true
            }
        }
    }

    /// Takes a lock like [`Tables::try_lock`], or queues the session for it: `true` when
    /// the session holds it now. A queued session gets the lock when it reaches the front
    /// of the queue and the lock is released ([`Tables::unlock`]).
    pub fn lock_or_queue(&mut self, session: SessionId, lock: &LockName) -> bool {
        if self.try_lock(session, lock) {
            return true;
        }
        let queue = self.waiters.entry(lock.clone()).or_default();
        if !queue.contains(&session) {
            queue.push_back(session);
        }
        false
    }

    /// Takes the session out of a lock's queue (its wait ran out); returns whether it
    /// holds the lock after all (handed over before it gave up).
    pub fn leave_queue(&mut self, session: SessionId, lock: &LockName) -> bool {
        if let Some(queue) = self.waiters.get_mut(lock) {
            queue.retain(|&s| s != session);
            if queue.is_empty() {
                self.waiters.remove(lock);
            }
        }
        self.lock_holder(lock) == Some(session)
    }

    /// Releases a lock if this session holds it, handing it to the first queued session;
    /// returns whether it released it. Someone else's lock is never touched.
    pub fn unlock(&mut self, session: SessionId, lock: &LockName) -> bool {
        if self.locks.get(lock) != Some(&session) {
            return false;
        }
        self.locks.remove(lock);
        self.hand_over(lock);
        true
    }

    /// Gives a free lock to the first session queued for it.
    fn hand_over(&mut self, lock: &LockName) {
        let Some(queue) = self.waiters.get_mut(lock) else {
            return;
        };
        if let Some(next) = queue.pop_front() {
            self.locks.insert(lock.clone(), next);
        }
        if queue.is_empty() {
            self.waiters.remove(lock);
        }
    }

    /// The session holding a lock.
    pub fn lock_holder(&self, lock: &LockName) -> Option<SessionId> {
        self.locks.get(lock).copied()
    }

    /// Every held lock and its session.
    pub fn locks(&self) -> &BTreeMap<LockName, SessionId> {
        &self.locks
    }

    /// Ends a session: takes it out of every queue, releases every lock it holds (each
    /// handed to its first waiter) and returns them, in name order.
    pub fn release_session(&mut self, session: SessionId) -> Vec<LockName> {
        self.waiters.retain(|_, queue| {
            queue.retain(|&s| s != session);
            !queue.is_empty()
        });
        let held: Vec<LockName> = self
            .locks
            .iter()
            .filter(|(_, &s)| s == session)
            .map(|(l, _)| l.clone())
            .collect();
        for l in &held {
            self.locks.remove(l);
            self.hand_over(l);
        }
        held
    }

    /// Releases every lock (the database restarted: no session survives, nor any wait).
    pub fn release_all_locks(&mut self) -> Vec<LockName> {
        self.waiters.clear();
        std::mem::take(&mut self.locks).into_keys().collect()
    }
}

#[cfg(test)]
mod tests {
    use stormcell_model::ids::ServiceId;
    use stormcell_model::rows::{Binding, Device, PushKind, Repository, Service, SyncResult};

    use super::*;

    fn r(s: &str) -> RepoId {
        RepoId::new(s)
    }
    fn d(s: &str) -> DeviceId {
        DeviceId::new(s)
    }
    fn owner(s: &str) -> LockOwner {
        LockOwner::new(s)
    }
    fn props(dev: &str) -> WriteProps {
        WriteProps {
            user: "alice".to_owned(),
            device: d(dev),
            since_ms: 5,
            pre_digest: Some(Digest(9)),
        }
    }

    /// Service S1 with repo001 and repo002 active and repo003 disabled; R1 and R2 on S1,
    /// R3 unclustered.
    fn topology() -> Topology {
        let mut t = Topology::default();
        for dev in ["repo001", "repo002", "repo003"] {
            t.devices.insert(
                d(dev),
                Device {
                    id: d(dev),
                    address: format!("{dev}:7000"),
                },
            );
        }
        t.services.insert(
            ServiceId::new("S1"),
            Service {
                id: ServiceId::new("S1"),
                closed: false,
            },
        );
        for (dev, disabled) in [("repo001", false), ("repo002", false), ("repo003", true)] {
            t.bindings.push(Binding {
                service: ServiceId::new("S1"),
                device: d(dev),
                writable: true,
                disabled,
            });
        }
        for (repo, svc) in [("R1", Some("S1")), ("R2", Some("S1")), ("R3", None)] {
            t.repositories.insert(
                r(repo),
                Repository {
                    id: r(repo),
                    service: svc.map(ServiceId::new),
                    maintenance: None,
                },
            );
        }
        t
    }

    fn finish(old: Version, who: &str, new: Version) -> FinishWrite {
        FinishWrite {
            repo: r("R1"),
            device: d("repo001"),
            old_version: old,
            owner: owner(who),
            new_version: new,
            digest: Some(Digest(42)),
        }
    }

    #[test]
    fn db_tables_begin_write_upserts_and_keeps_the_version() {
        let mut t = Tables::new(topology());
        t.begin_write(&r("R1"), &d("repo001"), &props("repo001"), &owner("o1"));
        let row = t.row(&r("R1"), &d("repo001")).unwrap().clone();
        assert_eq!(row.version, 0);
        assert!(row.writing);
        assert_eq!(row.lock_owner, Some(owner("o1")));
        assert_eq!(row.digest, None);

        t.set_version(&r("R1"), &d("repo002"), 7, Some(Digest(1)));
        t.begin_write(&r("R1"), &d("repo002"), &props("repo002"), &owner("o2"));
        let row = t.row(&r("R1"), &d("repo002")).unwrap();
        assert_eq!(
            (row.version, row.writing, row.digest),
            (7, true, Some(Digest(1)))
        );
        assert_eq!(row.write_props, Some(props("repo002")));
    }

    #[test]
    fn db_tables_finish_write_is_conditional_on_every_field() {
        let mut t = Tables::new(topology());
        t.set_version(&r("R1"), &d("repo001"), 3, None);
        // Not writing: no change.
        assert_eq!(t.finish_write(&finish(3, "o1", 4)), 0);
        t.begin_write(&r("R1"), &d("repo001"), &props("repo001"), &owner("o1"));
        // Wrong old version.
        assert_eq!(t.finish_write(&finish(2, "o1", 4)), 0);
        // Wrong owner.
        assert_eq!(t.finish_write(&finish(3, "o2", 4)), 0);
        // Missing row.
        let mut other = finish(3, "o1", 4);
        other.device = d("repo002");
        assert_eq!(t.finish_write(&other), 0);
        let unchanged = t.row(&r("R1"), &d("repo001")).unwrap().clone();
        assert_eq!((unchanged.version, unchanged.writing), (3, true));

        // All match: exactly one row changes.
        assert_eq!(t.finish_write(&finish(3, "o1", 4)), 1);
        let row = t.row(&r("R1"), &d("repo001")).unwrap();
        assert_eq!(row.version, 4);
        assert!(!row.writing);
        assert_eq!(row.lock_owner, None);
        assert_eq!(row.digest, Some(Digest(42)));
        assert_eq!(
            row.write_props,
            Some(props("repo001")),
            "last writer is kept"
        );
        // A replay changes nothing (writing is cleared).
        assert_eq!(t.finish_write(&finish(4, "o1", 5)), 0);

        // A demote (row deleted) mid-write fences the writer off.
        t.begin_write(&r("R1"), &d("repo001"), &props("repo001"), &owner("o3"));
        assert!(t.delete_row(&r("R1"), &d("repo001")));
        assert_eq!(t.finish_write(&finish(4, "o3", 5)), 0);
        assert!(t.row(&r("R1"), &d("repo001")).is_none());
    }

    #[test]
    fn db_tables_set_version_keeps_writing_and_owner() {
        let mut t = Tables::new(topology());
        t.begin_write(&r("R1"), &d("repo001"), &props("repo001"), &owner("o1"));
        t.set_version(&r("R1"), &d("repo001"), 9, Some(Digest(3)));
        let row = t.row(&r("R1"), &d("repo001")).unwrap();
        assert_eq!((row.version, row.writing), (9, true));
        assert_eq!(row.lock_owner, Some(owner("o1")));
        assert_eq!(row.digest, Some(Digest(3)));
        t.set_version(&r("R1"), &d("repo001"), 10, None);
        assert_eq!(t.row(&r("R1"), &d("repo001")).unwrap().digest, None);
    }

    #[test]
    fn db_tables_insert_initial_only_without_rows() {
        let mut t = Tables::new(topology());
        assert!(t.insert_initial(&r("R1"), &d("repo001"), Some(Digest(1))));
        let row = t.row(&r("R1"), &d("repo001")).unwrap();
        assert_eq!((row.version, row.digest), (0, Some(Digest(1))));
        // Any row of the repository, on any device, prevents it.
        assert!(!t.insert_initial(&r("R1"), &d("repo002"), None));
        assert!(!t.insert_initial(&r("R1"), &d("repo001"), None));
        assert_eq!(t.rows(&r("R1")).len(), 1);
        // Rows of another repository do not count.
        assert!(t.insert_initial(&r("R2"), &d("repo002"), None));
        // Nor do rows of an inactive device count less: a row is a row.
        t.set_version(&r("R3"), &d("repo003"), 1, None);
        assert!(!t.insert_initial(&r("R3"), &d("repo001"), None));
    }

    #[test]
    fn db_tables_out_of_sync_follows_active_bindings_and_max() {
        let mut t = Tables::new(topology());
        // No rows anywhere: nothing to sync from.
        assert!(t.out_of_sync(&d("repo001")).is_empty());
        // R1: repo002 at 5, repo001 missing -> out of sync.
        t.set_version(&r("R1"), &d("repo002"), 5, None);
        assert_eq!(t.out_of_sync(&d("repo001")), vec![r("R1")]);
        assert!(t.out_of_sync(&d("repo002")).is_empty());
        // R2: max held by the disabled repo003 still counts for max.
        t.set_version(&r("R2"), &d("repo001"), 2, None);
        t.set_version(&r("R2"), &d("repo002"), 2, None);
        t.set_version(&r("R2"), &d("repo003"), 3, None);
        assert_eq!(t.out_of_sync(&d("repo001")), vec![r("R1"), r("R2")]);
        assert_eq!(t.out_of_sync(&d("repo002")), vec![r("R2")]);
        // The disabled device is not actively bound: never listed.
        assert!(t.out_of_sync(&d("repo003")).is_empty());
        // Unclustered R3 is not on any device.
        t.set_version(&r("R3"), &d("repo002"), 1, None);
        assert!(!t.out_of_sync(&d("repo001")).contains(&r("R3")));
        // Catching up removes it.
        t.set_version(&r("R1"), &d("repo001"), 5, None);
        assert_eq!(t.out_of_sync(&d("repo001")), vec![r("R2")]);
        // Disabling repo001's binding removes everything for it.
        for b in &mut t.topology_mut().bindings {
            if b.device == d("repo001") {
                b.disabled = true;
            }
        }
        assert!(t.out_of_sync(&d("repo001")).is_empty());
    }

    #[test]
    fn db_tables_push_ids_are_monotonic_and_per_repo_newest() {
        let mut t = Tables::new(topology());
        let ev = |repo: &str| NewPushEvent {
            repo: r(repo),
            device: d("repo001"),
            user: "alice".to_owned(),
            started_ms: 0,
            updates: vec![],
            accepted: true,
            kind: PushKind::Push,
        };
        assert_eq!(t.newest_push_id(&r("R1")), None);
        assert_eq!(t.record_push(&ev("R1")), 1);
        assert_eq!(t.record_push(&ev("R2")), 2);
        assert_eq!(t.record_push(&ev("R1")), 3);
        assert_eq!(t.newest_push_id(&r("R1")), Some(3));
        assert_eq!(t.newest_push_id(&r("R2")), Some(2));
        assert_eq!(t.push_events().len(), 3);
        // Default-constructed tables also start at 1.
        assert_eq!(Tables::default().record_push(&ev("R1")), 1);
        // A row raised past the id sequence (a version the promoted primary never saw as
        // an event) pushes the next id of that repository above it.
        t.set_version(&r("R1"), &d("repo001"), 40, None);
        assert_eq!(t.record_push(&ev("R1")), 41);
        assert_eq!(t.record_push(&ev("R2")), 42);
    }

    #[test]
    fn db_tables_sync_events_keep_the_last_thousand() {
        let mut t = Tables::new(topology());
        for i in 0..(SYNC_EVENTS_KEPT as u64 + 5) {
            t.record_sync(&NewSyncEvent {
                repo: r("R1"),
                device: d("repo001"),
                from_device: d("repo002"),
                version_before: Some(i),
                version_after: Some(i + 1),
                waited_ms: 0,
                result: SyncResult::Sync,
            });
        }
        let kept = t.sync_events();
        assert_eq!(kept.len(), SYNC_EVENTS_KEPT);
        assert_eq!(kept[0].version_before, Some(5));
        assert_eq!(t.sync_events_total(), SYNC_EVENTS_KEPT as u64 + 5);
    }

    #[test]
    fn db_tables_locks_are_per_session() {
        let mut t = Tables::new(topology());
        let w = LockName::Write(r("R1"));
        let rd = LockName::Read(r("R1"), d("repo001"));
        assert!(t.try_lock(1, &w));
        assert!(t.try_lock(1, &w), "re-taking one's own lock succeeds");
        assert!(!t.try_lock(2, &w));
        assert!(!t.unlock(2, &w), "someone else's lock is not released");
        assert_eq!(t.lock_holder(&w), Some(1));
        assert!(t.try_lock(2, &rd));
        assert!(t.try_lock(1, &LockName::Pull(r("R1"), d("repo001"))));
        assert_eq!(
            t.release_session(1),
            vec![
                LockName::Write(r("R1")),
                LockName::Pull(r("R1"), d("repo001"))
            ]
        );
        assert!(t.try_lock(2, &w));
        assert!(t.unlock(2, &w));
        assert!(!t.unlock(2, &w));
        assert_eq!(t.release_all_locks(), vec![rd]);
        assert!(t.locks().is_empty());
    }
}
