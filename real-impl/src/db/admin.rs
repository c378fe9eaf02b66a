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

/// Sets a registered device's credential (credential rotation): peers take the new one
/// at once and stop taking the old one within [`super::credentials::VERIFIED_FOR`].
pub async fn set_device_credential(
    c: &Client,
    name: &str,
    credential: &str,
) -> Result<(), DbError> {
    let n = c
        .execute(
            "UPDATE devices SET credential_sha256 = $2 WHERE name = $1",
            &[&name, &super::credentials::hash(credential)],
        )
        .await
        .map_err(query_error)?;
    if n == 0 {
        return Err(DbError::Query(format!("no device \"{name}\"")));
    }
    Ok(())
}

/// Why a device cannot be removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoveError {
    /// No device of that name.
    #[error("NAME: no device \"{0}\" is registered")]
    Unknown(String),
    /// It still serves a service.
    #[error(
        "NAME: device \"{device}\" is still bound to {services} without being disabled; contract it \
         first (PROTOCOL.md 7.5): `stormcell binding set SERVICE {device} --writable false`, wait \
         until `stormcell service status SERVICE` says synchronized, then `stormcell binding set \
         SERVICE {device} --disabled true`"
    )]
    StillBound {
        /// The device.
        device: String,
        /// Its active bindings' services.
        services: String,
    },
    /// It alone holds the newest version of some repositories, or is writing one.
    #[error(
        "NAME: device \"{device}\" alone holds the newest version of {repos} (or is writing it); \
         removing it would lose those writes. Let another device catch up (`stormcell \
         repository status REPO`), or thaw the repository first"
    )]
    SoleLeader {
        /// The device.
        device: String,
        /// The repositories.
        repos: String,
    },
    /// The database failed.
    #[error("{0}")]
    Database(#[from] DbError),
}

/// Removes a device that serves nothing any more: no binding that is not disabled, and
/// no repository whose newest version only it holds. Its version rows, bindings and
/// registration go in one transaction (the push and sync history stays); its credential
/// stops working with the row.
pub async fn remove_device(c: &mut Client, name: &str) -> Result<(), RemoveError> {
    let tx = c.transaction().await.map_err(query_error)?;
    let known = tx
        .query_opt("SELECT 1 FROM devices WHERE name = $1 FOR UPDATE", &[&name])
        .await
        .map_err(query_error)?;
    if known.is_none() {
        return Err(RemoveError::Unknown(name.to_owned()));
    }
    let bound: Vec<String> = tx
        .query(
            "SELECT service FROM bindings WHERE device = $1 AND NOT disabled ORDER BY service
             FOR UPDATE",
            &[&name],
        )
        .await
        .map_err(query_error)?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(query_error)?;
    if !bound.is_empty() {
        return Err(RemoveError::StillBound {
            device: name.to_owned(),
            services: bound.join(", "),
        });
    }
    // Rows are locked so no write or sync changes them between this look and the delete.
    let sole: Vec<String> = tx
        .query(
            "SELECT v.repo FROM versions v
              WHERE v.device = $1
                AND (v.writing OR v.version > coalesce(
                     (SELECT max(o.version) FROM versions o
                       WHERE o.repo = v.repo AND o.device <> $1), -1))
              ORDER BY v.repo
              FOR UPDATE",
            &[&name],
        )
        .await
        .map_err(query_error)?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(query_error)?;
    if !sole.is_empty() {
        return Err(RemoveError::SoleLeader {
            device: name.to_owned(),
            repos: sole.join(", "),
        });
    }
    for sql in [
        "DELETE FROM versions WHERE device = $1",
        "DELETE FROM bindings WHERE device = $1",
        "DELETE FROM devices WHERE name = $1",
    ] {
        tx.execute(sql, &[&name]).await.map_err(query_error)?;
    }
    tx.commit().await.map_err(query_error)?;
    Ok(())
}

/// The function `db promote` runs on a standby, as a privilege target.
pub const PROMOTE_FUNCTION: &str = "pg_catalog.pg_promote(boolean, integer)";

