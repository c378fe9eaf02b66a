//! The cluster database port over PostgreSQL (PROTOCOL.md sections 1, 2 and 9).
//!
//! A session is one dedicated connection; named locks are session-level advisory locks
//! on it (`pg_try_advisory_lock`), so they end with the session whether it closes, its
//! process dies or the server notices its link is gone.

pub mod admin;
pub mod admin_session;
pub mod credentials;
pub mod lock_key;
pub mod observed;
pub mod pool;
pub mod promote;
pub mod schema;
pub mod silence;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use stormcell_model::failover::{DbHostConfig, DbRole};
use stormcell_model::ids::{DeviceId, Digest, Generation, LockOwner, RepoId, ServiceId, Version};
use stormcell_model::ports::{ClusterDb, DbSession, FinishWrite, LockName, ReplicationState};
use stormcell_model::rows::{
    Binding, Device, NewPushEvent, NewSyncEvent, PushKind, Repository, Service, SyncResult,
    Topology, VersionRow, WriteProps,
};
use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row};

use silence::{silenced, Silences, SUSPECT_AFTER};

pub use stormcell_model::error::DbError;

/// Turns a driver error into the port's error: lost links and shutdowns are connection
/// errors (the only kind a write's recording retries), everything else a query error.
pub(crate) fn query_error(e: tokio_postgres::Error) -> DbError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let text = format!("{} (SQLSTATE {code})", db.message());
        // Class 08 is connection exceptions; 57P01-57P03 are shutdowns and startups.
        if code.starts_with("08") || code.starts_with("57P") {
            return DbError::Connection(text);
        }
        return DbError::Query(text);
    }
    let text = e.to_string();
    if text.starts_with("error deserializing") || text.starts_with("error serializing") {
        DbError::Query(text)
    } else {
        DbError::Connection(text)
    }
}

/// One PostgreSQL host: where it is and how long to wait for it.
#[derive(Debug, Clone)]
pub struct PgClusterDb {
    config: Config,
    connect_timeout: Duration,
    query_timeout: Duration,
}

impl PgClusterDb {
    /// A database reached with a libpq-style connection string. `application` names the
    /// sessions in `pg_stat_activity`.
    pub fn new(
        conninfo: &str,
        application: &str,
        connect_timeout: Duration,
        query_timeout: Duration,
    ) -> Result<Self, DbError> {
        let mut config: Config = conninfo
            .parse()
            .map_err(|e| DbError::Query(format!("bad connection string: {e}")))?;
        config
            .application_name(application)
            .connect_timeout(connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10));
        Ok(PgClusterDb {
            config,
            connect_timeout,
            query_timeout,
        })
    }

    /// A new dedicated connection.
    pub async fn client(&self) -> Result<Client, DbError> {
        let connecting = self.config.connect(NoTls);
        let (client, connection) = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| {
                DbError::Connection(format!(
                    "no connection within {}s",
                    self.connect_timeout.as_secs()
                ))
            })?
            .map_err(query_error)?;
        // The connection task ends when the client is dropped, which ends the session and
        // with it every advisory lock it held.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "database connection ended");
            }
        });
        Ok(client)
    }

    /// A new session of the port.
    pub async fn session(&self) -> Result<PgSession, DbError> {
        Ok(PgSession::new(
            self.client().await?,
            self.query_timeout,
            None,
            None,
            None,
        ))
    }
}

/// The cluster database port: sessions to whichever host the model's failover picks
/// (PROTOCOL.md 9). A host's `address` is a libpq-style connection string.
#[derive(Debug, Clone)]
pub struct PgConnector {
    application: String,
    query_timeout: Duration,
    pool: Arc<pool::SessionPool>,
    silences: Arc<Silences>,
    /// The longest a pooled session's check may wait, below the connect timeout: it is
    /// one round trip on an open link, with no handshake or authentication to allow for.
    round_trip_limit: Option<Duration>,
}

impl PgConnector {
    /// Sessions named `application`, whose queries may take `query_timeout`.
    pub fn new(application: &str, query_timeout: Duration) -> Self {
        PgConnector {
            application: application.to_owned(),
            query_timeout,
            pool: Arc::default(),
            silences: Arc::default(),
            round_trip_limit: None,
        }
    }

