//! The admin commands: configuration edits and status, through `stormcell_node::db::admin`.

use std::time::Duration;

use stormcell_model::ports::Clock;
use stormcell_model::status::{RepoSync, ServiceSync};
use stormcell_node::db::{admin, schema, PgClusterDb};
use stormcell_node::env::SystemClock;

use super::{
    table, BindingCommand, Command, DbCommand, DbTarget, DeviceCommand, RepositoryCommand,
    ServiceCommand,
};

/// Admin connections fail fast (PROTOCOL.md 9.3: no retry, 2 s).
const ADMIN_CONNECT: Duration = Duration::from_secs(2);
const ADMIN_QUERY: Duration = Duration::from_secs(30);
/// The age under which a lone leader still counts as spreading (8.1).
const PARTIAL_WINDOW: Duration = Duration::from_secs(300);

fn database(target: &DbTarget) -> anyhow::Result<PgClusterDb> {
    Ok(PgClusterDb::new(
        &target.conninfo()?,
        "stormcell-admin",
        ADMIN_CONNECT,
        ADMIN_QUERY,
    )?)
}

async fn client(target: &DbTarget) -> anyhow::Result<tokio_postgres::Client> {
    Ok(database(target)?.client().await?)
}

fn done(json: bool, what: String) -> anyhow::Result<()> {
    if json {
        table::json(&serde_json::json!({ "ok": true, "done": what }))
    } else {
        println!("{what}");
        Ok(())
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_owned(), T::to_string)
}

fn sync_text(s: &RepoSync) -> String {
    match s {
        RepoSync::Ambiguous => "ambiguous leader".to_owned(),
        RepoSync::Synchronized => "synchronized".to_owned(),
        RepoSync::Partial { lag } => format!("partial (lag {lag})"),
        RepoSync::Unsynchronized { for_ms } => {
            format!(
                "unsynchronized (has unreplicated changes for {}s)",
                for_ms / 1000
            )
        }
    }
}

fn service_text(s: &ServiceSync) -> String {
    match s {
        ServiceSync::AmbiguousLeader => "Ambiguous Leader".to_owned(),
        ServiceSync::Unsynchronized { for_ms } => {
            format!("Unsynchronized (for {}s)", for_ms / 1000)
        }
        ServiceSync::Partial { lag } => format!("Partial (lag {lag})"),
        ServiceSync::Synchronized => "Synchronized".to_owned(),
        ServiceSync::NoRepositories => "No Repositories".to_owned(),
    }
}

