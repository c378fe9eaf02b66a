//! Prometheus metrics: what the daemon counts, fed by the protocol's events and by the HTTP
//! front end.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;
use stormcell_model::error::ErrorCode;
use stormcell_model::ports::Event;

/// How a client request ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or the refusal's code.
    pub result: String,
}

/// Why the device is read-only.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason's name, as PROTOCOL.md 9.4 gives it.
    pub reason: String,
}

/// A repository.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepoLabel {
    /// Its name.
    pub repo: String,
}

/// The kind of a lock.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LockLabel {
    /// `write`, `read` or `pull`.
    pub lock: LockKind,
}

/// Lock kinds as label values.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum LockKind {
    /// `write(repo)`.
    Write,
    /// `read(repo, device)`.
    Read,
    /// `pull(repo, device)`.
    Pull,
}

/// Every metric of one daemon.
pub struct Metrics {
    registry: Registry,
    pushes: Family<ResultLabel, Counter>,
    reads: Family<ResultLabel, Counter>,
    lock_waits: Family<LockLabel, Histogram>,
    freezes: Family<ResultLabel, Counter>,
    syncs: Family<ResultLabel, Counter>,
    recoveries: Counter,
    unrecorded_writes: Counter,
    peer_auth_failures: Counter,
    read_only: Family<ReasonLabel, Gauge>,
    unhealthy_hosts: Family<ResultLabel, Gauge>,
    sync_waits: Histogram,
    possibly_stale_reads: Counter,
    versions_behind: Family<RepoLabel, Gauge>,
    repositories_behind: Gauge,
    /// Per repository: the cluster's newest version and this device's, as last seen.
    versions: Mutex<BTreeMap<String, (u64, u64)>>,
}

