//! What only the real daemon's admin commands need, beside the model's admin port
//! ([`super::admin_session`]): device credentials and Git endpoints, creating services,
//! listings, and database host status (PROTOCOL.md 9.5).

use serde::Serialize;
use tokio_postgres::Client;

use super::{query_error, DbError};

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

/// Sets a registered device's Git endpoint and peer credential (kept only as its
/// SHA-256), the real daemon's own columns of the device row.
pub async fn set_device_access(
    c: &Client,
    name: &str,
    http_url: &str,
    credential: &str,
) -> Result<(), DbError> {
    let n = c
        .execute(
            "UPDATE devices SET http_url = $2, credential_sha256 = $3 WHERE name = $1",
            &[&name, &http_url, &super::credentials::hash(credential)],
        )
        .await
        .map_err(query_error)?;
    if n == 0 {
        return Err(DbError::Query(format!("no device \"{name}\"")));
    }
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
