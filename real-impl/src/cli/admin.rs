//! The admin commands other than `repository ...`: the database, devices, services and
//! bindings. Configuration changes go through the model's `Admin` (the same code the
//! simulator's operator runs); what only the real daemon has (credentials, Git endpoints,
//! schema) is `stormcell_node::db::admin`.

use stormcell_model::admin::{AdminError, BindingChange};
use stormcell_model::ids::{DeviceId, ServiceId};
use stormcell_model::status::ServiceSync;
use stormcell_node::db::{admin, schema};

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
            let (role, may_promote) = admin::promote_right(&c).await?;
            if json {
                return table::json(&serde_json::json!({
                    "applied": names,
                    "role": role,
                    "may_promote": may_promote,
                }));
            }
            if names.is_empty() {
                println!("schema is up to date");
            }
            for n in names {
                println!("applied migration {n}");
            }
            println!("{}", promote_note(&role, may_promote));
            Ok(())
        }
        Command::Db(DbCommand::Grant { role, db }) => {
            name("--role", &role)?;
            let c = database(&db)?.client().await?;
            admin::grant_promote(&c, &role).await?;
            done(
                json,
                format!("role \"{role}\" may run pg_promote (db promote) on every host"),
            )
        }
        Command::Db(DbCommand::Promote(args)) => super::promote::run(args, json).await,
        Command::Db(DbCommand::Status(target)) => {
            let hosts = target.hosts()?;
            let statuses = admin::cluster_status(&hosts, ADMIN_CONNECT, ADMIN_QUERY).await;
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
                        lag_text(s),
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
                    "LAG",
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
            peer_address(&address)?;
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
        Command::Device(DeviceCommand::Remove { name: device, db }) => {
            name("NAME", &device)?;
            let mut c = database(&db)?.client().await?;
            admin::remove_device(&mut c, &device).await?;
            done(json, format!("removed device \"{device}\""))
        }
        Command::Device(DeviceCommand::Credential {
            name: device,
            credential,
            db,
        }) => {
            name("NAME", &device)?;
            if credential.len() < 8 {
                anyhow::bail!("--credential: must be at least 8 characters");
            }
            let c = database(&db)?.client().await?;
            admin::set_device_credential(&c, &device, &credential).await?;
            done(
                json,
                format!(
                    "set the credential of device \"{device}\": put it in its configuration \
                     and restart it (peers refuse the old one within {}s)",
                    stormcell_node::db::credentials::VERIFIED_FOR.as_secs()
                ),
            )
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

/// What `db migrate` says about the right `db promote` needs.
fn promote_note(role: &str, may_promote: bool) -> String {
    if may_promote {
        format!("role \"{role}\" may run pg_promote: `db promote` will work with it")
    } else {
        format!(
            "role \"{role}\" may not run pg_promote, which `db promote` needs on the replica it \
             promotes. While this primary is up (a standby takes no grant), run as a superuser \
             `stormcell db grant --role {role}` or `{};`",
            admin::grant_promote_sql(role)
        )
    }
}

/// A replica's lag as `db status` shows it.
fn lag_text(s: &admin::HostStatus) -> String {
    if s.in_recovery != Some(true) {
        return "-".to_owned();
    }
    let mut text = match (s.lag_bytes, s.lag_s) {
        (Some(b), Some(t)) => format!("{b} bytes, {t:.1}s"),
        (Some(b), None) => format!("{b} bytes"),
        (None, _) => "unknown (primary not reached)".to_owned(),
    };
    if s.lag_s.is_some_and(|t| t > 30.0) {
        text.push_str(" (slow: data is at risk)");
    }
    if s.streaming == Some(false) {
        text.push_str(" (not replicating)");
    }
    text
}

/// A peer address as `device add --address` takes it: `host:port`, the host a name or an
/// IP address (IPv6 in brackets).
fn peer_address(address: &str) -> anyhow::Result<()> {
    let bad = || {
        anyhow::anyhow!(
            "--address: `{address}` is not host:port (a host name or IP address, and a port)"
        )
    };
    if address.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(valid_label) {
        return Err(bad());
    }
    Ok(())
}

fn unreachable_node() -> anyhow::Result<()> {
    anyhow::bail!("`node` is not an admin command")
}

#[cfg(test)]
mod tests {
    use super::peer_address;

    #[test]
    fn peer_addresses_take_host_names_and_ip_addresses() {
        for good in [
            "127.0.0.1:7001",
            "[::1]:7001",
            "repo001:7001",
            "repo001.dc1.example.com:7001",
        ] {
            peer_address(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "repo001",
            "repo001:",
            ":7001",
            "repo001:0",
            "repo 001:7001",
            "-a:1",
            "a..b:1",
        ] {
            let e = peer_address(bad).unwrap_err();
            assert!(e.to_string().starts_with("--address"), "{bad}: {e}");
        }
    }
}
