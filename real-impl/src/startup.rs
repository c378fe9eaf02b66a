//! What a node checks about itself before it serves: that its device name is registered
//! and its credential is the one registered for it, asked of the cluster database and
//! then of a peer (PROTOCOL.md 10). A misconfigured device otherwise starts, serves its
//! clients from a working copy no peer will ever update, and shows only as refused peer
//! connections in the other devices' logs.

use std::time::Duration;

use stormcell_model::failover::DbClusterConfig;
use stormcell_model::ports::Network;
use thiserror::Error;

use crate::db::credentials::hash;
use crate::db::PgConnector;

/// How long the start waits for one database host (PROTOCOL.md 9.3: no retry, 2 s).
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a node must not start.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The database has no device of this name.
    #[error(
        "field `device`: no device \"{0}\" is registered in the cluster database; register it \
         with `stormcell device add {0} ...` or correct the name"
    )]
    Unregistered(String),
    /// The database holds another credential for this device.
    #[error(
        "field `credential`: it is not the credential registered for device \"{0}\"; set the \
         registered one with `stormcell device credential {0} --credential ...` (then restart)"
    )]
    WrongCredential(String),
    /// A peer refused the credential.
    #[error(
        "field `credential`: peer \"{peer}\" at {address} refused the credential of device \
         \"{device}\": {reason}"
    )]
    RefusedByPeer {
        /// This device.
        device: String,
        /// The peer that refused it.
        peer: String,
        /// Its registered address.
        address: String,
        /// What the connection said.
        reason: String,
    },
}

/// One registered device, as the start sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// Its name.
    pub name: String,
    /// Its peer address.
    pub address: String,
    /// Its stored credential hash.
    pub credential_sha256: String,
}

/// Every registered device, from the first database host that answers; `None` when none
/// does (a node may start while its database is away: it serves read-only or stranded,
/// and comes back with it).
pub async fn registered_devices(
    hosts: &DbClusterConfig,
    connector: &PgConnector,
) -> Option<Vec<Registered>> {
    for host in hosts.primary().into_iter().chain(hosts.replicas()) {
        let Ok(db) = connector.host(host, ASK_TIMEOUT) else {
            continue;
        };
        let asked = tokio::time::timeout(ASK_TIMEOUT, async {
            let client = db.client().await.ok()?;
            client
                .query(
                    "SELECT name, address, credential_sha256 FROM devices ORDER BY name",
                    &[],
                )
                .await
                .ok()
        })
        .await;
        let Ok(Some(rows)) = asked else {
            tracing::warn!(host = %host.name, "database host did not answer the start's checks");
            continue;
        };
        return rows
            .iter()
            .map(|r| {
                Some(Registered {
                    name: r.try_get(0).ok()?,
                    address: r.try_get(1).ok()?,
                    credential_sha256: r.try_get(2).ok()?,
                })
            })
            .collect();
    }
    None
}

/// Checks `device`'s registration among `devices`.
pub fn check_registration(
    devices: &[Registered],
    device: &str,
    credential: &str,
) -> Result<(), IdentityError> {
    let Some(me) = devices.iter().find(|d| d.name == device) else {
        return Err(IdentityError::Unregistered(device.to_owned()));
    };
    if me.credential_sha256 != hash(credential) {
        return Err(IdentityError::WrongCredential(device.to_owned()));
    }
    Ok(())
}

/// Presents this device's credential to its peers, one at a time, until one answers.
/// A peer that refuses it stops the start; when none answers (the first device of a
/// cluster to start, say) the database's word stands.
pub async fn check_with_a_peer(
    devices: &[Registered],
    device: &str,
    net: &dyn Network,
) -> Result<(), IdentityError> {
    for peer in devices.iter().filter(|d| d.name != device) {
        match net.connect(&peer.address).await {
            Ok(_) => {
                tracing::info!(peer = %peer.name, "a peer accepted this device's credential");
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(IdentityError::RefusedByPeer {
                    device: device.to_owned(),
                    peer: peer.name.clone(),
                    address: peer.address.clone(),
                    reason: e.to_string(),
                });
            }
            Err(e) => {
                tracing::debug!(peer = %peer.name, error = %e, "peer not reached at start");
            }
        }
    }
    tracing::info!(
        "no peer answered at start: the credential was checked against the database only"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io;

    use async_trait::async_trait;
    use stormcell_model::ports::{BoxConn, Listener};

    use super::*;

    /// A network whose peers answer by address: `refuses` denies the credential,
    /// `accepts` admits it, anything else is not there.
    struct Peers;

    #[async_trait]
    impl Network for Peers {
        async fn connect(&self, addr: &str) -> io::Result<BoxConn> {
            match addr {
                "refuses:1" => Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "peer at refuses:1 refused this device's credential",
                )),
                "accepts:1" => {
                    let (near, _far) = tokio::io::duplex(64);
                    Ok(Box::new(near))
                }
                _ => Err(io::Error::new(io::ErrorKind::ConnectionRefused, "nobody")),
            }
        }

        async fn listen(&self, _addr: &str) -> io::Result<Box<dyn Listener>> {
            Err(io::Error::other("not used"))
        }
    }

    fn at(name: &str, address: &str) -> Registered {
        Registered {
            name: name.to_owned(),
            address: address.to_owned(),
            credential_sha256: String::new(),
        }
    }

    #[tokio::test]
    async fn the_first_peer_that_answers_decides() {
        let me = at("repo001", "me:1");
        let down = at("repo002", "down:1");
        let refuses = at("repo003", "refuses:1");
        let accepts = at("repo004", "accepts:1");
        let ok = [me.clone(), down.clone(), accepts.clone(), refuses.clone()];
        assert_eq!(check_with_a_peer(&ok, "repo001", &Peers).await, Ok(()));
        let refused = [me.clone(), down.clone(), refuses, accepts];
        let e = check_with_a_peer(&refused, "repo001", &Peers)
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("field `credential`: peer \"repo003\""),
            "{e}"
        );
        // Nobody answers: the database's word stands.
        assert_eq!(
            check_with_a_peer(&[me, down], "repo001", &Peers).await,
            Ok(())
        );
    }

    fn device(name: &str, credential: &str) -> Registered {
        Registered {
            name: name.to_owned(),
            address: "127.0.0.1:1".to_owned(),
            credential_sha256: hash(credential),
        }
    }

    #[test]
    fn the_device_must_be_registered_with_this_credential() {
        let devices = [
            device("repo001", "secret-one"),
            device("repo002", "secret-two"),
        ];
        assert_eq!(
            check_registration(&devices, "repo001", "secret-one"),
            Ok(())
        );
        let e = check_registration(&devices, "repo009", "secret-one").unwrap_err();
        assert!(e.to_string().starts_with("field `device`"), "{e}");
        let e = check_registration(&devices, "repo002", "secret-one").unwrap_err();
        assert!(e.to_string().starts_with("field `credential`"), "{e}");
    }
}
