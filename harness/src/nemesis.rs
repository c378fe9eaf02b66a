//! The nemesis: the fault schedule of a run, drawn from the seed within what the scenario
//! allows (lightning strikes, strikes at chosen points of a write, partitions, database
//! link drops during a push, slow links).

use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use stormcell_model::ports::WritePoint;

use crate::env::{Arm, ArmedAction};
use crate::scenario::{self, Faults};

/// The host name of the cluster database.
pub const DB_HOST: &str = "db";

/// One thing the nemesis does at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Crash a device.
    Strike {
        /// The device.
        device: String,
        /// When it comes back.
        down_ms: u64,
    },
    /// Arm a failpoint: the next write reaching one of its points triggers it.
    Arm(Arm),
    /// Cut the links between every host of `a` and every host of `b`.
    Partition {
        /// One side.
        a: Vec<String>,
        /// The other side.
        b: Vec<String>,
        /// When the links are repaired.
        duration_ms: u64,
        /// Only messages from `a` to `b` are dropped.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        one_way: bool,
    },
    /// Crash a host for the rest of the run.
    Lose {
        /// The host.
        host: String,
    },
    /// The operator promotes the replica that received the most and re-points the devices.
    Promote,
    /// A replica applies transactions `delay_ms` after their commit, for a while.
    Lag {
        /// The replica.
        host: String,
        /// The delay during the spike.
        delay_ms: u64,
        /// How long the spike lasts.
        duration_ms: u64,
    },
    /// Hold messages between two hosts.
    Hold {
        /// One host.
        a: String,
        /// The other.
        b: String,
        /// When held messages are released.
        duration_ms: u64,
    },
    /// A host hangs: every link between it and `peers` holds its messages.
    Hang {
        /// The hung host.
        host: String,
        /// The hosts that talk to it.
        peers: Vec<String>,
        /// When it answers again.
        duration_ms: u64,
    },
    /// Take a backup of a device's working copies (a later disk loss may restore it).
    Backup {
        /// The device.
        device: String,
        /// The backup's number in this run.
        backup: u32,
    },
    /// A device loses its disk: it crashes, its working copies and version files are gone
    /// (or replaced by an older backup), and it restarts under the same name.
    DiskLoss {
        /// The device.
        device: String,
        /// When it comes back.
        down_ms: u64,
        /// The backup restored onto the new disk, if any.
        restore: Option<u32>,
    },
    /// Every attempt of a device to make its working copy durable fails for a while.
    FsyncFailure {
        /// The device.
        device: String,
        /// How long.
        duration_ms: u64,
    },
}

/// A scheduled action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    /// Virtual milliseconds since the start.
    pub at_ms: u64,
    /// What happens.
    pub action: Action,
    /// A readable description, for reports.
    pub label: String,
}

/// Maps the scenario's spelling of a write point to the model's.
pub fn write_point(p: scenario::WritePoint) -> WritePoint {
    match p {
        scenario::WritePoint::AfterWritingSet => WritePoint::AfterWritingSet,
        scenario::WritePoint::AfterRefsWritten => WritePoint::AfterRefsWritten,
        scenario::WritePoint::AfterVersionBump => WritePoint::AfterVersionBump,
        scenario::WritePoint::AfterAck => WritePoint::AfterAck,
    }
}

/// Arms `action` at `point`, labelled "arm WHAT at POINT (down ...)".
fn armed(
    at_ms: u64,
    what: &str,
    point: WritePoint,
    down: Option<Duration>,
    action: ArmedAction,
) -> Planned {
    let down = down.map_or("for good".to_owned(), |d| {
        format!("{:.1}s", d.as_secs_f64())
    });
    Planned {
        at_ms,
        label: format!("arm {what} at {} (down {down})", point.name()),
        action: Action::Arm(Arm {
            points: vec![point],
            action,
        }),
    }
}

/// When a fault starts: a drawn second of the fault window plus a drawn millisecond.
fn start_ms(faults: &Faults, rng: &mut ChaCha8Rng) -> u64 {
    secs(faults.window_s.draw(rng)) + rng.random_range(0..1000)
}

fn secs(s: u64) -> u64 {
    s.saturating_mul(1000)
}

