//! `stormcell repository ...`: creation, listing and status, and the operator actions of
//! PROTOCOL.md section 7 (thaw, maintenance lock, read-only maintenance, clusterize), each
//! through the model's `Admin`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use stormcell_model::admin::{
    AdminError, RepoSelection, RepositoryStatus, ThawKind, ThawOutcome, ThawRequest, ThawTarget,
};
use stormcell_model::ids::{DeviceId, RepoId, ServiceId};
use stormcell_model::ports::Clock;
use stormcell_node::db::admin;
use stormcell_node::env::SystemClock;

use super::context::{context, database, interactive, read_line, TerminalConfirm};
use super::table::{self, done, opt};
use super::DbTarget;

/// Repositories and the operator actions on them.
#[derive(Debug, Subcommand)]
pub enum RepositoryCommand {
    /// Create a repository. Every active device of its service starts with version 0
    /// (all are leaders of the empty repository).
    Create {
        /// Its name (letters, digits, `-`, `_`, `.`).
        name: String,
        /// The service hosting it (default: a random open service, PROTOCOL.md 7.5).
        #[arg(long)]
        service: Option<String>,
        #[command(flatten)]
        db: DbTarget,
    },
    /// List repositories.
    List(DbTarget),
    /// Per-device versions of a repository (PROTOCOL.md 8.2).
    Status {
        /// The repository.
        name: String,
        #[command(flatten)]
        db: DbTarget,
    },
    /// Resolve a freeze by demoting devices or promoting one (PROTOCOL.md 7.1).
    ///
    /// Demote deletes the devices' version rows (data only they had is discarded, but
    /// where their working copies can be read it is first kept in a salvage bundle on that
    /// device, data_dir/salvage/REPO/, and then pushed under refs/salvage/); promote gives
    /// a device version 0 of a repository that has no rows at all. Run it on a device
    /// host with --config so the plan can read the devices' working copies.
    Thaw {
        /// The repositories.
        #[arg(
            value_name = "REPO",
            required_unless_present = "all_repositories",
            conflicts_with = "all_repositories"
        )]
        repos: Vec<String>,
        /// Every repository on a service the named devices are bound to.
        #[arg(long)]
        all_repositories: bool,
        /// Demote this device, or every device bound to this service.
        #[arg(
            long,
            value_name = "DEVICE|SERVICE",
            conflicts_with = "promote",
            required_unless_present = "promote"
        )]
        demote: Option<String>,
        /// Promote this device.
        #[arg(long, value_name = "DEVICE")]
        promote: Option<String>,
        /// Print what would be discarded, change nothing and exit.
        #[arg(long)]
        plan: bool,
        /// Do not ask for confirmation.
        #[arg(long, conflicts_with = "plan")]
        force: bool,
        #[command(flatten)]
        db: DbTarget,
    },
    /// Take a maintenance lock on this device (PROTOCOL.md 7.2), let the working copies be
    /// changed, then record the changes so they spread to every device.
    ///
    /// Run on the device's host with --config. On a terminal, the command waits for you to
    /// type `done`; with --run it runs the command instead (with the working copies in
    /// STORMCELL_WORKING_COPIES) and records when it ends. What the working copies hold
    /// then is recorded even if the command failed, since it is what the device serves.
    Lock {
        /// The repositories.
        #[arg(value_name = "REPO", required = true)]
        repos: Vec<String>,
        /// A shell command that makes the changes, instead of waiting on the terminal.
        #[arg(long, value_name = "COMMAND")]
        run: Option<String>,
        #[command(flatten)]
        db: DbTarget,
    },
    /// Turn read-only maintenance on or off (PROTOCOL.md 7.3): pushes are refused with
    /// the message while it is on.
    Maintenance {
        /// The repositories.
        #[arg(value_name = "REPO", required = true)]
        repos: Vec<String>,
        /// Turn it on, with this message for pushers.
        #[arg(
            long,
            value_name = "MESSAGE",
            conflicts_with = "stop",
            required_unless_present = "stop"
        )]
        start: Option<String>,
        /// Turn it off.
        #[arg(long)]
        stop: bool,
        #[command(flatten)]
        db: DbTarget,
    },
    /// Put a repository on a service, or take it off (PROTOCOL.md 7.4). Moves no data.
    Clusterize {
        /// The repository.
        repo: String,
        /// The service.
        #[arg(
            long,
            conflicts_with = "remove_service",
            required_unless_present = "remove_service"
        )]
        service: Option<String>,
        /// Take it off its service.
        #[arg(long)]
        remove_service: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        db: DbTarget,
    },
}

