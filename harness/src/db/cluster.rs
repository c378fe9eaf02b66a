//! The simulated cluster database of a run: the primary and its replicas as turmoil hosts,
//! the configuration the devices read their hosts from, and the operator's promotion of a
//! replica.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rand_chacha::ChaCha8Rng;
use stormcell_model::failover::{DbClusterConfig, DbHostConfig, DbRole, SharedDbConfig};

use super::replication::ReplicaState;
use super::server::{lock_state, serve, DbHostState};
use super::tables::Tables;
use crate::scenario::Database;

/// The port every simulated database host listens on.
pub const DB_PORT: u16 = 5432;
/// The name of the primary database host at the start of a run.
pub const PRIMARY: &str = "db";

/// The name of replica `i` (from 0).
pub fn replica_name(i: u32) -> String {
    format!("db-r{}", i + 1)
}

fn address(host: &str) -> String {
    format!("{host}:{DB_PORT}")
}

/// The database hosts of one run.
#[derive(Clone)]
pub struct SimDbCluster {
    /// Each host's durable state, by name.
    pub hosts: BTreeMap<String, Arc<Mutex<DbHostState>>>,
    /// The replicas' names at the start.
    pub replicas: Vec<String>,
    /// What the devices are configured with; re-pointed by a promotion.
    pub config: SharedDbConfig,
}

/// What a promotion cost: the transactions the old primary had committed that the promoted
/// replica never received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    /// The host promoted.
    pub host: String,
    /// The sequence number it continues from.
    pub at_seq: u64,
    /// One line per lost transaction.
    pub lost: Vec<String>,
}

impl SimDbCluster {
    /// Builds the hosts on `sim`, every one starting from `tables`, replicas drawing their
    /// delay from `rng`.
    pub fn build(
        sim: &mut turmoil::Sim<'_>,
        database: &Database,
        tables: Tables,
        rng: &mut ChaCha8Rng,
    ) -> Self {
        let mut hosts = BTreeMap::new();
        let mut config = DbClusterConfig::single(PRIMARY, &address(PRIMARY));
        config.stale_reads = database.stale_reads;
        hosts.insert(PRIMARY.to_owned(), DbHostState::shared(tables.clone()));
        let mut replicas = Vec::new();
        for i in 0..database.replicas {
            let name = replica_name(i);
            let delay = database.replica_delay_ms.draw(rng);
            hosts.insert(
                name.clone(),
                DbHostState::replica_of(tables.clone(), &address(PRIMARY), delay),
            );
            config.hosts.push(DbHostConfig {
                name: name.clone(),
                address: address(&name),
                role: DbRole::Replica,
                enabled: true,
            });
            replicas.push(name);
        }
        for (name, state) in &hosts {
            let state = state.clone();
            sim.host(name.as_str(), move || {
                let state = state.clone();
                async move {
                    serve(state, DB_PORT).await?;
                    Ok(())
                }
            });
        }
        SimDbCluster {
            hosts,
            replicas,
            config: Arc::new(Mutex::new(config)),
        }
    }

    /// The configured primary's name.
    pub fn primary(&self) -> Option<String> {
        let config = self.config.lock().unwrap_or_else(|e| e.into_inner());
        config.primary().map(|h| h.name.clone())
    }

    /// The replica that received the most (ties: the first), as an operator would pick it.
    pub fn best_replica(&self) -> Option<String> {
        let primary = self.primary();
        self.hosts
            .iter()
            .filter(|(name, _)| Some(*name) != primary.as_ref())
            .filter(|(_, s)| lock_state(s).replica.is_some())
            .max_by_key(|(name, s)| (lock_state(s).received(), std::cmp::Reverse((*name).clone())))
            .map(|(name, _)| name.clone())
    }

    /// Promotes `host`: it applies everything it received and takes writes; the other
    /// replicas are rebuilt from it (like a fresh base backup); the devices' configuration
    /// is re-pointed. The old primary's transactions the host never received are reported.
    pub fn promote(&self, host: &str, now_ms: u64) -> Option<Promotion> {
        let new_state = self.hosts.get(host)?.clone();
        let old = self.primary().and_then(|p| self.hosts.get(&p).cloned());
        let received = lock_state(&new_state).received();
        let lost = old
            .map(|o| {
                lock_state(&o)
                    .log
                    .iter()
                    .filter(|e| e.seq > received)
                    .map(|e| format!("#{} {} at {}ms", e.seq, describe(&e.req), e.at_ms))
                    .collect()
            })
            .unwrap_or_default();
        let at_seq = {
            let mut st = lock_state(&new_state);
            let at_seq = st.promote(now_ms);
            st.tables.promoted(host);
            at_seq
        };
        let (tables, log) = {
            let st = lock_state(&new_state);
            (st.tables.clone(), st.log.clone())
        };
        for (name, state) in &self.hosts {
            let mut st = lock_state(state);
            if name == host || st.replica.is_none() {
                continue;
            }
            let delay = st.replica.as_ref().map_or(0, |r| r.delay_ms);
            st.tables = tables.clone();
            st.log = log.clone();
            st.seq = at_seq;
            st.replica = Some(ReplicaState::new(address(host), delay, at_seq));
        }
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .repoint(host);
        Some(Promotion {
            host: host.to_owned(),
            at_seq,
            lost,
        })
    }

    /// Sets a replica's apply delay; returns the previous one.
    pub fn set_delay(&self, host: &str, delay_ms: u64) -> Option<u64> {
        let state = self.hosts.get(host)?;
        let mut st = lock_state(state);
        let r = st.replica.as_mut()?;
        Some(std::mem::replace(&mut r.delay_ms, delay_ms))
    }
}

/// A lost transaction in words.
fn describe(req: &super::wire::DbRequest) -> String {
    use super::wire::DbRequest;
    match req {
        DbRequest::BeginWrite { repo, device, .. } => format!("begin_write {repo}/{device}"),
        DbRequest::FinishWrite { finish } => format!(
            "finish_write {}/{} version {}",
            finish.repo, finish.device, finish.new_version
        ),
        DbRequest::SetVersion {
            repo,
            device,
            version,
            ..
        } => format!("set_version {repo}/{device} version {version}"),
        DbRequest::RecordPush { event } => format!("record_push {}", event.repo),
        other => other.name().to_owned(),
    }
}
