//! Which database host one request talks to (PROTOCOL.md 9.3, 9.4), the health checks that
//! keep the records current, and the replication status of 9.5.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::{
    DbClusterConfig, DbHostConfig, DbRole, FailoverTiming, HealthRecord, ReadOnlyReason,
    SharedDbConfig,
};
use crate::config::Profile;
use crate::error::{ClusterError, DbError};
use crate::plant::{Bug, Plants};
use crate::ports::{ClusterDb, DbSession, Event, Events, ReplicationState};

/// What a request needs the database for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// It writes: only the primary will do.
    Write,
    /// It reads (a read sync, a status query): a replica will do while read-only.
    Read,
}

/// A session for one request, and whether it is read-only.
pub struct DbLink {
    /// The session.
    pub session: Box<dyn DbSession>,
    /// The host it is on.
    pub host: String,
    /// `Some` when the session is on a replica because the device is read-only.
    pub read_only: Option<ReadOnlyReason>,
}

/// One host's line of the replication status (PROTOCOL.md 9.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostStatus {
    /// The host.
    pub name: String,
    /// Its configured role.
    pub role: DbRole,
    /// Whether it is enabled.
    pub enabled: bool,
    /// Whether the last attempt to reach it worked (`None`: never tried).
    pub reachable: Option<bool>,
    /// Its health record's state.
    pub healthy: bool,
    /// A replica: how far behind it is, when known.
    pub delay: Option<Duration>,
    /// A replica more than the slow threshold behind ("data is at risk").
    pub slow: bool,
    /// A replica that is not receiving from its primary.
    pub replicating: Option<bool>,
}

#[derive(Debug, Clone, Default)]
struct HostHealth {
    record: HealthRecord,
    reachable: Option<bool>,
    /// The last health check could not reach the host (no answer in time, or no link),
    /// and nothing has reached it since.
    unanswered: bool,
    /// When a check or an attempt last found it not answering.
    quiet_at: Option<Instant>,
    delay: Option<Duration>,
    streaming: Option<bool>,
}

