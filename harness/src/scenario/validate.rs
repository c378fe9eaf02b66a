//! The rules a scenario must satisfy beyond its TOML types.
//!
//! Checks run in file order and stop at the first failure, whose field path the caller turns
//! into a line of the file.

use std::fmt::Display;

use super::{Range, Scenario};

/// A broken rule: the dotted field path and what is wrong with it.
#[derive(Debug)]
pub(super) struct Invalid {
    pub field: String,
    pub message: String,
}

type Checked = Result<(), Invalid>;

fn invalid(field: &str, message: impl Into<String>) -> Checked {
    Err(Invalid {
        field: field.to_owned(),
        message: message.into(),
    })
}

/// Checks every rule of `scenario`.
pub(super) fn check(scenario: &Scenario) -> Checked {
    let name = &scenario.name;
    if name.is_empty() {
        return invalid("name", "must not be empty");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return invalid(
            "name",
            format!("`{name}` may use only lowercase letters, digits and `-`"),
        );
    }
    // Listings print one line per scenario.
    if scenario.description.contains('\n') {
        return invalid("description", "must be a single line");
    }

    let topology = &scenario.topology;
    within("topology.devices", &topology.devices, 1, 9)?;
    within("topology.repositories", &topology.repositories, 1, 16)?;
    ordered("topology.link_latency_ms", &topology.link_latency_ms)?;

    let workload = &scenario.workload;
    within("workload.clients", &Range::exactly(workload.clients), 1, 32)?;
    within(
        "workload.duration_s",
        &Range::exactly(workload.duration_s),
        1,
        3600,
    )?;
    within(
        "workload.branches",
        &Range::exactly(workload.branches),
        1,
        16,
    )?;
    let refs_per_push = &workload.refs_per_push;
    ordered("workload.refs_per_push", refs_per_push)?;
    if refs_per_push.min == 0 {
        return invalid("workload.refs_per_push", "min must be at least 1");
    }
    if refs_per_push.max > workload.branches {
        return invalid(
            "workload.refs_per_push",
            format!(
                "max ({}) is greater than workload.branches ({})",
                refs_per_push.max, workload.branches
            ),
        );
    }
    if workload.push_weight == 0 && workload.read_weight == 0 {
        return invalid(
            "workload.push_weight",
            "push_weight and read_weight are both 0; at least one must be positive",
        );
    }
    ordered("workload.think_ms", &workload.think_ms)?;
    if workload.client_timeout_s == 0 {
        return invalid("workload.client_timeout_s", "must be at least 1");
    }
    // Device names are `repo001` upwards; a name must exist whatever count is drawn.
    for name in &workload.push_to {
        let known = name
            .strip_prefix("repo")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n >= 1 && n <= topology.devices.min && name.len() == 7);
        if !known {
            return invalid(
                "workload.push_to",
                format!(
                    "`{name}` is not a device of every run (devices are repo001 to repo{:03})",
                    topology.devices.min
                ),
            );
        }
    }

    let faults = &scenario.faults;
    ordered("faults.window_s", &faults.window_s)?;
    // A scenario without faults never uses the window, so a short fault-free workload need
    // not spell one out.
    if !faults.kinds().is_empty() && faults.window_s.max >= workload.duration_s {
        return invalid(
            "faults.window_s",
            format!(
                "max ({}) must be less than workload.duration_s ({}) so that faults start while clients run",
                faults.window_s.max, workload.duration_s
            ),
        );
    }
    if let Some(strikes) = &faults.strikes {
        ordered("faults.strikes.count", &strikes.count)?;
        ordered("faults.strikes.down_s", &strikes.down_s)?;
    }
    if let Some(d) = &faults.disk_losses {
        ordered("faults.disk_losses.count", &d.count)?;
        ordered("faults.disk_losses.down_s", &d.down_s)?;
        if let Some(age) = &d.backup_age_s {
            ordered("faults.disk_losses.backup_age_s", age)?;
        }
    }
    if let Some(f) = &faults.fsync_failures {
        ordered("faults.fsync_failures.count", &f.count)?;
        ordered("faults.fsync_failures.duration_s", &f.duration_s)?;
    }
    if let Some(write_strikes) = &faults.write_strikes {
        ordered("faults.write_strikes.count", &write_strikes.count)?;
        let points = &write_strikes.points;
        if points.is_empty() {
            return invalid(
                "faults.write_strikes.points",
                "must name at least one point",
            );
        }
        // A repeat would silently weight the draw; say so instead.
        for (i, point) in points.iter().enumerate() {
            if points[..i].contains(point) {
                return invalid(
                    "faults.write_strikes.points",
                    format!("`{point}` is listed twice"),
                );
            }
        }
        ordered("faults.write_strikes.down_s", &write_strikes.down_s)?;
    }
    if let Some(partitions) = &faults.partitions {
        ordered("faults.partitions.count", &partitions.count)?;
        ordered("faults.partitions.duration_s", &partitions.duration_s)?;
    }
    if let Some(drops) = &faults.db_link_drops {
        ordered("faults.db_link_drops.count", &drops.count)?;
        ordered("faults.db_link_drops.duration_s", &drops.duration_s)?;
    }
    if let Some(slow) = &faults.slow_links {
        ordered("faults.slow_links.count", &slow.count)?;
        ordered("faults.slow_links.hold_ms", &slow.hold_ms)?;
    }
    if topology.spare_devices > 0 && topology.devices.min != topology.devices.max {
        return invalid(
            "topology.spare_devices",
            "spare devices need a fixed number of devices (spares are named after them)",
        );
    }
    within(
        "topology.spare_devices",
        &Range::exactly(topology.spare_devices),
        0,
        9 - topology.devices.max.min(9),
    )?;
    super::operator::check(
        &scenario.operator,
        topology.devices.max,
        topology.spare_devices,
        topology.repositories.max,
        workload.duration_s,
    )?;
    check_database(scenario)?;
    check_schedule(scenario)
}

