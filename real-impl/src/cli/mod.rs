//! The command line: `stormcell node` and the admin commands.

mod admin;
mod context;
mod promote;
mod repository;
mod table;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use stormcell_node::config::{LogFormat, NodeConfig};

/// The stormcell node daemon and its admin commands.
#[derive(Debug, Parser)]
#[command(
    name = "stormcell",
    version,
    about = "Git repositories on several machines, every one readable and writable, kept consistent through a PostgreSQL cluster database.",
    long_about = None
)]
pub struct Cli {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a device: the Git HTTP endpoint, the peer service and background replication.
    Node {
        /// The node's configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// The cluster database: schema and health.
    #[command(subcommand)]
    Db(DbCommand),
    /// Devices: the hosts running `stormcell node`.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Services: groups of device bindings that host repositories.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Bindings of devices to services.
    #[command(subcommand)]
    Binding(BindingCommand),
    /// Repositories.
    #[command(subcommand)]
    Repository(repository::RepositoryCommand),
}

/// Where the cluster database is, for admin commands, and which device they speak as.
#[derive(Debug, Clone, Args)]
pub struct DbTarget {
    /// A libpq-style connection string for the primary (wins over the primary named in
    /// --config).
    #[arg(long, env = "STORMCELL_DATABASE")]
    database: Option<String>,
    /// A node's configuration file: its primary database, and its device name and
    /// credential for commands that reach devices (run them on that device's host).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Create or update the schema.
    ///
    /// Also says whether the connected role may run `pg_promote()`, which `db promote`
    /// needs on the replica it promotes. A standby takes no grant, so give it on the
    /// primary while it is up (`db grant`); the replicas receive it by replication.
    Migrate(DbTarget),
    /// Show each database host: reachable, mode, replication lag behind the primary (bytes
    /// and time), schema.
    Status(DbTarget),
    /// Let a database role run `pg_promote()`, as `db promote` needs.
    ///
    /// Runs `GRANT EXECUTE ON FUNCTION pg_catalog.pg_promote(boolean, integer) TO ROLE` on
    /// the primary: connect as a superuser. Do it while the primary is up, before a
    /// promotion is needed: a standby refuses every change.
    Grant {
        /// The role `db promote` connects as (the `user` of the replicas' connection
        /// strings).
        #[arg(long)]
        role: String,
        #[command(flatten)]
        db: DbTarget,
    },
    /// Promote a streaming replica to primary and re-point the devices at it.
    ///
    /// Runs `pg_promote()` on HOST (unless it already is a primary), then rewrites the
    /// `[database]` hosts of every --config file: HOST becomes the primary and the old
    /// primary a disabled replica. Running nodes re-read that section when their file
    /// changes (or on SIGHUP) and write to the new primary from then on. Stop the old
    /// primary first: two primaries would each take writes.
    Promote(promote::PromoteArgs),
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Register a device.
    Add {
        /// Its name, such as `repo001`.
        name: String,
        /// The peer address other devices connect to (`host:port`, its `listen_peer`; the
        /// host may be a name or an IP address).
        #[arg(long)]
        address: String,
        /// Its Git endpoint (its `http_url`).
        #[arg(long)]
        http_url: String,
        /// Its credential (the `credential` of its configuration, at least 8 characters).
        #[arg(long, env = "STORMCELL_DEVICE_CREDENTIAL")]
        credential: String,
        /// Also bind it to this service (PROTOCOL.md 7.5: it catches up by itself).
        #[arg(long)]
        service: Option<String>,
        /// With --service: bind with "Prevent Writes".
        #[arg(long, requires = "service")]
        read_only: bool,
        #[command(flatten)]
        db: DbTarget,
    },
    /// List devices and their bindings.
    List(DbTarget),
    /// Remove a device that serves nothing any more (PROTOCOL.md 7.5: contract it first).
    ///
    /// Refused while a binding of the device is not disabled, or while it alone holds the
    /// newest version of a repository. Its version rows, bindings and registration are
    /// deleted; peers refuse its credential from then on.
    Remove {
        /// The device.
        name: String,
        #[command(flatten)]
        db: DbTarget,
    },
    /// Rotate a device's credential: store the new one's hash.
    ///
    /// Peers take the new credential at once and refuse the old one within 30 seconds.
    /// Put the new credential in the device's configuration and restart it right after.
    Credential {
        /// The device.
        name: String,
        /// Its new credential (at least 8 characters).
        #[arg(long, env = "STORMCELL_DEVICE_CREDENTIAL")]
        credential: String,
        #[command(flatten)]
        db: DbTarget,
    },
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// Create a service.
    Create {
        /// Its name.
        name: String,
        #[command(flatten)]
        db: DbTarget,
    },
    /// Bind a device to a service (active and writable unless `--read-only`).
    Bind {
        /// The service.
        service: String,
        /// The device.
        device: String,
        /// Bind with "Prevent Writes".
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        db: DbTarget,
    },
    /// Stop allocating new repositories on a service (its repositories stay served).
    Close {
        /// The service.
        service: String,
        #[command(flatten)]
        db: DbTarget,
    },
    /// Allocate new repositories on a service again (PROTOCOL.md 7.5).
    Open {
        /// The service.
        service: String,
        #[command(flatten)]
        db: DbTarget,
    },
    /// Sync status of every repository of a service (PROTOCOL.md 8.1).
    Status {
        /// The service.
        service: String,
        #[command(flatten)]
        db: DbTarget,
    },
}

#[derive(Debug, Subcommand)]
enum BindingCommand {
    /// Change a binding's flags.
    Set {
        /// The service.
        service: String,
        /// The device.
        device: String,
        /// Allow (true) or prevent (false) writes.
        #[arg(long)]
        writable: Option<bool>,
        /// Disable (true) or enable (false) the binding.
        #[arg(long)]
        disabled: Option<bool>,
        #[command(flatten)]
        db: DbTarget,
    },
}

impl DbTarget {
    /// The node configuration of `--config`, if given.
    fn node_config(&self) -> anyhow::Result<Option<NodeConfig>> {
        Ok(match &self.config {
            Some(path) => Some(NodeConfig::load(path)?),
            None => None,
        })
    }

