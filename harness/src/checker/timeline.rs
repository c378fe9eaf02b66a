//! The fault timeline: when each host was down and each link cut or held, computed from
//! the up and down events of the history whatever overlaps.
//!
//! A host is down from a strike until the next restart of that host, however many strikes
//! fell in between (a struck host struck again stays down until one restart brings it
//! back). A link is cut from a partition until the next repair of the same unordered pair
//! of hosts, and held from a hold until the next release. A fault that never ends lasts
//! until the end of the history. The checkers that need to know whether something was up
//! at some moment ask this timeline rather than pairing start and end events themselves:
//! pairing events one to one gets overlapping faults wrong.

use std::collections::BTreeMap;

use crate::history::{FaultKind, History};

/// Half-open time intervals `[start, end)`, sorted and disjoint.
pub(crate) type Spans = Vec<(u64, u64)>;

/// Which state an event switches on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    Down,
    Cut,
    Held,
    Lag,
    DiskFailing,
}

/// The up and down timeline of every host and link of a history.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    /// Host to the spans it was down (struck and not yet restarted).
    down: BTreeMap<String, Spans>,
    /// Unordered host pair (sorted) to the spans the link was cut.
    cut: BTreeMap<(String, String), Spans>,
    /// Unordered host pair (sorted) to the spans the link was held (slow).
    held: BTreeMap<(String, String), Spans>,
    /// Replica host to the spans its replication lagged.
    lag: BTreeMap<String, Spans>,
    /// Device to the spans its disk failed every sync.
    disk_failing: BTreeMap<String, Spans>,
    /// Hosts that are not devices: the database hosts.
    database_hosts: Vec<String>,
    /// One past the last moment the history mentions: where unended faults stop.
    end: u64,
    /// End events that ended nothing (the host or link was not in that state).
    pub(crate) unmatched_ends: usize,
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

impl Timeline {
    /// The timeline of `history`.
    pub(crate) fn of(history: &History) -> Self {
        let end = super::end_of_run(history).saturating_add(1);
        let mut events: Vec<&crate::history::FaultEvent> = history.faults.iter().collect();
        // Stable: events at the same moment keep the history's order.
        events.sort_by_key(|f| f.at_ms);
        // When each (family, key) went into its state, while it is in it.
        let mut open: BTreeMap<(Family, (String, String)), u64> = BTreeMap::new();
        let mut closed: BTreeMap<(Family, (String, String)), Spans> = BTreeMap::new();
        let mut unmatched = 0usize;
        for event in events {
            let (family, starts) = match event.kind {
                FaultKind::Strike => (Family::Down, true),
                FaultKind::Restart => (Family::Down, false),
                FaultKind::Partition => (Family::Cut, true),
                FaultKind::Repair => (Family::Cut, false),
                FaultKind::Hold => (Family::Held, true),
                FaultKind::Release => (Family::Held, false),
                FaultKind::Lag => (Family::Lag, true),
                FaultKind::LagEnd => (Family::Lag, false),
                FaultKind::DiskFailing => (Family::DiskFailing, true),
                FaultKind::DiskRecovered => (Family::DiskFailing, false),
                // Instants, not states.
                FaultKind::Promote | FaultKind::DiskLost => continue,
            };
            let keys: Vec<(String, String)> = match family {
                // A strike or restart may name several hosts: each goes down or up.
                Family::Down | Family::Lag | Family::DiskFailing => event
                    .hosts
                    .iter()
                    .map(|h| (h.clone(), String::new()))
                    .collect(),
                Family::Cut | Family::Held => match event.hosts.as_slice() {
                    [a, b] => vec![pair(a, b)],
                    // A link event without exactly two hosts names no link.
                    _ => {
                        unmatched += usize::from(!starts);
                        Vec::new()
                    }
                },
            };
            for key in keys {
                let key = (family, key);
                if starts {
                    open.entry(key).or_insert(event.at_ms);
                } else if let Some(since) = open.remove(&key) {
                    closed.entry(key).or_default().push((since, event.at_ms));
                } else {
                    unmatched += 1;
                }
            }
        }
        for (key, since) in open {
            closed.entry(key).or_default().push((since, end.max(since)));
        }
        let mut timeline = Timeline {
            end,
            unmatched_ends: unmatched,
            database_hosts: database_hosts(history),
            ..Timeline::default()
        };
        for ((family, (a, b)), spans) in closed {
            // Zero-length faults (down and up at the same instant) still happened: keep them
            // one millisecond long so that "was it down at t" can see them.
            let spans: Spans = spans
                .into_iter()
                .map(|(s, e)| (s, e.max(s.saturating_add(1))))
                .collect();
            let spans = merge(spans);
            match family {
                Family::Down => {
                    timeline.down.insert(a, spans);
                }
                Family::Lag => {
                    timeline.lag.insert(a, spans);
                }
                Family::DiskFailing => {
                    timeline.disk_failing.insert(a, spans);
                }
                Family::Cut => {
                    timeline.cut.insert((a, b), spans);
                }
                Family::Held => {
                    timeline.held.insert((a, b), spans);
                }
            }
        }
        timeline
    }

