//! The node's configuration: one TOML file per daemon. Unknown keys are refused, and a bad
//! value is reported with the name of its field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use stormcell_model::config::{Profile, ProtocolConfig, Timing};
use stormcell_model::failover::{
    DbClusterConfig, DbHostConfig, DbRole, FailoverTiming, StaleReads,
};
use stormcell_model::ports::WritePoint;
use thiserror::Error;

/// Loading the configuration failed.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema; the message names the field.
    #[error("invalid configuration in {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the field's name.
        message: String,
    },
}

/// A node's configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This device's name, as registered with `stormcell device add`.
    pub device: String,
    /// Where the working copies and local versions live.
    pub data_dir: PathBuf,
    /// The peer service's listening address (`host:port`); registered as the device's
    /// address.
    pub listen_peer: String,
    /// The Git smart HTTP listening address (`host:port`).
    pub listen_http: String,
    /// The base URL peers use to fetch objects from this device's Git endpoint.
    pub http_url: String,
    /// This device's credential, presented to its peers.
    pub credential: String,
    /// `stormcell` (default) or `phabricator`.
    #[serde(default)]
    pub profile: Profile,
    /// The cluster database.
    pub database: DatabaseConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Protocol timings that differ from the defaults.
    #[serde(default)]
    pub timing: TimingConfig,
    /// Users of the Git endpoint.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// A failpoint armed for testing: the write path stops at this point.
    #[serde(default)]
    pub failpoint: Option<FailpointConfig>,
    /// Where the `git` binary is (default: found on `PATH`).
    #[serde(default = "default_git")]
    pub git: PathBuf,
    /// Intra-cluster TLS: with this section, peer connections run over mutually verified
    /// TLS; without it, over plain TCP.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsConfig>,
    /// The Git endpoint's limits.
    #[serde(default)]
    pub http: HttpConfig,
}

/// The Git endpoint's limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The largest request body taken, in MiB, once gzip-decoded (default
    /// [`crate::http::body::DEFAULT_MAX_REQUEST_MB`]): a push larger than this is refused
    /// with 413 before anything changes.
    pub max_request_mb: Option<u64>,
}

impl HttpConfig {
    /// The largest request body taken, in bytes.
    pub fn max_request_bytes(&self) -> u64 {
        self.max_request_mb
            .unwrap_or(crate::http::body::DEFAULT_MAX_REQUEST_MB)
            .saturating_mul(1 << 20)
    }
}

fn default_git() -> PathBuf {
    PathBuf::from("git")
}

/// The cluster database hosts (PROTOCOL.md section 9.1) and the failover's numbers
/// (9.2, 9.3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Every host: `name`, `address` (a libpq-style connection string), `role`
    /// (`primary` or `replica`) and `enabled` (default true).
    pub hosts: Vec<DbHostConfig>,
    /// The operator put the cluster in read-only mode.
    #[serde(default)]
    pub read_only: bool,
    /// What a read that cannot be shown fresh does while read-only: `mark` or `refuse`.
    #[serde(default)]
    pub stale_reads: StaleReads,
    /// Seconds between health checks of a host.
    pub check_interval_s: Option<f64>,
    /// How many agreeing checks flip a host's health.
    pub health_window: Option<usize>,
    /// Connect retries to a healthy host.
    pub connect_retries: Option<u32>,
    /// Seconds to wait for a connection to a healthy host.
    pub connect_timeout_s: Option<f64>,
    /// Seconds to wait for a connection to an unhealthy host, and for health checks.
    pub unhealthy_connect_timeout_s: Option<f64>,
    /// Seconds a request-serving query may take.
    pub query_timeout_s: Option<f64>,
    /// Replication delay, in seconds, above which a replica is shown as slow.
    pub slow_replica_s: Option<f64>,
}

impl DatabaseConfig {
    /// The hosts as the model's failover sees them.
    pub fn cluster(&self) -> DbClusterConfig {
        DbClusterConfig {
            hosts: self.hosts.clone(),
            read_only: self.read_only,
            stale_reads: self.stale_reads,
        }
    }

    /// The enabled primary's connection string.
    pub fn primary_address(&self) -> Option<&str> {
        self.hosts
            .iter()
            .find(|h| h.enabled && h.role == DbRole::Primary)
            .map(|h| h.address.as_str())
    }

