//! The nemesis against real processes: the simulator's drawn schedule
//! (`stormcell_harness::nemesis::plan`) applied at its times on the wall clock, each fault
//! recorded in the history as the simulator records it, and everything healed when the
//! workload ends.
//!
//! | scheduled action | done as |
//! |---|---|
//! | strike of a device | `kill -9`, restart after the down time |
//! | write strike (armed) | the nodes' failpoint armed by file; the node whose write reaches the point is killed there |
//! | partition, database link cut | the fault proxy cuts the links (both ways or one way) |
//! | slow link | the fault proxy holds the link |
//! | strike or loss of the primary, replica strike, flap | `pg_ctl stop -m immediate` (and start) |
//! | hang of the primary | SIGSTOP, then SIGCONT, to every process of the server |
//! | replica lag | `pg_wal_replay_pause()`, then resume |
//! | promotion | `stormcell db promote` with every node's configuration |
//! | backup, disk loss | the data directory copied; moved away (or replaced by the copy), then restart |
//!
//! Not supported (reported before the run and skipped): failing syncs, and the armed
//! actions other than a device strike (a database strike or link drop at a write point).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use stormcell_harness::env::ArmedAction;
use stormcell_harness::history::FaultKind;
use stormcell_harness::nemesis::{Action, Planned, DB_HOST};

use crate::cluster::Cluster;
use crate::error::{io, Result};
use crate::workload::Recorder;

/// How often the driver wakes to look at its timers and the failpoint markers.
const TICK: Duration = Duration::from_millis(50);

/// Why a scheduled action cannot be done against real processes, if it cannot.
pub fn unsupported(action: &Action) -> Option<&'static str> {
    match action {
        Action::FsyncFailure { .. } => Some("failing syncs (fsync_failures)"),
        Action::Arm(arm) => match arm.action {
            ArmedAction::Strike { .. } => None,
            ArmedAction::StrikePrimary { .. } => Some(
                "a primary database strike at a write point (db_primary_strikes.at_write_point)",
            ),
            ArmedAction::DropDbLink { .. } => {
                Some("a database link drop at a write point (db_link_drops.during_push)")
            }
        },
        _ => None,
    }
}

/// Something the driver does later.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Timer {
    RestartDevice(String),
    RestartServer(String),
    Repair(String, String),
    Release(String, String),
    Resume(String),
    ResumeReplay(String),
}

/// A write strike waiting for a write to reach its point.
#[derive(Debug, Clone)]
struct Armed {
    point: String,
    down_ms: Option<u64>,
}

/// Applies a schedule to a cluster.
pub struct Driver<'a> {
    cluster: &'a mut Cluster,
    recorder: &'a Recorder,
    timers: Vec<(u64, Timer)>,
    down_until: BTreeMap<String, u64>,
    /// Devices down for good.
    lost: Vec<String>,
    armed: Option<Armed>,
    backups: BTreeMap<u32, PathBuf>,
    disk_losses: u32,
    /// Hangs in force per database host: overlapping hangs end with the last.
    hung: BTreeMap<String, u32>,
}

impl<'a> Driver<'a> {
    /// A driver of `cluster`, recording in `recorder`.
    pub fn new(cluster: &'a mut Cluster, recorder: &'a Recorder) -> Self {
        Driver {
            cluster,
            recorder,
            timers: Vec::new(),
            down_until: BTreeMap::new(),
            lost: Vec::new(),
            armed: None,
            backups: BTreeMap::new(),
            disk_losses: 0,
            hung: BTreeMap::new(),
        }
    }

    /// Applies `schedule` (times in milliseconds since the recorder started) until
    /// `until_ms`, then heals everything. Stops early when `stop` is set.
    pub fn run(&mut self, schedule: &[Planned], until_ms: u64, stop: &AtomicBool) -> Result<()> {
        let mut next = 0;
        loop {
            let now = self.recorder.now_ms();
            if now >= until_ms || stop.load(Ordering::Relaxed) {
                break;
            }
            while next < schedule.len() && schedule[next].at_ms <= now {
                let planned = &schedule[next];
                next += 1;
                if unsupported(&planned.action).is_none() {
                    eprintln!("[{:>7.1}s] {}", now as f64 / 1000.0, planned.label);
                    self.apply(&planned.action)?;
                }
            }
            self.check_failpoints()?;
            self.fire_timers(Some(now))?;
            std::thread::sleep(TICK);
        }
        self.heal()
    }

