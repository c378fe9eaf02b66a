//! The administrative database port over PostgreSQL (PROTOCOL.md section 7): the
//! configuration edits, demotes and push-log reads the model's `Admin` runs, with the
//! same semantics as the simulator's tables (an unknown name or a duplicate is a query
//! error naming it).

use async_trait::async_trait;
use std::collections::BTreeMap;

use stormcell_model::admin::{AdminDb, AdminSession, ConfigEdit, SalvageRecord};
use stormcell_model::ids::{DeviceId, Oid, RepoId, Version};
use stormcell_model::rows::{NewPushEvent, PushEvent, PushKind, RefUpdate};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{query_error, DbError, PgClusterDb, PgSession};

/// The cluster database as admin commands reach it: sessions to one host (the primary).
#[derive(Debug, Clone)]
pub struct PgAdminDb {
    db: PgClusterDb,
}

impl PgAdminDb {
    /// Admin sessions to `db`.
    pub fn new(db: PgClusterDb) -> Self {
        PgAdminDb { db }
    }
}

#[async_trait]
impl AdminDb for PgAdminDb {
    async fn connect_admin(&self) -> Result<Box<dyn AdminSession>, DbError> {
        Ok(Box::new(self.db.session().await?))
    }
}

/// An update that changed no row names what was not there.
fn one_row(changed: u64, missing: String) -> Result<(), DbError> {
    if changed == 0 {
        Err(DbError::Query(missing))
    } else {
        Ok(())
    }
}

fn kind_of(name: &str) -> Result<PushKind, DbError> {
    match name {
        "push" => Ok(PushKind::Push),
        "maintenance" => Ok(PushKind::Maintenance),
        "recovered" => Ok(PushKind::Recovered),
        other => Err(DbError::Query(format!("unknown push event kind {other:?}"))),
    }
}

fn push_event(r: &Row) -> Result<PushEvent, DbError> {
    let updates: serde_json::Value = r.try_get("updates").map_err(query_error)?;
    let updates: Vec<RefUpdate> = serde_json::from_value(updates)
        .map_err(|e| DbError::Query(format!("unreadable push event updates: {e}")))?;
    Ok(PushEvent {
        id: r.try_get::<_, i64>("id").map_err(query_error)? as u64,
        event: NewPushEvent {
            repo: RepoId::new(r.try_get::<_, String>("repo").map_err(query_error)?),
            device: DeviceId::new(r.try_get::<_, String>("device").map_err(query_error)?),
            user: r.try_get("pusher").map_err(query_error)?,
            started_ms: r.try_get::<_, i64>("started_ms").map_err(query_error)? as u64,
            updates,
            accepted: r.try_get("accepted").map_err(query_error)?,
            kind: kind_of(&r.try_get::<_, String>("kind").map_err(query_error)?)?,
        },
    })
}

impl PgSession {
    async fn apply_edit(&self, edit: &ConfigEdit) -> Result<(), DbError> {
        let c = self.client()?;
        match edit {
            ConfigEdit::AddDevice { device } => {
                // The peer credential and Git endpoint are the real daemon's own columns;
                // `stormcell device add` sets them right after. Until then the empty hash
                // matches no credential, so the device is refused by its peers.
                self.timed(c.execute(
                    "INSERT INTO devices (name, address, http_url, credential_sha256)
                     VALUES ($1, $2, '', '')",
                    &[&device.id.as_str(), &device.address],
                ))
                .await
                .map_err(|e| retag(e, &format!("device {} already exists", device.id), ""))?;
            }
            ConfigEdit::AddBinding { binding } => {
                self.timed(c.execute(
                    "INSERT INTO bindings (service, device, writable, disabled)
                     VALUES ($1, $2, $3, $4)",
                    &[
                        &binding.service.as_str(),
                        &binding.device.as_str(),
                        &binding.writable,
                        &binding.disabled,
                    ],
                ))
                .await
                .map_err(|e| {
                    retag(
                        e,
                        &format!("{} is already bound to {}", binding.device, binding.service),
                        &format!(
                            "no device {} or no service {}",
                            binding.device, binding.service
                        ),
                    )
                })?;
            }
            ConfigEdit::SetBinding {
                service,
                device,
                writable,
                disabled,
            } => {
                let n = self
                    .timed(c.execute(
                        "UPDATE bindings SET writable = coalesce($3, writable),
                                             disabled = coalesce($4, disabled)
                          WHERE service = $1 AND device = $2",
                        &[&service.as_str(), &device.as_str(), writable, disabled],
                    ))
                    .await?;
                one_row(n, format!("{device} is not bound to {service}"))?;
            }
            ConfigEdit::SetServiceClosed { service, closed } => {
                let n = self
                    .timed(c.execute(
                        "UPDATE services SET closed = $2 WHERE name = $1",
                        &[&service.as_str(), closed],
                    ))
                    .await?;
                one_row(n, format!("no service {service}"))?;
            }
            ConfigEdit::AddRepository { repository } => {
                let service = repository.service.as_ref().map(|s| s.as_str());
                self.timed(c.execute(
                    "INSERT INTO repositories (name, service, maintenance) VALUES ($1, $2, $3)",
                    &[&repository.id.as_str(), &service, &repository.maintenance],
                ))
                .await
                .map_err(|e| {
                    retag(
                        e,
                        &format!("repository {} already exists", repository.id),
                        &format!("no service {}", service.unwrap_or("-")),
                    )
                })?;
            }
            ConfigEdit::SetRepositoryService { repo, service } => {
                let name = service.as_ref().map(|s| s.as_str());
                let n = self
                    .timed(c.execute(
                        "UPDATE repositories SET service = $2 WHERE name = $1",
                        &[&repo.as_str(), &name],
                    ))
                    .await
                    .map_err(|e| retag(e, "", &format!("no service {}", name.unwrap_or("-"))))?;
                one_row(n, format!("no repository {repo}"))?;
            }
            ConfigEdit::SetMaintenance { repo, message } => {
                let n = self
                    .timed(c.execute(
                        "UPDATE repositories SET maintenance = $2 WHERE name = $1",
                        &[&repo.as_str(), message],
                    ))
                    .await?;
                one_row(n, format!("no repository {repo}"))?;
            }
        }
        Ok(())
    }
}

