//! What one device may ask of another (PROTOCOL.md section 10).
//!
//! The peer handshake ([`crate::net`]) proves which registered device is calling; these
//! rules decide what that device may do:
//!
//! - a device reads a repository (a client read, a peer fetch, its version, a recovery
//!   probe, its objects) only while it is actively bound to the repository's service; a
//!   device bound to no service reads nothing;
//! - a push over the peer port names a user and is checked against that user's
//!   permissions here, on the device that applies it; the operator's own pushes (thaw
//!   salvage, maintenance) come only from a device bound to the repository's service;
//! - objects are fetched only from the registered address of a device actively bound to
//!   the repository's service, never from an address named in a peer's message.
//!
//! The rules are pure functions of the topology; [`Gatekeeper`] applies them to the
//! connections the peer listener admits.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use stormcell_model::admin::OPERATOR_USER;
use stormcell_model::engine::Engine;
use stormcell_model::error::{ClusterError, ErrorCode};
use stormcell_model::failover::Intent;
use stormcell_model::ids::{DeviceId, RepoId};
use stormcell_model::ports::BoxConn;
use stormcell_model::rows::Topology;
use stormcell_model::wire::{read_frame, write_frame, Request, Response};
use thiserror::Error;

use crate::config::UserConfig;
use crate::metrics::Metrics;
use crate::store::git::Git;
use crate::store::GitStore;

/// Why a peer's request is refused. The message is what the peer (and the log) sees.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// The repository is unknown or not clustered.
    #[error("repository \"{0}\" is not clustered")]
    NotClustered(RepoId),
    /// The calling device is not actively bound to the repository's service.
    #[error("device \"{device}\" is not bound to the service of repository \"{repo}\"")]
    NotBound {
        /// The device.
        device: DeviceId,
        /// The repository.
        repo: RepoId,
    },
    /// The pushing user is unknown here or may not write the repository.
    #[error("user \"{user}\" may not write repository \"{repo}\"")]
    MayNotWrite {
        /// The user the push names.
        user: String,
        /// The repository.
        repo: RepoId,
    },
    /// The device named as an object source is not registered.
    #[error("device \"{0}\" is not registered")]
    Unregistered(DeviceId),
    /// The cluster's configuration could not be read.
    #[error("cannot read the cluster's configuration: {0}")]
    Topology(String),
}

impl Refusal {
    /// The error code a peer gets.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::NotClustered(_) => ErrorCode::NotFound,
            Refusal::NotBound { .. } | Refusal::Unregistered(_) => ErrorCode::NotBound,
            Refusal::MayNotWrite { .. } => ErrorCode::Rejected,
            Refusal::Topology(_) => ErrorCode::DatabaseUnavailable,
        }
    }
}

/// A device may read `repo` only while it is actively bound to the repository's service.
pub fn may_read(topology: &Topology, device: &DeviceId, repo: &RepoId) -> Result<(), Refusal> {
    let clustered = topology
        .repositories
        .get(repo)
        .is_some_and(|r| r.service.is_some());
    if !clustered {
        return Err(Refusal::NotClustered(repo.clone()));
    }
    if !topology.is_active(repo, device) {
        return Err(Refusal::NotBound {
            device: device.clone(),
            repo: repo.clone(),
        });
    }
    Ok(())
}

/// A push `device` relays for `user`: the user must be one of this device's users with
/// write permission on `repo`; the operator's pushes need a device bound to the service.
pub fn may_push(
    topology: &Topology,
    users: &[UserConfig],
    device: &DeviceId,
    repo: &RepoId,
    user: &str,
) -> Result<(), Refusal> {
    may_read(topology, device, repo)?;
    if user == OPERATOR_USER {
        return Ok(());
    }
    let allowed = users
        .iter()
        .any(|u| u.name == user && u.can_write(repo.as_str()));
    if allowed {
        Ok(())
    } else {
        Err(Refusal::MayNotWrite {
            user: user.to_owned(),
            repo: repo.clone(),
        })
    }
}

/// Whether `device` may send `request`.
pub fn may_send(
    topology: &Topology,
    users: &[UserConfig],
    device: &DeviceId,
    request: &Request,
) -> Result<(), Refusal> {
    match request {
        Request::Read { repo, .. }
        | Request::PeerVersion { repo, .. }
        | Request::PeerFetch { repo, .. }
        | Request::PeerAncestry { repo, .. }
        | Request::RecoverProbe { repo, .. } => may_read(topology, device, repo),
        // A thaw runs on a device bound to the repository's service; the demote count
        // only ever makes this device claim less.
        Request::Demoted { repo, .. } => may_read(topology, device, repo),
        // A bundle writes only to this device's own salvage directory, for an operator's
        // thaw, which runs on a device bound to the repository's service.
        Request::SalvageBundle { repo, .. } => may_read(topology, device, repo),
        Request::Push { repo, payload, .. } => {
            may_push(topology, users, device, repo, &payload.user)
        }
        // A notification only makes this device pull from the leaders it chooses itself.
        Request::Notify { .. } => Ok(()),
    }
}

