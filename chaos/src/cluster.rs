//! The real cluster of a run: PostgreSQL primary and replicas, the devices registered
//! and started, every peer and database link routed through the fault proxy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::cleanup::Registry;
use crate::error::{io, Result};
use crate::node::Node;
use crate::ports::Ports;
use crate::postgres::{run, Postgres};
use crate::proxy::{Caller, Proxy};
use crate::workload::Target;

/// The service every device is bound to.
pub const SERVICE: &str = "S1";

/// What to build.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Where everything lives.
    pub dir: PathBuf,
    /// The `stormcell` binary.
    pub bin: PathBuf,
    /// The PostgreSQL server binaries.
    pub pg_bin: PathBuf,
    /// Device names.
    pub devices: Vec<String>,
    /// Repository names.
    pub repos: Vec<String>,
    /// The primary's host name and the replicas'.
    pub primary: String,
    /// Replica host names.
    pub replicas: Vec<String>,
    /// A planted bug the nodes run with (a daemon built with the `plant` feature).
    pub plant: Option<String>,
    /// Whether the nodes get a failpoint that the runner can arm.
    pub failpoints: bool,
}

/// The running cluster.
#[derive(Debug)]
pub struct Cluster {
    /// The devices, in the order of the spec.
    pub nodes: Vec<Node>,
    /// The primary at the start.
    pub primary: Postgres,
    /// The replicas.
    pub replicas: Vec<Postgres>,
    /// The fault proxy.
    pub proxy: Proxy,
    /// The `stormcell` binary.
    pub bin: PathBuf,
    /// The host the devices use as primary now.
    pub current_primary: String,
    /// Where everything lives.
    pub dir: PathBuf,
}

impl Cluster {
    /// Starts the database, registers devices and repositories, routes the links and
    /// starts the nodes.
    pub fn start(spec: &ClusterSpec, registry: &Arc<Registry>) -> Result<Cluster> {
        let ports = Ports;
        let pg_dir = spec.dir.join("pg");
        let primary = Postgres::start_primary(
            &spec.primary,
            &spec.pg_bin,
            &pg_dir.join(&spec.primary),
            ports.free()?,
            Arc::clone(registry),
        )?;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            primary,
            replicas: Vec::new(),
            proxy: Proxy::new(),
            bin: spec.bin.clone(),
            current_primary: spec.primary.clone(),
            dir: spec.dir.clone(),
        };
        cluster.admin(&["db", "migrate"])?;
        cluster.admin(&["service", "create", SERVICE])?;
        for name in &spec.devices {
            let node = Node::new(
                name,
                spec.dir.join("nodes").join(name),
                (ports.free()?, ports.free()?, ports.free()?),
                &spec.bin,
                spec.plant.as_deref(),
                Arc::clone(registry),
            )?;
            cluster.admin(&[
                "device",
                "add",
                name,
                "--address",
                &format!("127.0.0.1:{}", node.peer_proxy_port),
                "--http-url",
                &format!("http://127.0.0.1:{}", node.http_port),
                "--credential",
                &format!("credential-of-{name}"),
                "--service",
                SERVICE,
            ])?;
            cluster.nodes.push(node);
        }
        for repo in &spec.repos {
            cluster.admin(&["repository", "create", repo, "--service", SERVICE])?;
        }
        for name in &spec.replicas {
            let replica =
                Postgres::start_replica(name, &pg_dir.join(name), ports.free()?, &cluster.primary)?;
            cluster.replicas.push(replica);
        }
        for node in &cluster.nodes {
            cluster.proxy.route(
                node.peer_proxy_port,
                node.peer_port,
                &node.name,
                Caller::ByProcess,
            )?;
        }
        for node in &cluster.nodes {
            let mut hosts = String::new();
            let servers = std::iter::once((&cluster.primary, "primary"))
                .chain(cluster.replicas.iter().map(|r| (r, "replica")));
            for (server, role) in servers {
                let port = ports.free()?;
                cluster.proxy.route(
                    port,
                    server.port,
                    &server.name,
                    Caller::Host(node.name.clone()),
                )?;
                hosts.push_str(&format!(
                    "[[database.hosts]]\nname = \"{}\"\naddress = \"{}\"\nrole = \"{role}\"\n",
                    server.name,
                    Postgres::conninfo_at(port)
                ));
            }
            node.write_config(&hosts, spec.failpoints)?;
        }
        for i in 0..cluster.nodes.len() {
            cluster.start_node(i)?;
        }
        if let Some(plant) = &spec.plant {
            // A daemon built without the `plant` feature ignores STORMCELL_PLANT: the run
            // would test the fixed code while claiming to test the plant.
            for node in &cluster.nodes {
                let log = std::fs::read_to_string(node.log_path()).unwrap_or_default();
                if !log.contains("a planted bug is switched on") {
                    return Err(crate::error::ChaosError::Setup(format!(
                        "node {} did not switch on the plant {plant}: build the daemon with \
                         `cargo build -p stormcell-node --features plant` (see {})",
                        node.name,
                        node.log_path().display()
                    )));
                }
            }
        }
        Ok(cluster)
    }

    /// Starts node `i` and tells the proxy its pid.
    pub fn start_node(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        let pid = node.start()?;
        self.proxy.set_device_pid(&node.name, pid);
        Ok(())
    }

    /// The database server called `name`.
    pub fn server_mut(&mut self, name: &str) -> Option<&mut Postgres> {
        if self.primary.name == name {
            return Some(&mut self.primary);
        }
        self.replicas.iter_mut().find(|r| r.name == name)
    }

    /// Runs an admin command against the current primary; its standard output.
    pub fn admin(&self, args: &[&str]) -> Result<String> {
        let conninfo = match self
            .replicas
            .iter()
            .find(|r| r.name == self.current_primary)
        {
            Some(r) => r.conninfo(),
            None => self.primary.conninfo(),
        };
        self.admin_on(&conninfo, args)
    }

    /// Runs an admin command against the database `conninfo`.
    pub fn admin_on(&self, conninfo: &str, args: &[&str]) -> Result<String> {
        run(Command::new(&self.bin)
            .args(args)
            .env("STORMCELL_DATABASE", conninfo))
    }

    /// The devices as the clients see them.
    pub fn targets(&self) -> Vec<Target> {
        self.nodes
            .iter()
            .map(|n| Target {
                device: n.name.clone(),
                http_port: n.http_port,
            })
            .collect()
    }

    /// Stops every node and database server and the proxy, then copies every log into
    /// `logs/` of the run's directory (PostgreSQL's data directories belong to its user).
    pub fn stop(&mut self) -> Result<()> {
        for node in &mut self.nodes {
            node.kill9();
        }
        self.primary.stop();
        for r in &mut self.replicas {
            r.stop();
        }
        self.proxy.stop();
        let logs = self.dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(io(&logs))?;
        let servers = std::iter::once(&self.primary).chain(&self.replicas);
        let mut copies: Vec<(PathBuf, PathBuf)> = servers
            .map(|s| (s.log_path(), logs.join(format!("postgres-{}.log", s.name))))
            .collect();
        copies.extend(
            self.nodes
                .iter()
                .map(|n| (n.log_path(), logs.join(format!("{}.log", n.name)))),
        );
        for (from, to) in copies {
            copy_if_there(&from, &to)?;
        }
        Ok(())
    }
}

fn copy_if_there(from: &Path, to: &Path) -> Result<()> {
    if from.exists() {
        std::fs::copy(from, to).map_err(io(from))?;
    }
    Ok(())
}
