//! What the end-to-end tests share: a PostgreSQL server, a cluster of `stormcell node`
//! processes on loopback, and a Git client that records every operation in the
//! simulator's history format so the simulator's checkers can judge the run.

#![allow(dead_code)]

pub mod certs;
pub mod client;
mod loopback;
pub mod postgres;

pub use loopback::free_port;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use postgres::Postgres;

/// The `stormcell` binary under test.
pub fn stormcell() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stormcell"))
}

/// Whether the parts an end-to-end test needs are here; prints why not when they are not.
pub fn prerequisites(test: &str) -> Option<PathBuf> {
    let Some(bin) = postgres::find_bin_dir() else {
        eprintln!(
            "SKIPPED {test}: PostgreSQL server binaries (initdb, pg_ctl) not found in \
             /usr/lib/postgresql/*/bin, STORMCELL_PG_BIN or pg_config; `bash tests/run-all.sh` \
             as root installs them"
        );
        return None;
    };
    if Command::new("git").arg("--version").output().is_err() {
        eprintln!("SKIPPED {test}: the git binary is not on PATH");
        return None;
    }
    Some(bin)
}

/// One device's process and files.
pub struct Node {
    /// Its name.
    pub name: String,
    /// Its directory (configuration, data, log).
    pub dir: PathBuf,
    /// Its Git endpoint.
    pub http_port: u16,
    /// Its peer port.
    pub peer_port: u16,
    /// The planted bug the process runs with (`STORMCELL_PLANT`; a daemon built with the
    /// `plant` feature only).
    pub plant: Option<String>,
    child: Option<Child>,
}

impl Node {
    /// A device named `name` living in `dir` (created), on free ports, not started.
    pub fn new(name: &str, dir: PathBuf) -> Node {
        std::fs::create_dir_all(&dir).expect("node dir");
        Node {
            name: name.to_owned(),
            dir,
            http_port: free_port(),
            peer_port: free_port(),
            plant: None,
            child: None,
        }
    }

    /// The process id while the node runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The repository's URL for `user`.
    pub fn url(&self, repo: &str) -> String {
        format!(
            "http://alice:alice-token-1@127.0.0.1:{}/{repo}.git",
            self.http_port
        )
    }

