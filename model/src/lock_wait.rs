//! Lock waits (PROTOCOL.md section 2): a growing pause between tries and a total budget,
//! each pause spent either asleep (polling) or, under **[stormcell]** lock hand-off
//! (PROTOCOL.md 12), in the database's queue for the lock, so that a release wakes the first
//! waiter at once instead of leaving the lock to whoever polls next.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::DbError;
use crate::ports::{DbSession, LockName};

/// The pauses between tries of a polled lock: 1, 1, 2, 2, 3, 3, 3... seconds (the pause
/// grows by half a second per try and is rounded down, capped at 3 seconds).
#[derive(Debug, Clone)]
pub struct PollSchedule {
    tries: u32,
}

impl PollSchedule {
    /// A fresh schedule.
    pub fn new() -> Self {
        PollSchedule { tries: 0 }
    }

    /// The pause before the next try.
    pub fn next_pause(&mut self) -> Duration {
        // 1 + 0.5 * tries, floored, capped at 3: computed in half-seconds to stay exact.
        let half_seconds = (2 + self.tries).min(6);
        self.tries = self.tries.saturating_add(1);
        Duration::from_secs(u64::from(half_seconds / 2))
    }
}

impl Default for PollSchedule {
    fn default() -> Self {
        Self::new()
    }
}

/// One wait for a lock: the caller's first `try_lock`, then one pause at a time (the
/// polling schedule, within the budget) until the lock is taken or the budget is spent.
/// Between pauses the caller may tell its client who holds the lock.
#[derive(Debug)]
pub struct LockWaiter {
    start: Instant,
    schedule: PollSchedule,
    budget: Duration,
    hand_off: bool,
}

impl LockWaiter {
    /// A wait that began now, bounded by `budget`; with `hand_off`, pauses are spent in
    /// the database's queue for the lock.
    pub fn new(budget: Duration, hand_off: bool) -> Self {
        LockWaiter {
            start: Instant::now(),
            schedule: PollSchedule::new(),
            budget,
            hand_off,
        }
    }

    /// How long this wait has lasted.
    pub fn waited(&self) -> Duration {
        self.start.elapsed()
    }

    /// The next pause, or `None` once the budget is spent.
    pub fn next_pause(&mut self) -> Option<Duration> {
        pause_within_budget(self.schedule.next_pause(), self.waited(), self.budget)
    }

    /// Spends `pause` waiting for `lock`; returns whether `session` now holds it.
    pub async fn wait(
        &self,
        session: &mut dyn DbSession,
        lock: &LockName,
        pause: Duration,
    ) -> Result<bool, DbError> {
        if self.hand_off {
            session.lock_wait(lock, pause).await
        } else {
            tokio::time::sleep(pause).await;
            session.try_lock(lock).await
        }
    }
}

/// How long the next pause may be without running past the budget; `None` once the
/// budget is spent.
pub fn pause_within_budget(
    pause: Duration,
    waited: Duration,
    budget: Duration,
) -> Option<Duration> {
    let left = budget.checked_sub(waited)?;
    if left.is_zero() {
        return None;
    }
    Some(pause.min(left))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_three_seconds() {
        let mut s = PollSchedule::new();
        let pauses: Vec<u64> = (0..9).map(|_| s.next_pause().as_secs()).collect();
        assert_eq!(pauses, vec![1, 1, 2, 2, 3, 3, 3, 3, 3]);
    }

    #[test]
    fn the_budget_bounds_the_total_wait() {
        let budget = Duration::from_secs(120);
        let mut s = PollSchedule::new();
        let mut waited = Duration::ZERO;
        let mut tries = 1;
        while let Some(p) = pause_within_budget(s.next_pause(), waited, budget) {
            waited += p;
            tries += 1;
        }
        assert_eq!(waited, budget);
        // 1+1+2+2 = 6, then 38 pauses of 3 = 114 -> 120 exactly.
        assert_eq!(tries, 43);
        assert_eq!(
            pause_within_budget(Duration::from_secs(3), Duration::from_secs(119), budget),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            pause_within_budget(Duration::from_secs(3), budget, budget),
            None
        );
    }
}