    /// The connection string to use.
    fn conninfo(&self) -> anyhow::Result<String> {
        if let Some(d) = &self.database {
            return Ok(d.clone());
        }
        if let Some(path) = &self.config {
            let config = NodeConfig::load(path)?;
            return config
                .database
                .primary_address()
                .map(str::to_owned)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--config: {} names no enabled primary database",
                        path.display()
                    )
                });
        }
        anyhow::bail!("say where the cluster database is: --database CONNINFO, STORMCELL_DATABASE, or --config FILE")
    }

    /// Every database host: those of the configuration file, or the one given; with
    /// whether it is the configured primary.
    fn hosts(&self) -> anyhow::Result<Vec<(String, String, bool)>> {
        match &self.config {
            Some(path) => Ok(NodeConfig::load(path)?
                .database
                .hosts
                .iter()
                .filter(|h| h.enabled)
                .map(|h| {
                    (
                        format!("{} ({})", h.name, h.role.name()),
                        h.address.clone(),
                        h.role == stormcell_model::failover::DbRole::Primary,
                    )
                })
                .collect()),
            None => Ok(vec![("primary".to_owned(), self.conninfo()?, true)]),
        }
    }
}

fn init_logs(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("log level `{level}` is not a valid filter"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.json;
    match cli.command {
        Command::Node { config: path } => {
            let config = NodeConfig::load(&path)?;
            init_logs(config.log.format, &config.log.level)?;
            stormcell_node::node::run(config, Some(path)).await?;
            Ok(())
        }
        other => {
            init_logs(LogFormat::Text, "warn")?;
            admin::run(other, json).await
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::Cli;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn thaw_needs_one_action_and_a_selection() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        assert!(parse(&["stormcell", "repository", "thaw", "R1", "--demote", "d1"]).is_ok());
        let e = parse(&["stormcell", "repository", "thaw", "R1"]).unwrap_err();
        assert!(e.to_string().contains("--demote"), "{e}");
        let e = parse(&[
            "stormcell",
            "repository",
            "thaw",
            "R1",
            "--demote",
            "a",
            "--promote",
            "b",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("--promote"), "{e}");
        let e = parse(&["stormcell", "repository", "thaw", "--demote", "a"]).unwrap_err();
        assert!(e.to_string().contains("REPO"), "{e}");
        let e = parse(&["stormcell", "db", "promote", "db2"]).unwrap_err();
        assert!(e.to_string().contains("--config"), "{e}");
        let e = parse(&["stormcell", "repository", "maintenance", "R1"]).unwrap_err();
        assert!(e.to_string().contains("--start"), "{e}");
    }
}
