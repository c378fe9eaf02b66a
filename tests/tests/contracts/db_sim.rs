//! The simulated database (`SimDb` over turmoil) as a [`DbEnv`]: hosts `db` and, when
//! asked, its replica `db-r1`, served by the simulator's SQL host; the check runs as the
//! turmoil client `test`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stormcell_harness::db::{
    serve, DbClientConfig, DbHostState, SimDb, SimDbCluster, Tables, DB_PORT,
};
use stormcell_model::admin::AdminDb;
use stormcell_model::failover::{DbClusterConfig, DbHostConfig, DbRole};
use stormcell_model::ids::ServiceId;
use stormcell_model::ports::ClusterDb;
use stormcell_model::rows::{Service, Topology};

use crate::db::DbEnv;
use crate::Checked;

const CLIENT: &str = "test";
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// The simulated hosts and the client's view of them.
pub(crate) struct SimEnv {
    db: SimDb,
    cluster: SimDbCluster,
    /// Hosts whose software the step loop is to restart (only the loop can).
    bounces: Arc<Mutex<Vec<String>>>,
}

fn host(name: &str, role: DbRole) -> DbHostConfig {
    DbHostConfig {
        name: name.to_owned(),
        address: format!("{name}:{DB_PORT}"),
        role,
        enabled: true,
    }
}

impl DbEnv for SimEnv {
    fn db(&self) -> &dyn ClusterDb {
        &self.db
    }

    fn admin(&self) -> &dyn AdminDb {
        &self.db
    }

    fn primary(&self) -> DbHostConfig {
        host("db", DbRole::Primary)
    }

    fn replica(&self) -> Option<DbHostConfig> {
        (!self.cluster.replicas.is_empty()).then(|| host("db-r1", DbRole::Replica))
    }

    fn query_timeout(&self) -> Duration {
        QUERY_TIMEOUT
    }

    async fn hang(&self, host: &DbHostConfig) {
        turmoil::hold(CLIENT, host.name.as_str());
        turmoil::hold(host.name.as_str(), CLIENT);
    }

    async fn resume(&self, host: &DbHostConfig) {
        turmoil::release(CLIENT, host.name.as_str());
        turmoil::release(host.name.as_str(), CLIENT);
    }

    async fn restart(&self, host: &DbHostConfig) {
        self.bounces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(host.name.clone());
        // The step loop bounces the host before the next tick.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    async fn promote(&self, host: &DbHostConfig) {
        let now_ms = turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64);
        self.cluster
            .promote(&host.name, now_ms)
            .expect("the replica exists");
    }
}

/// Runs `check` against the simulated database, with a replica when `replica` is set.
pub(crate) fn run<F, Fut>(replica: bool, check: F)
where
    F: FnOnce(SimEnv) -> Fut + 'static,
    Fut: Future<Output = Checked> + 'static,
{
    let mut topology = Topology::default();
    let s1 = ServiceId::new("S1");
    topology.services.insert(
        s1.clone(),
        Service {
            id: s1,
            closed: false,
        },
    );
    let tables = Tables::new(topology);
    let mut hosts = BTreeMap::new();
    let mut config = DbClusterConfig::single("db", &format!("db:{DB_PORT}"));
    hosts.insert("db".to_owned(), DbHostState::shared(tables.clone()));
    let mut replicas = Vec::new();
    if replica {
        hosts.insert(
            "db-r1".to_owned(),
            DbHostState::replica_of(tables, &format!("db:{DB_PORT}"), 0),
        );
        config.hosts.push(host("db-r1", DbRole::Replica));
        replicas.push("db-r1".to_owned());
    }
    let mut sim = turmoil::Builder::new()
        .tick_duration(Duration::from_millis(10))
        .simulation_duration(Duration::from_secs(600))
        .build();
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
    let bounces = Arc::new(Mutex::new(Vec::new()));
    let env = SimEnv {
        db: SimDb::with_config(
            format!("db:{DB_PORT}"),
            DbClientConfig {
                connect_timeout: Duration::from_secs(1),
                query_timeout: QUERY_TIMEOUT,
                ..DbClientConfig::default()
            },
        ),
        cluster: SimDbCluster {
            hosts,
            replicas,
            config: Arc::new(Mutex::new(config)),
        },
        bounces: bounces.clone(),
    };
    sim.client(CLIENT, check(env));
    loop {
        let done = sim.step().expect("the contract check passes");
        let pending: Vec<String> =
            std::mem::take(&mut *bounces.lock().unwrap_or_else(|e| e.into_inner()));
        for name in pending {
            sim.bounce(name);
        }
        if done {
            break;
        }
    }
}
