//! PostgreSQL as a [`DbEnv`]: a primary (`db1`) and, when asked, a streaming replica
//! (`db2`) started from the system's binaries for one check, reached through the daemon's
//! adapters (`PgConnector`, `PgAdminDb`).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use stormcell_model::admin::AdminDb;
use stormcell_model::failover::{DbHostConfig, DbRole};
use stormcell_model::ports::ClusterDb;
use stormcell_node::db::admin_session::PgAdminDb;
use stormcell_node::db::{admin, promote, schema, PgClusterDb, PgConnector};

use crate::db::DbEnv;
use crate::postgres::{find_bin_dir, Postgres};
use crate::Checked;

const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// The servers of one check.
pub(crate) struct RealEnv {
    primary: RefCell<Postgres>,
    replica: Option<RefCell<Postgres>>,
    connector: PgConnector,
    admin: PgAdminDb,
    /// Some server was stopped with SIGSTOP and not continued yet.
    stopped: Cell<bool>,
    _dir: tempfile::TempDir,
}

impl RealEnv {
    fn server(&self, host: &DbHostConfig) -> &RefCell<Postgres> {
        match (&self.replica, host.name.as_str()) {
            (Some(r), "db2") => r,
            _ => &self.primary,
        }
    }

    fn host(&self, name: &str, pg: &Postgres, role: DbRole) -> DbHostConfig {
        DbHostConfig {
            name: name.to_owned(),
            address: pg.conninfo(),
            role,
            enabled: true,
        }
    }
}

impl Drop for RealEnv {
    fn drop(&mut self) {
        // A stopped server cannot be shut down; let it run to its end.
        if self.stopped.get() {
            self.primary.borrow().signal("CONT");
            if let Some(r) = &self.replica {
                r.borrow().signal("CONT");
            }
        }
    }
}

impl DbEnv for RealEnv {
    fn db(&self) -> &dyn ClusterDb {
        &self.connector
    }

    fn admin(&self) -> &dyn AdminDb {
        &self.admin
    }

    fn primary(&self) -> DbHostConfig {
        self.host("db1", &self.primary.borrow(), DbRole::Primary)
    }

    fn replica(&self) -> Option<DbHostConfig> {
        let r = self.replica.as_ref()?;
        Some(self.host("db2", &r.borrow(), DbRole::Replica))
    }

    fn query_timeout(&self) -> Duration {
        QUERY_TIMEOUT
    }

    async fn hang(&self, host: &DbHostConfig) {
        self.stopped.set(true);
        self.server(host).borrow().signal("STOP");
    }

    async fn resume(&self, host: &DbHostConfig) {
        self.server(host).borrow().signal("CONT");
    }

    async fn restart(&self, host: &DbHostConfig) {
        let mut pg = self.server(host).borrow_mut();
        pg.stop();
        pg.start();
    }

    async fn promote(&self, host: &DbHostConfig) {
        let db = PgClusterDb::new(
            &host.address,
            "contract-admin",
            Duration::from_secs(5),
            Duration::from_secs(60),
        )
        .expect("a valid connection string");
        promote::promote(&db, 60)
            .await
            .expect("the replica is promoted");
    }
}

/// The PostgreSQL server binaries, or `None` after saying on standard error that the
/// check `name` is skipped and why.
fn pg_bin(name: &str) -> Option<PathBuf> {
    let found = find_bin_dir();
    if found.is_none() {
        eprintln!(
            "SKIPPED contracts::{name} on PostgreSQL: the server binaries (initdb, pg_ctl) \
             are not in /usr/lib/postgresql/*/bin, STORMCELL_PG_BIN or pg_config; \
             `bash tests/run-all.sh` as root installs them"
        );
    }
    found
}

async fn start(bin: &Path, replica: bool) -> RealEnv {
    let dir = tempfile::tempdir().expect("tempdir");
    let primary = Postgres::start_primary(bin, &dir.path().join("primary"));
    let db = PgClusterDb::new(
        &primary.conninfo(),
        "contract-setup",
        Duration::from_secs(5),
        Duration::from_secs(60),
    )
    .expect("a valid connection string");
    let mut client = db.client().await.expect("the new server answers");
    schema::migrate(&mut client)
        .await
        .expect("the schema applies");
    admin::create_service(&client, "S1")
        .await
        .expect("service S1 is created");
    drop(client);
    let replica = replica.then(|| {
        RefCell::new(Postgres::start_replica(
            bin,
            &dir.path().join("replica"),
            &primary,
        ))
    });
    let admin_db = PgClusterDb::new(
        &primary.conninfo(),
        "contract-admin",
        Duration::from_secs(2),
        QUERY_TIMEOUT,
    )
    .expect("a valid connection string");
    RealEnv {
        primary: RefCell::new(primary),
        replica,
        connector: PgConnector::new("contract", QUERY_TIMEOUT),
        admin: PgAdminDb::new(admin_db),
        stopped: Cell::new(false),
        _dir: dir,
    }
}

/// Runs `check` against PostgreSQL, with a replica when `replica` is set; skips (and says
/// so) without the server binaries.
pub(crate) fn run<F, Fut>(name: &str, replica: bool, check: F)
where
    F: FnOnce(RealEnv) -> Fut,
    Fut: Future<Output = Checked>,
{
    let Some(bin) = pg_bin(name) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let env = start(&bin, replica).await;
        if let Err(e) = check(env).await {
            panic!("contract {name} failed on PostgreSQL: {e}");
        }
    });
}