    /// Checks pooled sessions within `limit` (or the connect timeout, if shorter).
    pub fn with_round_trip_limit(mut self, limit: Duration) -> Self {
        self.round_trip_limit = Some(limit);
        self
    }

    /// How many idle sessions to `address` are kept for reuse.
    pub fn idle_sessions(&self, address: &str) -> usize {
        self.pool.idle(address)
    }

    /// The connection settings of one host.
    pub fn host(&self, host: &DbHostConfig, timeout: Duration) -> Result<PgClusterDb, DbError> {
        PgClusterDb::new(
            &host.address,
            &self.application,
            timeout,
            self.query_timeout,
        )
    }
}

#[async_trait]
impl ClusterDb for PgConnector {
    async fn connect(
        &self,
        host: &DbHostConfig,
        timeout: Duration,
    ) -> Result<Box<dyn DbSession>, DbError> {
        let home = Some((Arc::clone(&self.pool), host.address.clone()));
        // Subscribed before any wait, so a report that the host stopped answering made
        // during this connect, or later during the session, ends the wait.
        let silence = self.silences.watch(&host.address);
        let gone = |what: &str| {
            DbError::Connection(format!(
                "{}: {what} (a health check found it not answering)",
                host.name
            ))
        };
        let check_limit = self.round_trip_limit.map_or(timeout, |l| l.min(timeout));
        let watchdog = Watchdog {
            silences: Arc::clone(&self.silences),
            address: host.address.clone(),
        };
        while let Some(client) = self.pool.take(&host.address) {
            // An idle session may have died with its server or its link since it was
            // pooled, without the client noticing yet: it is handed out only after a round
            // trip within the connect timeout, as a new connection would have to make.
            let checked = tokio::select! {
                biased;
                never = Watchdog::bark_after_a_while(Some(&watchdog)) => match never {},
                answer = tokio::time::timeout(check_limit, client.simple_query("")) => answer,
                () = silenced(Some(&silence)) => {
                    self.pool.clear(&host.address);
                    return Err(gone("no answer to a pooled session's check"));
                }
            };
            match checked {
                Ok(Ok(_)) => {
                    return Ok(Box::new(PgSession::new(
                        client,
                        self.query_timeout,
                        home,
                        Some(silence),
                        Some(watchdog),
                    )))
                }
                // Closed under us: dropped, and the next one is tried.
                Ok(Err(e)) => {
                    tracing::debug!(host = %host.name, error = %e, "dropped a dead pooled session");
                }
                Err(_) => {
                    // The host does not answer: none of its idle sessions is worth a wait.
                    self.pool.clear(&host.address);
                    return Err(DbError::Connection(format!(
                        "no answer from {} within {}s",
                        host.name,
                        check_limit.as_secs_f64()
                    )));
                }
            }
        }
        let db = self.host(host, timeout)?;
        let client = tokio::select! {
            biased;
            never = Watchdog::bark_after_a_while(Some(&watchdog)) => match never {},
            client = db.client() => client?,
            () = silenced(Some(&silence)) => return Err(gone("no answer to a new connection")),
        };
        Ok(Box::new(PgSession::new(
            client,
            self.query_timeout,
            home,
            Some(silence),
            Some(watchdog),
        )))
    }

    async fn suspected(&self) -> String {
        self.silences.next_suspect().await
    }

    fn not_answering(&self, host: &DbHostConfig) {
        tracing::warn!(host = %host.name, "database host not answering: waits on it end now");
        self.pool.clear(&host.address);
        self.silences.raise(&host.address);
    }
}

/// A session's way to report its host as suspected of not answering.
#[derive(Debug, Clone)]
struct Watchdog {
    silences: Arc<Silences>,
    address: String,
}

impl Watchdog {
    /// Reports the host once a wait has gone on for [`SUSPECT_AFTER`]; never returns.
    async fn bark_after_a_while(watchdog: Option<&Watchdog>) -> std::convert::Infallible {
        if let Some(w) = watchdog {
            tokio::time::sleep(SUSPECT_AFTER).await;
            w.silences.suspect(&w.address);
        }
        std::future::pending().await
    }
}

