//! Peer credentials (PROTOCOL.md section 10): each device has its own secret; the cluster
//! database keeps its SHA-256, and a device checks a peer's secret against it.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

use super::PgClusterDb;

/// The hex SHA-256 of a credential, as stored in `devices.credential_sha256`.
pub fn hash(credential: &str) -> String {
    let d = Sha256::digest(credential.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks peers' credentials against the cluster database, remembering the ones that
/// matched (a device's credential changes only with a restart of its peers).
pub struct PeerCredentials {
    db: PgClusterDb,
    verified: Mutex<HashMap<String, String>>,
}

impl PeerCredentials {
    /// Checks against `db`.
    pub fn new(db: PgClusterDb) -> Self {
        PeerCredentials {
            db,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `credential` is `device`'s. An unknown device, a wrong credential or an
    /// unreachable database all say no.
    pub async fn check(&self, device: &str, credential: &str) -> bool {
        let h = hash(credential);
        {
            let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if verified.get(device) == Some(&h) {
                return true;
            }
        }
        let stored = async {
            let client = self.db.client().await.ok()?;
            let row = client
                .query_opt(
                    "SELECT credential_sha256 FROM devices WHERE name = $1",
                    &[&device],
                )
                .await
                .ok()??;
            row.try_get::<_, String>(0).ok()
        }
        .await;
        if stored.as_deref() == Some(h.as_str()) {
            self.verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(device.to_owned(), h);
            return true;
        }
        false
    }
}