/// The address to fetch `repo`'s objects from when a snapshot names device `source`: its
/// registered address, and only while it is actively bound to the repository's service.
pub fn object_source<'t>(
    topology: &'t Topology,
    repo: &RepoId,
    source: &DeviceId,
) -> Result<&'t str, Refusal> {
    may_read(topology, source, repo)?;
    topology
        .address_of(source)
        .ok_or_else(|| Refusal::Unregistered(source.clone()))
}

/// The cluster's configuration as this device's engine reads it (a replica will do while
/// the database is read-only). Set once the engine exists: the engine's own ports hold
/// the parts that need it.
#[derive(Default)]
pub struct ClusterView {
    engine: OnceLock<Weak<Engine>>,
}

impl ClusterView {
    /// A view with no engine yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connects the view to the engine.
    pub fn set_engine(&self, engine: &Arc<Engine>) {
        let _ = self.engine.set(Arc::downgrade(engine));
    }

    /// The engine, while it runs.
    pub fn engine(&self) -> Result<Arc<Engine>, Refusal> {
        self.engine
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| Refusal::Topology("the node is not running".to_owned()))
    }

    /// The topology now.
    pub async fn topology(&self) -> Result<Topology, Refusal> {
        let engine = self.engine()?;
        let mut link = engine
            .failover()
            .connect(Intent::Read)
            .await
            .map_err(|e: ClusterError| Refusal::Topology(e.to_string()))?;
        link.session
            .topology()
            .await
            .map_err(|e| Refusal::Topology(e.to_string()))
    }
}

/// Applies the rules to the connections the peer listener admits.
pub struct Gatekeeper {
    view: Arc<ClusterView>,
    users: Vec<UserConfig>,
    store: Arc<GitStore>,
    git: Git,
    metrics: Arc<Metrics>,
}

impl Gatekeeper {
    /// Checks requests against `view`'s topology and `users`; serves objects of `store`.
    pub fn new(
        view: Arc<ClusterView>,
        users: Vec<UserConfig>,
        store: Arc<GitStore>,
        git: Git,
        metrics: Arc<Metrics>,
    ) -> Self {
        Gatekeeper {
            view,
            users,
            store,
            git,
            metrics,
        }
    }

    /// How long a peer has to send its request, and an object transfer to finish: the
    /// protocol's peer request and copy limits.
    fn limits(&self) -> Result<(Duration, Duration), Refusal> {
        let engine = self.view.engine()?;
        let timing = &engine.config().timing;
        Ok((timing.peer_request, timing.copy_limit))
    }

    fn refused(&self, device: &DeviceId, what: &str, refusal: &Refusal) {
        self.metrics.peer_auth_failed();
        tracing::warn!(device = %device, request = what, reason = %refusal, "peer request refused");
    }
}

#[async_trait]
impl crate::net::PeerGate for Gatekeeper {
    async fn screen(&self, device: &str, mut conn: BoxConn) -> Option<BoxConn> {
        let device = DeviceId::new(device);
        let (limit, _) = self.limits().ok()?;
        // The node service reads this frame again from the replay below.
        let request: Request = tokio::time::timeout(limit, read_frame(&mut conn))
            .await
            .ok()?
            .ok()?;
        let allowed = match self.view.topology().await {
            Ok(topology) => may_send(&topology, &self.users, &device, &request),
            Err(e) => Err(e),
        };
        if let Err(refusal) = allowed {
            self.refused(&device, op_name(&request), &refusal);
            let reply = Response::Error {
                code: refusal.code(),
                message: refusal.to_string(),
            };
            let _ = write_frame(&mut conn, &reply).await;
            return None;
        }
        let mut head = Vec::new();
        write_frame(&mut head, &request).await.ok()?;
        Some(Box::new(crate::net::Replayed::new(head, conn)))
    }

    async fn serve_objects(&self, device: &str, mut conn: BoxConn) {
        let device = DeviceId::new(device);
        let Ok((limit, copy_limit)) = self.limits() else {
            return;
        };
        let request = match crate::objects::read_request(&mut conn, limit).await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(device = %device, error = %e, "object request unreadable");
                return;
            }
        };
        let allowed = match self.view.topology().await {
            Ok(topology) => may_read(&topology, &device, &request.repo),
            Err(e) => Err(e),
        };
        if let Err(refusal) = allowed {
            self.refused(&device, "objects", &refusal);
            crate::objects::refuse(&mut conn, &refusal.to_string()).await;
            return;
        }
        let sent =
            crate::objects::send_pack(conn, &self.store, &self.git, &request, copy_limit).await;
        if let Err(e) = sent {
            tracing::info!(device = %device, repo = %request.repo, error = %e, "object transfer to peer failed");
        }
    }
}