/// One database session.
pub struct PgSession {
    /// Always present until the session is dropped (then it may go back to the pool).
    client: Option<Client>,
    /// Locks taken on this session, and any whose take or release had no clear answer.
    /// PostgreSQL's advisory locks nest; the port's do not, so a second take of a held
    /// lock is answered here.
    held: BTreeSet<LockName>,
    query_timeout: Duration,
    /// The pool and address this session returns to when dropped holding no lock.
    home: Option<(Arc<pool::SessionPool>, String)>,
    /// Set when a query failed or ran out of time: the link may be broken or a late
    /// answer pending, so the session is closed rather than reused.
    suspect: AtomicBool,
    /// Set while a query waits for its answer. A caller that gives up on the query (its
    /// own time limit ran out) drops it with the flag still set, so the session, whose
    /// answer may still come, is closed rather than pooled.
    in_flight: AtomicBool,
    /// Raised when a health check finds this session's host not answering: a query
    /// waiting on it fails then rather than at the query timeout.
    silence: Option<watch::Receiver<u64>>,
    /// Where a query that waits past a round trip reports its host as suspected, so a
    /// health check looks at it at once (pooled sessions of a connector only).
    watchdog: Option<Watchdog>,
    /// Set when the link failed or an answer did not come in time: every later call fails
    /// at once with this reason. A late answer could otherwise be taken for the next
    /// query's, and a link that missed one answer is not trusted with another.
    broken: std::sync::OnceLock<String>,
}

impl Drop for PgSession {
    fn drop(&mut self) {
        // A session that may hold a lock is closed, which releases it.
        if let (Some((pool, address)), Some(client), true) = (
            self.home.take(),
            self.client.take(),
            self.held.is_empty() && !*self.suspect.get_mut() && !*self.in_flight.get_mut(),
        ) {
            pool.give(&address, client);
        }
    }
}

fn to_i64(v: u64) -> i64 {
    // Versions and push ids come from a bigserial and never reach 2^63; digests are
    // stored bit for bit.
    v as i64
}

fn version_row(r: &Row) -> Result<VersionRow, DbError> {
    let props: Option<serde_json::Value> = r.try_get("write_props").map_err(query_error)?;
    let write_props = props
        .map(serde_json::from_value::<WriteProps>)
        .transpose()
        .map_err(|e| DbError::Query(format!("unreadable write_props: {e}")))?;
    Ok(VersionRow {
        repo: RepoId::new(r.try_get::<_, String>("repo").map_err(query_error)?),
        device: DeviceId::new(r.try_get::<_, String>("device").map_err(query_error)?),
        version: r.try_get::<_, i64>("version").map_err(query_error)? as u64,
        writing: r.try_get("writing").map_err(query_error)?,
        write_props,
        lock_owner: r
            .try_get::<_, Option<String>>("lock_owner")
            .map_err(query_error)?
            .map(LockOwner::new),
        digest: r
            .try_get::<_, Option<i64>>("digest")
            .map_err(query_error)?
            .map(|d| Digest(d as u64)),
    })
}

fn kind_name(kind: PushKind) -> &'static str {
    match kind {
        PushKind::Push => "push",
        PushKind::Maintenance => "maintenance",
        PushKind::Recovered => "recovered",
    }
}

fn result_name(result: SyncResult) -> &'static str {
    match result {
        SyncResult::Sync => "sync",
        SyncResult::Error => "error",
        SyncResult::Timeout => "timeout",
    }
}

