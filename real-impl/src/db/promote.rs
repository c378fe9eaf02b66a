//! Promoting a streaming replica and re-pointing the devices at it (PROTOCOL.md 9.4: a
//! replica is promoted only by a person).
//!
//! The database side is `pg_promote()`. The devices' side is their configuration files:
//! the `[database]` hosts are rewritten with the model's own re-pointing rule
//! ([`DbClusterConfig::repoint`]), keeping everything else in the file as it was
//! (comments included), and each running node re-reads that section when its file changes
//! (see [`crate::reload`]).

use std::path::{Path, PathBuf};

use stormcell_model::failover::{DbClusterConfig, DbRole};
use thiserror::Error;
use toml_edit::{DocumentMut, Item, Value};

use super::{query_error, DbError, PgClusterDb};

/// What `pg_promote` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promotion {
    /// The host was a standby and is now a primary.
    Promoted,
    /// The host was a primary already (a promote run again).
    AlreadyPrimary,
}

/// Promotes the host `db` reaches, waiting up to `wait_s` seconds for it to finish.
pub async fn promote(db: &PgClusterDb, wait_s: i32) -> Result<Promotion, DbError> {
    let client = db.client().await?;
    let row = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(query_error)?;
    let standby: bool = row.try_get(0).map_err(query_error)?;
    if !standby {
        return Ok(Promotion::AlreadyPrimary);
    }
    let row = client
        .query_one("SELECT pg_promote(true, $1)", &[&wait_s])
        .await
        .map_err(query_error)?;
    let done: bool = row.try_get(0).map_err(query_error)?;
    if !done {
        return Err(DbError::Query(format!(
            "the server did not finish promoting within {wait_s}s; see its log"
        )));
    }
    // A new generation begins (PROTOCOL.md 12): every device re-checks its rows against
    // its peers before trusting this host's, whenever its process started. The timeline
    // change says as much too; the counter also covers a cluster restored elsewhere.
    client
        .execute(
            "UPDATE cluster_generation SET promotions = promotions + 1 WHERE id = 1",
            &[],
        )
        .await
        .map_err(query_error)?;
    Ok(Promotion::Promoted)
}

/// Why a configuration file could not be re-pointed.
#[derive(Debug, Error)]
pub enum RepointError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not what a node configuration looks like.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
}

/// The `[[database.hosts]]` tables of a document, whichever way they are written.
fn host_tables(doc: &mut DocumentMut) -> Result<Vec<&mut dyn toml_edit::TableLike>, String> {
    let hosts = doc
        .get_mut("database")
        .and_then(|d| d.as_table_like_mut())
        .and_then(|d| d.get_mut("hosts"))
        .ok_or("field `database.hosts`: missing")?;
    match hosts {
        Item::ArrayOfTables(tables) => Ok(tables
            .iter_mut()
            .map(|t| t as &mut dyn toml_edit::TableLike)
            .collect()),
        Item::Value(Value::Array(values)) => values
            .iter_mut()
            .map(|v| match v {
                Value::InlineTable(t) => Ok(t as &mut dyn toml_edit::TableLike),
                _ => Err("field `database.hosts`: every entry must be a table".to_owned()),
            })
            .collect(),
        _ => Err("field `database.hosts`: must be an array of tables".to_owned()),
    }
}

/// Rewrites the roles in configuration text so that `host` is the primary, by the rule of
/// [`DbClusterConfig::repoint`]. Returns the new text, or `None` when nothing changes.
pub fn repoint_text(text: &str, host: &str) -> Result<Option<String>, String> {
    let config = crate::config::NodeConfig::parse(text)?;
    let mut cluster: DbClusterConfig = config.database.cluster();
    if !cluster.repoint(host) {
        return Err(format!(
            "field `database.hosts`: no host is named \"{host}\""
        ));
    }
    if cluster == config.database.cluster() {
        return Ok(None);
    }
    let mut doc: DocumentMut = text.parse().map_err(|e| format!("{e}"))?;
    for table in host_tables(&mut doc)? {
        let Some(name) = table.get("name").and_then(Item::as_str).map(str::to_owned) else {
            return Err("field `database.hosts[].name`: missing".to_owned());
        };
        let Some(after) = cluster.hosts.iter().find(|h| h.name == name) else {
            continue;
        };
        let role = match after.role {
            DbRole::Primary => "primary",
            DbRole::Replica => "replica",
        };
        if table.get("role").and_then(Item::as_str) != Some(role) {
            table.insert("role", toml_edit::value(role));
        }
        let enabled = table.get("enabled").and_then(Item::as_bool).unwrap_or(true);
        if enabled != after.enabled {
            table.insert("enabled", toml_edit::value(after.enabled));
        }
    }
    let out = doc.to_string();
    // What was written must read back as the re-pointed cluster.
    let check = crate::config::NodeConfig::parse(&out)?;
    if check.database.cluster() != cluster {
        return Err("field `database.hosts`: the rewritten file does not say the same".to_owned());
    }
    Ok(Some(out))
}

/// Re-points the configuration file at `path` to `host`, replacing it atomically (a node
/// reading it sees the old file or the new one). Returns whether it changed.
pub fn repoint_file(path: &Path, host: &str) -> Result<bool, RepointError> {
    let io = |source| RepointError::Io {
        path: path.to_owned(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let Some(new) = repoint_text(&text, host).map_err(|message| RepointError::Invalid {
        path: path.to_owned(),
        message,
    })?
    else {
        return Ok(false);
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".repoint");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, new).map_err(io)?;
    if let Ok(meta) = std::fs::metadata(path) {
        // The file holds a credential: keep its permissions.
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(true)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A node's file with a primary, a replica and comments (also used by `reload`'s tests).
    pub(crate) const FILE: &str = r#"# a node
device = "repo001"
data_dir = "/tmp/x"
listen_peer = "127.0.0.1:7001"
listen_http = "127.0.0.1:8001"
http_url = "http://127.0.0.1:8001"
credential = "0123456789"

[database]
check_interval_s = 1
[[database.hosts]]
name = "db1"   # the first primary
address = "host=127.0.0.1 port=5432 user=postgres dbname=stormcell"
role = "primary"
[[database.hosts]]
name = "db2"
address = "host=127.0.0.1 port=5433 user=postgres dbname=stormcell"
role = "replica"
"#;

    #[test]
    fn repointing_swaps_roles_and_keeps_the_rest() {
        let out = repoint_text(FILE, "db2").expect("valid").expect("changed");
        let c = crate::config::NodeConfig::parse(&out).expect("parses");
        let primary = c.database.cluster().primary().map(|h| h.name.clone());
        assert_eq!(primary.as_deref(), Some("db2"));
        let db1 = &c.database.hosts[0];
        assert!(db1.role == DbRole::Replica && !db1.enabled);
        assert!(out.contains("# the first primary") && out.contains("# a node"));
        // Running it again changes nothing.
        assert_eq!(repoint_text(&out, "db2"), Ok(None));
    }

    #[test]
    fn an_unknown_host_is_named() {
        let e = repoint_text(FILE, "db9").unwrap_err();
        assert!(e.contains("db9") && e.contains("database.hosts"), "{e}");
    }
}