/// Checks repository names before anything is changed; the error names the bad one.
fn repo_ids(names: &[String]) -> anyhow::Result<Vec<RepoId>> {
    names
        .iter()
        .map(|n| {
            stormcell_node::store::check_name(n)
                .map(|()| RepoId::new(n.clone()))
                .map_err(|e| anyhow::anyhow!("REPO: {}", e.0))
        })
        .collect()
}

/// Runs one repository command.
pub async fn run(command: RepositoryCommand, json: bool) -> anyhow::Result<()> {
    match command {
        RepositoryCommand::Create { name, service, db } => {
            let repo = repo_ids(std::slice::from_ref(&name))?.remove(0);
            let admin = context(&db)?.admin;
            let service = match service {
                Some(s) => {
                    let s = ServiceId::new(s);
                    admin.create_repository_on(&repo, &s).await?;
                    s
                }
                None => admin.create_repository(&repo).await?,
            };
            done(
                json,
                format!("created repository \"{name}\" on service \"{service}\""),
            )
        }
        RepositoryCommand::List(db) => {
            let c = database(&db)?.client().await?;
            let repos = admin::list_repositories(&c).await?;
            if json {
                return table::json(&repos);
            }
            let rows: Vec<Vec<String>> = repos
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        opt(&r.service),
                        opt(&r.max_version),
                        opt(&r.maintenance),
                    ]
                })
                .collect();
            table::print(&["REPOSITORY", "SERVICE", "VERSION", "MAINTENANCE"], &rows);
            Ok(())
        }
        RepositoryCommand::Status { name, db } => {
            let repo = repo_ids(std::slice::from_ref(&name))?.remove(0);
            let ctx = context(&db)?;
            if !ctx.topology().await?.repositories.contains_key(&repo) {
                return Err(AdminError::UnknownRepository(repo).into());
            }
            let status = ctx.admin.repository_status(&repo).await?;
            print_status(&status, json)
        }
        RepositoryCommand::Thaw {
            repos,
            all_repositories,
            demote,
            promote,
            plan,
            force,
            db,
        } => {
            let repos = if all_repositories {
                RepoSelection::All
            } else {
                RepoSelection::Named(repo_ids(&repos)?)
            };
            let target = match (demote, promote) {
                (Some(d), None) => ThawTarget::Demote(d),
                (None, Some(p)) => ThawTarget::Promote(p),
                _ => anyhow::bail!("say what to do: --demote DEVICE|SERVICE or --promote DEVICE"),
            };
            let request = ThawRequest {
                repos,
                target,
                force,
            };
            let admin = context(&db)?.admin;
            if plan {
                let plan = admin.plan(&request).await?;
                if json {
                    return table::json(&plan);
                }
                print!("{}", plan.render());
                return Ok(());
            }
            let outcome = admin.thaw(&request, &TerminalConfirm).await?;
            print_thaw(&outcome, json)
        }
        RepositoryCommand::Lock { repos, run, db } => {
            let repos = repo_ids(&repos)?;
            lock(&repos, run, &db, json).await
        }
        RepositoryCommand::Maintenance {
            repos,
            start,
            stop: _,
            db,
        } => {
            let repos = repo_ids(&repos)?;
            if start.as_deref().is_some_and(|m| m.trim().is_empty()) {
                anyhow::bail!("--start: the message must not be empty");
            }
            let on = start.is_some();
            context(&db)?.admin.set_maintenance(&repos, start).await?;
            let names: Vec<&str> = repos.iter().map(RepoId::as_str).collect();
            done(
                json,
                format!(
                    "read-only maintenance {} for {}",
                    if on { "started" } else { "stopped" },
                    names.join(", ")
                ),
            )
        }
        RepositoryCommand::Clusterize {
            repo,
            service,
            remove_service: _,
            force,
            db,
        } => {
            let repo = repo_ids(std::slice::from_ref(&repo))?.remove(0);
            let service = service.map(ServiceId::new);
            let warning = context(&db)?
                .admin
                .clusterize(&repo, service.as_ref(), force, &TerminalConfirm)
                .await?;
            if let (Some(w), false) = (&warning, json) {
                eprintln!("{w}");
            }
            done(
                json,
                match &service {
                    Some(s) => format!("repository \"{repo}\" is on service \"{s}\""),
                    None => format!("repository \"{repo}\" is on no service"),
                },
            )
        }
    }
}