/// Draws the schedule. `faults` has the mix applied already.
pub fn plan(
    faults: &Faults,
    devices: &[String],
    replicas: &[String],
    rng: &mut ChaCha8Rng,
) -> Vec<Planned> {
    let mut out = Vec::new();
    let start = |rng: &mut ChaCha8Rng| start_ms(faults, rng);
    let pick =
        |rng: &mut ChaCha8Rng, hosts: &[String]| hosts[rng.random_range(0..hosts.len())].clone();

    if let Some(s) = &faults.strikes {
        for _ in 0..s.count.draw(rng) {
            let at_ms = start(rng);
            let device = pick(rng, devices);
            let down_ms = secs(s.down_s.draw(rng));
            out.push(Planned {
                at_ms,
                label: format!("strike {device} for {:.1}s", down_ms as f64 / 1000.0),
                action: Action::Strike { device, down_ms },
            });
        }
    }
    if let Some(w) = &faults.write_strikes {
        for _ in 0..w.count.draw(rng) {
            let at_ms = start(rng);
            let point = write_point(w.points[rng.random_range(0..w.points.len())]);
            let down_ms = secs(w.down_s.draw(rng));
            let down = w.restart.then_some(Duration::from_millis(down_ms));
            out.push(armed(
                at_ms,
                "strike",
                point,
                down,
                ArmedAction::Strike { down },
            ));
        }
    }
    if let Some(p) = &faults.partitions {
        let mut hosts: Vec<String> = devices.to_vec();
        if p.include_database {
            hosts.push(DB_HOST.to_owned());
        }
        for _ in 0..p.count.draw(rng) {
            let at_ms = start(rng);
            let duration_ms = secs(p.duration_s.draw(rng));
            if hosts.len() < 2 {
                continue;
            }
            // Two groups, neither empty.
            let mut a = Vec::new();
            let mut b = Vec::new();
            for h in &hosts {
                if rng.random_bool(0.5) {
                    a.push(h.clone())
                } else {
                    b.push(h.clone())
                }
            }
            if a.is_empty() {
                a.push(b.remove(rng.random_range(0..b.len())));
            } else if b.is_empty() {
                b.push(a.remove(rng.random_range(0..a.len())));
            }
            let one_way = p.one_way && rng.random_bool(0.5);
            out.push(Planned {
                at_ms,
                label: format!(
                    "partition {{{}}} {} {{{}}} for {:.1}s",
                    a.join(","),
                    if one_way { "->" } else { "from" },
                    b.join(","),
                    duration_ms as f64 / 1000.0
                ),
                action: Action::Partition {
                    a,
                    b,
                    duration_ms,
                    one_way,
                },
            });
        }
    }
    if let Some(d) = &faults.db_link_drops {
        for _ in 0..d.count.draw(rng) {
            let at_ms = start(rng);
            let duration_ms = secs(d.duration_s.draw(rng));
            if d.during_push {
                let point = if rng.random_bool(0.5) {
                    WritePoint::AfterWritingSet
                } else {
                    WritePoint::AfterRefsWritten
                };
                out.push(Planned {
                    at_ms,
                    label: format!(
                        "arm database link drop at {} for {:.1}s",
                        point.name(),
                        duration_ms as f64 / 1000.0
                    ),
                    action: Action::Arm(Arm {
                        points: vec![point],
                        action: ArmedAction::DropDbLink {
                            duration: Duration::from_millis(duration_ms),
                        },
                    }),
                });
            } else {
                let device = pick(rng, devices);
                out.push(Planned {
                    at_ms,
                    label: format!(
                        "cut {device} from the database for {:.1}s",
                        duration_ms as f64 / 1000.0
                    ),
                    action: Action::Partition {
                        a: vec![device],
                        b: vec![DB_HOST.to_owned()],
                        duration_ms,
                        one_way: false,
                    },
                });
            }
        }
    }
    if let Some(s) = &faults.slow_links {
        let mut hosts: Vec<String> = devices.to_vec();
        hosts.push(DB_HOST.to_owned());
        for _ in 0..s.count.draw(rng) {
            let at_ms = start(rng);
            let duration_ms = s.hold_ms.draw(rng);
            if hosts.len() < 2 {
                continue;
            }
            let a = pick(rng, &hosts);
            let others: Vec<String> = hosts.iter().filter(|h| **h != a).cloned().collect();
            let b = pick(rng, &others);
            out.push(Planned {
                at_ms,
                label: format!(
                    "slow link {a}<->{b} for {:.1}s",
                    duration_ms as f64 / 1000.0
                ),
                action: Action::Hold { a, b, duration_ms },
            });
        }
    }
    plan_database(faults, devices, replicas, rng, &mut out);
    plan_disks(faults, devices, rng, &mut out);
    // Stable: ties keep the order drawn.
    out.sort_by_key(|p| p.at_ms);
    out
}

