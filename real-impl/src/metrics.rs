//! Prometheus metrics: what the daemon counts, fed by the protocol's events and by the HTTP
//! front end.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use stormcell_model::error::ErrorCode;
use stormcell_model::ports::Event;

/// How a client request ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or the refusal's code.
    pub result: String,
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
    read_only: Family<ResultLabel, Gauge>,
    unhealthy_hosts: Family<ResultLabel, Gauge>,
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
        let read_only = Family::<ResultLabel, Gauge>::default();
        let unhealthy_hosts = Family::<ResultLabel, Gauge>::default();
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
            "Peer connections refused for a missing or wrong credential",
            peer_auth_failures.clone(),
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
                    self.read_only.get_or_create(&label(reason.name())).set(1);
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
}
