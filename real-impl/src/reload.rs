//! Re-reading the `[database]` section of a running node's configuration file, so an
//! operator can re-point the devices at a promoted replica (`stormcell db promote`)
//! without restarting them.
//!
//! The node looks at its file every [`POLL`] and on SIGHUP. When the file's text changed
//! and it is still a valid configuration, the database hosts (roles, enabled flags,
//! addresses) and the read-only settings replace the ones every request reads
//! ([`SharedDbConfig`]); the model's failover then sees a new primary and, before each
//! repository's next write there, re-checks versions with the peers. Other changes are
//! logged and wait for a restart. An invalid file is logged and ignored: the node keeps
//! running on what it had.

use std::path::{Path, PathBuf};
use std::time::Duration;

use stormcell_model::failover::{DbClusterConfig, SharedDbConfig};

use crate::config::NodeConfig;

/// How often the file is looked at.
pub const POLL: Duration = Duration::from_secs(1);

/// What reading the file again decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The text did not change.
    Unchanged,
    /// The text changed but the database section did not.
    SameDatabase,
    /// The database section changed to this.
    Database(DbClusterConfig),
    /// The file cannot be used; the message names the field.
    Invalid(String),
}

/// Decides what a new text of the file means, given the database section in force.
pub fn consider(old_text: &str, new_text: &str, current: &DbClusterConfig) -> Reload {
    if old_text == new_text {
        return Reload::Unchanged;
    }
    match NodeConfig::parse(new_text) {
        Err(e) => Reload::Invalid(e),
        Ok(c) if &c.database.cluster() == current => Reload::SameDatabase,
        Ok(c) => Reload::Database(c.database.cluster()),
    }
}

fn read(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(config = %path.display(), error = %e, "configuration file unreadable; keeping the database hosts in force");
            None
        }
    }
}

/// Watches `path` until the node stops, applying database changes to `hosts`. The file's
/// current text and the SIGHUP handler are taken before this returns, so a hangup sent
/// once the node is listening is never the default (fatal) one.
pub fn watch(path: PathBuf, hosts: SharedDbConfig) -> impl std::future::Future<Output = ()> {
    let mut seen = read(&path).unwrap_or_default();
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGHUP; the file is still looked at every second");
            None
        }
    };
    async move {
        loop {
            #[cfg(unix)]
            {
                match hangup.as_mut() {
                    Some(h) => {
                        tokio::select! {
                            biased;
                            _ = h.recv() => tracing::info!("SIGHUP: re-reading the configuration"),
                            _ = tokio::time::sleep(POLL) => {}
                        }
                    }
                    None => tokio::time::sleep(POLL).await,
                }
            }
            #[cfg(not(unix))]
            tokio::time::sleep(POLL).await;
            let Some(text) = read(&path) else {
                continue;
            };
            let current = hosts.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match consider(&seen, &text, &current) {
                Reload::Unchanged => {}
                Reload::SameDatabase => tracing::info!(
                    config = %path.display(),
                    "configuration changed outside [database]; that takes a restart"
                ),
                Reload::Database(new) => {
                    tracing::warn!(
                        config = %path.display(),
                        primary = new.primary().map_or("none", |h| h.name.as_str()),
                        "database hosts changed; requests use them from now on"
                    );
                    *hosts.lock().unwrap_or_else(|e| e.into_inner()) = new;
                }
                Reload::Invalid(e) => tracing::error!(
                    config = %path.display(),
                    error = %e,
                    "configuration file is invalid; keeping the database hosts in force"
                ),
            }
            seen = text;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::db::promote::tests::FILE;

    #[test]
    fn only_a_changed_database_section_is_applied() {
        let current = NodeConfig::parse(FILE).expect("valid").database.cluster();
        assert_eq!(consider(FILE, FILE, &current), Reload::Unchanged);
        let other = FILE.replace("repo001", "repo009");
        assert_eq!(consider(FILE, &other, &current), Reload::SameDatabase);
        let moved = crate::db::promote::repoint_text(FILE, "db2")
            .expect("valid")
            .expect("changed");
        match consider(FILE, &moved, &current) {
            Reload::Database(c) => {
                assert_eq!(c.primary().map(|h| h.name.as_str()), Some("db2"))
            }
            other => panic!("{other:?}"),
        }
        let broken = FILE.replace("role = \"replica\"", "role = \"leader\"");
        assert!(matches!(
            consider(FILE, &broken, &current),
            Reload::Invalid(e) if e.contains("role")
        ));
    }
}