/// The database faults: primary strikes (and the promotion that replaces a lost primary),
/// the primary cut off from devices, replica lag spikes and strikes, a flapping primary.
fn plan_database(
    faults: &Faults,
    devices: &[String],
    replicas: &[String],
    rng: &mut ChaCha8Rng,
    out: &mut Vec<Planned>,
) {
    let start = |rng: &mut ChaCha8Rng| start_ms(faults, rng);
    if let Some(p) = &faults.db_primary_strikes {
        for _ in 0..p.count.draw(rng) {
            let at_ms = start(rng);
            let down_ms = secs(p.down_s.draw(rng));
            if let Some(point) = p.at_write_point {
                let point = write_point(point);
                let down = p.restart.then_some(Duration::from_millis(down_ms));
                out.push(armed(
                    at_ms,
                    "a strike of the primary database",
                    point,
                    down,
                    ArmedAction::StrikePrimary { down },
                ));
            } else if p.restart {
                out.push(Planned {
                    at_ms,
                    label: format!(
                        "strike the primary database for {:.1}s",
                        down_ms as f64 / 1000.0
                    ),
                    action: Action::Strike {
                        device: DB_HOST.to_owned(),
                        down_ms,
                    },
                });
            } else {
                out.push(Planned {
                    at_ms,
                    label: "lose the primary database for good".to_owned(),
                    action: Action::Lose {
                        host: DB_HOST.to_owned(),
                    },
                });
            }
            if let Some(behind) = &p.replicas_behind_s {
                let behind_ms = secs(behind.draw(rng));
                for replica in replicas {
                    out.push(Planned {
                        at_ms: at_ms.saturating_sub(behind_ms),
                        label: format!(
                            "{replica} stops receiving {:.1}s before the primary is lost",
                            behind_ms as f64 / 1000.0
                        ),
                        action: Action::Strike {
                            device: replica.clone(),
                            down_ms: behind_ms + 1000,
                        },
                    });
                }
            }
            if let Some(after) = &p.promote_after_s {
                let at_ms = at_ms + secs(after.draw(rng));
                out.push(Planned {
                    at_ms,
                    label: "operator promotes a replica and re-points the devices".to_owned(),
                    action: Action::Promote,
                });
            }
            if let Some(r) = &p.device_restarts {
                let first = if r.every_device {
                    rng.random_range(0..devices.len())
                } else {
                    0
                };
                for k in 0..r.count.draw(rng) {
                    let at_ms = at_ms + secs(r.after_s.draw(rng)) + rng.random_range(0..1000);
                    let device = if r.every_device {
                        devices[(first + k as usize) % devices.len()].clone()
                    } else {
                        devices[rng.random_range(0..devices.len())].clone()
                    };
                    let down_ms = secs(r.down_s.draw(rng));
                    out.push(Planned {
                        at_ms,
                        label: format!(
                            "restart {device} (down {:.1}s) around the change of primary",
                            down_ms as f64 / 1000.0
                        ),
                        action: Action::Strike { device, down_ms },
                    });
                }
            }
        }
    }
    if let Some(c) = &faults.db_primary_cuts {
        for _ in 0..c.count.draw(rng) {
            let at_ms = start(rng);
            let duration_ms = secs(c.duration_s.draw(rng));
            let mut cut: Vec<String> = if c.all_devices || devices.len() < 2 {
                devices.to_vec()
            } else {
                let mut some: Vec<String> = devices
                    .iter()
                    .filter(|_| rng.random_bool(0.5))
                    .cloned()
                    .collect();
                if some.is_empty() {
                    some.push(devices[rng.random_range(0..devices.len())].clone());
                } else if some.len() == devices.len() {
                    some.remove(rng.random_range(0..some.len()));
                }
                some
            };
            cut.sort();
            out.push(Planned {
                at_ms,
                label: format!(
                    "cut {{{}}} from the primary database for {:.1}s",
                    cut.join(","),
                    duration_ms as f64 / 1000.0
                ),
                action: Action::Partition {
                    a: cut,
                    b: vec![DB_HOST.to_owned()],
                    duration_ms,
                    one_way: false,
                },
            });
        }
    }
    if let (Some(l), false) = (&faults.db_replica_lag, replicas.is_empty()) {
        for _ in 0..l.count.draw(rng) {
            let at_ms = start(rng);
            let host = replicas[rng.random_range(0..replicas.len())].clone();
            let delay_ms = secs(l.delay_s.draw(rng));
            let duration_ms = secs(l.duration_s.draw(rng));
            out.push(Planned {
                at_ms,
                label: format!(
                    "{host} lags {:.1}s for {:.1}s",
                    delay_ms as f64 / 1000.0,
                    duration_ms as f64 / 1000.0
                ),
                action: Action::Lag {
                    host,
                    delay_ms,
                    duration_ms,
                },
            });
        }
    }
    if let (Some(r), false) = (&faults.db_replica_strikes, replicas.is_empty()) {
        for _ in 0..r.count.draw(rng) {
            let at_ms = start(rng);
            let device = replicas[rng.random_range(0..replicas.len())].clone();
            let down_ms = secs(r.down_s.draw(rng));
            out.push(Planned {
                at_ms,
                label: format!("strike {device} for {:.1}s", down_ms as f64 / 1000.0),
                action: Action::Strike { device, down_ms },
            });
        }
    }
    if let Some(h) = &faults.db_primary_hangs {
        for _ in 0..h.count.draw(rng) {
            let at_ms = start(rng);
            let duration_ms = secs(h.duration_s.draw(rng));
            out.push(Planned {
                at_ms,
                label: format!(
                    "the primary database hangs for {:.1}s",
                    duration_ms as f64 / 1000.0
                ),
                action: Action::Hang {
                    host: DB_HOST.to_owned(),
                    peers: devices.to_vec(),
                    duration_ms,
                },
            });
        }
    }
    if let Some(f) = &faults.db_flaps {
        for _ in 0..f.count.draw(rng) {
            let mut at_ms = start(rng);
            for _ in 0..f.cycles.draw(rng) {
                let down_ms = secs(f.down_s.draw(rng));
                out.push(Planned {
                    at_ms,
                    label: format!(
                        "flap: primary database down for {:.1}s",
                        down_ms as f64 / 1000.0
                    ),
                    action: Action::Strike {
                        device: DB_HOST.to_owned(),
                        down_ms,
                    },
                });
                at_ms += down_ms + secs(f.up_s.draw(rng));
            }
        }
    }
}

