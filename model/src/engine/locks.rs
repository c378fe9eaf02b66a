//! Taking session-scoped locks with the waits and budgets of PROTOCOL.md section 2 (woken by
//! a release under the lock hand-off of section 12).

use std::time::Duration;

use super::{Engine, Progress};
use crate::error::ClusterError;
use crate::leaders::writing_rows;
use crate::lock_wait::LockWaiter;
use crate::ports::{DbSession, Event, LockName};

impl Engine {
    /// Takes `lock` on `session`, waiting within `budget`. While waiting for a write lock,
    /// tells the client who is writing.
    pub(crate) async fn acquire(
        &self,
        session: &mut dyn DbSession,
        lock: &LockName,
        budget: Duration,
        progress: &Progress,
    ) -> Result<Duration, ClusterError> {
        let mut waiter = LockWaiter::new(budget, self.config.rules().lock_hand_off);
        let is_write = matches!(lock, LockName::Write(_));
        let mut holder = None;
        let mut taken = session.try_lock(lock).await?;
        loop {
            if taken {
                let waited = waiter.waited();
                if waited * 2 > budget {
                    self.ports
                        .events
                        .reached(crate::ports::Coverage::LockWaitOverHalfBudget);
                }
                self.emit(Event::LockAcquired {
                    lock: lock.to_string(),
                    waited_ms: waited.as_millis() as u64,
                });
                if is_write {
                    if waited.as_secs() == 0 {
                        progress.say("Acquired write lock immediately.");
                    } else {
                        progress.say(format!(
                            "Acquired write lock after {} second(s).",
                            waited.as_secs()
                        ));
                    }
                }
                return Ok(waited);
            }
            let Some(pause) = waiter.next_pause() else {
                self.ports
                    .events
                    .reached(crate::ports::Coverage::LockWaitOverHalfBudget);
                return Err(ClusterError::LockTimeout {
                    repo: lock.repo().clone(),
                    lock: lock.kind(),
                    waited: waiter.waited(),
                    holder,
                });
            };
            if is_write {
                let rows = session.rows(lock.repo()).await?;
                if let Some(row) = writing_rows(&rows).first() {
                    let user = row
                        .write_props
                        .as_ref()
                        .map_or("someone", |p| p.user.as_str());
                    let since = row.write_props.as_ref().map_or(0, |p| p.since_ms);
                    let secs = self.ports.clock.now_ms().saturating_sub(since) / 1000;
                    progress.say(format!(
                        "Waiting for {user} to finish writing (on device \"{}\" for {secs}s)...",
                        row.device
                    ));
                    holder = Some(format!("{user} on device \"{}\"", row.device));
                }
            }
            taken = waiter.wait(session, lock, pause).await?;
        }
    }

    /// Releases a lock; a failure is only logged, since the session's end releases it too.
    pub(crate) async fn release(&self, session: &mut dyn DbSession, lock: &LockName) {
        match session.unlock(lock).await {
            Ok(()) => self.emit(Event::LockReleased {
                lock: lock.to_string(),
            }),
            Err(e) => self.emit(Event::Note {
                text: format!("releasing {lock} failed ({e}); it ends with the session"),
            }),
        }
    }
}
