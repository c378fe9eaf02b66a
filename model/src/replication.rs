//! Background replication (PROTOCOL.md section 5): every device keeps the repositories
//! bound to it up to date, by scanning for out-of-sync repositories, by pulling when a
//! peer announces a write (**[stormcell]**), and by refreshing idle repositories on an
//! interval that grows with idleness.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use crate::engine::{Engine, Progress};
use crate::error::ClusterError;
use crate::failover::Intent;
use crate::ids::{RepoId, Version};
use crate::ports::{Event, LockName};

/// Per-repository pull bookkeeping.
#[derive(Debug, Clone)]
struct PullState {
    last_trigger_pull: Option<Instant>,
    next_refresh: Instant,
    errors: u32,
    version: Option<Version>,
    changed_at: Instant,
}

impl PullState {
    /// A repository seen for the first time: due for a refresh at once.
    fn new(now: Instant) -> Self {
        PullState {
            last_trigger_pull: None,
            next_refresh: now,
            errors: 0,
            version: None,
            changed_at: now,
        }
    }
}

/// The refresh interval of an idle repository: it grows with how long the repository has
/// been idle, between the floor and the cap; after errors, the floor times the number of
/// consecutive errors.
pub fn refresh_interval(idle: Duration, errors: u32, floor: Duration, cap: Duration) -> Duration {
    if errors > 0 {
        return floor.saturating_mul(errors).min(cap);
    }
    (idle / 2).clamp(floor, cap)
}

impl Engine {
    /// One background pull: take `pull(repo, device)` (skipping when another pull holds
    /// it), then the read sync.
    pub async fn pull(&self, repo: &RepoId) -> Result<Option<Version>, ClusterError> {
        let link = self.connect(Intent::Read).await?;
        let view = self.view(&link);
        let mut session = link.session;
        let lock = LockName::Pull(repo.clone(), self.device().clone());
        if !session.try_lock(&lock).await? {
            return Ok(None);
        }
        let topology = session.topology().await?;
        if topology
            .repositories
            .get(repo)
            .is_some_and(|r| r.maintenance.is_some())
        {
            self.release(session.as_mut(), &lock).await;
            return Ok(None);
        }
        let result = self
            .read_sync(session.as_mut(), repo, &Progress::none(), false, view)
            .await;
        match result {
            Ok(outcome) => {
                self.release(session.as_mut(), &lock).await;
                Ok(Some(outcome.version))
            }
            Err(e) => {
                if self.config().rules().release_locks_on_every_path {
                    self.release(session.as_mut(), &lock).await;
                } else {
                    self.end_failed_session(session, &lock.to_string());
                }
                Err(e)
            }
        }
    }
}

/// Runs the background replication of one device forever. `triggers` carries the
/// repositories peers asked this device to pull at once.
pub async fn run(engine: Arc<Engine>, mut triggers: mpsc::UnboundedReceiver<RepoId>) {
    let timing = engine.config().timing.clone();
    let permits = Arc::new(Semaphore::new(timing.max_pulls.max(1)));
    let running: Arc<Mutex<BTreeSet<RepoId>>> = Arc::default();
    let (done_tx, mut done_rx) =
        mpsc::unbounded_channel::<(RepoId, Result<Option<Version>, String>)>();
    let mut state: BTreeMap<RepoId, PullState> = BTreeMap::new();
    let mut scan = tokio::time::interval(timing.scan_interval);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let start_pull = |repo: RepoId| {
        if !running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(repo.clone())
        {
            return;
        }
        let engine = Arc::clone(&engine);
        let permits = Arc::clone(&permits);
        let running = Arc::clone(&running);
        let done = done_tx.clone();
        let spawn = Arc::clone(&engine.ports().spawn);
        spawn.spawn(Box::pin(async move {
            let result = match permits.acquire_owned().await {
                Ok(_permit) => engine.pull(&repo).await.map_err(|e| e.to_string()),
                Err(_) => Err("replication is shutting down".to_owned()),
            };
            running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&repo);
            let _ = done.send((repo, result));
        }));
    };

    loop {
        tokio::select! {
            biased;
            Some(repo) = triggers.recv() => start_pull(repo),
            Some((repo, result)) = done_rx.recv() => {
                let now = Instant::now();
                let entry = state.entry(repo.clone()).or_insert_with(|| PullState::new(now));
                match result {
                    Ok(version) => {
                        entry.errors = 0;
                        if version.is_some() && version != entry.version {
                            entry.version = version;
                            entry.changed_at = now;
                        }
                    }
                    Err(reason) => {
                        entry.errors = entry.errors.saturating_add(1);
                        engine.ports().events.emit(Event::Note {
                            text: format!("background pull of {repo} failed: {reason}"),
                        });
                    }
                }
                entry.next_refresh = now
                    + refresh_interval(now - entry.changed_at, entry.errors, timing.idle_floor, timing.idle_cap);
            }
            _ = scan.tick() => {
                let now = Instant::now();
                let Ok(link) = engine.connect(Intent::Read).await else { continue };
                let mut session = link.session;
                let Ok(topology) = session.topology().await else { continue };
                let out_of_sync = session.out_of_sync(engine.device()).await.unwrap_or_default();
                drop(session);
                for repo in topology.repositories_on(engine.device()) {
                    let entry = state.entry(repo.clone()).or_insert_with(|| PullState::new(now));
                    let behind = out_of_sync.contains(&repo);
                    let gap_passed = entry
                        .last_trigger_pull
                        .is_none_or(|t| now - t >= timing.out_of_sync_pull_gap);
                    if behind && gap_passed {
                        entry.last_trigger_pull = Some(now);
                        start_pull(repo);
                    } else if now >= entry.next_refresh {
                        start_pull(repo);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_interval_grows_with_idleness_and_errors() {
        let floor = Duration::from_secs(15);
        let cap = Duration::from_secs(6 * 3600);
        assert_eq!(refresh_interval(Duration::ZERO, 0, floor, cap), floor);
        assert_eq!(
            refresh_interval(Duration::from_secs(600), 0, floor, cap),
            Duration::from_secs(300)
        );
        assert_eq!(
            refresh_interval(Duration::from_secs(86_400), 0, floor, cap),
            cap
        );
        assert_eq!(
            refresh_interval(Duration::ZERO, 3, floor, cap),
            Duration::from_secs(45)
        );
    }
}
