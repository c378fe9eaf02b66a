//! The admin commands other than `repository ...`: the database, devices, services and
//! bindings. Configuration changes go through the model's `Admin` (the same code the
//! simulator's operator runs); what only the real daemon has (credentials, Git endpoints,
//! schema) is `stormcell_node::db::admin`.

use stormcell_model::admin::{AdminError, BindingChange};
use stormcell_model::ids::{DeviceId, ServiceId};
use stormcell_model::status::ServiceSync;
use stormcell_node::db::{admin, schema, PgClusterDb};

use super::context::{context, database, ADMIN_CONNECT, ADMIN_QUERY};
use super::table::{self, done, opt};
use super::{BindingCommand, Command, DbCommand, DbTarget, DeviceCommand, ServiceCommand};

async fn set_closed(db: &DbTarget, json: bool, service: &str, closed: bool) -> anyhow::Result<()> {
    context(db)?
        .admin
        .set_service_closed(&ServiceId::new(service.to_owned()), closed)
        .await?;
    let state = if closed {
        "closed: new repositories go to other services"
    } else {
        "open: new repositories may be allocated on it"
    };
    done(json, format!("service \"{service}\" is {state}"))
}

fn service_text(s: &ServiceSync) -> String {
    stormcell_model::admin::sync_text(s)
}

/// A device or service name as the command line gave it: not empty, no spaces.
fn name(flag: &str, value: &str) -> anyhow::Result<()> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        anyhow::bail!("{flag}: {value:?} is not a name (no spaces, not empty)");
    }
    Ok(())
}

/// Runs one admin command.
pub async fn run(command: Command, json: bool) -> anyhow::Result<()> {
    match command {
        Command::Node { .. } => unreachable_node(),
        Command::Db(DbCommand::Migrate(target)) => {
            let mut c = database(&target)?.client().await?;
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
        Command::Db(DbCommand::Promote(args)) => super::promote::run(args, json).await,
        Command::Db(DbCommand::Status(target)) => {
            let hosts = target.hosts()?;
            let mut statuses = Vec::new();
            for (role, conninfo) in hosts {
                let db =
                    PgClusterDb::new(&conninfo, "stormcell-admin", ADMIN_CONNECT, ADMIN_QUERY)?;
                // The connection string may hold a password; only a redacted one is shown.
                let shown = stormcell_node::secret::redact_conninfo(&conninfo);
                statuses.push(admin::host_status(&db, &role, &shown).await);
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
            name: device,
            address,
            http_url,
            credential,
            service,
            read_only,
            db,
        }) => {
            name("NAME", &device)?;
            if address.parse::<std::net::SocketAddr>().is_err() {
                anyhow::bail!("--address: `{address}` is not host:port (an IP address and a port)");
            }
            if !(http_url.starts_with("http://") || http_url.starts_with("https://")) {
                anyhow::bail!("--http-url: `{http_url}` must start with http:// or https://");
            }
            if credential.len() < 8 {
                anyhow::bail!("--credential: must be at least 8 characters");
            }
            let ctx = context(&db)?;
            let id = DeviceId::new(device.clone());
            let topology = ctx.topology().await?;
            if let Some(s) = &service {
                if !topology.services.contains_key(&ServiceId::new(s.clone())) {
                    return Err(AdminError::UnknownService(ServiceId::new(s.clone())).into());
                }
            }
            match topology.devices.get(&id) {
                // Running it again finishes a registration whose credential was not set.
                Some(known) if known.address == address => {}
                Some(known) => anyhow::bail!(
                    "NAME: device \"{device}\" is already registered at {}",
                    known.address
                ),
                None => ctx.admin.register_device(&id, &address).await?,
            }
            // The credential and Git endpoint are this daemon's own: the model has no
            // notion of them.
            let c = database(&db)?.client().await?;
            admin::set_device_access(&c, &device, &http_url, &credential).await?;
            if let Some(s) = &service {
                ctx.admin
                    .add_device(&id, &address, &ServiceId::new(s.clone()), !read_only)
                    .await?;
            }
            done(json, format!("added device \"{device}\""))
        }
        Command::Device(DeviceCommand::List(db)) => {
            let c = database(&db)?.client().await?;
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
        Command::Service(ServiceCommand::Create { name: service, db }) => {
            name("NAME", &service)?;
            // The model has no operation that creates a service: services are set up once,
            // with the cluster.
            let c = database(&db)?.client().await?;
            admin::create_service(&c, &service).await?;
            done(json, format!("created service \"{service}\""))
        }
        Command::Service(ServiceCommand::Bind {
            service,
            device,
            read_only,
            db,
        }) => {
            let ctx = context(&db)?;
            let id = DeviceId::new(device.clone());
            let topology = ctx.topology().await?;
            let Some(known) = topology.devices.get(&id) else {
                anyhow::bail!(
                    "DEVICE: no device is called \"{device}\"; register it with `stormcell device add`"
                );
            };
            ctx.admin
                .add_device(
                    &id,
                    &known.address,
                    &ServiceId::new(service.clone()),
                    !read_only,
                )
                .await?;
            done(
                json,
                format!("bound device \"{device}\" to service \"{service}\""),
            )
        }
        Command::Service(ServiceCommand::Close { service, db }) => {
            set_closed(&db, json, &service, true).await
        }
        Command::Service(ServiceCommand::Open { service, db }) => {
            set_closed(&db, json, &service, false).await
        }
        Command::Service(ServiceCommand::Status { service, db }) => {
            let status = context(&db)?
                .admin
                .service_status(&ServiceId::new(service))
                .await?;
            if json {
                return table::json(&status);
            }
            println!(
                "service \"{}\": {}",
                status.service,
                service_text(&status.sync)
            );
            let rows: Vec<Vec<String>> = status
                .repos
                .iter()
                .map(|(repo, sync)| {
                    vec![
                        repo.to_string(),
                        repo_text(sync),
                        if status.writing.contains(repo) {
                            "yes"
                        } else {
                            "no"
                        }
                        .to_owned(),
                    ]
                })
                .collect();
            table::print(&["REPOSITORY", "STATUS", "WRITING"], &rows);
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
            context(&db)?
                .admin
                .set_binding(
                    Some(&ServiceId::new(service.clone())),
                    &DeviceId::new(device.clone()),
                    BindingChange { writable, disabled },
                )
                .await?;
            done(
                json,
                format!("updated the binding of \"{device}\" to \"{service}\""),
            )
        }
        Command::Repository(command) => super::repository::run(command, json).await,
    }
}

fn repo_text(s: &stormcell_model::status::RepoSync) -> String {
    use stormcell_model::status::RepoSync;
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

fn unreachable_node() -> anyhow::Result<()> {
    anyhow::bail!("`node` is not an admin command")
}