    /// The failover's numbers: PROTOCOL.md's defaults with this file's overrides.
    pub fn timing(&self) -> Result<FailoverTiming, String> {
        let mut t = FailoverTiming::default();
        let secs = |field: &str, v: Option<f64>, target: &mut Duration| {
            if let Some(v) = v {
                *target = Duration::try_from_secs_f64(v).map_err(|_| {
                    format!("field `database.{field}`: {v} is not a valid number of seconds")
                })?;
            }
            Ok::<(), String>(())
        };
        secs(
            "check_interval_s",
            self.check_interval_s,
            &mut t.check_interval,
        )?;
        secs(
            "connect_timeout_s",
            self.connect_timeout_s,
            &mut t.healthy_connect,
        )?;
        secs(
            "unhealthy_connect_timeout_s",
            self.unhealthy_connect_timeout_s,
            &mut t.unhealthy_connect,
        )?;
        secs(
            "query_timeout_s",
            self.query_timeout_s,
            &mut t.query_timeout,
        )?;
        secs("slow_replica_s", self.slow_replica_s, &mut t.slow_replica)?;
        if let Some(w) = self.health_window {
            if w == 0 {
                return Err("field `database.health_window`: must be at least 1".to_owned());
            }
            t.window = w;
        }
        if let Some(r) = self.connect_retries {
            t.healthy_retries = r;
        }
        Ok(t)
    }

    fn validate(&self) -> Result<(), String> {
        if self.hosts.is_empty() {
            return Err("field `database.hosts`: name at least one host".to_owned());
        }
        let primaries = self
            .hosts
            .iter()
            .filter(|h| h.enabled && h.role == DbRole::Primary)
            .count();
        if primaries > 1 {
            return Err("field `database.hosts`: at most one enabled primary".to_owned());
        }
        let mut names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err("field `database.hosts`: host names must be unique".to_owned());
        }
        for (i, h) in self.hosts.iter().enumerate() {
            if h.address.parse::<tokio_postgres::Config>().is_err() {
                return Err(format!(
                    "field `database.hosts[{i}].address`: not a connection string such as \
                     \"host=10.0.0.5 port=5432 user=stormcell dbname=stormcell\""
                ));
            }
        }
        self.timing().map(|_| ())
    }
}

/// Log format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter such as `info` or `stormcell_node=debug,info`.
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: default_level(),
        }
    }
}

fn default_level() -> String {
    "info".to_owned()
}

/// The levels a log filter may name.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

impl LogConfig {
    /// A level, or comma-separated `target=level` directives (with at most one bare
    /// level as the default). The filter parser itself takes any bare word as a target
    /// name, so `level = "verbose"` would silently log nothing of ours.
    fn validate(&self) -> Result<(), String> {
        let bad = |why: &str| {
            Err(format!(
                "field `log.level`: `{}` {why}; use one of {} or directives such as \
                 \"stormcell_node=debug,info\"",
                self.level,
                LEVELS.join(", ")
            ))
        };
        if self.level.trim().is_empty() {
            return bad("is empty");
        }
        let is_level = |l: &str| LEVELS.iter().any(|v| v.eq_ignore_ascii_case(l.trim()));
        for directive in self.level.split(',') {
            let level = match directive.rsplit_once('=') {
                Some((target, level)) if !target.trim().is_empty() => level,
                Some(_) => return bad("has a directive without a target"),
                None => directive,
            };
            if !is_level(level) {
                return bad(&format!("names no level in `{}`", directive.trim()));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            return bad("is not a valid filter");
        }
        Ok(())
    }
}

/// Protocol timings, in seconds; each absent one keeps PROTOCOL.md's default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingConfig {
    /// Budget for taking the read or write lock of a request.
    pub lock_budget_s: Option<f64>,
    /// Budget for the write lock of a thaw.
    pub thaw_lock_budget_s: Option<f64>,
    /// Time limit of one whole copy from a leader (its answer and the object transfer).
    pub copy_limit_s: Option<f64>,
    /// Time limit for a leader to answer a fetch request, within the copy limit.
    pub fetch_answer_s: Option<f64>,
    /// How long recording a write keeps retrying.
    pub release_window_s: Option<f64>,
    /// Pause between those retries.
    pub release_retry_s: Option<f64>,
    /// Time limit of other peer requests.
    pub peer_request_s: Option<f64>,
    /// Minimum gap between out-of-sync pulls of one repository.
    pub out_of_sync_pull_gap_s: Option<f64>,
    /// How often background replication scans.
    pub scan_interval_s: Option<f64>,
    /// Floor of the idle refresh interval.
    pub idle_floor_s: Option<f64>,
    /// Cap of the idle refresh interval.
    pub idle_cap_s: Option<f64>,
    /// Background pulls at once.
    pub max_pulls: Option<usize>,
}

/// A user of the Git endpoint: a token and the repositories it may read and write
/// (`"*"` means every repository; write implies read).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user's name, recorded as the pusher.
    pub name: String,
    /// The secret, sent as the HTTP basic password or as a bearer token.
    pub token: String,
    /// Repositories the user may read.
    #[serde(default)]
    pub read: Vec<String>,
    /// Repositories the user may write.
    #[serde(default)]
    pub write: Vec<String>,
}

