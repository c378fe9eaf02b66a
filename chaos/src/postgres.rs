//! PostgreSQL servers from the system's binaries: a primary (initdb) and streaming
//! hot-standby replicas (`pg_basebackup -R`), run as the `postgres` user when the runner
//! is root (the server refuses to run as root). Strikes are `pg_ctl stop -m immediate`,
//! hangs SIGSTOP and SIGCONT to every process of the server.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::cleanup::{PgServer, Registry};
use crate::error::{io, ChaosError, Result};

/// Where the PostgreSQL server binaries are: `STORMCELL_PG_BIN`, the newest
/// `/usr/lib/postgresql/*/bin`, or `pg_config --bindir`.
pub fn find_bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("STORMCELL_PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").exists().then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, best)) = versions.pop() {
        return Some(best);
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    dir.join("initdb").exists().then_some(dir)
}

/// Why a run cannot start here, when it cannot: the message names what is missing.
pub fn missing_prerequisite() -> Option<String> {
    if find_bin_dir().is_none() {
        return Some(
            "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin, \
             STORMCELL_PG_BIN or pg_config"
                .to_owned(),
        );
    }
    if Command::new("git").arg("--version").output().is_err() {
        return Some("the git binary is not on PATH".to_owned());
    }
    None
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// One PostgreSQL server of the run.
#[derive(Debug)]
pub struct Postgres {
    /// Its host name in the nodes' configuration and the history (`db`, `db-r1`, ...).
    pub name: String,
    server: PgServer,
    /// The port it listens on.
    pub port: u16,
    /// Whether it runs now.
    pub running: bool,
    registry: Arc<Registry>,
}

impl Postgres {
    /// Initialises and starts a primary in `dir/pgdata`, with database `stormcell`.
    pub fn start_primary(
        name: &str,
        bin: &Path,
        dir: &Path,
        port: u16,
        registry: Arc<Registry>,
    ) -> Result<Postgres> {
        let as_postgres = running_as_root();
        let data = prepare_dir(dir, as_postgres)?;
        run(server_cmd(bin, "initdb", as_postgres)
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"]))?;
        // Streaming replicas connect from loopback.
        let hba = data.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).map_err(io(&hba))?;
        text.push_str("\nhost replication all 127.0.0.1/32 trust\n");
        std::fs::write(&hba, text).map_err(io(&hba))?;
        let mut pg = Postgres {
            name: name.to_owned(),
            server: PgServer {
                bin: bin.to_owned(),
                data,
                as_postgres,
            },
            port,
            running: false,
            registry,
        };
        pg.start()?;
        pg.psql("CREATE DATABASE stormcell")?;
        Ok(pg)
    }

    /// Makes a streaming hot-standby replica of `primary` in `dir/pgdata` and starts it.
    pub fn start_replica(
        name: &str,
        dir: &Path,
        port: u16,
        primary: &Postgres,
    ) -> Result<Postgres> {
        let bin = &primary.server.bin;
        let as_postgres = primary.server.as_postgres;
        let data = prepare_dir(dir, as_postgres)?;
        run(server_cmd(bin, "pg_basebackup", as_postgres)
            .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
            .args([
                "-U",
                "postgres",
                "-X",
                "stream",
                "-R",
                "--no-sync",
                "-c",
                "fast",
            ])
            .arg("-D")
            .arg(&data))?;
        let mut pg = Postgres {
            name: name.to_owned(),
            server: PgServer {
                bin: bin.clone(),
                data,
                as_postgres,
            },
            port,
            running: false,
            registry: Arc::clone(&primary.registry),
        };
        pg.start()?;
        Ok(pg)
    }

    /// Starts (or restarts) the server; its log goes to `pgdata/server.log`.
    pub fn start(&mut self) -> Result<()> {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c wal_level=replica -c max_wal_senders=8 \
             -c hot_standby=on -c max_connections=200",
            self.port,
            self.server.data.display()
        );
        self.registry.add_server(self.server.clone());
        run(self
            .server_cmd("pg_ctl")
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&self.server.data)
            .args(["-o", &opts, "-l"])
            .arg(self.log_path()))?;
        self.running = true;
        Ok(())
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn stop(&mut self) {
        stop_server(&self.server);
        self.registry.remove_server(&self.server);
        self.running = false;
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.server.data.join("server.log")
    }

    /// Sends `signal` (`STOP`, `CONT`) to every process of the server.
    pub fn signal(&self, signal: &str) {
        signal_server(&self.server, signal);
    }

    /// The connection string of the `stormcell` database on this server at `port` (its
    /// own, or a proxy's in front of it).
    pub fn conninfo_at(port: u16) -> String {
        format!("host=127.0.0.1 port={port} user=postgres dbname=stormcell")
    }

    /// The connection string of the `stormcell` database, straight to the server.
    pub fn conninfo(&self) -> String {
        Self::conninfo_at(self.port)
    }

    fn server_cmd(&self, program: &str) -> Command {
        server_cmd(&self.server.bin, program, self.server.as_postgres)
    }

    /// Runs one SQL statement with psql on database `postgres`.
    pub fn psql(&self, sql: &str) -> Result<String> {
        run(Command::new(self.server.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-At", "-c", sql]))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            self.stop();
        }
    }
}

/// Wakes (in case it was hung) and stops `server` at once.
pub(crate) fn stop_server(server: &PgServer) {
    signal_server(server, "CONT");
    let _ = server_cmd(&server.bin, "pg_ctl", server.as_postgres)
        .args(["stop", "-m", "immediate", "-w", "-D"])
        .arg(&server.data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The server's processes: the postmaster (from `postmaster.pid`) and its children.
fn pids(server: &PgServer) -> Vec<u32> {
    let Ok(text) = std::fs::read_to_string(server.data.join("postmaster.pid")) else {
        return Vec::new();
    };
    let Some(main) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<u32>().ok())
    else {
        return Vec::new();
    };
    let mut pids = vec![main];
    pids.extend(crate::procfs::children(main));
    pids
}

fn signal_server(server: &PgServer, signal: &str) {
    for pid in pids(server) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .stderr(Stdio::null())
            .status();
    }
}

fn server_cmd(bin: &Path, program: &str, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

/// Runs `command` to completion; its standard output, or an error with what it printed.
pub(crate) fn run(command: &mut Command) -> Result<String> {
    let what = format!("{command:?}");
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ChaosError::Spawn {
            program: what.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(ChaosError::Command {
            what,
            detail: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A data directory the server's user owns, under a directory it can reach.
fn prepare_dir(dir: &Path, as_postgres: bool) -> Result<PathBuf> {
    let data = dir.join("pgdata");
    std::fs::create_dir_all(&data).map_err(io(&data))?;
    if as_postgres {
        use std::os::unix::fs::PermissionsExt;
        // Every directory above must be passable for the server's user.
        let mut p = dir.to_owned();
        loop {
            if let Ok(meta) = std::fs::metadata(&p) {
                let mut perm = meta.permissions();
                if perm.mode() & 0o001 == 0 {
                    perm.set_mode(perm.mode() | 0o711);
                    let _ = std::fs::set_permissions(&p, perm);
                }
            }
            if !p.pop() {
                break;
            }
        }
        run(Command::new("chown").args(["-R", "postgres:"]).arg(&data))?;
        let mut perm = std::fs::metadata(&data).map_err(io(&data))?.permissions();
        perm.set_mode(0o700);
        std::fs::set_permissions(&data, perm).map_err(io(&data))?;
    }
    Ok(data)
}