    /// Ends every fault now: disarms the failpoints (striking a node still holding a
    /// write), repairs and releases links, wakes and restarts what is down.
    pub fn heal(&mut self) -> Result<()> {
        if self.armed.take().is_some() {
            for node in &self.cluster.nodes {
                let _ = std::fs::remove_file(node.arm_path());
            }
        }
        // A write that reached the point just before: its node holds it for good.
        self.armed = Some(Armed {
            point: String::new(),
            down_ms: Some(0),
        });
        self.check_failpoints()?;
        self.armed = None;
        self.fire_timers(None)?;
        self.cluster.proxy.heal_all();
        Ok(())
    }

    fn event(&self, kind: FaultKind, hosts: &[&str], detail: &str) {
        self.recorder.fault(
            kind,
            hosts.iter().map(|h| (*h).to_owned()).collect(),
            detail,
        );
    }

    fn later(&mut self, after_ms: u64, timer: Timer) {
        let at = self.recorder.now_ms() + after_ms;
        self.timers.push((at, timer));
    }

    fn node_index(&self, device: &str) -> Option<usize> {
        self.cluster.nodes.iter().position(|n| n.name == device)
    }

    fn is_server(&self, host: &str) -> bool {
        host == DB_HOST || self.cluster.replicas.iter().any(|r| r.name == host)
    }

    fn apply(&mut self, action: &Action) -> Result<()> {
        match action {
            Action::Strike { device, down_ms } if self.is_server(device) => {
                self.strike_server(device, Some(*down_ms))
            }
            Action::Strike { device, down_ms } => {
                self.strike_device(device, Some(*down_ms), "lightning (kill -9)")
            }
            Action::Lose { host } if self.is_server(host) => self.strike_server(host, None),
            Action::Lose { host } => self.strike_device(host, None, "lost for good (kill -9)"),
            Action::Arm(arm) => {
                if let (Some(point), ArmedAction::Strike { down }) =
                    (arm.points.first(), &arm.action)
                {
                    let armed = Armed {
                        point: point.name().to_owned(),
                        down_ms: down.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    };
                    for node in &self.cluster.nodes {
                        std::fs::write(node.arm_path(), &armed.point)
                            .map_err(io(node.arm_path()))?;
                    }
                    self.armed = Some(armed);
                }
                Ok(())
            }
            Action::Partition {
                a,
                b,
                duration_ms,
                one_way,
            } => {
                for x in a {
                    for y in b {
                        let detail = if *one_way {
                            format!("partition (one-way: {x} -> {y} dropped)")
                        } else {
                            "partition".to_owned()
                        };
                        self.event(FaultKind::Partition, &[x, y], &detail);
                        self.cluster.proxy.cut(x, y, *one_way);
                        self.later(*duration_ms, Timer::Repair(x.clone(), y.clone()));
                    }
                }
                Ok(())
            }
            Action::Hold { a, b, duration_ms } => {
                self.event(FaultKind::Hold, &[a, b], "slow link");
                self.cluster.proxy.hold(a, b);
                self.later(*duration_ms, Timer::Release(a.clone(), b.clone()));
                Ok(())
            }
            Action::Hang {
                host,
                peers,
                duration_ms,
            } => {
                let count = self.hung.entry(host.clone()).or_insert(0);
                *count += 1;
                if *count == 1 {
                    for peer in peers {
                        self.event(FaultKind::Hold, &[host, peer], "hung host (SIGSTOP)");
                    }
                    if let Some(server) = self.cluster.server_mut(host) {
                        server.signal("STOP");
                    }
                }
                self.later(*duration_ms, Timer::Resume(host.clone()));
                Ok(())
            }
            Action::Promote => self.promote(),
            Action::Lag {
                host, duration_ms, ..
            } => {
                let paused = self
                    .cluster
                    .server_mut(host)
                    .map(|r| r.psql("SELECT pg_wal_replay_pause()"));
                if let Some(Ok(_)) = paused {
                    self.event(
                        FaultKind::Lag,
                        &[host],
                        "replay paused (pg_wal_replay_pause)",
                    );
                    self.later(*duration_ms, Timer::ResumeReplay(host.clone()));
                } else {
                    eprintln!("  could not pause replay on {host}: {paused:?}");
                }
                Ok(())
            }
            Action::Backup { device, backup } => {
                if let Some(i) = self.node_index(device) {
                    let node = &self.cluster.nodes[i];
                    let to = node.dir.join(format!("backup-{backup}"));
                    let copied = std::process::Command::new("cp")
                        .arg("-a")
                        .arg(node.data_dir())
                        .arg(&to)
                        .status();
                    if copied.is_ok_and(|s| s.success()) {
                        self.backups.insert(*backup, to);
                    }
                }
                Ok(())
            }
            Action::DiskLoss {
                device,
                down_ms,
                restore,
            } => self.lose_disk(device, *down_ms, *restore),
            Action::FsyncFailure { .. } => Ok(()),
        }
    }

