//! One `stormcell node` process per device: its directory (configuration, `data/`, log),
//! its ports, and `kill -9` and restart. Peers and the database are reached through the
//! fault proxy: the configuration names the proxy's ports, never the real ones.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cleanup::Registry;
use crate::error::{io, ChaosError, Result};

/// How long a started node may take to listen on its ports.
const START_LIMIT: Duration = Duration::from_secs(60);

/// The user every workload client speaks as, and its token.
pub const USER: &str = "alice";
/// The user's token.
pub const TOKEN: &str = "alice-token-1";

/// One device's process and files.
#[derive(Debug)]
pub struct Node {
    /// Its name (`repo001`, ...).
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Its Git endpoint's port (clients reach it directly).
    pub http_port: u16,
    /// The port it listens on for peers.
    pub peer_port: u16,
    /// The proxy port peers dial for it (its registered address).
    pub peer_proxy_port: u16,
    bin: PathBuf,
    plant: Option<String>,
    child: Option<Child>,
    registry: Arc<Registry>,
}

impl Node {
    /// A device named `name` in `dir` (created), not started.
    pub fn new(
        name: &str,
        dir: PathBuf,
        ports: (u16, u16, u16),
        bin: &Path,
        plant: Option<&str>,
        registry: Arc<Registry>,
    ) -> Result<Node> {
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(Node {
            name: name.to_owned(),
            dir,
            http_port: ports.0,
            peer_port: ports.1,
            peer_proxy_port: ports.2,
            bin: bin.to_owned(),
            plant: plant.map(str::to_owned),
            child: None,
            registry,
        })
    }

    /// The configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("node.toml")
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The log file (standard error of every start, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// The file whose presence (and content, a write point's name) arms this node's
    /// failpoint.
    pub fn arm_path(&self) -> PathBuf {
        self.dir.join("failpoint.arm")
    }

    /// The file the node writes when a write reaches its armed failpoint.
    pub fn marker_path(&self) -> PathBuf {
        self.dir.join("failpoint.hit")
    }

    /// The repository's URL for the workload's user.
    pub fn url(&self, repo: &str) -> String {
        format!(
            "http://{USER}:{TOKEN}@127.0.0.1:{}/{repo}.git",
            self.http_port
        )
    }

    /// Writes the configuration: `hosts` are its `[[database.hosts]]` entries; with
    /// `failpoint` the write path can be held at a point named in [`Node::arm_path`].
    pub fn write_config(&self, hosts: &str, failpoint: bool) -> Result<()> {
        let failpoint = if failpoint {
            format!(
                "\n[failpoint]\narmed_by = \"{}\"\nmarker = \"{}\"\n",
                self.arm_path().display(),
                self.marker_path().display()
            )
        } else {
            String::new()
        };
        let text = format!(
            r#"device = "{name}"
data_dir = "{data}"
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
name = "{USER}"
token = "{TOKEN}"
write = ["*"]
{failpoint}"#,
            name = self.name,
            data = self.data_dir().display(),
            peer = self.peer_port,
            http = self.http_port,
        );
        let path = self.config_path();
        std::fs::write(&path, text).map_err(io(path))
    }

    /// Starts the process on the configuration file as it is now and waits until it
    /// listens; returns its pid.
    pub fn start(&mut self) -> Result<u32> {
        let log_path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        let mut command = Command::new(&self.bin);
        if let Some(plant) = &self.plant {
            command.env("STORMCELL_PLANT", plant);
        }
        let child = command
            .args(["node", "--config"])
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| ChaosError::Spawn {
                program: self.bin.display().to_string(),
                source,
            })?;
        let pid = child.id();
        self.registry.add_pid(pid);
        self.child = Some(child);
        for port in [self.http_port, self.peer_port] {
            self.wait_for_port(port)?;
        }
        Ok(pid)
    }

    fn wait_for_port(&mut self, port: u16) -> Result<()> {
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| !matches!(c.try_wait(), Ok(None)));
            if exited || start.elapsed() > START_LIMIT {
                return Err(ChaosError::Setup(format!(
                    "node {} does not listen on port {port}; see {}",
                    self.name,
                    self.log_path().display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Whether the process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// `kill -9`: the process dies without a chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.registry.remove_pid(child.id());
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Every ref of the bare repository at `path` and its object, as `git for-each-ref`
/// lists them; nothing for a repository that is not there.
pub fn refs_at(path: &Path) -> std::collections::BTreeMap<String, String> {
    let Ok(out) = Command::new("git")
        .arg("-C")
        .arg(path)
        .args(["for-each-ref", "--format=%(refname) %(objectname)"])
        .output()
    else {
        return Default::default();
    };
    if !out.status.success() {
        return Default::default();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(r, o)| (r.to_owned(), o.to_owned()))
        .collect()
}