    /// The configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("node.toml")
    }

    /// Writes the configuration; `extra` is appended (a failpoint, say).
    fn write_config(&self, hosts: &str, extra: &str) {
        let text = format!(
            r#"device = "{name}"
data_dir = "{dir}/data"
listen_peer = "127.0.0.1:{peer}"
listen_http = "127.0.0.1:{http}"
http_url = "http://127.0.0.1:{http}"
credential = "credential-of-{name}"

[database]
check_interval_s = 1
{hosts}

[log]
level = "info,stormcell_node=debug"

[timing]
scan_interval_s = 1
peer_request_s = 5
release_window_s = 5
lock_budget_s = 20

[[users]]
name = "alice"
token = "alice-token-1"
write = ["*"]
{extra}
"#,
            name = self.name,
            dir = self.dir.display(),
            peer = self.peer_port,
            http = self.http_port,
        );
        std::fs::write(self.config_path(), text).expect("config written");
    }

    /// Starts the process and waits until its Git endpoint accepts connections.
    pub fn start(&mut self, hosts: &str, extra: &str) {
        self.write_config(hosts, extra);
        self.spawn();
    }

    /// `kill -9`, then starts again with the configuration as it is on disk now (which
    /// `db promote` may have rewritten).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Starts the process on the current configuration file and waits for its ports.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .expect("log file");
        let mut command = Command::new(stormcell());
        if let Some(bug) = &self.plant {
            command.env("STORMCELL_PLANT", bug);
        }
        let child = command
            .args(["node", "--config"])
            .arg(self.config_path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("node starts");
        self.child = Some(child);
        wait_for_port(self.http_port, &self.dir.join("node.log"));
        wait_for_port(self.peer_port, &self.dir.join("node.log"));
    }

    /// `kill -9`: the process dies without a chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The refs of the device's working copy, read off the disk.
    pub fn disk_refs(&self, repo: &str) -> std::collections::BTreeMap<String, String> {
        refs_at(&self.dir.join("data/repos").join(format!("{repo}.git")))
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Every ref of the repository at `path` and its object, as `git for-each-ref` lists them.
pub fn refs_at(path: &Path) -> std::collections::BTreeMap<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(path)
        .args(["for-each-ref", "--format=%(refname) %(objectname)"])
        .output()
        .expect("git runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(r, o)| (r.to_owned(), o.to_owned()))
        .collect()
}

/// Waits (with a generous bound, as a liveness guard only) until `port` accepts.
fn wait_for_port(port: u16, log: &Path) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "nothing listens on port {port}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A PostgreSQL server and three devices on one service, with repository `R1`.
pub struct Cluster {
    /// The nodes, `repo001` to `repo003`.
    pub nodes: Vec<Node>,
    /// The primary (`db1`).
    pub primary: Postgres,
    /// A streaming replica (`db2`), when asked for.
    pub replica: Option<Postgres>,
    /// Everything lives here.
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts the database, registers three devices, creates `R1` and starts the nodes.
    /// `extra(i)` is appended to node `i`'s configuration.
    pub fn start(pg_bin: &Path, extra: impl Fn(usize) -> String) -> Cluster {
        Self::start_with(pg_bin, false, extra)
    }

    /// Like [`Cluster::start`], with a streaming replica when `replica` is set.
    pub fn start_with(pg_bin: &Path, replica: bool, extra: impl Fn(usize) -> String) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let primary = Postgres::start_primary(pg_bin, &dir.path().join("primary"));
        let mut cluster = Cluster {
            nodes: Vec::new(),
            primary,
            replica: None,
            dir,
        };
        cluster.admin(&["db", "migrate"]);
        cluster.admin(&["service", "create", "S1"]);
        for i in 1..=3 {
            let name = format!("repo00{i}");
            let node = Node::new(&name, cluster.dir.path().join(&name));
            cluster.admin(&[
                "device",
                "add",
                &name,
                "--address",
                &format!("127.0.0.1:{}", node.peer_port),
                "--http-url",
                &format!("http://127.0.0.1:{}", node.http_port),
                "--credential",
                &format!("credential-of-{name}"),
            ]);
            cluster.admin(&["service", "bind", "S1", &name]);
            cluster.nodes.push(node);
        }
        cluster.admin(&["repository", "create", "R1", "--service", "S1"]);
        if replica {
            cluster.replica = Some(Postgres::start_replica(
                pg_bin,
                &cluster.dir.path().join("replica"),
                &cluster.primary,
            ));
        }
        let hosts = cluster.hosts();
        for (i, node) in cluster.nodes.iter_mut().enumerate() {
            node.start(&hosts, &extra(i));
        }
        cluster
    }

    /// The `[[database.hosts]]` entries of the nodes' configuration.
    pub fn hosts(&self) -> String {
        let mut out = format!(
            "[[database.hosts]]\nname = \"db1\"\naddress = \"{}\"\nrole = \"primary\"\n",
            self.primary.conninfo()
        );
        if let Some(r) = &self.replica {
            out.push_str(&format!(
                "[[database.hosts]]\nname = \"db2\"\naddress = \"{}\"\nrole = \"replica\"\n",
                r.conninfo()
            ));
        }
        out
    }

    /// Runs an admin command against the primary and returns its standard output.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(stormcell())
            .args(args)
            .env("STORMCELL_DATABASE", self.primary.conninfo())
            .output()
            .expect("stormcell runs");
        assert!(
            out.status.success(),
            "stormcell {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs an admin command against the database `conninfo`, speaking as node `as_node`
    /// (its `--config`) when given, and returns whether it succeeded and its output.
    pub fn admin_try(
        &self,
        conninfo: &str,
        as_node: Option<usize>,
        args: &[&str],
    ) -> (bool, String, String) {
        let mut c = Command::new(stormcell());
        c.args(args).env("STORMCELL_DATABASE", conninfo);
        if let Some(i) = as_node {
            c.arg("--config").arg(self.nodes[i].config_path());
        }
        let out = c.stdin(Stdio::null()).output().expect("stormcell runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Like [`Cluster::admin_try`] on the primary, failing the test if the command fails.
    pub fn admin_as(&self, as_node: usize, args: &[&str]) -> String {
        let (ok, out, err) = self.admin_try(&self.primary.conninfo(), Some(as_node), args);
        assert!(ok, "stormcell {args:?} failed: {err}");
        out
    }

    /// Node `i` (0-based).
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Where a test keeps its client repositories.
    pub fn client_dir(&self) -> PathBuf {
        self.dir.path().join("client")
    }
}