    fn strike_device(&mut self, device: &str, down_ms: Option<u64>, detail: &str) -> Result<()> {
        let Some(i) = self.node_index(device) else {
            return Ok(());
        };
        // The fault starts when the runner starts it: an operation failing while the
        // process dies must find its cause already in the history.
        self.event(FaultKind::Strike, &[device], detail);
        self.cluster.nodes[i].kill9();
        match down_ms {
            Some(down) => {
                let until = self.recorder.now_ms() + down;
                let entry = self.down_until.entry(device.to_owned()).or_insert(0);
                *entry = (*entry).max(until);
                self.later(down, Timer::RestartDevice(device.to_owned()));
            }
            None => self.lost.push(device.to_owned()),
        }
        Ok(())
    }

    fn strike_server(&mut self, host: &str, down_ms: Option<u64>) -> Result<()> {
        if self.cluster.server_mut(host).is_none() {
            return Ok(());
        }
        let detail = match down_ms {
            Some(_) => "pg_ctl stop -m immediate",
            None => "pg_ctl stop -m immediate; lost for good",
        };
        self.event(FaultKind::Strike, &[host], detail);
        if let Some(server) = self.cluster.server_mut(host) {
            server.stop();
        }
        match down_ms {
            Some(down) => self.later(down, Timer::RestartServer(host.to_owned())),
            None => self.lost.push(host.to_owned()),
        }
        Ok(())
    }

    fn lose_disk(&mut self, device: &str, down_ms: u64, restore: Option<u32>) -> Result<()> {
        let Some(i) = self.node_index(device) else {
            return Ok(());
        };
        let backup = restore.and_then(|b| self.backups.get(&b).cloned());
        let from = match (&backup, restore) {
            (Some(_), Some(b)) => format!("restored from backup {b}"),
            _ => "an empty data directory".to_owned(),
        };
        self.strike_device(
            device,
            Some(down_ms),
            &format!("disk lost; restarts on {from}"),
        )?;
        self.disk_losses += 1;
        let node = &self.cluster.nodes[i];
        let data = node.data_dir();
        let gone = node.dir.join(format!("data.lost-{}", self.disk_losses));
        std::fs::rename(&data, &gone).map_err(io(&data))?;
        if let Some(backup) = backup {
            let copied = std::process::Command::new("cp")
                .arg("-a")
                .arg(&backup)
                .arg(&data)
                .status();
            if !copied.is_ok_and(|s| s.success()) {
                eprintln!(
                    "  could not restore {} into {}",
                    backup.display(),
                    data.display()
                );
            }
        }
        self.event(
            FaultKind::DiskLost,
            &[device],
            &format!("data directory moved away; restarts on {from}"),
        );
        Ok(())
    }

