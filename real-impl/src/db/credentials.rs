//! Peer credentials (PROTOCOL.md section 10): each device has its own secret; the cluster
//! database keeps its SHA-256, and a device checks a peer's secret against it.

use std::collections::HashMap;
use std::sync::Mutex;

use std::time::Duration;

use sha2::{Digest as _, Sha256};
use stormcell_model::failover::SharedDbConfig;

use super::PgConnector;

/// How long a credential check waits for one database host.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The hex SHA-256 of a credential, as stored in `devices.credential_sha256`.
pub fn hash(credential: &str) -> String {
    let d = Sha256::digest(credential.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks peers' credentials against the cluster database, remembering the ones that
/// matched (a device's credential changes only with a restart of its peers).
pub struct PeerCredentials {
    hosts: SharedDbConfig,
    connector: PgConnector,
    verified: Mutex<HashMap<String, String>>,
}

impl PeerCredentials {
    /// Checks against the database hosts of `hosts` (the primary first, then replicas:
    /// device credentials are configuration, which a replica holds as well).
    pub fn new(hosts: SharedDbConfig, connector: PgConnector) -> Self {
        PeerCredentials {
            hosts,
            connector,
            verified: Mutex::new(HashMap::new()),
        }
    }

    async fn stored(&self, device: &str) -> Option<String> {
        let config = self.hosts.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let order = config.primary().into_iter().chain(config.replicas());
        for host in order {
            let Ok(db) = self.connector.host(host, CHECK_TIMEOUT) else {
                continue;
            };
            let Ok(client) = db.client().await else {
                continue;
            };
            if let Ok(row) = client
                .query_opt(
                    "SELECT credential_sha256 FROM devices WHERE name = $1",
                    &[&device],
                )
                .await
            {
                return row.and_then(|r| r.try_get::<_, String>(0).ok());
            }
        }
        None
    }

    /// Takes `credential` as `device`'s without asking the database: for peers whose
    /// credential is known some other way, and for tests of the network port that run
    /// without a database.
    pub fn remember(&self, device: &str, credential: &str) {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(device.to_owned(), hash(credential));
    }

    /// Whether `credential` is `device`'s. An unknown device, a wrong credential or an
    /// unreachable database all say no.
    pub async fn check(&self, device: &str, credential: &str) -> bool {
        let h = hash(credential);
        {
            let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if verified
                .get(device)
                .is_some_and(|known| crate::secret::same(known.as_bytes(), h.as_bytes()))
            {
                return true;
            }
        }
        let stored = self.stored(device).await;
        if stored
            .as_deref()
            .is_some_and(|s| crate::secret::same(s.as_bytes(), h.as_bytes()))
        {
            self.verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(device.to_owned(), h);
            return true;
        }
        false
    }
}
