//! One host's health record (PROTOCOL.md 9.2): recent check results, and a state that
//! flips only when a whole window of results agrees.

use std::collections::VecDeque;

use tokio::time::Instant;

use super::FailoverTiming;

/// Recent results of one host and its current state.
#[derive(Debug, Clone)]
pub struct HealthRecord {
    results: VecDeque<bool>,
    healthy: bool,
    last_recorded: Option<Instant>,
    last_check: Option<Instant>,
}

impl Default for HealthRecord {
    fn default() -> Self {
        HealthRecord {
            results: VecDeque::new(),
            healthy: true,
            last_recorded: None,
            last_check: None,
        }
    }
}

impl HealthRecord {
    /// Whether the host is healthy (a new record is).
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// The most recent result, if any.
    pub fn last_result(&self) -> Option<bool> {
        self.results.back().copied()
    }

    /// Whether a health check is due at `now`; when it is, the check counts as started.
    pub fn take_check(&mut self, now: Instant, timing: &FailoverTiming) -> bool {
        let due = self
            .last_check
            .is_none_or(|t| now.duration_since(t) >= timing.check_interval);
        if due {
            self.last_check = Some(now);
        }
        due
    }

    /// Records a result unless one was recorded less than a check interval ago. A window of
    /// failures makes the host unhealthy; a window of successes makes it healthy again, but
    /// only when `may_recover` (the seed design never recovered within a process). Returns
    /// the new state when it changed.
    pub fn record(
        &mut self,
        now: Instant,
        up: bool,
        may_recover: bool,
        timing: &FailoverTiming,
    ) -> Option<bool> {
        if self
            .last_recorded
            .is_some_and(|t| now.duration_since(t) < timing.check_interval)
        {
            return None;
        }
        self.last_recorded = Some(now);
        self.results.push_back(up);
        while self.results.len() > timing.window.max(1) {
            self.results.pop_front();
        }
        let full = self.results.len() >= timing.window.max(1);
        let agree = |v: bool| full && self.results.iter().all(|&r| r == v);
        let next = if self.healthy && agree(false) {
            false
        } else if !self.healthy && may_recover && agree(true) {
            true
        } else {
            self.healthy
        };
        (next != self.healthy).then(|| {
            self.healthy = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[tokio::test]
    async fn five_failures_three_seconds_apart_flip_to_unhealthy() {
        let t = FailoverTiming::default();
        let start = Instant::now();
        let mut h = HealthRecord::default();
        for i in 0..4 {
            assert_eq!(h.record(at(start, i * 3), false, true, &t), None);
            assert!(h.is_healthy());
        }
        assert_eq!(h.record(at(start, 12), false, true, &t), Some(false));
        assert!(!h.is_healthy());
    }

    #[tokio::test]
    async fn results_closer_than_the_interval_are_not_recorded() {
        let t = FailoverTiming::default();
        let start = Instant::now();
        let mut h = HealthRecord::default();
        // Ten failures one second apart record only every third one: four results in 9 s.
        for i in 0..10 {
            h.record(at(start, i), false, true, &t);
        }
        assert!(h.is_healthy(), "only four results were recorded");
        assert_eq!(h.record(at(start, 12), false, true, &t), Some(false));
    }

    #[tokio::test]
    async fn a_mixed_window_keeps_the_state() {
        let t = FailoverTiming::default();
        let start = Instant::now();
        let mut h = HealthRecord::default();
        let pattern = [false, false, true, false, false, false, false, true];
        for (i, up) in pattern.into_iter().enumerate() {
            assert_eq!(h.record(at(start, i as u64 * 3), up, true, &t), None);
        }
        assert!(h.is_healthy());
    }

    #[tokio::test]
    async fn recovery_needs_a_full_window_and_permission() {
        let t = FailoverTiming::default();
        let start = Instant::now();
        let mut sticky = HealthRecord::default();
        let mut healing = HealthRecord::default();
        for i in 0..5 {
            sticky.record(at(start, i * 3), false, false, &t);
            healing.record(at(start, i * 3), false, true, &t);
        }
        for i in 5..9 {
            assert_eq!(healing.record(at(start, i * 3), true, true, &t), None);
            sticky.record(at(start, i * 3), true, false, &t);
        }
        assert_eq!(healing.record(at(start, 27), true, true, &t), Some(true));
        assert_eq!(sticky.record(at(start, 27), true, false, &t), None);
        assert!(!sticky.is_healthy());
    }

    #[tokio::test]
    async fn checks_are_due_every_interval() {
        let t = FailoverTiming::default();
        let start = Instant::now();
        let mut h = HealthRecord::default();
        assert!(h.take_check(start, &t));
        assert!(!h.take_check(at(start, 2), &t));
        assert!(h.take_check(at(start, 3), &t));
    }
}