    fn promote(&mut self) -> Result<()> {
        let Some(replica) = self
            .cluster
            .replicas
            .iter()
            .find(|r| r.running && r.name != self.cluster.current_primary)
        else {
            eprintln!("  no running replica to promote");
            return Ok(());
        };
        let name = replica.name.clone();
        let conninfo = replica.conninfo();
        let configs: Vec<String> = self
            .cluster
            .nodes
            .iter()
            .map(|n| n.config_path().display().to_string())
            .collect();
        let mut args = vec!["db", "promote", name.as_str()];
        for c in &configs {
            args.extend(["--config", c.as_str()]);
        }
        match self.cluster.admin_on(&conninfo, &args) {
            Ok(_) => {
                self.cluster.current_primary = name.clone();
                self.event(FaultKind::Promote, &[&name], "stormcell db promote");
            }
            Err(e) => eprintln!("  db promote {name} failed: {e}"),
        }
        Ok(())
    }

    /// Strikes every node whose write reached the armed point.
    fn check_failpoints(&mut self) -> Result<()> {
        let Some(armed) = self.armed.clone() else {
            return Ok(());
        };
        let hit: Vec<(String, PathBuf)> = self
            .cluster
            .nodes
            .iter()
            .filter(|n| n.marker_path().exists())
            .map(|n| (n.name.clone(), n.marker_path()))
            .collect();
        if hit.is_empty() {
            return Ok(());
        }
        for node in &self.cluster.nodes {
            let _ = std::fs::remove_file(node.arm_path());
        }
        self.armed = None;
        for (device, marker) in hit {
            let point = std::fs::read_to_string(&marker).unwrap_or(armed.point.clone());
            let _ = std::fs::remove_file(&marker);
            self.strike_device(
                &device,
                armed.down_ms,
                &format!("write strike at {} (kill -9)", point.trim()),
            )?;
        }
        Ok(())
    }

    /// Fires the timers due at `now` (every timer with `None`).
    fn fire_timers(&mut self, now: Option<u64>) -> Result<()> {
        self.timers.sort_by_key(|(at, _)| *at);
        let due: Vec<Timer> = {
            let split = self
                .timers
                .iter()
                .position(|(at, _)| now.is_some_and(|n| *at > n))
                .unwrap_or(self.timers.len());
            self.timers.drain(..split).map(|(_, t)| t).collect()
        };
        for timer in due {
            self.fire(timer, now.is_none())?;
        }
        Ok(())
    }

    fn fire(&mut self, timer: Timer, healing: bool) -> Result<()> {
        match timer {
            Timer::RestartDevice(device) => {
                let now = self.recorder.now_ms();
                let until = self.down_until.get(&device).copied().unwrap_or(0);
                if self.lost.contains(&device) || (!healing && now < until) {
                    return Ok(());
                }
                let Some(i) = self.node_index(&device) else {
                    return Ok(());
                };
                if !self.cluster.nodes[i].running() {
                    self.cluster.start_node(i)?;
                    self.event(FaultKind::Restart, &[&device], "restarted");
                }
            }
            Timer::RestartServer(host) => {
                if self.lost.contains(&host) {
                    return Ok(());
                }
                if let Some(server) = self.cluster.server_mut(&host) {
                    if !server.running {
                        server.start()?;
                        self.event(FaultKind::Restart, &[&host], "pg_ctl start");
                    }
                }
            }
            Timer::Repair(a, b) => {
                self.cluster.proxy.repair(&a, &b);
                self.event(FaultKind::Repair, &[&a, &b], "");
            }
            Timer::Release(a, b) => {
                self.cluster.proxy.release(&a, &b);
                self.event(FaultKind::Release, &[&a, &b], "");
            }
            Timer::Resume(host) => {
                let Some(count) = self.hung.get_mut(&host) else {
                    return Ok(());
                };
                *count = count.saturating_sub(1);
                if *count > 0 && !healing {
                    return Ok(());
                }
                self.hung.remove(&host);
                if let Some(server) = self.cluster.server_mut(&host) {
                    server.signal("CONT");
                }
                let peers: Vec<String> =
                    self.cluster.nodes.iter().map(|n| n.name.clone()).collect();
                for peer in peers {
                    self.event(FaultKind::Release, &[&host, &peer], "SIGCONT");
                }
            }
            Timer::ResumeReplay(host) => {
                if let Some(server) = self.cluster.server_mut(&host) {
                    let _ = server.psql("SELECT pg_wal_replay_resume()");
                }
                self.event(FaultKind::LagEnd, &[&host], "replay resumed");
            }
        }
        Ok(())
    }
}