/// An explicit schedule names only hosts some run has (a run without one of them skips
/// the entry), and arms at some point.
fn check_schedule(scenario: &Scenario) -> Checked {
    let Some(schedule) = &scenario.schedule else {
        return Ok(());
    };
    let devices = scenario.topology.devices.max + scenario.topology.spare_devices;
    let replicas = scenario.database.replicas;
    let numbered = |name: &str, prefix: &str, width: usize, last: u32| {
        name.strip_prefix(prefix)
            .filter(|n| width == 0 || n.len() == width)
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n >= 1 && n <= last)
    };
    for (i, entry) in schedule.iter().enumerate() {
        let field = format!("schedule[{i}]");
        for host in entry.fault.hosts() {
            let known = host == crate::nemesis::DB_HOST
                || numbered(host, "repo", 3, devices)
                || numbered(host, "db-r", 0, replicas);
            if !known {
                return invalid(
                    &field,
                    format!(
                        "`{host}` is not a host of any run (hosts: db, repo001 to repo{devices:03}{})",
                        if replicas > 0 {
                            format!(", db-r1 to db-r{replicas}")
                        } else {
                            String::new()
                        }
                    ),
                );
            }
        }
        use super::Fault;
        match &entry.fault {
            Fault::ArmStrike { points, .. }
            | Fault::ArmStrikePrimary { points, .. }
            | Fault::ArmDbLinkDrop { points, .. }
                if points.is_empty() =>
            {
                return invalid(&field, "must name at least one write point");
            }
            Fault::Promote | Fault::Lag { .. } if replicas == 0 => {
                return invalid(&field, "needs at least one replica (database.replicas)");
            }
            _ => {}
        }
    }
    Ok(())
}