/// Whether the connected role may run `pg_promote`, and its name.
pub async fn promote_right(c: &Client) -> Result<(String, bool), DbError> {
    let row = c
        .query_one(
            "SELECT current_user::text, has_function_privilege($1, 'EXECUTE')",
            &[&PROMOTE_FUNCTION],
        )
        .await
        .map_err(query_error)?;
    Ok((
        row.try_get(0).map_err(query_error)?,
        row.try_get(1).map_err(query_error)?,
    ))
}

/// The statement that lets `role` run `pg_promote` (the role quoted as an identifier).
pub fn grant_promote_sql(role: &str) -> String {
    format!(
        "GRANT EXECUTE ON FUNCTION {PROMOTE_FUNCTION} TO \"{}\"",
        role.replace('"', "\"\"")
    )
}

/// Lets `role` run `pg_promote`. Only a primary takes the grant (a standby refuses every
/// change); the replicas receive it by replication, so it must be given while the primary
/// is up, before it is needed.
pub async fn grant_promote(c: &Client, role: &str) -> Result<(), DbError> {
    let standby: bool = c
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(query_error)?
        .try_get(0)
        .map_err(query_error)?;
    if standby {
        return Err(DbError::Query(
            "this host is a standby, which takes no grant: grant on the primary while it is up"
                .to_owned(),
        ));
    }
    c.batch_execute(&grant_promote_sql(role))
        .await
        .map_err(query_error)?;
    Ok(())
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
    /// For a standby: bytes of write-ahead log the primary has written that it has not
    /// replayed yet.
    pub lag_bytes: Option<u64>,
    /// For a standby: how far behind the primary its replay is in time, as the primary
    /// measures it (`pg_stat_replication.replay_lag`); zero when it has replayed all the
    /// primary has written.
    pub lag_s: Option<f64>,
    /// For a standby: whether it is receiving from its primary.
    pub streaming: Option<bool>,
    /// Applied schema migrations (primary only).
    pub migrations: Vec<i32>,
    /// Why it is unreachable.
    pub error: Option<String>,
}

/// What the primary says about its standbys.
#[derive(Debug, Clone, Default)]
struct PrimaryView {
    /// `pg_current_wal_lsn()`, as text.
    lsn: Option<String>,
    /// `pg_stat_replication`: (application name, slot name, replay lag in seconds).
    standbys: Vec<(String, Option<String>, Option<f64>)>,
}

async fn primary_view(client: &Client) -> Result<PrimaryView, DbError> {
    let lsn = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(query_error)?
        .try_get(0)
        .map_err(query_error)?;
    let rows = client
        .query(
            "SELECT r.application_name, s.slot_name::text,
                    extract(epoch FROM r.replay_lag)::float8
               FROM pg_stat_replication r
               LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid",
            &[],
        )
        .await
        .map_err(query_error)?;
    let standbys = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(query_error)?;
    Ok(PrimaryView {
        lsn: Some(lsn),
        standbys,
    })
}

/// The replay lag the primary reports for the standby that receives as `application`
/// over `slot`: by slot when it has one, else by application name when only one standby
/// has it, else the only standby's.
fn matching_lag(
    view: &PrimaryView,
    application: Option<&str>,
    slot: Option<&str>,
) -> Option<Option<f64>> {
    if let Some(slot) = slot {
        if let Some(s) = view.standbys.iter().find(|s| s.1.as_deref() == Some(slot)) {
            return Some(s.2);
        }
    }
    if let Some(app) = application {
        let named: Vec<_> = view.standbys.iter().filter(|s| s.0 == app).collect();
        if let [one] = named.as_slice() {
            return Some(one.2);
        }
    }
    match view.standbys.as_slice() {
        [only] => Some(only.2),
        _ => None,
    }
}

