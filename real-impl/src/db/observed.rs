//! The cluster database port as the engine uses it, watched for what it says about
//! versions (PROTOCOL.md sections 4 and 5): every read sync and background pull reads a
//! repository's version rows, and every sync or write records this device's new version.
//! From those answers alone, this device knows how many versions it is behind on each
//! repository, with no polling of its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use stormcell_model::error::DbError;
use stormcell_model::failover::DbHostConfig;
use stormcell_model::ids::{DeviceId, Digest, Generation, LockOwner, RepoId, Version};
use stormcell_model::ports::{ClusterDb, DbSession, FinishWrite, LockName, ReplicationState};
use stormcell_model::rows::{NewPushEvent, NewSyncEvent, Topology, VersionRow, WriteProps};

use crate::metrics::Metrics;

/// A [`ClusterDb`] whose sessions report this device's versions to the metrics.
pub struct ObservedDb<D> {
    inner: D,
    device: DeviceId,
    metrics: Arc<Metrics>,
}

impl<D> ObservedDb<D> {
    /// `inner`, watched on behalf of `device`.
    pub fn new(inner: D, device: DeviceId, metrics: Arc<Metrics>) -> Self {
        ObservedDb {
            inner,
            device,
            metrics,
        }
    }
}

#[async_trait]
impl<D: ClusterDb> ClusterDb for ObservedDb<D> {
    async fn connect(
        &self,
        host: &DbHostConfig,
        timeout: Duration,
    ) -> Result<Box<dyn DbSession>, DbError> {
        let inner = self.inner.connect(host, timeout).await?;
        Ok(Box::new(ObservedSession {
            inner,
            device: self.device.clone(),
            metrics: Arc::clone(&self.metrics),
        }))
    }

    fn not_answering(&self, host: &DbHostConfig) {
        self.inner.not_answering(host);
    }
}

/// One watched session.
struct ObservedSession {
    inner: Box<dyn DbSession>,
    device: DeviceId,
    metrics: Arc<Metrics>,
}

/// The cluster's newest version and this device's, from a repository's rows. A device
/// without a row holds nothing yet, which counts as version 0.
pub fn versions_of(rows: &[VersionRow], device: &DeviceId) -> Option<(Version, Version)> {
    let max = rows.iter().map(|r| r.version).max()?;
    let mine = rows
        .iter()
        .find(|r| &r.device == device)
        .map_or(0, |r| r.version);
    Some((max, mine))
}

#[async_trait]
impl DbSession for ObservedSession {
    async fn try_lock(&mut self, lock: &LockName) -> Result<bool, DbError> {
        self.inner.try_lock(lock).await
    }

    async fn lock_wait(&mut self, lock: &LockName, patience: Duration) -> Result<bool, DbError> {
        self.inner.lock_wait(lock, patience).await
    }

    async fn unlock(&mut self, lock: &LockName) -> Result<(), DbError> {
        self.inner.unlock(lock).await
    }

    async fn topology(&mut self) -> Result<Topology, DbError> {
        self.inner.topology().await
    }

    async fn rows(&mut self, repo: &RepoId) -> Result<Vec<VersionRow>, DbError> {
        let rows = self.inner.rows(repo).await?;
        if let Some((max, mine)) = versions_of(&rows, &self.device) {
            self.metrics.versions_seen(repo.as_str(), max, mine);
        }
        Ok(rows)
    }

    async fn demotions(&mut self, repo: &RepoId) -> Result<BTreeMap<DeviceId, u64>, DbError> {
        self.inner.demotions(repo).await
    }

    async fn restore_demote(
        &mut self,
        repo: &RepoId,
        device: &DeviceId,
        demotes: u64,
    ) -> Result<bool, DbError> {
        self.inner.restore_demote(repo, device, demotes).await
    }

    async fn out_of_sync(&mut self, device: &DeviceId) -> Result<Vec<RepoId>, DbError> {
        self.inner.out_of_sync(device).await
    }

    async fn begin_write(
        &mut self,
        repo: &RepoId,
        device: &DeviceId,
        props: &WriteProps,
        owner: &LockOwner,
    ) -> Result<(), DbError> {
        self.inner.begin_write(repo, device, props, owner).await
    }

    async fn finish_write(&mut self, finish: &FinishWrite) -> Result<u64, DbError> {
        let changed = self.inner.finish_write(finish).await?;
        if changed == 1 && finish.device == self.device {
            // A recorded write makes this device a leader of the new version.
            self.metrics.versions_seen(
                finish.repo.as_str(),
                finish.new_version,
                finish.new_version,
            );
        }
        Ok(changed)
    }

    async fn set_version(
        &mut self,
        repo: &RepoId,
        device: &DeviceId,
        version: Version,
        digest: Option<Digest>,
        expected: Option<&[(DeviceId, Version)]>,
    ) -> Result<bool, DbError> {
        let changed = self
            .inner
            .set_version(repo, device, version, digest, expected)
            .await?;
        if changed && device == &self.device {
            self.metrics.own_version(repo.as_str(), version);
        }
        Ok(changed)
    }

    async fn generation(&mut self) -> Result<Generation, DbError> {
        self.inner.generation().await
    }

    async fn insert_initial(
        &mut self,
        repo: &RepoId,
        device: &DeviceId,
        digest: Option<Digest>,
    ) -> Result<bool, DbError> {
        let inserted = self.inner.insert_initial(repo, device, digest).await?;
        if inserted && device == &self.device {
            self.metrics.versions_seen(repo.as_str(), 0, 0);
        }
        Ok(inserted)
    }

    async fn record_push(&mut self, event: &NewPushEvent) -> Result<u64, DbError> {
        self.inner.record_push(event).await
    }

    async fn newest_push_id(&mut self, repo: &RepoId) -> Result<Option<u64>, DbError> {
        self.inner.newest_push_id(repo).await
    }

    async fn record_sync(&mut self, event: &NewSyncEvent) -> Result<(), DbError> {
        self.inner.record_sync(event).await
    }

    async fn ping(&mut self) -> Result<(), DbError> {
        self.inner.ping().await
    }

    async fn replication(&mut self) -> Result<ReplicationState, DbError> {
        self.inner.replication().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(device: &str, version: Version) -> VersionRow {
        VersionRow {
            repo: RepoId::new("R1"),
            device: DeviceId::new(device),
            version,
            writing: false,
            write_props: None,
            lock_owner: None,
            digest: None,
        }
    }

    #[test]
    fn behind_is_the_cluster_max_minus_this_devices_version() {
        let me = DeviceId::new("repo002");
        let rows = [row("repo001", 7), row("repo002", 4), row("repo003", 7)];
        assert_eq!(versions_of(&rows, &me), Some((7, 4)));
        assert_eq!(versions_of(&rows[..1], &me), Some((7, 0)));
        assert_eq!(versions_of(&[], &me), None);
    }
}
