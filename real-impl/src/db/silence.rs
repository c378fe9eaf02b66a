//! Reports that a database host stopped answering (PROTOCOL.md 9.2, 9.3), for the waits
//! that would otherwise outlast them.
//!
//! A hung server (stopped, or behind a link that drops everything) still accepts TCP
//! connections and never answers: a query on it waits out the 30 s query timeout. The
//! health checks find such a host within the 2 s of 9.3; when one does, every session to
//! that host that is waiting for an answer gives up at once, so its request can go on
//! elsewhere (a read on a replica) or be refused, instead of hanging.
//!
//! A health check is due only every few seconds; a session whose query has waited past a
//! round trip's worth reports its host as suspected, and the health monitor checks that
//! host at once, so a hang is found within about `SUSPECT_AFTER` plus one check.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{watch, Notify};

/// How long a query waits for its answer before its host is suspected of not answering.
/// Waiting longer is often legitimate (a lock queued for), so a suspicion only asks for a
/// health check: a host that answers it is left alone.
pub const SUSPECT_AFTER: Duration = Duration::from_secs(1);

/// Per database address, a count raised each time its host was found not answering, and
/// the addresses suspected since the health monitor last looked.
#[derive(Debug, Default)]
pub struct Silences {
    by_address: Mutex<BTreeMap<String, watch::Sender<u64>>>,
    suspected: Mutex<BTreeSet<String>>,
    suspicion: Notify,
}

impl Silences {
    /// A receiver that sees the next report about `address` (not earlier ones).
    pub fn watch(&self, address: &str) -> watch::Receiver<u64> {
        let mut by_address = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        by_address
            .entry(address.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Reports that a query on `address` has waited past a round trip; each address is
    /// kept once until [`Silences::next_suspect`] takes it.
    pub fn suspect(&self, address: &str) {
        let new = self
            .suspected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(address.to_owned());
        if new {
            self.suspicion.notify_one();
        }
    }

    /// Waits for a suspected address, and takes it.
    pub async fn next_suspect(&self) -> String {
        loop {
            let taken = {
                let mut suspected = self.suspected.lock().unwrap_or_else(|e| e.into_inner());
                suspected.pop_first()
            };
            if let Some(address) = taken {
                return address;
            }
            self.suspicion.notified().await;
        }
    }

    /// Reports `address` not answering: every receiver of it sees the change.
    pub fn raise(&self, address: &str) {
        let by_address = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = by_address.get(address) {
            sender.send_modify(|n| *n += 1);
        }
    }
}

/// Returns once a report arrives on `silence` that it has not seen yet; never without a
/// receiver. A session's receiver is never marked as seen, so a report made while the
/// session was idle ends its next wait at once: a link to a host that stopped answering
/// is not trusted again.
pub async fn silenced(silence: Option<&watch::Receiver<u64>>) {
    let Some(rx) = silence else {
        return std::future::pending().await;
    };
    let mut rx = rx.clone();
    if rx.changed().await.is_err() {
        // The sender is gone (it never is while its connector lives): nothing can come.
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_report_ends_waits_on_that_address_only() {
        let silences = Silences::default();
        let a = silences.watch("host=a");
        let b = silences.watch("host=b");
        silences.raise("host=a");
        tokio::time::timeout(Duration::from_secs(5), silenced(Some(&a)))
            .await
            .expect("a report about a ends a wait on a");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), silenced(Some(&b)))
                .await
                .is_err(),
            "a wait on b goes on"
        );
        // A report made before a receiver existed does not reach it.
        let late = silences.watch("host=a");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), silenced(Some(&late)))
                .await
                .is_err()
        );
        // A report made while nothing waits is seen by the next wait.
        silences.raise("host=b");
        tokio::time::timeout(Duration::from_secs(5), silenced(Some(&b)))
            .await
            .expect("seen later");
    }

    #[tokio::test]
    async fn suspicions_are_taken_once_each_in_address_order() {
        let silences = Silences::default();
        silences.suspect("host=b");
        silences.suspect("host=a");
        silences.suspect("host=b");
        let first = tokio::time::timeout(Duration::from_secs(5), silences.next_suspect()).await;
        let second = tokio::time::timeout(Duration::from_secs(5), silences.next_suspect()).await;
        assert_eq!(
            (first.ok(), second.ok()),
            (Some("host=a".to_owned()), Some("host=b".to_owned()))
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(50), silences.next_suspect())
                .await
                .is_err(),
            "a repeated suspicion is kept once"
        );
    }
}