impl UserConfig {
    fn allows(list: &[String], repo: &str) -> bool {
        list.iter().any(|r| r == "*" || r == repo)
    }

    /// Whether the user may read `repo`.
    pub fn can_read(&self, repo: &str) -> bool {
        Self::allows(&self.read, repo) || self.can_write(repo)
    }

    /// Whether the user may write `repo`.
    pub fn can_write(&self, repo: &str) -> bool {
        Self::allows(&self.write, repo)
    }
}

/// A failpoint: the write path stops for good when it reaches `point` (the process is
/// meant to be killed there); `marker` is created when it is reached. With `armed_by`
/// it holds only while that file exists, at the point the file names (or at `point`
/// when the file is empty), so a fault injector can arm it on a running node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailpointConfig {
    /// `after-writing-set`, `after-refs-written`, `after-version-bump` or `after-ack`.
    #[serde(default)]
    pub point: Option<WritePoint>,
    /// A file that arms the failpoint while it exists; its content may name the point.
    #[serde(default)]
    pub armed_by: Option<PathBuf>,
    /// A file created when the point is reached, so a test knows when to strike.
    #[serde(default)]
    pub marker: Option<PathBuf>,
}

impl NodeConfig {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses and validates configuration text; the error names the offending field.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: NodeConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.device.trim().is_empty() {
            return Err("field `device`: must not be empty".to_owned());
        }
        for (field, addr) in [
            ("listen_peer", &self.listen_peer),
            ("listen_http", &self.listen_http),
        ] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!(
                    "field `{field}`: `{addr}` is not an address of the form host:port (an IP address and a port)"
                ));
            }
        }
        if !(self.http_url.starts_with("http://") || self.http_url.starts_with("https://")) {
            return Err(format!(
                "field `http_url`: `{}` must start with http:// or https://",
                self.http_url
            ));
        }
        if self.credential.len() < 8 {
            return Err("field `credential`: must be at least 8 characters".to_owned());
        }
        for (i, user) in self.users.iter().enumerate() {
            if user.token.len() < 8 {
                return Err(format!(
                    "field `users[{i}].token` (user `{}`): must be at least 8 characters",
                    user.name
                ));
            }
        }
        if self.http.max_request_mb == Some(0) {
            return Err("field `http.max_request_mb`: must be at least 1".to_owned());
        }
        self.log.validate()?;
        self.timing.to_timing()?;
        self.database.validate()
    }

    /// The protocol configuration this node runs with.
    pub fn protocol(&self) -> Result<ProtocolConfig, String> {
        Ok(ProtocolConfig {
            profile: self.profile,
            timing: self.timing.to_timing()?,
            failover: self.database.timing()?,
        })
    }
}