pub async fn run(command: Command, json: bool) -> anyhow::Result<()> {
    match command {
        Command::Node { .. } => unreachable_node(),
        Command::Db(DbCommand::Migrate(target)) => {
            let mut c = client(&target).await?;
            let applied = schema::migrate(&mut c).await?;
            let names: Vec<String> = applied
                .iter()
                .map(|m| format!("{} {}", m.version, m.name))
                .collect();
            if json {
                return table::json(&serde_json::json!({ "applied": names }));
            }
            if names.is_empty() {
                println!("schema is up to date");
            }
            for n in names {
                println!("applied migration {n}");
            }
            Ok(())
        }
        Command::Db(DbCommand::Status(target)) => {
            let hosts = target.hosts()?;
            let mut statuses = Vec::new();
            for (role, conninfo) in hosts {
                let db =
                    PgClusterDb::new(&conninfo, "stormcell-admin", ADMIN_CONNECT, ADMIN_QUERY)?;
                statuses.push(admin::host_status(&db, &role, &conninfo).await);
            }
            if json {
                return table::json(&statuses);
            }
            let rows: Vec<Vec<String>> = statuses
                .iter()
                .map(|s| {
                    vec![
                        s.role.clone(),
                        s.host.clone(),
                        if s.reachable { "yes" } else { "no" }.to_owned(),
                        opt(&s
                            .in_recovery
                            .map(|r| if r { "standby" } else { "read/write" })),
                        match s.replication_delay_s {
                            Some(d) if d > 30.0 => format!("{d:.1}s (slow: data is at risk)"),
                            Some(d) => format!("{d:.1}s"),
                            None => "-".to_owned(),
                        },
                        format!("{:?}", s.migrations),
                        opt(&s.error),
                    ]
                })
                .collect();
            table::print(
                &[
                    "ROLE",
                    "HOST",
                    "REACHABLE",
                    "MODE",
                    "DELAY",
                    "MIGRATIONS",
                    "ERROR",
                ],
                &rows,
            );
            Ok(())
        }
        Command::Device(DeviceCommand::Add {
            name,
            address,
            http_url,
            credential,
            db,
        }) => {
            if credential.len() < 8 {
                anyhow::bail!("--credential: must be at least 8 characters");
            }
            let c = client(&db).await?;
            admin::add_device(&c, &name, &address, &http_url, &credential).await?;
            done(json, format!("added device \"{name}\""))
        }
        Command::Device(DeviceCommand::List(db)) => {
            let c = client(&db).await?;
            let devices = admin::list_devices(&c).await?;
            if json {
                return table::json(&devices);
            }
            let rows: Vec<Vec<String>> = devices
                .iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        d.address.clone(),
                        d.http_url.clone(),
                        d.bindings.join(", "),
                    ]
                })
                .collect();
            table::print(&["DEVICE", "ADDRESS", "HTTP", "SERVICES"], &rows);
            Ok(())
        }
        Command::Service(ServiceCommand::Create { name, db }) => {
            let c = client(&db).await?;
            admin::create_service(&c, &name).await?;
            done(json, format!("created service \"{name}\""))
        }
        Command::Service(ServiceCommand::Bind {
            service,
            device,
            read_only,
            db,
        }) => {
            let c = client(&db).await?;
            admin::bind(&c, &service, &device, !read_only).await?;
            done(
                json,
                format!("bound device \"{device}\" to service \"{service}\""),
            )
        }
        Command::Service(ServiceCommand::Status { service, db }) => {
            let c = client(&db).await?;
            let status =
                admin::service_status(&c, &service, SystemClock.now_ms(), PARTIAL_WINDOW).await?;
            if json {
                return table::json(&status);
            }
            println!(
                "service \"{}\": {}",
                status.service,
                service_text(&status.status)
            );
            let rows: Vec<Vec<String>> = status
                .repositories
                .iter()
                .map(|r| vec![r.repo.clone(), sync_text(&r.sync)])
                .collect();
            table::print(&["REPOSITORY", "STATUS"], &rows);
            Ok(())
        }
        Command::Binding(BindingCommand::Set {
            service,
            device,
            writable,
            disabled,
            db,
        }) => {
            if writable.is_none() && disabled.is_none() {
                anyhow::bail!("say what to change: --writable BOOL and/or --disabled BOOL");
            }
            let c = client(&db).await?;
            admin::set_binding(&c, &service, &device, writable, disabled).await?;
            done(
                json,
                format!("updated the binding of \"{device}\" to \"{service}\""),
            )
        }
        Command::Repository(RepositoryCommand::Create { name, service, db }) => {
            let mut c = client(&db).await?;
            admin::create_repository(&mut c, &name, service.as_deref()).await?;
            done(json, format!("created repository \"{name}\""))
        }
        Command::Repository(RepositoryCommand::List(db)) => {
            let c = client(&db).await?;
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
        Command::Repository(RepositoryCommand::Status { name, db }) => {
            let c = client(&db).await?;
            let lines = admin::repository_status(&c, &name).await?;
            if json {
                return table::json(&lines);
            }
            let now = SystemClock.now_ms();
            let rows: Vec<Vec<String>> = lines
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
    }
}

fn unreachable_node() -> anyhow::Result<()> {
    anyhow::bail!("`node` is not an admin command")
}