impl PgSession {
    /// Runs `statement` only if the repository's rows are exactly `expected` (device and
    /// version, sorted), in one transaction; returns the rows it changed (0 when the rows
    /// differ). Every writer of a
    /// repository's rows takes the same transaction lock first, so the rows cannot change
    /// between the comparison and the statement.
    pub(crate) async fn if_rows_are(
        &mut self,
        repo: &RepoId,
        expected: &[(DeviceId, Version)],
        statement: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, DbError> {
        let key = lock_key::rows_key(repo);
        let mut expected = expected.to_vec();
        expected.sort();
        // A broken session answers nothing, transactions included.
        self.client()?;
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| DbError::Connection("the session is closed".to_owned()))?;
        let update = async {
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])
                .await?;
            let rows = tx
                .query(
                    "SELECT device, version FROM versions WHERE repo = $1 ORDER BY device",
                    &[&repo.as_str()],
                )
                .await?;
            let mut current = Vec::with_capacity(rows.len());
            for row in &rows {
                let name: String = row.try_get(0)?;
                let v: i64 = row.try_get(1)?;
                current.push((DeviceId::new(name), v.max(0) as Version));
            }
            current.sort();
            if current != expected {
                tx.rollback().await?;
                return Ok(0);
            }
            let changed = tx.execute(statement, params).await?;
            tx.commit().await?;
            Ok(changed)
        };
        in_transaction(
            TxGuard {
                query_timeout: self.query_timeout,
                home: &mut self.home,
                broken: &self.broken,
                in_flight: &self.in_flight,
                silence: self.silence.as_ref(),
                watchdog: self.watchdog.as_ref(),
            },
            update,
        )
        .await
    }

    fn new(
        client: Client,
        query_timeout: Duration,
        home: Option<(Arc<pool::SessionPool>, String)>,
        silence: Option<watch::Receiver<u64>>,
        watchdog: Option<Watchdog>,
    ) -> Self {
        PgSession {
            client: Some(client),
            held: BTreeSet::new(),
            query_timeout,
            home,
            suspect: AtomicBool::new(false),
            in_flight: AtomicBool::new(false),
            silence,
            watchdog,
            broken: Default::default(),
        }
    }

    /// Runs one query within the query time limit; running past it, or its host being
    /// found not answering meanwhile, counts as a lost link (the session is not reused).
    async fn timed<T>(
        &self,
        query: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, DbError> {
        self.in_flight.store(true, Ordering::Relaxed);
        let result = answer_within(
            self.query_timeout,
            self.silence.as_ref(),
            self.watchdog.as_ref(),
            query,
        )
        .await;
        self.in_flight.store(false, Ordering::Relaxed);
        if let Err(e) = &result {
            self.suspect.store(true, Ordering::Relaxed);
            if let DbError::Connection(reason) = e {
                let _ = self.broken.set(reason.clone());
            }
        }
        result
    }

    /// The underlying client.
    pub fn client(&self) -> Result<&Client, DbError> {
        if let Some(reason) = self.broken.get() {
            return Err(DbError::Connection(format!("session broken: {reason}")));
        }
        self.client
            .as_ref()
            .ok_or_else(|| DbError::Connection("the session is closed".to_owned()))
    }
}

/// Waits for `query` within `limit`, or until `silence` reports its host not answering;
/// a wait past [`SUSPECT_AFTER`] reports the host to `watchdog`.
async fn answer_within<T>(
    limit: Duration,
    silence: Option<&watch::Receiver<u64>>,
    watchdog: Option<&Watchdog>,
    query: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, DbError> {
    tokio::select! {
        biased;
        never = Watchdog::bark_after_a_while(watchdog) => match never {},
        answer = tokio::time::timeout(limit, query) => match answer {
            Ok(r) => r.map_err(query_error),
            Err(_) => Err(DbError::Connection(format!(
                "no answer within {}s",
                limit.as_secs_f64()
            ))),
        },
        () = silenced(silence) => Err(DbError::Connection(
            "no answer: a health check found the host not answering".to_owned(),
        )),
    }
}

/// The parts of a session a transaction touches besides its client.
struct TxGuard<'a> {
    query_timeout: Duration,
    home: &'a mut Option<(Arc<pool::SessionPool>, String)>,
    broken: &'a std::sync::OnceLock<String>,
    in_flight: &'a AtomicBool,
    silence: Option<&'a watch::Receiver<u64>>,
    watchdog: Option<&'a Watchdog>,
}