    /// One past the last moment the history mentions.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Whether `host` is a database host (named by the history but not a device).
    pub(crate) fn is_database_host(&self, host: &str) -> bool {
        self.database_hosts.iter().any(|h| h == host)
    }

    /// The database hosts: every host the history names that is not a device.
    pub(crate) fn database_hosts(&self) -> &[String] {
        &self.database_hosts
    }

    /// When `host` was down.
    pub(crate) fn down(&self, host: &str) -> &[(u64, u64)] {
        self.down.get(host).map_or(&[], Vec::as_slice)
    }

    /// When the link between `a` and `b` was cut.
    pub(crate) fn cut(&self, a: &str, b: &str) -> &[(u64, u64)] {
        self.cut.get(&pair(a, b)).map_or(&[], Vec::as_slice)
    }

    /// When `b` could not be reached from `a`: either was down, or their link was cut or
    /// held (a hung host answers nothing, which is all a client can tell).
    pub(crate) fn unreachable(&self, a: &str, b: &str) -> Spans {
        let mut spans: Spans = self.down(a).to_vec();
        spans.extend_from_slice(self.down(b));
        spans.extend_from_slice(self.cut(a, b));
        spans.extend_from_slice(self.held(a, b));
        merge(spans)
    }

    /// When the link between `a` and `b` held its messages (slow, or a hung host).
    pub(crate) fn held(&self, a: &str, b: &str) -> &[(u64, u64)] {
        self.held.get(&pair(a, b)).map_or(&[], Vec::as_slice)
    }

    /// When `host`'s disk failed every sync.
    pub(crate) fn disk_failing(&self, host: &str) -> &[(u64, u64)] {
        self.disk_failing.get(host).map_or(&[], Vec::as_slice)
    }

    /// Every fault that involves `host`: it was down, its disk failed, or a link of it
    /// was cut or held.
    pub(crate) fn faults_of(&self, host: &str) -> Vec<Fault> {
        let mut out: Vec<Fault> = self
            .down(host)
            .iter()
            .map(|&(s, e)| Fault::new(FaultKind::Strike, &[host], s, e))
            .collect();
        out.extend(
            self.disk_failing(host)
                .iter()
                .map(|&(s, e)| Fault::new(FaultKind::DiskFailing, &[host], s, e)),
        );
        for ((a, b), spans) in &self.cut {
            if a == host || b == host {
                out.extend(
                    spans
                        .iter()
                        .map(|&(s, e)| Fault::new(FaultKind::Partition, &[a, b], s, e)),
                );
            }
        }
        for ((a, b), spans) in &self.held {
            if a == host || b == host {
                out.extend(
                    spans
                        .iter()
                        .map(|&(s, e)| Fault::new(FaultKind::Hold, &[a, b], s, e)),
                );
            }
        }
        out
    }

    /// Every fault of the history, whatever it involves, in order of start.
    pub(crate) fn all_faults(&self) -> Vec<Fault> {
        let mut out = Vec::new();
        for (host, spans) in &self.down {
            out.extend(
                spans
                    .iter()
                    .map(|&(s, e)| Fault::new(FaultKind::Strike, &[host], s, e)),
            );
        }
        for (host, spans) in &self.lag {
            out.extend(
                spans
                    .iter()
                    .map(|&(s, e)| Fault::new(FaultKind::Lag, &[host], s, e)),
            );
        }
        for (host, spans) in &self.disk_failing {
            out.extend(
                spans
                    .iter()
                    .map(|&(s, e)| Fault::new(FaultKind::DiskFailing, &[host], s, e)),
            );
        }
        for (kind, map) in [
            (FaultKind::Partition, &self.cut),
            (FaultKind::Hold, &self.held),
        ] {
            for ((a, b), spans) in map {
                out.extend(spans.iter().map(|&(s, e)| Fault::new(kind, &[a, b], s, e)));
            }
        }
        out.sort_by(|x, y| (x.start_ms, &x.hosts).cmp(&(y.start_ms, &y.hosts)));
        out
    }
}