fn print_status(status: &RepositoryStatus, json: bool) -> anyhow::Result<()> {
    if json {
        return table::json(status);
    }
    let now = SystemClock.now_ms();
    let rows: Vec<Vec<String>> = status
        .lines
        .iter()
        .map(|l| {
            vec![
                l.device.to_string(),
                l.version.to_string(),
                l.writing_since_ms.map_or_else(
                    || "no".to_owned(),
                    |t| format!("yes (for {}s)", now.saturating_sub(t) / 1000),
                ),
                opt(&l.last_writer),
                opt(&l.digest.map(|d| format!("{:016x}", d.0))),
                opt(&l.matches_leader.map(|m| if m { "yes" } else { "NO" })),
            ]
        })
        .collect();
    table::print(
        &[
            "DEVICE",
            "VERSION",
            "WRITING",
            "LAST WRITER",
            "DIGEST",
            "MATCHES LEADER",
        ],
        &rows,
    );
    Ok(())
}

fn print_thaw(outcome: &ThawOutcome, json: bool) -> anyhow::Result<()> {
    if json {
        return table::json(outcome);
    }
    if let Some(plan) = &outcome.plan {
        print!("{}", plan.render());
    }
    for (repo, device, kind) in &outcome.applied {
        let verb = match kind {
            ThawKind::Demote => "demoted",
            ThawKind::Promote => "promoted",
        };
        println!("{verb} {device} for {repo}");
    }
    for b in &outcome.bundles {
        println!(
            "bundled {} ref(s) of {} for {} in {} on {} (recover with: git fetch {} 'refs/*:refs/recovered/*')",
            b.refs.len(),
            b.device,
            b.repo,
            b.location,
            b.device,
            b.location
        );
    }
    for u in &outcome.unbundled {
        println!("not bundled for {} on {}: {}", u.repo, u.device, u.reason);
    }
    for repo in &outcome.unchanged {
        println!(
            "{repo}: left alone: its rows changed while the plan was made (a sync was \
             recorded meanwhile). Run the command again for it to see the new plan."
        );
    }
    for s in &outcome.salvaged {
        match (&s.to, &s.error) {
            (Some(to), _) => println!(
                "salvaged {} ref(s) of {} for {} onto {to}",
                s.refs.len(),
                s.device,
                s.repo
            ),
            (None, e) => println!(
                "could not salvage the refs of {} for {}: {}",
                s.device,
                s.repo,
                e.as_deref().unwrap_or("unknown reason")
            ),
        }
    }
    Ok(())
}

/// The working copies a maintenance lock lets the operator change.
fn working_copies(data_dir: &std::path::Path, repos: &[RepoId]) -> Vec<PathBuf> {
    repos
        .iter()
        .map(|r| data_dir.join("repos").join(format!("{r}.git")))
        .collect()
}

/// `repository lock`: take, let the changes happen, confirm.
async fn lock(
    repos: &[RepoId],
    run: Option<String>,
    db: &DbTarget,
    json: bool,
) -> anyhow::Result<()> {
    let ctx = context(db)?;
    let Some(node) = &ctx.node else {
        anyhow::bail!(
            "--config: a maintenance lock changes this device's working copies; run it on the \
             device's host with --config NODE.toml"
        );
    };
    if run.is_none() && !interactive() {
        anyhow::bail!(
            "--run: standard input is not a terminal, so nobody can say when the changes are \
             done; give --run COMMAND"
        );
    }
    let device = DeviceId::new(node.device.clone());
    let copies = working_copies(&node.data_dir, repos);
    let held = ctx.admin.lock(&device, repos).await?;
    eprintln!(
        "Maintenance lock held on {device} for {}. Writes to these repositories wait; change \
         the refs in:",
        repos
            .iter()
            .map(RepoId::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for c in &copies {
        eprintln!("  {}", c.display());
    }
    let mut failure = None;
    match run {
        Some(command) => {
            let joined = std::env::join_paths(&copies).context("working copy paths")?;
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&command)
                .env("STORMCELL_WORKING_COPIES", joined)
                .current_dir(
                    copies
                        .first()
                        .cloned()
                        .unwrap_or_else(|| PathBuf::from(".")),
                )
                .status()
                .await;
            match status {
                Ok(s) if s.success() => {}
                Ok(s) => failure = Some(format!("--run: the command ended with {s}")),
                Err(e) => failure = Some(format!("--run: the command could not start: {e}")),
            }
        }
        None => loop {
            eprint!("Type `done` when the changes are made: ");
            match read_line().await.as_deref() {
                Some("done") => break,
                Some(_) => continue,
                // End of input: nobody is left to say more; what is there gets recorded.
                None => break,
            }
        },
    }
    let versions = ctx.admin.confirm_maintenance(held).await?;
    if json {
        table::json(&serde_json::json!({
            "device": device,
            "versions": versions,
            "command_failed": failure,
        }))?;
    } else {
        for (repo, version) in &versions {
            println!("maintenance of {repo} on {device} recorded as version {version}");
        }
    }
    match failure {
        Some(f) => anyhow::bail!("{f}; what the working copies held was recorded"),
        None => Ok(()),
    }
}