/// Every host's status: the primary's first, then each replica's replication lag behind
/// it in bytes and time. `hosts` is (role label, connection string, is the configured
/// primary).
pub async fn cluster_status(
    hosts: &[(String, String, bool)],
    connect: std::time::Duration,
    query: std::time::Duration,
) -> Vec<HostStatus> {
    let mut statuses: Vec<HostStatus> = Vec::new();
    let mut view = PrimaryView::default();
    // The primary is read first, so each replica is compared with its position now.
    let mut order: Vec<&(String, String, bool)> = hosts.iter().collect();
    order.sort_by_key(|h| !h.2);
    for (role, conninfo, _) in order {
        let mut status = HostStatus {
            role: role.clone(),
            // The connection string may hold a password; only a redacted one is shown.
            host: crate::secret::redact_conninfo(conninfo),
            reachable: false,
            in_recovery: None,
            lag_bytes: None,
            lag_s: None,
            streaming: None,
            migrations: Vec::new(),
            error: None,
        };
        let db = match super::PgClusterDb::new(conninfo, "stormcell-admin", connect, query) {
            Ok(db) => db,
            Err(e) => {
                status.error = Some(e.to_string());
                statuses.push(status);
                continue;
            }
        };
        let answered = tokio::time::timeout(query, host_status(&db, &mut status, &mut view)).await;
        if answered.is_err() {
            status.error = Some(format!("no answer within {}s", query.as_secs_f64()));
        }
        statuses.push(status);
    }
    // Back in the order the hosts were given.
    let mut ordered = Vec::with_capacity(statuses.len());
    for (role, conninfo, _) in hosts {
        if let Some(i) = statuses
            .iter()
            .position(|s| &s.role == role && &s.host == conninfo)
        {
            ordered.push(statuses.swap_remove(i));
        }
    }
    ordered
}

async fn host_status(db: &super::PgClusterDb, status: &mut HostStatus, view: &mut PrimaryView) {
    let client = match db.client().await {
        Ok(c) => c,
        Err(e) => {
            status.error = Some(e.to_string());
            return;
        }
    };
    status.reachable = true;
    let standby = match client.query_one("SELECT pg_is_in_recovery()", &[]).await {
        Ok(row) => row.try_get::<_, bool>(0).ok(),
        Err(e) => {
            status.error = Some(query_error(e).to_string());
            return;
        }
    };
    status.in_recovery = standby;
    match standby {
        Some(false) => match primary_view(&client).await {
            Ok(v) => *view = v,
            Err(e) => status.error = Some(e.to_string()),
        },
        Some(true) => {
            if let Err(e) = standby_lag(&client, status, view).await {
                status.error = Some(e.to_string());
            }
        }
        None => {}
    }
    if let Ok(m) = super::schema::applied(&client).await {
        status.migrations = m;
    }
}

async fn standby_lag(
    client: &Client,
    status: &mut HostStatus,
    view: &PrimaryView,
) -> Result<(), DbError> {
    let row = client
        .query_one(
            "SELECT (SELECT status = 'streaming' FROM pg_stat_wal_receiver),
                    (SELECT substring(conninfo FROM '(?:^| )application_name=([^ ]+)')
                       FROM pg_stat_wal_receiver),
                    (SELECT substring(conninfo FROM 'fallback_application_name=([^ ]+)')
                       FROM pg_stat_wal_receiver),
                    (SELECT slot_name FROM pg_stat_wal_receiver),
                    CASE WHEN $1::text IS NULL THEN NULL
                         ELSE pg_wal_lsn_diff($1::text::pg_lsn, pg_last_wal_replay_lsn())::float8
                    END",
            &[&view.lsn],
        )
        .await
        .map_err(query_error)?;
    let streaming: Option<bool> = row.try_get(0).map_err(query_error)?;
    let application: Option<String> = row.try_get(1).map_err(query_error)?;
    let fallback: Option<String> = row.try_get(2).map_err(query_error)?;
    let slot: Option<String> = row.try_get(3).map_err(query_error)?;
    let behind: Option<f64> = row.try_get(4).map_err(query_error)?;
    status.streaming = Some(streaming.unwrap_or(false));
    // A standby that replayed past the position read from the primary a moment ago is
    // not behind at all.
    let bytes = behind.map(|b| b.max(0.0) as u64);
    status.lag_bytes = bytes;
    status.lag_s = match bytes {
        Some(0) => Some(0.0),
        Some(_) => matching_lag(
            view,
            application.as_deref().or(fallback.as_deref()),
            slot.as_deref(),
        )
        .flatten(),
        None => None,
    };
    Ok(())
}