fn op_name(request: &Request) -> &'static str {
    match request {
        Request::Read { .. } => "read",
        Request::Push { .. } => "push",
        Request::PeerVersion { .. } => "peer-version",
        Request::PeerFetch { .. } => "peer-fetch",
        Request::Notify { .. } => "notify",
        Request::Demoted { .. } => "demoted",
        Request::RecoverProbe { .. } => "recover-probe",
        Request::PeerAncestry { .. } => "peer-ancestry",
        Request::SalvageBundle { .. } => "salvage-bundle",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stormcell_model::ids::{LockOwner, ServiceId, Version};
    use stormcell_model::ports::PushPayload;
    use stormcell_model::rows::{Binding, Device, Repository, Service};

    fn topology() -> Topology {
        let mut t = Topology::default();
        for (name, port) in [("repo001", 1), ("repo002", 2), ("loner", 3)] {
            t.devices.insert(
                DeviceId::new(name),
                Device {
                    id: DeviceId::new(name),
                    address: format!("10.0.0.{port}:7000"),
                },
            );
        }
        t.services.insert(
            ServiceId::new("S1"),
            Service {
                id: ServiceId::new("S1"),
                closed: false,
            },
        );
        t.bindings.push(Binding {
            service: ServiceId::new("S1"),
            device: DeviceId::new("repo001"),
            writable: true,
            disabled: false,
        });
        t.bindings.push(Binding {
            service: ServiceId::new("S1"),
            device: DeviceId::new("repo002"),
            writable: true,
            disabled: true,
        });
        t.repositories.insert(
            RepoId::new("R1"),
            Repository {
                id: RepoId::new("R1"),
                service: Some(ServiceId::new("S1")),
                maintenance: None,
            },
        );
        t
    }

    fn users() -> Vec<UserConfig> {
        vec![
            UserConfig {
                name: "alice".into(),
                token: "alice-token".into(),
                read: vec![],
                write: vec!["*".into()],
            },
            UserConfig {
                name: "bob".into(),
                token: "bob-token".into(),
                read: vec!["*".into()],
                write: vec![],
            },
        ]
    }

    fn push(user: &str) -> Request {
        Request::Push {
            repo: RepoId::new("R1"),
            payload: PushPayload {
                user: user.to_owned(),
                updates: vec![],
                pack: vec![],
                spool: None,
            },
            progress: false,
        }
    }

    #[test]
    fn only_actively_bound_devices_read() {
        let t = topology();
        let r1 = RepoId::new("R1");
        assert_eq!(may_read(&t, &DeviceId::new("repo001"), &r1), Ok(()));
        // A disabled binding and no binding at all both read nothing.
        for d in ["repo002", "loner", "stranger"] {
            assert!(matches!(
                may_read(&t, &DeviceId::new(d), &r1),
                Err(Refusal::NotBound { .. })
            ));
        }
        assert!(matches!(
            may_read(&t, &DeviceId::new("repo001"), &RepoId::new("R9")),
            Err(Refusal::NotClustered(_))
        ));
        let loner = DeviceId::new("loner");
        for request in [
            Request::Read {
                repo: r1.clone(),
                progress: false,
            },
            Request::PeerVersion {
                repo: r1.clone(),
                read_only: false,
            },
            Request::PeerFetch {
                repo: r1.clone(),
                unrecorded: true,
            },
            Request::RecoverProbe {
                repo: r1.clone(),
                owner: LockOwner::new("x"),
            },
            Request::PeerAncestry {
                repo: r1.clone(),
                queries: Vec::new(),
            },
            Request::SalvageBundle {
                repo: r1.clone(),
                label: "x".to_owned(),
                refs: std::collections::BTreeMap::new(),
            },
        ] {
            assert!(
                may_send(&t, &users(), &loner, &request).is_err(),
                "{request:?}"
            );
        }
        let notify = Request::Notify {
            repo: r1,
            version: Version::default(),
        };
        assert_eq!(may_send(&t, &users(), &loner, &notify), Ok(()));
    }

    #[test]
    fn relayed_pushes_need_the_named_users_write_permission() {
        let t = topology();
        let d = DeviceId::new("repo001");
        assert_eq!(may_send(&t, &users(), &d, &push("alice")), Ok(()));
        assert_eq!(may_send(&t, &users(), &d, &push(OPERATOR_USER)), Ok(()));
        for user in ["bob", "mallory"] {
            assert!(matches!(
                may_send(&t, &users(), &d, &push(user)),
                Err(Refusal::MayNotWrite { .. })
            ));
        }
        // Even the operator's pushes come only from bound devices.
        assert!(may_send(&t, &users(), &DeviceId::new("loner"), &push(OPERATOR_USER)).is_err());
    }

    #[test]
    fn objects_come_only_from_bound_devices_registered_addresses() {
        let t = topology();
        let r1 = RepoId::new("R1");
        assert_eq!(
            object_source(&t, &r1, &DeviceId::new("repo001")),
            Ok("10.0.0.1:7000")
        );
        for d in ["repo002", "loner", "stranger"] {
            assert!(object_source(&t, &r1, &DeviceId::new(d)).is_err(), "{d}");
        }
    }
}
