//! Configuration edits and status reads behind the `stormcell` admin commands: devices,
//! services, bindings and repositories (PROTOCOL.md sections 1, 7.5 and 8). Status is
//! computed by `stormcell_model::status`; this module only reads the rows it needs.

use std::time::Duration;

use serde::Serialize;
use stormcell_model::ids::{DeviceId, RepoId};
use stormcell_model::status::{self, DeviceLine, RepoSync, ServiceSync};
use tokio_postgres::Client;

use super::{load_rows, load_topology, query_error, DbError};

/// A device as `device list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    /// Its name.
    pub name: String,
    /// Its peer address.
    pub address: String,
    /// Its Git endpoint.
    pub http_url: String,
    /// The services it is bound to, with `(writable, disabled)` flags.
    pub bindings: Vec<String>,
}

/// A repository as `repository list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RepoInfo {
    /// Its name.
    pub name: String,
    /// Its service, if clustered.
    pub service: Option<String>,
    /// The read-only maintenance message, if set.
    pub maintenance: Option<String>,
    /// The largest version over its rows.
    pub max_version: Option<u64>,
}

/// One repository of a service status.
#[derive(Debug, Clone, Serialize)]
pub struct RepoSyncLine {
    /// The repository.
    pub repo: String,
    /// Its sync status.
    pub sync: RepoSync,
}

/// `service status`.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// The service.
    pub service: String,
    /// Its overall status.
    pub status: ServiceSync,
    /// Per repository.
    pub repositories: Vec<RepoSyncLine>,
}

fn conflict(e: tokio_postgres::Error, what: &str) -> DbError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        return DbError::Query(format!("{what} already exists"));
    }
    if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) {
        return DbError::Query(format!(
            "{what}: it names a device or service that does not exist"
        ));
    }
    query_error(e)
}

/// Registers a device with its peer address, Git endpoint and credential.
pub async fn add_device(
    c: &Client,
    name: &str,
    address: &str,
    http_url: &str,
    credential: &str,
) -> Result<(), DbError> {
    c.execute(
        "INSERT INTO devices (name, address, http_url, credential_sha256) VALUES ($1, $2, $3, $4)",
        &[
            &name,
            &address,
            &http_url,
            &super::credentials::hash(credential),
        ],
    )
    .await
    .map_err(|e| conflict(e, &format!("device \"{name}\"")))?;
    Ok(())
}

/// Every device, in name order.
pub async fn list_devices(c: &Client) -> Result<Vec<DeviceInfo>, DbError> {
    let rows = c
        .query(
            "SELECT d.name, d.address, d.http_url,
                    coalesce(array_agg(b.service || CASE WHEN b.disabled THEN ' (disabled)'
                         WHEN NOT b.writable THEN ' (read-only)' ELSE '' END ORDER BY b.service)
                         FILTER (WHERE b.service IS NOT NULL), '{}')
               FROM devices d LEFT JOIN bindings b ON b.device = d.name
              GROUP BY d.name, d.address, d.http_url ORDER BY d.name",
            &[],
        )
        .await
        .map_err(query_error)?;
    rows.iter()
        .map(|r| {
            Ok(DeviceInfo {
                name: r.try_get(0).map_err(query_error)?,
                address: r.try_get(1).map_err(query_error)?,
                http_url: r.try_get(2).map_err(query_error)?,
                bindings: r.try_get(3).map_err(query_error)?,
            })
        })
        .collect()
}

/// Creates a service.
pub async fn create_service(c: &Client, name: &str) -> Result<(), DbError> {
    c.execute("INSERT INTO services (name) VALUES ($1)", &[&name])
        .await
        .map_err(|e| conflict(e, &format!("service \"{name}\"")))?;
    Ok(())
}

/// Binds a device to a service (active, and writable unless said otherwise).
pub async fn bind(c: &Client, service: &str, device: &str, writable: bool) -> Result<(), DbError> {
    c.execute(
        "INSERT INTO bindings (service, device, writable) VALUES ($1, $2, $3)",
        &[&service, &device, &writable],
    )
    .await
    .map_err(|e| conflict(e, &format!("binding of \"{device}\" to \"{service}\"")))?;
    Ok(())
}

/// Changes a binding's flags; fails if there is no such binding.
pub async fn set_binding(
    c: &Client,
    service: &str,
    device: &str,
    writable: Option<bool>,
    disabled: Option<bool>,
) -> Result<(), DbError> {
    let n = c
        .execute(
            "UPDATE bindings SET writable = coalesce($3, writable), disabled = coalesce($4, disabled)
              WHERE service = $1 AND device = $2",
            &[&service, &device, &writable, &disabled],
        )
        .await
        .map_err(query_error)?;
    if n == 0 {
        return Err(DbError::Query(format!(
            "device \"{device}\" is not bound to service \"{service}\""
        )));
    }
    Ok(())
}

