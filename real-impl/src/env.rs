//! Clock, randomness, failpoints and events for the daemon: the non-I/O ports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rand::Rng;
use stormcell_model::ids::RepoId;
use stormcell_model::ports::{Clock, Event, Events, Failpoints, Random, WritePoint};

use crate::metrics::Metrics;

/// Wall-clock time from the operating system.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock before 1970 is a broken host; timestamps then read as zero.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// Randomness from the operating system's generator.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl Random for OsRandom {
    fn below(&self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        rand::rng().random_range(0..n)
    }
}

/// A failpoint armed by configuration: the write path stops for good at `point` (a test
/// kills the process there), after creating `marker`.
#[derive(Debug, Clone)]
pub struct HoldAt {
    point: Option<WritePoint>,
    marker: Option<PathBuf>,
    armed_by: Option<PathBuf>,
}

impl HoldAt {
    /// Holds every write at `point`; `None` never holds.
    pub fn new(point: Option<WritePoint>, marker: Option<PathBuf>) -> Self {
        HoldAt {
            point,
            marker,
            armed_by: None,
        }
    }

    /// Holds only while the file `armed_by` exists, at the point it names (at the
    /// configured point when it is empty).
    pub fn armed_by(mut self, armed_by: Option<PathBuf>) -> Self {
        self.armed_by = armed_by;
        self
    }

    /// The point writes are held at now.
    async fn armed_point(&self) -> Option<WritePoint> {
        let Some(file) = &self.armed_by else {
            return self.point;
        };
        let text = tokio::fs::read_to_string(file).await.ok()?;
        let named = text.trim();
        if named.is_empty() {
            return self.point;
        }
        [
            WritePoint::AfterWritingSet,
            WritePoint::AfterRefsWritten,
            WritePoint::AfterVersionBump,
            WritePoint::AfterAck,
        ]
        .into_iter()
        .find(|p| p.name() == named)
    }
}

#[async_trait]
impl Failpoints for HoldAt {
    async fn hit(&self, point: WritePoint, repo: &RepoId) {
        if self.point.is_none() && self.armed_by.is_none() {
            return;
        }
        if self.armed_point().await != Some(point) {
            return;
        }
        tracing::warn!(point = point.name(), repo = %repo, "failpoint reached: holding this write");
        if let Some(marker) = &self.marker {
            if let Err(e) = tokio::fs::write(marker, point.name()).await {
                tracing::error!(marker = %marker.display(), error = %e, "failpoint marker not written");
            }
        }
        std::future::pending::<()>().await;
    }
}

/// Sends protocol events to the log and the metrics.
pub struct LoggedEvents {
    device: String,
    metrics: Arc<Metrics>,
}

impl LoggedEvents {
    /// Events of `device`, counted in `metrics`.
    pub fn new(device: &str, metrics: Arc<Metrics>) -> Self {
        LoggedEvents {
            device: device.to_owned(),
            metrics,
        }
    }
}

impl Events for LoggedEvents {
    fn emit(&self, event: Event) {
        self.metrics.observe(&event);
        let json = serde_json::to_string(&event).unwrap_or_else(|_| format!("{event:?}"));
        match &event {
            Event::LockAcquired { .. } | Event::LockReleased { .. } => {
                tracing::debug!(device = %self.device, event = %json, "protocol event");
            }
            Event::Frozen { .. }
            | Event::WriteNotRecorded { .. }
            | Event::LockLeaked { .. }
            | Event::SyncFailed { .. } => {
                tracing::warn!(device = %self.device, event = %json, "protocol event");
            }
            _ => tracing::info!(device = %self.device, event = %json, "protocol event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_failpoint_armed_by_a_file_holds_only_at_the_point_it_names() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("no temporary directory");
        };
        let (arm, marker) = (dir.path().join("arm"), dir.path().join("hit"));
        let hold = HoldAt::new(None, Some(marker.clone())).armed_by(Some(arm.clone()));
        let repo = RepoId::new("R1");
        let short = Duration::from_millis(300);
        let passes = |point| {
            let hold = hold.clone();
            let repo = repo.clone();
            async move {
                tokio::time::timeout(short, hold.hit(point, &repo))
                    .await
                    .is_ok()
            }
        };
        assert!(passes(WritePoint::AfterRefsWritten).await, "not armed");
        assert!(std::fs::write(&arm, "after-refs-written").is_ok());
        assert!(passes(WritePoint::AfterAck).await, "another point");
        assert!(!passes(WritePoint::AfterRefsWritten).await, "held there");
        assert_eq!(
            std::fs::read_to_string(&marker).ok().as_deref(),
            Some("after-refs-written")
        );
        assert!(std::fs::remove_file(&arm).is_ok());
        assert!(passes(WritePoint::AfterRefsWritten).await, "disarmed");
    }
}
