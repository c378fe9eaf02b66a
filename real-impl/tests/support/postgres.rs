//! A throwaway PostgreSQL server for a test: initdb in a temporary directory, started on a
//! free loopback port as the `postgres` user when the tests run as root (the server
//! refuses to run as root), stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::free_port;

/// Where the PostgreSQL server binaries are, if anywhere.
pub fn find_bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("STORMCELL_PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").exists().then_some(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(best) = versions.pop() {
        return Some(best);
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    dir.join("initdb").exists().then_some(dir)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// One PostgreSQL server.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    /// The port it listens on.
    pub port: u16,
    as_postgres: bool,
    running: bool,
}

impl Postgres {
    /// A command for one of the server binaries, as the right user.
    fn server_cmd(&self, program: &str) -> Command {
        server_cmd(&self.bin, program, self.as_postgres)
    }

    /// Initialises and starts a primary under `dir`.
    pub fn start_primary(bin: &Path, dir: &Path) -> Postgres {
        let as_postgres = running_as_root();
        let data = prepare_dir(dir, as_postgres);
        let status = server_cmd(bin, "initdb", as_postgres)
            .args(["-D"])
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .stdout(Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb failed");
        // Streaming replicas may connect from loopback.
        let hba = data.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        text.push_str("\nhost replication all 127.0.0.1/32 trust\n");
        std::fs::write(&hba, text).expect("pg_hba.conf written");
        let mut pg = Postgres {
            bin: bin.to_owned(),
            data,
            port: free_port(),
            as_postgres,
            running: false,
        };
        pg.start();
        pg.psql("CREATE DATABASE stormcell");
        pg
    }

    /// Makes a streaming hot-standby replica of `primary` under `dir` and starts it.
    pub fn start_replica(bin: &Path, dir: &Path, primary: &Postgres) -> Postgres {
        let as_postgres = running_as_root();
        let data = prepare_dir(dir, as_postgres);
        let status = server_cmd(bin, "pg_basebackup", as_postgres)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-X", "stream", "-R", "--no-sync", "-c", "fast", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .expect("pg_basebackup runs");
        assert!(status.success(), "pg_basebackup failed");
        let mut pg = Postgres {
            bin: bin.to_owned(),
            data,
            port: free_port(),
            as_postgres,
            running: false,
        };
        pg.start();
        pg
    }

    /// Starts (or restarts) the server.
    pub fn start(&mut self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c wal_level=replica -c max_wal_senders=4 -c hot_standby=on",
            self.port,
            self.data.display()
        );
        let status = self
            .server_cmd("pg_ctl")
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&self.data)
            .args(["-o", &opts, "-l"])
            .arg(self.data.join("server.log"))
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(
            status.success(),
            "PostgreSQL did not start; see {}/server.log",
            self.data.display()
        );
        self.running = true;
    }

    /// Stops the server at once (like a crash of the host: sessions end without notice).
    pub fn stop(&mut self) {
        let _ = self
            .server_cmd("pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.running = false;
    }

    /// The server's processes: the postmaster (from `postmaster.pid`) and its children.
    pub fn pids(&self) -> Vec<u32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .expect("postmaster.pid of a running server");
        let main: u32 = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("postmaster.pid starts with the pid");
        let mut pids = vec![main];
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid ...`; comm may hold spaces, so parse after the ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(main) {
                if let Ok(pid) = entry.file_name().to_string_lossy().parse() {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// Sends `signal` (`STOP`, `CONT`) to every process of the server, by pid.
    pub fn signal(&self, signal: &str) {
        for pid in self.pids() {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .status();
        }
    }

    /// The connection string of the `stormcell` database.
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=stormcell",
            self.port
        )
    }

    /// Runs one SQL statement with psql.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", "postgres", "-At", "-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            self.stop();
        }
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

/// A data directory the server's user owns, under a directory it can reach.
fn prepare_dir(dir: &Path, as_postgres: bool) -> PathBuf {
    let data = dir.join("pgdata");
    std::fs::create_dir_all(&data).expect("data dir");
    if as_postgres {
        use std::os::unix::fs::PermissionsExt;
        // The temporary directory is private to root; the server must get through it.
        let mut p = dir.to_owned();
        loop {
            if let Ok(meta) = std::fs::metadata(&p) {
                let mut perm = meta.permissions();
                if perm.mode() & 0o001 == 0 && p.starts_with(std::env::temp_dir()) {
                    perm.set_mode(perm.mode() | 0o711);
                    let _ = std::fs::set_permissions(&p, perm);
                }
            }
            if !p.pop() {
                break;
            }
        }
        let status = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(&data)
            .status()
            .expect("chown runs");
        assert!(status.success(), "chown failed");
        let mut perm = std::fs::metadata(&data).expect("meta").permissions();
        perm.set_mode(0o700);
        std::fs::set_permissions(&data, perm).expect("chmod");
    }
    data
}