/// Creates a repository. On a service, every active device starts with a version 0 row
/// (PROTOCOL.md 7.5): all are leaders of the empty repository.
pub async fn create_repository(
    c: &mut Client,
    name: &str,
    service: Option<&str>,
) -> Result<(), DbError> {
    crate::store::check_name(name).map_err(|e| DbError::Query(e.0))?;
    let tx = c.transaction().await.map_err(query_error)?;
    tx.execute(
        "INSERT INTO repositories (name, service) VALUES ($1, $2)",
        &[&name, &service],
    )
    .await
    .map_err(|e| conflict(e, &format!("repository \"{name}\"")))?;
    if let Some(service) = service {
        tx.execute(
            "INSERT INTO versions (repo, device, version)
             SELECT $1, device, 0 FROM bindings WHERE service = $2 AND NOT disabled",
            &[&name, &service],
        )
        .await
        .map_err(query_error)?;
    }
    tx.commit().await.map_err(query_error)?;
    Ok(())
}

/// Every repository, in name order.
pub async fn list_repositories(c: &Client) -> Result<Vec<RepoInfo>, DbError> {
    let rows = c
        .query(
            "SELECT r.name, r.service, r.maintenance, (SELECT max(version) FROM versions v WHERE v.repo = r.name)
               FROM repositories r ORDER BY r.name",
            &[],
        )
        .await
        .map_err(query_error)?;
    rows.iter()
        .map(|r| {
            Ok(RepoInfo {
                name: r.try_get(0).map_err(query_error)?,
                service: r.try_get(1).map_err(query_error)?,
                maintenance: r.try_get(2).map_err(query_error)?,
                max_version: r
                    .try_get::<_, Option<i64>>(3)
                    .map_err(query_error)?
                    .map(|v| v as u64),
            })
        })
        .collect()
}

/// Repository status (8.2): one line per device with a row.
pub async fn repository_status(c: &Client, repo: &str) -> Result<Vec<DeviceLine>, DbError> {
    let exists = c
        .query_opt("SELECT 1 FROM repositories WHERE name = $1", &[&repo])
        .await
        .map_err(query_error)?;
    if exists.is_none() {
        return Err(DbError::Query(format!("no repository \"{repo}\"")));
    }
    let rows = load_rows(c, &RepoId::new(repo)).await?;
    Ok(status::repository_status(&rows))
}

/// Service status (8.1).
pub async fn service_status(
    c: &Client,
    service: &str,
    now_ms: u64,
    window: Duration,
) -> Result<ServiceStatus, DbError> {
    let topology = load_topology(c).await.map_err(query_error)?;
    if !topology
        .services
        .contains_key(&stormcell_model::ids::ServiceId::new(service))
    {
        return Err(DbError::Query(format!("no service \"{service}\"")));
    }
    let mut lines = Vec::new();
    for repo in topology.repositories.values() {
        if repo.service.as_ref().map(|s| s.as_str()) != Some(service) {
            continue;
        }
        let rows = load_rows(c, &repo.id).await?;
        let active: Vec<DeviceId> = topology.active_devices(&repo.id);
        let leader = rows
            .iter()
            .filter(|r| active.contains(&r.device))
            .map(|r| r.version)
            .max();
        let pushed_ms = match leader {
            Some(v) if v > 0 => c
                .query_opt(
                    "SELECT (extract(epoch FROM recorded_at) * 1000)::bigint FROM push_events WHERE id = $1",
                    &[&(v as i64)],
                )
                .await
                .map_err(query_error)?
                .and_then(|r| r.try_get::<_, i64>(0).ok())
                .map(|ms| ms as u64),
            _ => None,
        };
        lines.push(RepoSyncLine {
            repo: repo.id.to_string(),
            sync: status::repo_sync(&rows, &active, pushed_ms, now_ms, window),
        });
    }
    let statuses: Vec<RepoSync> = lines.iter().map(|l| l.sync.clone()).collect();
    Ok(ServiceStatus {
        service: service.to_owned(),
        status: status::service_sync(&statuses),
        repositories: lines,
    })
}

/// One database host as `db status` shows it (PROTOCOL.md 9.5).
#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    /// `primary` or `replica`.
    pub role: String,
    /// The host's connection target.
    pub host: String,
    /// Whether it answered.
    pub reachable: bool,
    /// Whether it is in recovery (a standby).
    pub in_recovery: Option<bool>,
    /// For a replica: seconds since the last replayed transaction.
    pub replication_delay_s: Option<f64>,
    /// Applied schema migrations (primary only).
    pub migrations: Vec<i32>,
    /// Why it is unreachable.
    pub error: Option<String>,
}

/// Reads one host's status.
pub async fn host_status(db: &super::PgClusterDb, role: &str, host: &str) -> HostStatus {
    let mut status = HostStatus {
        role: role.to_owned(),
        host: host.to_owned(),
        reachable: false,
        in_recovery: None,
        replication_delay_s: None,
        migrations: Vec::new(),
        error: None,
    };
    let client = match db.client().await {
        Ok(c) => c,
        Err(e) => {
            status.error = Some(e.to_string());
            return status;
        }
    };
    status.reachable = true;
    match client
        .query_one(
            "SELECT pg_is_in_recovery(),
                    CASE WHEN pg_is_in_recovery()
                         THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
                    END",
            &[],
        )
        .await
    {
        Ok(row) => {
            status.in_recovery = row.try_get(0).ok();
            status.replication_delay_s = row.try_get::<_, Option<f64>>(1).ok().flatten();
        }
        Err(e) => status.error = Some(query_error(e).to_string()),
    }
    if let Ok(m) = super::schema::applied(&client).await {
        status.migrations = m;
    }
    status
}
