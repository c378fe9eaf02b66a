//! Peer credentials (PROTOCOL.md section 10): each device has its own secret; the cluster
//! database keeps its SHA-256, and a device checks a peer's secret against it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use stormcell_model::failover::SharedDbConfig;

use super::PgConnector;

/// How long a credential check waits for one database host, connection and query
/// together (PROTOCOL.md 9.3: no retry, 2 s).
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a credential that matched is taken without asking the database again. A
/// rotated or removed device's old credential stops working this long after the change
/// at most, while a busy peer is not asked about every connection.
pub const VERIFIED_FOR: Duration = Duration::from_secs(30);

/// The hex SHA-256 of a credential, as stored in `devices.credential_sha256`.
pub fn hash(credential: &str) -> String {
    let d = Sha256::digest(credential.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the database says about one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// No database host answered.
    Unknown,
    /// The database has no device of that name.
    Unregistered,
    /// The device's stored credential hash (empty while `device add` is unfinished).
    Registered {
        /// `devices.credential_sha256`.
        credential_sha256: String,
    },
}

/// Checks peers' credentials against the cluster database, remembering the ones that
/// matched for [`VERIFIED_FOR`].
pub struct PeerCredentials {
    hosts: SharedDbConfig,
    connector: PgConnector,
    verified: Mutex<HashMap<String, (String, Instant)>>,
    verified_for: Duration,
}

impl PeerCredentials {
    /// Checks against the database hosts of `hosts` (the primary first, then replicas:
    /// device credentials are configuration, which a replica holds as well).
    pub fn new(hosts: SharedDbConfig, connector: PgConnector) -> Self {
        PeerCredentials {
            hosts,
            connector,
            verified: Mutex::new(HashMap::new()),
            verified_for: VERIFIED_FOR,
        }
    }

    /// The same, remembering a matched credential for `verified_for` instead.
    pub fn with_verified_for(mut self, verified_for: Duration) -> Self {
        self.verified_for = verified_for;
        self
    }

    /// What the first database host that answers says about `device`.
    pub async fn registration(&self, device: &str) -> Registration {
        let config = self.hosts.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let order = config.primary().into_iter().chain(config.replicas());
        for host in order {
            let Ok(db) = self.connector.host(host, CHECK_TIMEOUT) else {
                continue;
            };
            // A host that accepts connections but never answers (hung) must not hold up a
            // peer's handshake: connection and query share one limit.
            let asked = tokio::time::timeout(CHECK_TIMEOUT, async {
                let client = db.client().await.ok()?;
                client
                    .query_opt(
                        "SELECT credential_sha256 FROM devices WHERE name = $1",
                        &[&device],
                    )
                    .await
                    .ok()
            })
            .await;
            let Ok(Some(row)) = asked else {
                continue;
            };
            return match row.and_then(|r| r.try_get::<_, String>(0).ok()) {
                Some(credential_sha256) => Registration::Registered { credential_sha256 },
                None => Registration::Unregistered,
            };
        }
        Registration::Unknown
    }

    /// Takes `credential` as `device`'s without asking the database: for peers whose
    /// credential is known some other way, and for tests of the network port that run
    /// without a database.
    pub fn remember(&self, device: &str, credential: &str) {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(device.to_owned(), (hash(credential), Instant::now()));
    }

    /// Whether `credential` is `device`'s. An unknown device or a wrong credential says
    /// no; while no database host answers, only a credential that matched before does.
    pub async fn check(&self, device: &str, credential: &str) -> bool {
        let h = hash(credential);
        let remembered = {
            let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            match verified.get(device) {
                Some((known, since)) if crate::secret::same(known.as_bytes(), h.as_bytes()) => {
                    Some(since.elapsed() < self.verified_for)
                }
                _ => None,
            }
        };
        if remembered == Some(true) {
            return true;
        }
        let registration = self.registration(device).await;
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        match registration {
            Registration::Registered { credential_sha256 }
                if crate::secret::same(credential_sha256.as_bytes(), h.as_bytes()) =>
            {
                verified.insert(device.to_owned(), (h, Instant::now()));
                true
            }
            // Nobody can rotate or remove a credential without the database either, so
            // the last answer it gave still stands.
            Registration::Unknown => remembered.is_some(),
            // Rotated or removed: whatever was remembered no longer holds.
            _ => {
                verified.remove(device);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use stormcell_model::failover::{DbClusterConfig, StaleReads};

    use super::*;

    fn no_database() -> SharedDbConfig {
        Arc::new(Mutex::new(DbClusterConfig {
            hosts: Vec::new(),
            read_only: false,
            stale_reads: StaleReads::Mark,
        }))
    }

    #[tokio::test]
    async fn a_remembered_credential_is_taken_for_a_while_then_asked_about_again() {
        let connector = PgConnector::new("test", Duration::from_secs(1));
        let lasting = PeerCredentials::new(no_database(), connector.clone());
        lasting.remember("repo001", "credential-1");
        assert!(lasting.check("repo001", "credential-1").await);
        assert!(!lasting.check("repo001", "credential-2").await);

        // Past the limit the database is asked again; while none answers, only the
        // credential that matched before is taken.
        let expired =
            PeerCredentials::new(no_database(), connector).with_verified_for(Duration::ZERO);
        expired.remember("repo001", "credential-1");
        assert!(expired.check("repo001", "credential-1").await);
        assert!(!expired.check("repo001", "credential-2").await);
        assert!(!expired.check("repo002", "credential-1").await);
    }
}