fn wait_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, registered under the `stormcell` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("stormcell");
        let pushes = Family::<ResultLabel, Counter>::default();
        let reads = Family::<ResultLabel, Counter>::default();
        let lock_waits = Family::<LockLabel, Histogram>::new_with_constructor(wait_buckets);
        let freezes = Family::<ResultLabel, Counter>::default();
        let syncs = Family::<ResultLabel, Counter>::default();
        let recoveries = Counter::default();
        let unrecorded_writes = Counter::default();
        let peer_auth_failures = Counter::default();
        let read_only = Family::<ReasonLabel, Gauge>::default();
        let unhealthy_hosts = Family::<ResultLabel, Gauge>::default();
        let sync_waits = wait_buckets();
        let possibly_stale_reads = Counter::default();
        let versions_behind = Family::<RepoLabel, Gauge>::default();
        let repositories_behind = Gauge::default();
        registry.register(
            "read_only",
            "1 while this device is read-only, labelled with the reason",
            read_only.clone(),
        );
        registry.register(
            "db_host_unhealthy",
            "1 while a database host's health record says unhealthy",
            unhealthy_hosts.clone(),
        );
        registry.register("pushes", "Pushes served, by result", pushes.clone());
        registry.register("reads", "Reads served, by result", reads.clone());
        registry.register(
            "lock_wait_seconds",
            "Time spent waiting for cluster locks",
            lock_waits.clone(),
        );
        registry.register(
            "refusals",
            "Requests refused by a freeze or the database, by cause",
            freezes.clone(),
        );
        registry.register(
            "syncs",
            "Fetches from cluster leaders, by result",
            syncs.clone(),
        );
        registry.register(
            "recoveries",
            "Write interruptions resolved by fenced recovery",
            recoveries.clone(),
        );
        registry.register(
            "unrecorded_writes",
            "Writes that reached the disk but could not be recorded",
            unrecorded_writes.clone(),
        );
        registry.register(
            "peer_auth_failures",
            "Peer connections refused for a missing or wrong credential or a failed TLS handshake",
            peer_auth_failures.clone(),
        );
        registry.register(
            "sync_wait_seconds",
            "Time a client read waited for its read sync (locks, leader fetch) before it was served",
            sync_waits.clone(),
        );
        registry.register(
            "possibly_stale_reads",
            "Reads served read-only without proof of freshness, marked possibly stale",
            possibly_stale_reads.clone(),
        );
        registry.register(
            "versions_behind",
            "The cluster's newest version minus this device's, per repository, as last seen by a read sync, pull or write",
            versions_behind.clone(),
        );
        registry.register(
            "repositories_behind",
            "Repositories on which this device was last seen behind the cluster's newest version",
            repositories_behind.clone(),
        );
        Metrics {
            registry,
            pushes,
            reads,
            lock_waits,
            freezes,
            syncs,
            recoveries,
            unrecorded_writes,
            peer_auth_failures,
            read_only,
            unhealthy_hosts,
            sync_waits,
            possibly_stale_reads,
            versions_behind,
            repositories_behind,
            versions: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counts a protocol event.
    pub fn observe(&self, event: &Event) {
        match event {
            Event::LockAcquired { lock, waited_ms } => {
                let kind = if lock.starts_with("write") {
                    LockKind::Write
                } else if lock.starts_with("read") {
                    LockKind::Read
                } else {
                    LockKind::Pull
                };
                self.lock_waits
                    .get_or_create(&LockLabel { lock: kind })
                    .observe(*waited_ms as f64 / 1000.0);
            }
            Event::Synced { .. } => {
                self.syncs.get_or_create(&label("ok")).inc();
            }
            Event::SyncFailed { .. } => {
                self.syncs.get_or_create(&label("error")).inc();
            }
            Event::Recovered { .. } => {
                self.recoveries.inc();
            }
            Event::WriteNotRecorded { .. } => {
                self.unrecorded_writes.inc();
            }
            Event::DbMode { reason } => {
                self.read_only.clear();
                if let Some(reason) = reason {
                    self.read_only
                        .get_or_create(&ReasonLabel {
                            reason: reason.name().to_owned(),
                        })
                        .set(1);
                }
            }
            Event::DbHealth { host, healthy } => {
                self.unhealthy_hosts
                    .get_or_create(&label(host))
                    .set(i64::from(!*healthy));
            }
            _ => {}
        }
    }

    /// Counts a push by its result (`None` is success).
    pub fn push_done(&self, error: Option<ErrorCode>) {
        let l = result_label(error);
        if let Some(code) = error {
            self.refusal(code);
        }
        self.pushes.get_or_create(&l).inc();
    }

    /// Counts a read by its result (`None` is success).
    pub fn read_done(&self, error: Option<ErrorCode>) {
        let l = result_label(error);
        if let Some(code) = error {
            self.refusal(code);
        }
        self.reads.get_or_create(&l).inc();
    }

    fn refusal(&self, code: ErrorCode) {
        if !matches!(code, ErrorCode::Rejected | ErrorCode::NotFound) {
            self.freezes.get_or_create(&label(code_name(code))).inc();
        }
    }

    /// Records how long a client read waited for its read sync.
    pub fn sync_waited(&self, waited: Duration) {
        self.sync_waits.observe(waited.as_secs_f64());
    }

    /// Counts a read served as possibly stale.
    pub fn possibly_stale_read(&self) {
        self.possibly_stale_reads.inc();
    }

    /// Records a repository's versions as the database just showed them: the cluster's
    /// newest (`max`) and this device's (`mine`).
    pub fn versions_seen(&self, repo: &str, max: u64, mine: u64) {
        let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        versions.insert(repo.to_owned(), (max, mine));
        self.publish(&versions, repo);
    }

    /// Records this device's new version of a repository (after a sync).
    pub fn own_version(&self, repo: &str, mine: u64) {
        let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        let entry = versions.entry(repo.to_owned()).or_insert((mine, mine));
        *entry = (entry.0.max(mine), mine);
        self.publish(&versions, repo);
    }

    fn publish(&self, versions: &BTreeMap<String, (u64, u64)>, repo: &str) {
        let behind = |(max, mine): &(u64, u64)| max.saturating_sub(*mine);
        if let Some(v) = versions.get(repo) {
            self.versions_behind
                .get_or_create(&RepoLabel {
                    repo: repo.to_owned(),
                })
                .set(i64::try_from(behind(v)).unwrap_or(i64::MAX));
        }
        let count = versions.values().filter(|v| behind(v) > 0).count();
        self.repositories_behind
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Counts a refused peer.
    pub fn peer_auth_failed(&self) {
        self.peer_auth_failures.inc();
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn label(s: &str) -> ResultLabel {
    ResultLabel {
        result: s.to_owned(),
    }
}

fn result_label(error: Option<ErrorCode>) -> ResultLabel {
    label(error.map_or("ok", code_name))
}

/// The kebab-case name of an error code, as on the wire.
pub fn code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::WriteInterruption => "write-interruption",
        ErrorCode::LeaderLost => "leader-lost",
        ErrorCode::AmbiguousLeader => "ambiguous-leader",
        ErrorCode::NotBound => "not-bound",
        ErrorCode::LockTimeout => "lock-timeout",
        ErrorCode::Rejected => "rejected",
        ErrorCode::DatabaseUnavailable => "database-unavailable",
        ErrorCode::Maintenance => "maintenance",
        ErrorCode::ReadOnly => "read-only",
        ErrorCode::MayNotBeRecorded => "may-not-be-recorded",
        ErrorCode::NotFound => "not-found",
        ErrorCode::Internal => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_results_show_up_in_the_text_format() {
        let m = Metrics::new();
        m.push_done(None);
        m.push_done(Some(ErrorCode::WriteInterruption));
        m.observe(&Event::LockAcquired {
            lock: "write(R1)".to_owned(),
            waited_ms: 1500,
        });
        let text = m.render();
        assert!(
            text.contains("stormcell_pushes_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("stormcell_refusals_total{result=\"write-interruption\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("stormcell_lock_wait_seconds_count{lock=\"Write\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn read_only_state_names_its_reason() {
        let m = Metrics::new();
        m.observe(&Event::DbMode {
            reason: Some(stormcell_model::failover::ReadOnlyReason::Severed),
        });
        let text = m.render();
        assert!(
            text.contains("stormcell_read_only{reason=\"severed\"} 1"),
            "{text}"
        );
        m.observe(&Event::DbMode { reason: None });
        assert!(!m.render().contains("stormcell_read_only{"), "cleared");
    }

    #[test]
    fn versions_behind_follow_what_the_database_showed() {
        let m = Metrics::new();
        m.versions_seen("R1", 7, 4);
        m.versions_seen("R2", 3, 3);
        let text = m.render();
        assert!(
            text.contains("stormcell_versions_behind{repo=\"R1\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("stormcell_versions_behind{repo=\"R2\"} 0"),
            "{text}"
        );
        assert!(text.contains("stormcell_repositories_behind 1"), "{text}");
        // The sync that follows brings the device level.
        m.own_version("R1", 7);
        let text = m.render();
        assert!(
            text.contains("stormcell_versions_behind{repo=\"R1\"} 0"),
            "{text}"
        );
        assert!(text.contains("stormcell_repositories_behind 0"), "{text}");
    }

    #[test]
    fn sync_waits_and_stale_reads_are_counted() {
        let m = Metrics::new();
        m.sync_waited(Duration::from_millis(250));
        m.possibly_stale_read();
        let text = m.render();
        assert!(
            text.contains("stormcell_sync_wait_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("stormcell_sync_wait_seconds_bucket{le=\"0.5\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("stormcell_possibly_stale_reads_total 1"),
            "{text}"
        );
    }
}
