//! The explicit fault schedule: a scenario may list its faults one by one (`[[schedule]]`)
//! instead of letting the seed draw them from `[faults]`. `stormcell-sim shrink` writes this
//! form; a run of a scenario with a schedule applies exactly those faults, while the
//! topology, the workload and everything else still come from the seed.
//!
//! Each entry is a plain-data copy of one [`crate::nemesis::Planned`] action, so a drawn
//! schedule written out and read back reproduces the same run (same trace hash): the
//! nemesis draws from its own random stream, which nothing else reads.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::WritePoint;
use crate::env::{Arm, ArmedAction};
use crate::nemesis::{self, Action, Planned};

/// One fault of an explicit schedule.
///
/// In TOML: `at_ms`, `action` (the [`Fault`] variant, kebab-case), the variant's fields and
/// an optional `label`, such as
/// `{ at_ms = 12500, action = "strike", device = "repo002", down_ms = 4000 }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduledFault {
    /// Virtual milliseconds since the start of the run.
    pub at_ms: u64,
    /// What happens.
    #[serde(flatten)]
    pub fault: Fault,
    /// The line the trace shows for it; a description is made up when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// What one scheduled fault does (the TOML `action` key names the variant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// Crash a host (a device, a replica or `db`) and restart it after `down_ms`.
    Strike {
        /// The host.
        device: String,
        /// Milliseconds down.
        down_ms: u64,
    },
    /// Strike the device serving the next push that reaches one of `points`.
    ArmStrike {
        /// The points.
        points: Vec<WritePoint>,
        /// Milliseconds down; absent: for good.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        down_ms: Option<u64>,
    },
    /// Strike the primary database when a push reaches one of `points`.
    ArmStrikePrimary {
        /// The points.
        points: Vec<WritePoint>,
        /// Milliseconds down; absent: for good.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        down_ms: Option<u64>,
    },
    /// Cut the database link of the device serving the next push that reaches a point.
    ArmDbLinkDrop {
        /// The points.
        points: Vec<WritePoint>,
        /// Milliseconds the link stays down.
        duration_ms: u64,
    },
    /// Cut the links between the hosts of `a` and those of `b`.
    Partition {
        /// One side.
        a: Vec<String>,
        /// The other side.
        b: Vec<String>,
        /// Milliseconds until repaired.
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
    /// Promote the replica that received the most and re-point the devices.
    Promote,
    /// A replica lags `delay_ms` behind for `duration_ms`.
    Lag {
        /// The replica.
        host: String,
        /// The delay.
        delay_ms: u64,
        /// How long.
        duration_ms: u64,
    },
    /// Hold messages between two hosts.
    Hold {
        /// One host.
        a: String,
        /// The other.
        b: String,
        /// Milliseconds held.
        duration_ms: u64,
    },
    /// A host hangs towards `peers`.
    Hang {
        /// The hung host.
        host: String,
        /// The hosts that talk to it.
        peers: Vec<String>,
        /// Milliseconds hung.
        duration_ms: u64,
    },
    /// Back up a device's working copies.
    Backup {
        /// The device.
        device: String,
        /// The backup's number.
        backup: u32,
    },
    /// A device loses its disk and restarts after `down_ms`, maybe from a backup.
    DiskLoss {
        /// The device.
        device: String,
        /// Milliseconds down.
        down_ms: u64,
        /// The backup restored, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restore: Option<u32>,
    },
    /// Every sync of a device fails for `duration_ms`.
    FsyncFailure {
        /// The device.
        device: String,
        /// Milliseconds failing.
        duration_ms: u64,
    },
}

impl<'de> Deserialize<'de> for ScheduledFault {
    /// By hand: serde's `flatten` would let unknown keys through unnoticed.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(d)?;
        let at_ms = match table.remove("at_ms") {
            Some(toml::Value::Integer(n)) => {
                u64::try_from(n).map_err(|_| D::Error::custom("`at_ms` must not be negative"))?
            }
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "`at_ms` must be an integer, not {}",
                    other.type_str()
                )))
            }
            None => return Err(D::Error::missing_field("at_ms")),
        };
        let label = match table.remove("label") {
            Some(toml::Value::String(s)) => Some(s),
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "`label` must be a string, not {}",
                    other.type_str()
                )))
            }
            None => None,
        };
        let fault = Fault::deserialize(toml::Value::Table(table)).map_err(D::Error::custom)?;
        Ok(ScheduledFault {
            at_ms,
            fault,
            label,
        })
    }
}

