//! `stormcell db promote HOST --config FILE...`: promote a streaming replica and re-point
//! the devices' configuration files at it (running nodes pick the change up by
//! themselves, see `stormcell_node::reload`).

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use stormcell_node::config::NodeConfig;
use stormcell_node::db::promote::{self, Promotion};
use stormcell_node::db::PgClusterDb;

use super::context::{ADMIN_CONNECT, ADMIN_QUERY};
use super::table;

/// How long `pg_promote` may take before the command gives up waiting.
const PROMOTE_WAIT_S: i32 = 60;

/// `db promote`.
#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The replica to promote, by its `name` in `[[database.hosts]]`.
    host: String,
    /// Every device's configuration file to re-point (give it once per file). The
    /// replica's address is taken from the first.
    #[arg(long = "config", value_name = "NODE.toml", required = true)]
    configs: Vec<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Outcome {
    host: String,
    promoted: bool,
    files: Vec<FileOutcome>,
}

#[derive(Debug, Serialize)]
struct FileOutcome {
    file: PathBuf,
    changed: bool,
}

/// Runs `db promote`.
pub async fn run(args: PromoteArgs, json: bool) -> anyhow::Result<()> {
    // Every file must be usable and name the host before anything changes.
    let mut address = None;
    for path in &args.configs {
        let config = NodeConfig::load(path)?;
        let Some(host) = config.database.hosts.iter().find(|h| h.name == args.host) else {
            anyhow::bail!(
                "HOST: {} has no database host named \"{}\"",
                path.display(),
                args.host
            );
        };
        address.get_or_insert(host.address.clone());
    }
    let Some(address) = address else {
        anyhow::bail!("--config: give at least one node configuration file");
    };
    let db = PgClusterDb::new(&address, "stormcell-admin", ADMIN_CONNECT, ADMIN_QUERY)?;
    let promotion = promote::promote(&db, PROMOTE_WAIT_S).await?;
    let mut files = Vec::new();
    for path in &args.configs {
        let changed = promote::repoint_file(path, &args.host)?;
        files.push(FileOutcome {
            file: path.clone(),
            changed,
        });
    }
    let outcome = Outcome {
        host: args.host.clone(),
        promoted: promotion == Promotion::Promoted,
        files,
    };
    if json {
        return table::json(&outcome);
    }
    match promotion {
        Promotion::Promoted => println!("promoted \"{}\" to primary", args.host),
        Promotion::AlreadyPrimary => println!("\"{}\" was already a primary", args.host),
    }
    let rows: Vec<Vec<String>> = outcome
        .files
        .iter()
        .map(|f| {
            vec![
                f.file.display().to_string(),
                if f.changed {
                    "re-pointed"
                } else {
                    "already pointed there"
                }
                .to_owned(),
            ]
        })
        .collect();
    table::print(&["CONFIGURATION", "RESULT"], &rows);
    println!(
        "running nodes re-read their [database] hosts within {}s (or at once on SIGHUP)",
        stormcell_node::reload::POLL.as_secs()
    );
    Ok(())
}