/// The database side of one node daemon: configuration, health records and the choice of
/// host per request. Health is kept per daemon (**[stormcell]**), so the whole daemon
/// degrades and recovers together.
pub struct Failover {
    config: SharedDbConfig,
    connector: Arc<dyn ClusterDb>,
    profile: Profile,
    plants: Plants,
    timing: FailoverTiming,
    health: Mutex<BTreeMap<String, HostHealth>>,
    mode: Mutex<Option<ReadOnlyReason>>,
    /// The primary this daemon last wrote to, and how many times it changed: after a
    /// promotion the new primary may lack rows the old one had not shipped.
    primary_epoch: Mutex<(Option<String>, u64)>,
    events: Arc<dyn Events>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Failover {
    /// The failover of one node over `connector`.
    pub fn new(
        config: SharedDbConfig,
        connector: Arc<dyn ClusterDb>,
        profile: Profile,
        plants: Plants,
        timing: FailoverTiming,
        events: Arc<dyn Events>,
    ) -> Self {
        Failover {
            config,
            connector,
            profile,
            plants,
            timing,
            health: Mutex::new(BTreeMap::new()),
            mode: Mutex::new(None),
            primary_epoch: Mutex::new((None, 0)),
            events,
        }
    }

    /// The current configuration.
    pub fn config(&self) -> DbClusterConfig {
        lock(&self.config).clone()
    }

    /// The health and connection numbers.
    pub fn timing(&self) -> &FailoverTiming {
        &self.timing
    }

    /// The read-only reason the last request saw (`None`: read/write).
    pub fn mode(&self) -> Option<ReadOnlyReason> {
        *lock(&self.mode)
    }

    fn may_recover(&self) -> bool {
        self.profile.rules().daemon_recovers_read_write && !self.plants.has(Bug::NeverRecover)
    }

    fn is_healthy(&self, host: &str) -> bool {
        lock(&self.health)
            .get(host)
            .is_none_or(|h| h.record.is_healthy())
    }

    fn record(&self, host: &str, up: bool) {
        let flipped = {
            let mut health = lock(&self.health);
            let h = health.entry(host.to_owned()).or_default();
            h.reachable = Some(up);
            h.record
                .record(Instant::now(), up, self.may_recover(), &self.timing)
        };
        if let Some(healthy) = flipped {
            self.events.emit(Event::DbHealth {
                host: host.to_owned(),
                healthy,
            });
        }
    }

    fn set_mode(&self, mode: Option<ReadOnlyReason>) {
        let changed = {
            let mut current = lock(&self.mode);
            let changed = *current != mode;
            *current = mode;
            changed
        };
        if changed {
            self.events.emit(Event::DbMode { reason: mode });
            if let Some(point) = mode.and_then(crate::ports::Coverage::of_read_only) {
                self.events.reached(point);
            }
        }
    }

    /// Whether the last health check could not reach `host`, so that **[stormcell]** a
    /// request gives it only the short try of an unhealthy host until it answers again.
    /// Its record takes a whole window of failures to say unhealthy; until then every
    /// request would otherwise wait out the long policy, retries included, on a host that
    /// has stopped answering.
    fn went_quiet(&self, host: &str) -> bool {
        self.profile.rules().bounded_database_waits
            && lock(&self.health).get(host).is_some_and(|h| h.unanswered)
    }

    fn set_unanswered(&self, host: &str, unanswered: bool) {
        let mut health = lock(&self.health);
        let h = health.entry(host.to_owned()).or_default();
        h.unanswered = unanswered;
        h.quiet_at = unanswered.then(Instant::now);
    }

    /// **[stormcell]** Whether `host` was found not answering less than a check interval
    /// ago: a request then does not try it as its primary at all (each try would cost the
    /// short connect timeout, and a push or a read makes several), and the health checks,
    /// due every interval and at once when a wait is suspected, find when it answers
    /// again. A replica is still tried: it is what serves reads then.
    fn found_quiet_lately(&self, host: &str) -> bool {
        self.went_quiet(host)
            && lock(&self.health)
                .get(host)
                .and_then(|h| h.quiet_at)
                .is_some_and(|at| Instant::now().duration_since(at) < self.timing.check_interval)
    }

    /// Connects to `host` with the policy its health calls for: a healthy host gets
    /// retries and a long connect timeout, an unhealthy one a single short try.
    /// **[stormcell]** A host the last health check could not reach gets the short try
    /// too. An attempt that got no answer within the short timeout marks the host the
    /// same way (and ends other waits on it), and no retry follows it or an attempt during
    /// which a health check found the host not answering: retries would only multiply the
    /// wait.
    async fn open(&self, host: &DbHostConfig) -> Result<Box<dyn DbSession>, DbError> {
        let (attempts, timeout) = if self.is_healthy(&host.name) && !self.went_quiet(&host.name) {
            (self.timing.healthy_retries + 1, self.timing.healthy_connect)
        } else {
            (1, self.timing.unhealthy_connect)
        };
        let mut last = None;
        for _ in 0..attempts {
            let started = Instant::now();
            match self.connector.connect(host, timeout).await {
                Ok(session) => {
                    self.record(&host.name, true);
                    self.set_unanswered(&host.name, false);
                    return Ok(session);
                }
                Err(e) => {
                    self.record(&host.name, false);
                    last = Some(e);
                    if !self.profile.rules().bounded_database_waits {
                        continue;
                    }
                    // No answer within the short limit: the host is treated as the
                    // health checks treat it, so this request and every other one
                    // stop waiting on it at once.
                    if started.elapsed() >= self.timing.unhealthy_connect.min(timeout) {
                        self.set_unanswered(&host.name, true);
                        self.connector.not_answering(host);
                        break;
                    }
                    if self.went_quiet(&host.name) {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| DbError::Connection(format!("{}: no attempt", host.name))))
    }

    /// Whether the primary makes this device read-only, and why; with `Ok`, a session on
    /// the primary.
    async fn try_primary(
        &self,
        config: &DbClusterConfig,
    ) -> Result<(Box<dyn DbSession>, String), (ReadOnlyReason, Option<DbError>)> {
        if config.read_only {
            return Err((ReadOnlyReason::Config, None));
        }
        let Some(primary) = config.primary() else {
            return Err((ReadOnlyReason::Masterless, None));
        };
        if config.is_clustered() && !self.is_healthy(&primary.name) {
            return Err((ReadOnlyReason::Severed, None));
        }
        if self.found_quiet_lately(&primary.name) {
            let e = DbError::Connection(format!(
                "{}: not answering (found so less than {}s ago; not tried again until a \
                 health check reaches it)",
                primary.name,
                self.timing.check_interval.as_secs()
            ));
            return Err((ReadOnlyReason::Unreachable, Some(e)));
        }
        match self.open(primary).await {
            Ok(s) => Ok((s, primary.name.clone())),
            Err(e) => Err((ReadOnlyReason::Unreachable, Some(e))),
        }
    }

    /// The replicas a read-only request tries, best first: **[stormcell]** healthy ones by
    /// least replication delay; the seed design took the first enabled one.
    fn replica_order<'a>(&self, config: &'a DbClusterConfig) -> Vec<&'a DbHostConfig> {
        let replicas: Vec<&DbHostConfig> = config.replicas().collect();
        if !self.profile.rules().least_lagged_replica {
            return replicas.into_iter().take(1).collect();
        }
        let health = lock(&self.health);
        let mut ranked: Vec<(bool, Duration, usize, &DbHostConfig)> = replicas
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                let rec = health.get(&h.name);
                let unhealthy = rec.is_some_and(|r| !r.record.is_healthy());
                let delay = rec.and_then(|r| r.delay).unwrap_or(Duration::MAX);
                (unhealthy, delay, i, h)
            })
            .collect();
        ranked.sort_by_key(|&(unhealthy, delay, i, _)| (unhealthy, delay, i));
        ranked.into_iter().map(|(.., h)| h).collect()
    }

    /// A session for one request. A write gets the primary or the read-only refusal at
    /// once (it never waits out a lock budget on a lost primary); a read falls back to a
    /// replica, and fails as stranded when nothing answers.
    pub async fn connect(&self, intent: Intent) -> Result<DbLink, ClusterError> {
        let config = self.config();
        let (reason, primary_error) = match self.try_primary(&config).await {
            Ok((session, host)) => {
                self.set_mode(None);
                {
                    let mut epoch = lock(&self.primary_epoch);
                    if epoch.0.as_deref() != Some(host.as_str()) {
                        if epoch.0.is_some() {
                            epoch.1 += 1;
                        }
                        epoch.0 = Some(host.clone());
                    }
                }
                return Ok(DbLink {
                    session,
                    host,
                    read_only: None,
                });
            }
            Err(r) => r,
        };
        self.set_mode(Some(reason));
        let misroute = intent == Intent::Write && self.plants.has(Bug::WriteOnReplica);
        if intent == Intent::Write && !misroute {
            return Err(ClusterError::ReadOnly { reason });
        }
        let mut errors: Vec<String> = primary_error.iter().map(ToString::to_string).collect();
        for replica in self.replica_order(&config) {
            match self.open(replica).await {
                Ok(session) => {
                    return Ok(DbLink {
                        session,
                        host: replica.name.clone(),
                        // The planted bug forgets that a replica session cannot write.
                        read_only: (!misroute).then_some(reason),
                    });
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        if intent == Intent::Write {
            return Err(ClusterError::ReadOnly { reason });
        }
        Err(ClusterError::Stranded {
            reason: if errors.is_empty() {
                format!("{} and no replica is configured", reason.describe())
            } else {
                errors.join("; ")
            },
        })
    }

    /// How many times the primary changed under this daemon (0 until a promotion).
    pub fn primary_epoch(&self) -> u64 {
        lock(&self.primary_epoch).1
    }

    /// Runs the health checks that are due, every host at once. A check is one short
    /// connection (no retry), a ping and for replicas a look at their replication, all
    /// within the short connect timeout of 9.3: a host that accepts connections but does
    /// not answer (a hung server) counts as down after that long, not after the query
    /// timeout, and the connector is told that the host was not reached, so that sessions
    /// waiting on it give up too.
    pub async fn check_due(&self) {
        let config = self.config();
        // A single host is never severed, so its health decides nothing.
        if !config.is_clustered() {
            return;
        }
        let due: Vec<&DbHostConfig> = config
            .hosts
            .iter()
            .filter(|h| h.enabled)
            .filter(|host| {
                let mut health = lock(&self.health);
                let h = health.entry(host.name.clone()).or_default();
                h.record.take_check(Instant::now(), &self.timing)
            })
            .collect();
        let checks = due.iter().map(|&host| self.check_host(host));
        let results = futures_util::future::join_all(checks).await;
        for (host, result) in due.into_iter().zip(results) {
            match result {
                Ok(state) => {
                    {
                        let mut health = lock(&self.health);
                        let h = health.entry(host.name.clone()).or_default();
                        h.delay = state.delay;
                        h.streaming = (state.role == DbRole::Replica).then_some(state.streaming);
                    }
                    self.record(&host.name, true);
                }
                Err(_) => self.record(&host.name, false),
            }
        }
        // A device with no traffic still learns that it recovered.
        if self.mode() == Some(ReadOnlyReason::Severed) {
            if let Some(primary) = config.primary() {
                if self.is_healthy(&primary.name) {
                    self.set_mode(None);
                }
            }
        }
    }

    /// One health check of `host`: a short connection, a ping and for a replica a look at
    /// its replication, all within the short connect timeout. A host not reached tells
    /// the connector, so that sessions waiting on it give up too.
    async fn check_host(&self, host: &DbHostConfig) -> Result<ReplicationState, DbError> {
        let limit = self.timing.unhealthy_connect;
        let check = async {
            let mut s = self.connector.connect(host, limit).await?;
            s.ping().await?;
            s.replication().await
        };
        let result = match tokio::time::timeout(limit, check).await {
            Ok(result) => result,
            Err(_) => Err(DbError::Connection(format!(
                "{}: no answer to the health check within {limit:?}",
                host.name
            ))),
        };
        // Not reached (no answer in time, or the link failed), as opposed to an answer
        // that was an error: whatever else waits on the host waits in vain.
        let unanswered = result.as_ref().is_err_and(DbError::is_connection);
        self.set_unanswered(&host.name, unanswered);
        if unanswered {
            self.connector.not_answering(host);
        }
        result
    }

    /// **[stormcell]** Checks the host at `address` now, out of turn: a session has waited
    /// on it past a round trip (PROTOCOL.md 9.3). Only a host not reached counts: the
    /// waits on it end; its health record is left to the due checks.
    pub async fn check_suspect(&self, address: &str) {
        if !self.profile.rules().bounded_database_waits {
            return;
        }
        let config = self.config();
        let Some(host) = config
            .hosts
            .iter()
            .find(|h| h.enabled && h.address == address)
        else {
            return;
        };
        // Already found not answering: its waits ended then, and its due checks go on.
        if lock(&self.health)
            .get(&host.name)
            .is_some_and(|h| h.unanswered)
        {
            return;
        }
        // The health record is the due checks' (one result per interval): this check
        // only ends the waits on a host that does not answer.
        let _ = self.check_host(host).await;
    }

    /// The replication status of every configured host.
    pub fn status(&self) -> Vec<HostStatus> {
        let config = self.config();
        let health = lock(&self.health);
        config
            .hosts
            .iter()
            .map(|host| {
                let h = health.get(&host.name).cloned().unwrap_or_default();
                HostStatus {
                    name: host.name.clone(),
                    role: host.role,
                    enabled: host.enabled,
                    reachable: h.reachable,
                    healthy: h.record.is_healthy(),
                    delay: h.delay,
                    slow: h.delay.is_some_and(|d| d > self.timing.slow_replica),
                    replicating: h.streaming,
                }
            })
            .collect()
    }
}

/// Runs the health checks forever, looking for due checks every second, and checking a
/// host at once when a session suspects it of not answering.
pub async fn monitor(failover: Arc<Failover>) {
    loop {
        failover.check_due().await;
        tokio::select! {
            biased;
            address = failover.connector.suspected() => failover.check_suspect(&address).await,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