/// The scenario's spelling of a model write point.
fn scenario_point(p: stormcell_model::ports::WritePoint) -> WritePoint {
    use stormcell_model::ports::WritePoint as M;
    match p {
        M::AfterWritingSet => WritePoint::AfterWritingSet,
        M::AfterRefsWritten => WritePoint::AfterRefsWritten,
        M::AfterVersionBump => WritePoint::AfterVersionBump,
        M::AfterAck => WritePoint::AfterAck,
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Fault {
    /// The TOML spelling of the variant, as in `action = "..."`.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Strike { .. } => "strike",
            Fault::ArmStrike { .. } => "arm-strike",
            Fault::ArmStrikePrimary { .. } => "arm-strike-primary",
            Fault::ArmDbLinkDrop { .. } => "arm-db-link-drop",
            Fault::Partition { .. } => "partition",
            Fault::Lose { .. } => "lose",
            Fault::Promote => "promote",
            Fault::Lag { .. } => "lag",
            Fault::Hold { .. } => "hold",
            Fault::Hang { .. } => "hang",
            Fault::Backup { .. } => "backup",
            Fault::DiskLoss { .. } => "disk-loss",
            Fault::FsyncFailure { .. } => "fsync-failure",
        }
    }

    /// Every host name the fault refers to.
    pub fn hosts(&self) -> Vec<&str> {
        match self {
            Fault::Strike { device, .. }
            | Fault::Backup { device, .. }
            | Fault::DiskLoss { device, .. }
            | Fault::FsyncFailure { device, .. } => vec![device.as_str()],
            Fault::Lose { host } | Fault::Lag { host, .. } => vec![host.as_str()],
            Fault::Partition { a, b, .. } => a.iter().chain(b).map(String::as_str).collect(),
            Fault::Hold { a, b, .. } => vec![a.as_str(), b.as_str()],
            Fault::Hang { host, peers, .. } => std::iter::once(host.as_str())
                .chain(peers.iter().map(String::as_str))
                .collect(),
            Fault::ArmStrike { .. }
            | Fault::ArmStrikePrimary { .. }
            | Fault::ArmDbLinkDrop { .. }
            | Fault::Promote => Vec::new(),
        }
    }

    /// The fault's length in milliseconds (downtime, cut, hold), when it has one. Shrinking
    /// shortens it through [`Fault::set_length_ms`].
    pub fn length_ms(&self) -> Option<u64> {
        match self {
            Fault::Strike { down_ms, .. } | Fault::DiskLoss { down_ms, .. } => Some(*down_ms),
            Fault::ArmStrike { down_ms, .. } | Fault::ArmStrikePrimary { down_ms, .. } => *down_ms,
            Fault::ArmDbLinkDrop { duration_ms, .. }
            | Fault::Partition { duration_ms, .. }
            | Fault::Lag { duration_ms, .. }
            | Fault::Hold { duration_ms, .. }
            | Fault::Hang { duration_ms, .. }
            | Fault::FsyncFailure { duration_ms, .. } => Some(*duration_ms),
            Fault::Lose { .. } | Fault::Promote | Fault::Backup { .. } => None,
        }
    }

    /// Sets the length [`Fault::length_ms`] reports; no effect on a fault without one.
    pub fn set_length_ms(&mut self, length: u64) {
        match self {
            Fault::Strike { down_ms, .. } | Fault::DiskLoss { down_ms, .. } => *down_ms = length,
            Fault::ArmStrike { down_ms, .. } | Fault::ArmStrikePrimary { down_ms, .. } => {
                if down_ms.is_some() {
                    *down_ms = Some(length);
                }
            }
            Fault::ArmDbLinkDrop { duration_ms, .. }
            | Fault::Partition { duration_ms, .. }
            | Fault::Lag { duration_ms, .. }
            | Fault::Hold { duration_ms, .. }
            | Fault::Hang { duration_ms, .. }
            | Fault::FsyncFailure { duration_ms, .. } => *duration_ms = length,
            Fault::Lose { .. } | Fault::Promote | Fault::Backup { .. } => {}
        }
    }
}