/// The disk faults: lost disks (maybe restored from an older backup) and failing syncs.
fn plan_disks(faults: &Faults, devices: &[String], rng: &mut ChaCha8Rng, out: &mut Vec<Planned>) {
    let start = |rng: &mut ChaCha8Rng| start_ms(faults, rng);
    if devices.is_empty() {
        return;
    }
    let mut backups = 0;
    // The only device of a cluster losing its disk takes every copy with it: no protocol
    // keeps an acknowledged push through that, so such a run draws no disk loss.
    if let Some(d) = faults.disk_losses.as_ref().filter(|_| devices.len() > 1) {
        for _ in 0..d.count.draw(rng) {
            let at_ms = start(rng);
            let device = devices[rng.random_range(0..devices.len())].clone();
            let down_ms = secs(d.down_s.draw(rng));
            let mut restore = None;
            if let Some(age) = &d.backup_age_s {
                if rng.random_bool(0.5) {
                    let taken_ms = at_ms.saturating_sub(secs(age.draw(rng)));
                    backups += 1;
                    restore = Some(backups);
                    out.push(Planned {
                        at_ms: taken_ms,
                        label: format!("back up {device} (backup {backups})"),
                        action: Action::Backup {
                            device: device.clone(),
                            backup: backups,
                        },
                    });
                }
            }
            let from =
                restore.map_or_else(|| "an empty disk".to_owned(), |b| format!("backup {b}"));
            out.push(Planned {
                at_ms,
                label: format!(
                    "{device} loses its disk, restarts after {:.1}s from {from}",
                    down_ms as f64 / 1000.0
                ),
                action: Action::DiskLoss {
                    device,
                    down_ms,
                    restore,
                },
            });
        }
    }
    if let Some(f) = &faults.fsync_failures {
        for _ in 0..f.count.draw(rng) {
            let at_ms = start(rng);
            let device = devices[rng.random_range(0..devices.len())].clone();
            let duration_ms = secs(f.duration_s.draw(rng));
            out.push(Planned {
                at_ms,
                label: format!(
                    "{device}'s disk fails every sync for {:.1}s",
                    duration_ms as f64 / 1000.0
                ),
                action: Action::FsyncFailure {
                    device,
                    duration_ms,
                },
            });
        }
    }
}
