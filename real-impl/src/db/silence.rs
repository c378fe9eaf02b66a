//! Reports that a database host stopped answering (PROTOCOL.md 9.2, 9.3), for the waits
//! that would otherwise outlast them.
//!
//! A hung server (stopped, or behind a link that drops everything) still accepts TCP
//! connections and never answers: a query on it waits out the 30 s query timeout. The
//! health checks find such a host within the 2 s of 9.3; when one does, every session to
//! that host that is waiting for an answer gives up at once, so its request can go on
//! elsewhere (a read on a replica) or be refused, instead of hanging.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// Per database address, a count raised each time its host was found not answering.
#[derive(Debug, Default)]
pub struct Silences {
    by_address: Mutex<BTreeMap<String, watch::Sender<u64>>>,
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
    use std::time::Duration;

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
}