impl ScheduledFault {
    /// The plain-data form of a drawn action (its label kept, so the trace is the same).
    pub fn from_planned(p: &Planned) -> ScheduledFault {
        let points = |arm: &Arm| arm.points.iter().copied().map(scenario_point).collect();
        let fault = match &p.action {
            Action::Strike { device, down_ms } => Fault::Strike {
                device: device.clone(),
                down_ms: *down_ms,
            },
            Action::Arm(arm) => match &arm.action {
                ArmedAction::Strike { down } => Fault::ArmStrike {
                    points: points(arm),
                    down_ms: down.map(ms),
                },
                ArmedAction::StrikePrimary { down } => Fault::ArmStrikePrimary {
                    points: points(arm),
                    down_ms: down.map(ms),
                },
                ArmedAction::DropDbLink { duration } => Fault::ArmDbLinkDrop {
                    points: points(arm),
                    duration_ms: ms(*duration),
                },
            },
            Action::Partition {
                a,
                b,
                duration_ms,
                one_way,
            } => Fault::Partition {
                a: a.clone(),
                b: b.clone(),
                duration_ms: *duration_ms,
                one_way: *one_way,
            },
            Action::Lose { host } => Fault::Lose { host: host.clone() },
            Action::Promote => Fault::Promote,
            Action::Lag {
                host,
                delay_ms,
                duration_ms,
            } => Fault::Lag {
                host: host.clone(),
                delay_ms: *delay_ms,
                duration_ms: *duration_ms,
            },
            Action::Hold { a, b, duration_ms } => Fault::Hold {
                a: a.clone(),
                b: b.clone(),
                duration_ms: *duration_ms,
            },
            Action::Hang {
                host,
                peers,
                duration_ms,
            } => Fault::Hang {
                host: host.clone(),
                peers: peers.clone(),
                duration_ms: *duration_ms,
            },
            Action::Backup { device, backup } => Fault::Backup {
                device: device.clone(),
                backup: *backup,
            },
            Action::DiskLoss {
                device,
                down_ms,
                restore,
            } => Fault::DiskLoss {
                device: device.clone(),
                down_ms: *down_ms,
                restore: *restore,
            },
            Action::FsyncFailure {
                device,
                duration_ms,
            } => Fault::FsyncFailure {
                device: device.clone(),
                duration_ms: *duration_ms,
            },
        };
        ScheduledFault {
            at_ms: p.at_ms,
            fault,
            label: Some(p.label.clone()),
        }
    }

    /// The action the runner applies.
    pub fn to_planned(&self) -> Planned {
        let arm = |points: &[WritePoint], action: ArmedAction| {
            Action::Arm(Arm {
                points: points.iter().copied().map(nemesis::write_point).collect(),
                action,
            })
        };
        let action = match &self.fault {
            Fault::Strike { device, down_ms } => Action::Strike {
                device: device.clone(),
                down_ms: *down_ms,
            },
            Fault::ArmStrike { points, down_ms } => arm(
                points,
                ArmedAction::Strike {
                    down: down_ms.map(Duration::from_millis),
                },
            ),
            Fault::ArmStrikePrimary { points, down_ms } => arm(
                points,
                ArmedAction::StrikePrimary {
                    down: down_ms.map(Duration::from_millis),
                },
            ),
            Fault::ArmDbLinkDrop {
                points,
                duration_ms,
            } => arm(
                points,
                ArmedAction::DropDbLink {
                    duration: Duration::from_millis(*duration_ms),
                },
            ),
            Fault::Partition {
                a,
                b,
                duration_ms,
                one_way,
            } => Action::Partition {
                a: a.clone(),
                b: b.clone(),
                duration_ms: *duration_ms,
                one_way: *one_way,
            },
            Fault::Lose { host } => Action::Lose { host: host.clone() },
            Fault::Promote => Action::Promote,
            Fault::Lag {
                host,
                delay_ms,
                duration_ms,
            } => Action::Lag {
                host: host.clone(),
                delay_ms: *delay_ms,
                duration_ms: *duration_ms,
            },
            Fault::Hold { a, b, duration_ms } => Action::Hold {
                a: a.clone(),
                b: b.clone(),
                duration_ms: *duration_ms,
            },
            Fault::Hang {
                host,
                peers,
                duration_ms,
            } => Action::Hang {
                host: host.clone(),
                peers: peers.clone(),
                duration_ms: *duration_ms,
            },
            Fault::Backup { device, backup } => Action::Backup {
                device: device.clone(),
                backup: *backup,
            },
            Fault::DiskLoss {
                device,
                down_ms,
                restore,
            } => Action::DiskLoss {
                device: device.clone(),
                down_ms: *down_ms,
                restore: *restore,
            },
            Fault::FsyncFailure {
                device,
                duration_ms,
            } => Action::FsyncFailure {
                device: device.clone(),
                duration_ms: *duration_ms,
            },
        };
        let label = self.label.clone().unwrap_or_else(|| self.describe());
        Planned {
            at_ms: self.at_ms,
            action,
            label,
        }
    }

    /// A made-up trace line for an entry without a label.
    fn describe(&self) -> String {
        let length = self
            .fault
            .length_ms()
            .map(|l| format!(" for {:.1}s", l as f64 / 1000.0))
            .unwrap_or_default();
        let hosts = self.fault.hosts();
        if hosts.is_empty() {
            format!("{}{length}", self.fault.name())
        } else {
            format!("{} {}{length}", self.fault.name(), hosts.join(","))
        }
    }
}

/// The schedule a run applies, in time order (ties keep the listed order).
pub fn planned(schedule: &[ScheduledFault]) -> Vec<Planned> {
    let mut out: Vec<Planned> = schedule.iter().map(ScheduledFault::to_planned).collect();
    out.sort_by_key(|p| p.at_ms);
    out
}