/// Names what an insert collided with (`duplicate`) or referred to in vain (`missing`);
/// the driver's error is already the port's, with the SQLSTATE in its text.
fn retag(e: DbError, duplicate: &str, missing: &str) -> DbError {
    let text = e.to_string();
    if text.contains("SQLSTATE 23505") && !duplicate.is_empty() {
        return DbError::Query(duplicate.to_owned());
    }
    if text.contains("SQLSTATE 23503") && !missing.is_empty() {
        return DbError::Query(missing.to_owned());
    }
    e
}

#[async_trait]
impl AdminSession for PgSession {
    async fn edit(&mut self, edit: &ConfigEdit) -> Result<(), DbError> {
        self.apply_edit(edit).await
    }

    async fn delete_rows(
        &mut self,
        repo: &RepoId,
        devices: &[DeviceId],
        expected: Option<&[(DeviceId, Version)]>,
    ) -> Result<u64, DbError> {
        let delete = "DELETE FROM versions WHERE repo = $1 AND device = ANY($2)";
        let names: Vec<&str> = devices.iter().map(DeviceId::as_str).collect();
        let params: [&(dyn ToSql + Sync); 2] = [&repo.as_str(), &names];
        match expected {
            Some(expected) => self.if_rows_are(repo, expected, delete, &params).await,
            None => self.timed(self.client()?.execute(delete, &params)).await,
        }
    }

    async fn push_events(
        &mut self,
        repo: &RepoId,
        after: Option<u64>,
    ) -> Result<Vec<PushEvent>, DbError> {
        let after = after.map(|a| a as i64);
        let rows = self
            .timed(self.client()?.query(
                "SELECT id, repo, device, pusher, started_ms, updates, accepted, kind
                   FROM push_events
                  WHERE repo = $1 AND ($2::bigint IS NULL OR id > $2)
                  ORDER BY id",
                &[&repo.as_str(), &after],
            ))
            .await?;
        rows.iter().map(push_event).collect()
    }

    async fn record_salvage(&mut self, record: &SalvageRecord) -> Result<(), DbError> {
        let refs = serde_json::to_value(&record.refs)
            .map_err(|e| DbError::Query(format!("cannot encode salvage refs: {e}")))?;
        let version = record.version.map(|v| v as i64);
        self.timed(self.client()?.execute(
            "INSERT INTO salvage_bundles (repo, device, version, written_ms, location, refs)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &record.repo.as_str(),
                &record.device.as_str(),
                &version,
                &(record.at_ms as i64),
                &record.location,
                &refs,
            ],
        ))
        .await?;
        Ok(())
    }

    async fn salvage_records(&mut self, repo: &RepoId) -> Result<Vec<SalvageRecord>, DbError> {
        let rows = self
            .timed(self.client()?.query(
                "SELECT repo, device, version, written_ms, location, refs
                   FROM salvage_bundles WHERE repo = $1 ORDER BY id",
                &[&repo.as_str()],
            ))
            .await?;
        rows.iter().map(salvage_record).collect()
    }
}

fn salvage_record(r: &Row) -> Result<SalvageRecord, DbError> {
    let refs: serde_json::Value = r.try_get("refs").map_err(query_error)?;
    let refs: BTreeMap<String, Oid> = serde_json::from_value(refs)
        .map_err(|e| DbError::Query(format!("unreadable salvage refs: {e}")))?;
    Ok(SalvageRecord {
        repo: RepoId::new(r.try_get::<_, String>("repo").map_err(query_error)?),
        device: DeviceId::new(r.try_get::<_, String>("device").map_err(query_error)?),
        version: r
            .try_get::<_, Option<i64>>("version")
            .map_err(query_error)?
            .map(|v| v as u64),
        at_ms: r.try_get::<_, i64>("written_ms").map_err(query_error)? as u64,
        location: r.try_get("location").map_err(query_error)?,
        refs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraint_violations_name_what_collided() {
        let dup = DbError::Query("duplicate key value (SQLSTATE 23505)".to_owned());
        assert_eq!(
            retag(dup, "device d already exists", "no device d").to_string(),
            DbError::Query("device d already exists".to_owned()).to_string()
        );
        let fk = DbError::Query("violates foreign key (SQLSTATE 23503)".to_owned());
        assert_eq!(
            retag(fk, "dup", "no service s").to_string(),
            DbError::Query("no service s".to_owned()).to_string()
        );
        assert!(one_row(0, "no repository R".to_owned()).is_err());
        assert!(one_row(1, String::new()).is_ok());
        assert!(kind_of("maintenance").is_ok() && kind_of("other").is_err());
    }
}