/// The database section and the faults that need replicas.
fn check_database(scenario: &Scenario) -> Checked {
    let db = &scenario.database;
    let faults = &scenario.faults;
    within("database.replicas", &Range::exactly(db.replicas), 0, 3)?;
    ordered("database.replica_delay_ms", &db.replica_delay_ms)?;
    let needs_replica = |field: &str| {
        if db.replicas == 0 {
            invalid(field, "needs at least one replica (database.replicas)")
        } else {
            Ok(())
        }
    };
    if let Some(s) = &faults.db_primary_strikes {
        ordered("faults.db_primary_strikes.count", &s.count)?;
        ordered("faults.db_primary_strikes.down_s", &s.down_s)?;
        if let Some(p) = &s.promote_after_s {
            if s.at_write_point.is_some() {
                return invalid(
                    "faults.db_primary_strikes.promote_after_s",
                    "cannot follow a strike armed at a write point (at_write_point): the \
                     strike's time is not known in advance",
                );
            }
            ordered("faults.db_primary_strikes.promote_after_s", p)?;
            needs_replica("faults.db_primary_strikes.promote_after_s")?;
            if s.restart {
                return invalid(
                    "faults.db_primary_strikes.promote_after_s",
                    "a promoted replica replaces a primary lost for good: set restart = false",
                );
            }
        }
        if let Some(b) = &s.replicas_behind_s {
            ordered("faults.db_primary_strikes.replicas_behind_s", b)?;
            needs_replica("faults.db_primary_strikes.replicas_behind_s")?;
            if s.at_write_point.is_some() {
                return invalid(
                    "faults.db_primary_strikes.replicas_behind_s",
                    "cannot precede a strike armed at a write point (at_write_point): the \
                     strike's time is not known in advance",
                );
            }
        }
        if let Some(r) = &s.device_restarts {
            ordered("faults.db_primary_strikes.device_restarts.count", &r.count)?;
            ordered(
                "faults.db_primary_strikes.device_restarts.after_s",
                &r.after_s,
            )?;
            ordered(
                "faults.db_primary_strikes.device_restarts.down_s",
                &r.down_s,
            )?;
        }
    }
    if let Some(h) = &faults.db_primary_hangs {
        ordered("faults.db_primary_hangs.count", &h.count)?;
        ordered("faults.db_primary_hangs.duration_s", &h.duration_s)?;
    }
    if let Some(c) = &faults.db_primary_cuts {
        ordered("faults.db_primary_cuts.count", &c.count)?;
        ordered("faults.db_primary_cuts.duration_s", &c.duration_s)?;
    }
    if let Some(l) = &faults.db_replica_lag {
        needs_replica("faults.db_replica_lag")?;
        ordered("faults.db_replica_lag.count", &l.count)?;
        ordered("faults.db_replica_lag.delay_s", &l.delay_s)?;
        ordered("faults.db_replica_lag.duration_s", &l.duration_s)?;
    }
    if let Some(s) = &faults.db_replica_strikes {
        needs_replica("faults.db_replica_strikes")?;
        ordered("faults.db_replica_strikes.count", &s.count)?;
        ordered("faults.db_replica_strikes.down_s", &s.down_s)?;
    }
    if let Some(f) = &faults.db_flaps {
        ordered("faults.db_flaps.count", &f.count)?;
        within("faults.db_flaps.cycles", &f.cycles, 1, 20)?;
        ordered("faults.db_flaps.down_s", &f.down_s)?;
        ordered("faults.db_flaps.up_s", &f.up_s)?;
    }
    Ok(())
}

/// `min <= max`.
fn ordered<T: PartialOrd + Display>(field: &str, range: &Range<T>) -> Checked {
    if range.min > range.max {
        return invalid(
            field,
            format!("min ({}) is greater than max ({})", range.min, range.max),
        );
    }
    Ok(())
}

/// `min <= max` and both within `lo..=hi`.
fn within<T: PartialOrd + Display>(field: &str, range: &Range<T>, lo: T, hi: T) -> Checked {
    ordered(field, range)?;
    if range.min < lo || range.max > hi {
        return invalid(field, format!("{range} is outside the allowed {lo}..={hi}"));
    }
    Ok(())
}