impl TimingConfig {
    /// PROTOCOL.md's defaults with this configuration's overrides.
    pub fn to_timing(&self) -> Result<Timing, String> {
        let mut t = Timing::default();
        let set = |field: &str, value: Option<f64>, target: &mut Duration| {
            if let Some(v) = value {
                *target = Duration::try_from_secs_f64(v).map_err(|_| {
                    format!("field `timing.{field}`: {v} is not a valid number of seconds")
                })?;
            }
            Ok::<(), String>(())
        };
        set("lock_budget_s", self.lock_budget_s, &mut t.lock_budget)?;
        set(
            "thaw_lock_budget_s",
            self.thaw_lock_budget_s,
            &mut t.thaw_lock_budget,
        )?;
        set("copy_limit_s", self.copy_limit_s, &mut t.copy_limit)?;
        set("fetch_answer_s", self.fetch_answer_s, &mut t.fetch_answer)?;
        set(
            "release_window_s",
            self.release_window_s,
            &mut t.release_window,
        )?;
        set(
            "release_retry_s",
            self.release_retry_s,
            &mut t.release_retry,
        )?;
        set("peer_request_s", self.peer_request_s, &mut t.peer_request)?;
        set(
            "out_of_sync_pull_gap_s",
            self.out_of_sync_pull_gap_s,
            &mut t.out_of_sync_pull_gap,
        )?;
        set(
            "scan_interval_s",
            self.scan_interval_s,
            &mut t.scan_interval,
        )?;
        set("idle_floor_s", self.idle_floor_s, &mut t.idle_floor)?;
        set("idle_cap_s", self.idle_cap_s, &mut t.idle_cap)?;
        if let Some(n) = self.max_pulls {
            if n == 0 {
                return Err("field `timing.max_pulls`: must be at least 1".to_owned());
            }
            t.max_pulls = n;
        }
        if t.scan_interval.is_zero() {
            return Err("field `timing.scan_interval_s`: must be above zero".to_owned());
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
device = "repo001"
data_dir = "/tmp/x"
listen_peer = "127.0.0.1:7001"
listen_http = "127.0.0.1:8001"
http_url = "http://127.0.0.1:8001"
credential = "0123456789"
[[database.hosts]]
name = "db1"
address = "host=127.0.0.1 port=5432 user=postgres dbname=stormcell"
role = "primary"
[[users]]
name = "alice"
token = "alice-token"
write = ["R1"]
"#;

    #[test]
    fn a_good_file_parses_with_defaults() {
        let c = NodeConfig::parse(GOOD).expect("valid");
        assert_eq!(c.profile, Profile::Stormcell);
        assert!(c.users[0].can_read("R1") && c.users[0].can_write("R1"));
        assert!(!c.users[0].can_read("R2"));
        let p = c.protocol().expect("timing");
        assert_eq!(p.timing, Timing::default());
        assert!(c.tls.is_none(), "plain TCP unless configured");
        let tls = format!(
            "{GOOD}\n[tls]\ncert = \"/etc/n.pem\"\nkey = \"/etc/n.key\"\nca = \"/etc/ca.pem\"\n"
        );
        let c = NodeConfig::parse(&tls).expect("valid with [tls]");
        assert_eq!(c.tls.expect("tls").ca, PathBuf::from("/etc/ca.pem"));
    }

    #[test]
    fn bad_values_name_their_field() {
        let bad_addr = GOOD.replace("127.0.0.1:7001", "nowhere");
        let e = NodeConfig::parse(&bad_addr).unwrap_err();
        assert!(e.contains("listen_peer"), "{e}");

        let unknown = format!("{GOOD}\n[log]\nfromat = \"json\"\n");
        let e = NodeConfig::parse(&unknown).unwrap_err();
        assert!(e.contains("fromat"), "{e}");

        let bad_profile = GOOD.replace(
            "device = \"repo001\"",
            "device = \"repo001\"\nprofile = \"raft\"",
        );
        let e = NodeConfig::parse(&bad_profile).unwrap_err();
        assert!(e.contains("profile"), "{e}");

        let bad_timing = format!("{GOOD}\n[timing]\nlock_budget_s = -1.0\n");
        let e = NodeConfig::parse(&bad_timing).unwrap_err();
        assert!(e.contains("timing.lock_budget_s"), "{e}");

        let bad_point = format!("{GOOD}\n[failpoint]\npoint = \"somewhere\"\n");
        let e = NodeConfig::parse(&bad_point).unwrap_err();
        assert!(e.contains("point"), "{e}");

        let bad_role = GOOD.replace("role = \"primary\"", "role = \"leader\"");
        let e = NodeConfig::parse(&bad_role).unwrap_err();
        assert!(e.contains("role"), "{e}");

        let bad_address = GOOD.replace("host=127.0.0.1 port=5432", "port=notaport");
        let e = NodeConfig::parse(&bad_address).unwrap_err();
        assert!(e.contains("database.hosts[0].address"), "{e}");

        let tls_typo =
            format!("{GOOD}\n[tls]\ncert = \"a\"\nkey = \"b\"\ncert_authority = \"c\"\n");
        let e = NodeConfig::parse(&tls_typo).unwrap_err();
        assert!(e.contains("cert_authority"), "{e}");
    }

    #[test]
    fn the_request_limit_is_in_mib_and_at_least_one() {
        let c = NodeConfig::parse(GOOD).expect("valid");
        assert_eq!(
            c.http.max_request_bytes(),
            crate::http::body::DEFAULT_MAX_REQUEST_MB << 20
        );
        let eight =
            NodeConfig::parse(&format!("{GOOD}\n[http]\nmax_request_mb = 8\n")).expect("valid");
        assert_eq!(eight.http.max_request_bytes(), 8 << 20);
        let e = NodeConfig::parse(&format!("{GOOD}\n[http]\nmax_request_mb = 0\n")).unwrap_err();
        assert!(e.contains("http.max_request_mb"), "{e}");
    }

    #[test]
    fn the_log_level_must_name_levels() {
        let with_level = |level: &str| format!("{GOOD}\n[log]\nlevel = \"{level}\"\n");
        for good in [
            "info",
            "WARN",
            "stormcell_node=debug,info",
            "off",
            "a::b=trace",
        ] {
            NodeConfig::parse(&with_level(good)).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        // `verbose` and `inof` parse as target names and would log nothing of ours.
        for bad in [
            "verbose",
            "inof",
            "stormcell_node=loud",
            "",
            "=info",
            "info,",
        ] {
            let e = NodeConfig::parse(&with_level(bad)).unwrap_err();
            assert!(e.contains("field `log.level`"), "{bad}: {e}");
        }
    }
}