/// Runs a transaction of a session within its query time limit. A transaction that failed
/// or was cut off midway leaves the session's pool (`home`), so it is closed rather than
/// reused.
async fn in_transaction<T>(
    guard: TxGuard<'_>,
    tx: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, DbError> {
    let TxGuard {
        query_timeout,
        home,
        broken,
        in_flight,
        silence,
        watchdog,
    } = guard;
    in_flight.store(true, Ordering::Relaxed);
    let result = answer_within(query_timeout, silence, watchdog, tx).await;
    in_flight.store(false, Ordering::Relaxed);
    if let Err(e) = &result {
        *home = None;
        if let DbError::Connection(reason) = e {
            let _ = broken.set(reason.clone());
        }
    }
    result
}

/// Loads the configuration with four queries sent together.
pub async fn load_topology(client: &Client) -> Result<Topology, tokio_postgres::Error> {
    let (devices, services, bindings, repos) = tokio::try_join!(
        client.query("SELECT name, address FROM devices ORDER BY name", &[]),
        client.query("SELECT name, closed FROM services ORDER BY name", &[]),
        client.query(
            "SELECT service, device, writable, disabled FROM bindings ORDER BY service, device",
            &[]
        ),
        client.query(
            "SELECT name, service, maintenance FROM repositories ORDER BY name",
            &[]
        ),
    )?;
    let mut t = Topology::default();
    for r in devices {
        let id = DeviceId::new(r.try_get::<_, String>(0)?);
        t.devices.insert(
            id.clone(),
            Device {
                id,
                address: r.try_get(1)?,
            },
        );
    }
    for r in services {
        let id = ServiceId::new(r.try_get::<_, String>(0)?);
        t.services.insert(
            id.clone(),
            Service {
                id,
                closed: r.try_get(1)?,
            },
        );
    }
    for r in bindings {
        t.bindings.push(Binding {
            service: ServiceId::new(r.try_get::<_, String>(0)?),
            device: DeviceId::new(r.try_get::<_, String>(1)?),
            writable: r.try_get(2)?,
            disabled: r.try_get(3)?,
        });
    }
    for r in repos {
        let id = RepoId::new(r.try_get::<_, String>(0)?);
        t.repositories.insert(
            id.clone(),
            Repository {
                id,
                service: r.try_get::<_, Option<String>>(1)?.map(ServiceId::new),
                maintenance: r.try_get(2)?,
            },
        );
    }
    Ok(t)
}

const ROW_COLUMNS: &str = "repo, device, version, writing, write_props, lock_owner, digest";

/// Every version row of a repository, in device order.
pub async fn load_rows(client: &Client, repo: &RepoId) -> Result<Vec<VersionRow>, DbError> {
    let rows = client
        .query(
            &format!("SELECT {ROW_COLUMNS} FROM versions WHERE repo = $1 ORDER BY device"),
            &[&repo.as_str()],
        )
        .await
        .map_err(query_error)?;
    rows.iter().map(version_row).collect()
}

#[async_trait]
impl DbSession for PgSession {
    async fn try_lock(&mut self, lock: &LockName) -> Result<bool, DbError> {
        // A broken session holds nothing any more, whatever it took before: the server
        // released its locks when the session ended.
        self.client()?;
        if self.held.contains(lock) {
            return Ok(true);
        }
        let key = lock_key::lock_key(lock);
        let asked = self
            .timed(
                self.client()?
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&key]),
            )
            .await;
        let row = match asked {
            Ok(row) => row,
            Err(e) => {
                // The lock may have been taken: never reuse this session.
                self.held.insert(lock.clone());
                return Err(e);
            }
        };
        let got: bool = row.try_get(0).map_err(query_error)?;
        if got {
            self.held.insert(lock.clone());
        }
        Ok(got)
    }

    async fn lock_wait(&mut self, lock: &LockName, patience: Duration) -> Result<bool, DbError> {
        self.client()?;
        if self.held.contains(lock) {
            return Ok(true);
        }
        let key = lock_key::lock_key(lock);
        // Whole milliseconds, at least one: a `lock_timeout` of 0 would mean no limit.
        let limit = format!("{}ms", patience.as_millis().clamp(1, i32::MAX as u128));
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| DbError::Connection("the session is closed".to_owned()))?;
        // PostgreSQL queues lock waiters and grants a released lock to the first of them
        // (a newcomer's `pg_try_advisory_lock` cannot jump the queue). The time limit is
        // local to the transaction; a session-level lock taken inside it outlives it.
        let wait = async {
            let tx = client.transaction().await?;
            tx.execute("SELECT set_config('lock_timeout', $1, true)", &[&limit])
                .await?;
            match tx.execute("SELECT pg_advisory_lock($1)", &[&key]).await {
                Ok(_) => {
                    tx.commit().await?;
                    Ok(true)
                }
                Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                    tx.rollback().await?;
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        };
        let got = in_transaction(
            TxGuard {
                query_timeout: self.query_timeout.saturating_add(patience),
                home: &mut self.home,
                broken: &self.broken,
                in_flight: &self.in_flight,
                silence: self.silence.as_ref(),
                watchdog: self.watchdog.as_ref(),
            },
            wait,
        )
        .await;
        match got {
            Ok(true) => {
                self.held.insert(lock.clone());
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) => {
                // The lock may have been granted: never reuse this session.
                self.held.insert(lock.clone());
                Err(e)
            }
        }
    }

    async fn unlock(&mut self, lock: &LockName) -> Result<(), DbError> {
        if !self.held.contains(lock) {
            return Ok(());
        }
        let key = lock_key::lock_key(lock);
        self.timed(
            self.client()?
                .query_one("SELECT pg_advisory_unlock($1)", &[&key]),
        )
        .await?;
        // Only a clear answer releases it here; otherwise the session stays marked as
        // holding it and is closed rather than reused.
        self.held.remove(lock);
        Ok(())
    }

    async fn topology(&mut self) -> Result<Topology, DbError> {
        self.timed(load_topology(self.client()?)).await
    }

    async fn rows(&mut self, repo: &RepoId) -> Result<Vec<VersionRow>, DbError> {
        let result =
            match tokio::time::timeout(self.query_timeout, load_rows(self.client()?, repo)).await {
                Ok(r) => r,
                Err(_) => Err(DbError::Connection("no answer in time".to_owned())),
            };
        if let Err(e) = &result {
            self.home = None;
            if let DbError::Connection(reason) = e {
                let _ = self.broken.set(reason.clone());
            }
        }
        result
    }

    async fn demotions(&mut self, repo: &RepoId) -> Result<BTreeMap<DeviceId, u64>, DbError> {
        let rows = self
            .timed(self.client()?.query(
                "SELECT device, count FROM demotions WHERE repo = $1",
                &[&repo.as_str()],
            ))
            .await?;
        rows.iter()
            .map(|row| {
                let device: String = row.try_get(0).map_err(query_error)?;
                let count: i64 = row.try_get(1).map_err(query_error)?;
                Ok((DeviceId::new(device), count.max(0) as u64))
            })
            .collect()
    }

    async fn restore_demote(
        &mut self,
        repo: &RepoId,
        device: &DeviceId,
        demotes: u64,
    ) -> Result<bool, DbError> {
        // The deletion's trigger counts one demote; the count then takes the device's.
        let demotes = demotes as i64;
        let row = self
            .timed(self.client()?.query_one(
                "WITH counted AS (
                     SELECT COALESCE((SELECT count FROM demotions
                                       WHERE repo = $1 AND device = $2), 0) AS n
                 ), gone AS (
                     DELETE FROM versions
                      WHERE repo = $1 AND device = $2 AND (SELECT n FROM counted) < $3
                     RETURNING device
                 )
                 SELECT count(*) FROM gone",
                &[&repo.as_str(), &device.as_str(), &demotes],
            ))
            .await?;
        let deleted: i64 = row.try_get(0).map_err(query_error)?;
        self.timed(self.client()?.execute(
            "UPDATE demotions SET count = $3 WHERE repo = $1 AND device = $2 AND count < $3",
            &[&repo.as_str(), &device.as_str(), &demotes],
        ))
        .await?;
        Ok(deleted > 0)
    }

    async fn out_of_sync(&mut self, device: &DeviceId) -> Result<Vec<RepoId>, DbError> {
        // Mirrors the port's definition: repositories actively bound to the device that
        // have some row, where the device has none or is below the largest version.
        let rows = self
            .timed(self.client()?.query(
                "SELECT DISTINCT r.name
                   FROM repositories r
                   JOIN bindings b ON b.service = r.service AND b.device = $1 AND NOT b.disabled
                   JOIN (SELECT repo, max(version) AS max FROM versions GROUP BY repo) m
                     ON m.repo = r.name
                   LEFT JOIN versions v ON v.repo = r.name AND v.device = $1
                  WHERE v.version IS NULL OR v.version < m.max
                  ORDER BY r.name",
                &[&device.as_str()],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                r.try_get::<_, String>(0)
                    .map(RepoId::new)
                    .map_err(query_error)
            })
            .collect()
    }

    async fn begin_write(
        &mut self,
        repo: &RepoId,
        device: &DeviceId,
        props: &WriteProps,
        owner: &LockOwner,
    ) -> Result<(), DbError> {
        let props = serde_json::to_value(props).map_err(|e| DbError::Query(e.to_string()))?;
        self.timed(self.client()?.execute(
            "INSERT INTO versions (repo, device, version, writing, write_props, lock_owner)
             VALUES ($1, $2, 0, true, $3, $4)
             ON CONFLICT (repo, device) DO UPDATE
                SET writing = true, write_props = $3, lock_owner = $4",
            &[&repo.as_str(), &device.as_str(), &props, &owner.as_str()],
        ))
        .await?;
        Ok(())
    }

    async fn finish_write(&mut self, f: &FinishWrite) -> Result<u64, DbError> {
        let digest = f.digest.map(|d| d.0 as i64);
        self.timed(self.client()?.execute(
            "UPDATE versions
                SET version = $5, digest = $6, writing = false, lock_owner = NULL
              WHERE repo = $1 AND device = $2 AND version = $3 AND writing
                AND lock_owner = $4",
            &[
                &f.repo.as_str(),
                &f.device.as_str(),
                &to_i64(f.old_version),
                &f.owner.as_str(),
                &to_i64(f.new_version),
                &digest,
            ],
        ))
        .await
    }

    async fn set_version(
        &mut self,
        repo: &RepoId,
        device: &DeviceId,
        version: Version,
        digest: Option<Digest>,
        expected: Option<&[(DeviceId, Version)]>,
    ) -> Result<bool, DbError> {
        let digest = digest.map(|d| d.0 as i64);
        let upsert = "INSERT INTO versions (repo, device, version, digest) VALUES ($1, $2, $3, $4)
             ON CONFLICT (repo, device) DO UPDATE SET version = $3, digest = $4";
        let Some(expected) = expected else {
            self.timed(self.client()?.execute(
                upsert,
                &[&repo.as_str(), &device.as_str(), &to_i64(version), &digest],
            ))
            .await?;
            return Ok(true);
        };
        let params: [&(dyn ToSql + Sync); 4] =
            [&repo.as_str(), &device.as_str(), &to_i64(version), &digest];
        Ok(self.if_rows_are(repo, expected, upsert, &params).await? > 0)
    }

    async fn generation(&mut self) -> Result<Generation, DbError> {
        // The counter `db promote` raises, and the timeline, which any promotion changes
        // (also one made by hand with `pg_ctl promote`).
        let row = self
            .timed(self.client()?.query_one(
                "SELECT (SELECT promotions FROM cluster_generation WHERE id = 1),
                        CASE WHEN pg_is_in_recovery() THEN NULL
                             ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END",
                &[],
            ))
            .await?;
        let promotions: Option<i64> = row.try_get(0).map_err(query_error)?;
        let timeline: Option<String> = row.try_get(1).map_err(query_error)?;
        let timeline = timeline
            .and_then(|t| u64::from_str_radix(&t, 16).ok())
            .unwrap_or(1);
        let promotions = promotions.unwrap_or(0).max(0) as u64;
        Ok(Generation {
            promotions: promotions + timeline.saturating_sub(1),
            lineage: format!("timeline {timeline}, {promotions} recorded promotion(s)"),
        })
    }

    async fn insert_initial(
        &mut self,
        repo: &RepoId,
        device: &DeviceId,
        digest: Option<Digest>,
    ) -> Result<bool, DbError> {
        let digest = digest.map(|d| d.0 as i64);
        // Two devices inserting the first row at once must not both succeed: the insert
        // runs only while the repository has no row, under the rows' transaction lock.
        let inserted = self
            .if_rows_are(
                repo,
                &[],
                "INSERT INTO versions (repo, device, version, digest) VALUES ($1, $2, 0, $3)",
                &[&repo.as_str(), &device.as_str(), &digest],
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn record_push(&mut self, event: &NewPushEvent) -> Result<u64, DbError> {
        let updates =
            serde_json::to_value(&event.updates).map_err(|e| DbError::Query(e.to_string()))?;
        let row = self
            .timed(self.client()?.query_one(
                // The id is drawn above every version the repository's rows hold: after a
                // promotion the sequence may be behind versions devices already carry, and
                // reusing one would give two states the same version. Drawing enough values
                // (never setting the sequence back) keeps concurrent pushes unique.
                "WITH floor AS (
                     SELECT COALESCE(max(version), 0) AS v FROM versions WHERE repo = $1
                 ), drawn AS (
                     SELECT nextval('push_events_id_seq') AS id
                     FROM generate_series(1, GREATEST(1,
                         (SELECT v FROM floor) + 1 - (SELECT CASE WHEN is_called
                             THEN last_value ELSE last_value - 1 END FROM push_events_id_seq)))
                 )
                 INSERT INTO push_events (id, repo, device, pusher, started_ms, updates, accepted, kind)
                 SELECT max(id), $1, $2, $3, $4, $5, $6, $7 FROM drawn
                 RETURNING id",
                &[
                    &event.repo.as_str(),
                    &event.device.as_str(),
                    &event.user,
                    &to_i64(event.started_ms),
                    &updates,
                    &event.accepted,
                    &kind_name(event.kind),
                ],
            ))
            .await?;
        let id: i64 = row.try_get(0).map_err(query_error)?;
        Ok(id as u64)
    }

    async fn newest_push_id(&mut self, repo: &RepoId) -> Result<Option<u64>, DbError> {
        let row = self
            .timed(self.client()?.query_one(
                "SELECT max(id) FROM push_events WHERE repo = $1",
                &[&repo.as_str()],
            ))
            .await?;
        let id: Option<i64> = row.try_get(0).map_err(query_error)?;
        Ok(id.map(|i| i as u64))
    }

    async fn record_sync(&mut self, e: &NewSyncEvent) -> Result<(), DbError> {
        self.timed(self.client()?.execute(
            "INSERT INTO sync_events
                (repo, device, from_device, version_before, version_after, waited_ms, result)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &e.repo.as_str(),
                &e.device.as_str(),
                &e.from_device.as_str(),
                &e.version_before.map(to_i64),
                &e.version_after.map(to_i64),
                &to_i64(e.waited_ms),
                &result_name(e.result),
            ],
        ))
        .await?;
        Ok(())
    }

    async fn ping(&mut self) -> Result<(), DbError> {
        self.timed(self.client()?.query_one("SELECT 1", &[]))
            .await?;
        Ok(())
    }

    async fn replication(&mut self) -> Result<ReplicationState, DbError> {
        // A standby that has replayed all it received is as current as its last contact
        // with the primary; only then is its delay zero rather than the age of the last
        // replayed transaction (an idle primary would otherwise look like lag).
        let row = self
            .timed(self.client()?.query_one(
                "SELECT pg_is_in_recovery(),
                        EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming'),
                        coalesce(pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(), false),
                        extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8",
                &[],
            ))
            .await?;
        let standby: bool = row.try_get(0).map_err(query_error)?;
        if !standby {
            return Ok(ReplicationState {
                role: DbRole::Primary,
                streaming: false,
                delay: None,
                caught_up: true,
            });
        }
        let streaming: bool = row.try_get(1).map_err(query_error)?;
        let caught_up: bool = row.try_get(2).map_err(query_error)?;
        let age: Option<f64> = row.try_get(3).map_err(query_error)?;
        let delay = if caught_up {
            Some(Duration::ZERO)
        } else {
            age.and_then(|a| Duration::try_from_secs_f64(a.max(0.0)).ok())
        };
        Ok(ReplicationState {
            role: DbRole::Replica,
            streaming,
            delay,
            caught_up,
        })
    }
}