/// One fault as the timeline sees it: what, on which hosts, from when to when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault {
    /// `Strike` for a host down, `Partition` for a cut link, `Hold` for a held link,
    /// `Lag` for a lagging replica.
    pub kind: FaultKind,
    /// The host, or the two hosts of the link.
    pub hosts: Vec<String>,
    /// When it began.
    pub start_ms: u64,
    /// When it ended (the end of the history when it never did).
    pub end_ms: u64,
}

impl Fault {
    fn new<S: AsRef<str>>(kind: FaultKind, hosts: &[S], start_ms: u64, end_ms: u64) -> Self {
        Fault {
            kind,
            hosts: hosts.iter().map(|h| h.as_ref().to_owned()).collect(),
            start_ms,
            end_ms,
        }
    }

    /// The description of a fault of `kind` on `hosts` from `start_ms` to `end_ms`.
    pub(crate) fn describe_span(
        kind: FaultKind,
        hosts: &[&str],
        start_ms: u64,
        end_ms: u64,
    ) -> String {
        Fault::new(kind, hosts, start_ms, end_ms).describe()
    }

    /// Whether it involves `host`.
    pub(crate) fn involves(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h == host)
    }

    /// A short description for explanations: `strike of R1 (12.000s..30.000s)`.
    pub(crate) fn describe(&self) -> String {
        let what = match self.kind {
            FaultKind::Strike => format!("strike of {}", self.hosts.join(",")),
            FaultKind::Partition => format!("partition {}", self.hosts.join("|")),
            FaultKind::Hold => format!("slow link {}", self.hosts.join("|")),
            FaultKind::Lag => format!("replication lag of {}", self.hosts.join(",")),
            FaultKind::DiskFailing => format!("failing disk of {}", self.hosts.join(",")),
            _ => format!("{:?} {}", self.kind, self.hosts.join(",")),
        };
        format!(
            "{what} ({}..{})",
            super::secs(self.start_ms),
            super::secs(self.end_ms)
        )
    }
}

/// Every host the history names (in faults or as the database) that is not a device.
fn database_hosts(history: &History) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    if let Some(db) = &history.database {
        hosts.push(db.primary.clone());
        hosts.extend(db.replicas.iter().cloned());
    }
    for f in &history.faults {
        hosts.extend(f.hosts.iter().cloned());
    }
    hosts.retain(|h| !history.devices.iter().any(|d| d == h));
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Sorts and merges overlapping or touching spans.
pub(crate) fn merge(mut spans: Spans) -> Spans {
    spans.sort_unstable();
    let mut merged: Spans = Vec::new();
    for (s, e) in spans {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

/// Whether some span overlaps the closed interval `[from, until]`.
pub(crate) fn overlaps(spans: &[(u64, u64)], from: u64, until: u64) -> bool {
    spans.iter().any(|&(s, e)| s <= until && from < e)
}

/// Whether one span covers the closed interval `[from, until]` entirely.
pub(crate) fn covers(spans: &[(u64, u64)], from: u64, until: u64) -> bool {
    spans.iter().any(|&(s, e)| s <= from && until < e)
}

/// The span that holds moment `t`, if any.
pub(crate) fn span_at(spans: &[(u64, u64)], t: u64) -> Option<(u64, u64)> {
    spans.iter().copied().find(|&(s, e)| s <= t && t < e)
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    #[test]
    fn overlapping_strikes_end_at_the_restart() {
        let mut b = HistoryBuilder::new();
        b.fault(1_000, FaultKind::Strike, &["db"])
            .fault(2_000, FaultKind::Strike, &["db"])
            .fault(3_000, FaultKind::Restart, &["db"])
            .fault(4_000, FaultKind::Restart, &["db"])
            .fault(5_000, FaultKind::Partition, &["R1", "db"])
            .fault(6_000, FaultKind::Repair, &["db", "R1"]);
        let t = Timeline::of(&b.build());
        assert_eq!(t.down("db"), [(1_000, 3_000)]);
        assert_eq!(t.unmatched_ends, 1);
        assert_eq!(t.cut("db", "R1"), [(5_000, 6_000)]);
        assert_eq!(t.unreachable("R1", "db"), [(1_000, 3_000), (5_000, 6_000)]);
        assert!(t.is_database_host("db"));
        assert!(!t.is_database_host("R1"));
    }

    #[test]
    fn unended_faults_last_to_the_end() {
        let mut b = HistoryBuilder::new();
        b.fault(1_000, FaultKind::Strike, &["R2"]);
        b.read("R1", 100, 9_000, ok_refs(&[]));
        let t = Timeline::of(&b.build());
        assert_eq!(t.down("R2"), [(1_000, 9_001)]);
        assert_eq!(t.faults_of("R2").len(), 1);
        assert!(t.faults_of("R1").is_empty());
    }
}
