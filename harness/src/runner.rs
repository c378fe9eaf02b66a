//! One run: a scenario and a seed become a turmoil simulation of the whole cluster; the
//! driver steps it, applies the nemesis's schedule, heals everything, lets the final
//! probes run, and hands the history to the checkers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use stormcell_model::config::{Profile, ProtocolConfig};
use stormcell_model::engine::{Engine, Ports};
use stormcell_model::ids::{DeviceId, Digest, RepoId, ServiceId};
use stormcell_model::plant::{Bug, Plants};
use stormcell_model::rows::{Binding, Device, Repository, Service, Topology, VersionRow};

use crate::checker::{self, Verdict};
use crate::db;
use crate::env::{
    stream_rng, ArmedAction, Board, ModeLog, SimClock, SimEvents, SimFailpoints, SimRandom,
    SimSpawn,
};
use crate::history::{
    DatabaseHosts, FaultEvent, FaultKind, FinalState, History, Outcome, Phase, Refs,
    RepositoryStart,
};
use crate::nemesis::{self, Action, Planned, DB_HOST};
use crate::net::SimNet;
use crate::operator::{lock_board, DriverRequest, OperatorBoard, OperatorRun};
use crate::scenario::{InitialRows, Scenario};
use crate::status_sampler::{self, StatusSample};
use crate::store::{Commit, SimStore};
use crate::trace::{Trace, TraceEntry};
use crate::workload::{Client, ClientSetup, Recorder, DEVICE_PORT};

/// Virtual time per simulation step. Every protocol timeout is a second or more, so a
/// 20 ms step (one network hop per step) keeps their order meaningful while a minute of
/// virtual time costs only 3,000 steps: measured on 2 cores, 20 ms gives about 1,100x time
/// compression for `steady`, 10 ms about 800x and 5 ms about 450x.
pub const TICK: Duration = Duration::from_millis(20);

pub use crate::db::DB_PORT;

/// Accept-queue and socket buffer capacity of every simulated host.
const TCP_CAPACITY: usize = 4096;

/// Random streams, one per purpose, so adding draws in one place shifts nothing else.
/// Public for the real-process runner (`stormcell-chaos`), which draws the topology, the
/// schedule and the clients' choices from the same streams.
pub mod streams {
    pub const TOPOLOGY: u64 = 1;
    pub const NEMESIS: u64 = 2;
    pub const CRASH: u64 = 3;
    pub const DATABASE: u64 = 4;
    pub const CLIENTS: u64 = 100;
    pub const OPERATOR: u64 = 900;
    pub const DEVICES: u64 = 1000;
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The scenario.
    pub scenario: Scenario,
    /// The seed.
    pub seed: u64,
    /// The protocol profile.
    pub profile: Profile,
    /// A planted bug, if any.
    pub plant: Option<Bug>,
    /// Keep every trace entry (for `--trace` and determinism checks).
    pub keep_trace: bool,
}

/// Everything a seed drew, printed in full when it fails.
#[derive(Debug, Clone, Serialize)]
pub struct Drawn {
    /// Devices.
    pub devices: Vec<String>,
    /// Repositories.
    pub repositories: Vec<String>,
    /// Message latency bounds, milliseconds.
    pub latency_ms: (u64, u64),
    /// The fault kinds used.
    pub fault_kinds: Vec<&'static str>,
    /// The fault schedule.
    pub schedule: Vec<Planned>,
}

/// How the cluster ended, as seen by the final probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinalOutcome {
    /// Every final push and read succeeded.
    Converged,
    /// Reads succeeded; pushes were refused as write interruptions.
    WriteFrozen,
    /// Everything was refused as an ambiguous leader.
    Ambiguous,
    /// Reads were served and pushes refused as read-only.
    ReadOnly,
    /// Anything else.
    Broken,
}

impl FinalOutcome {
    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            FinalOutcome::Converged => "converged",
            FinalOutcome::WriteFrozen => "write-frozen",
            FinalOutcome::Ambiguous => "ambiguous",
            FinalOutcome::ReadOnly => "read-only",
            FinalOutcome::Broken => "broken",
        }
    }
}

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Profile.
    pub profile: Profile,
    /// Planted bug.
    pub plant: Option<Bug>,
    /// What the seed drew.
    pub drawn: Drawn,
    /// The checkers' verdicts.
    pub verdicts: Vec<Verdict>,
    /// How the cluster ended.
    pub final_outcome: FinalOutcome,
    /// The history.
    pub history: History,
    /// The trace hash.
    pub trace_hash: u64,
    /// The trace, when kept.
    #[serde(skip)]
    pub trace: Option<Vec<TraceEntry>>,
    /// Virtual milliseconds simulated.
    pub virtual_ms: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Refusals seen by clients, by kind.
    pub freezes: BTreeMap<String, u64>,
    /// Set when the simulation itself failed (a host's software returned an error).
    pub sim_error: Option<String>,
    /// Per device, milliseconds spent read-only by reason.
    pub read_only_ms: BTreeMap<String, BTreeMap<String, u64>>,
    /// The service status sampled over the run (scenarios with an operator).
    pub status: Vec<StatusSample>,
    /// The rare states reached, with the virtual millisecond each was first reached.
    pub reached: BTreeMap<stormcell_model::ports::Coverage, u64>,
}

impl RunResult {
    /// Every checker's violations, one line each, in checker order.
    pub fn violation_lines(&self) -> Vec<String> {
        self.verdicts
            .iter()
            .flat_map(|v| v.violations.iter().map(ToString::to_string))
            .collect()
    }

    /// Whether every checker passed and the simulation ran to the end.
    pub fn passed(&self) -> bool {
        self.sim_error.is_none() && self.verdicts.iter().all(Verdict::passed)
    }

    /// The exact command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            "stormcell-sim replay {} --seed {}",
            self.scenario, self.seed
        );
        if self.profile != Profile::Stormcell {
            cmd.push_str(&format!(" --profile {}", self.profile));
        }
        if let Some(bug) = self.plant {
            cmd.push_str(&format!(" --plant {bug}"));
        }
        cmd
    }
}

fn device_name(i: u32) -> String {
    format!("repo{:03}", i + 1)
}

/// The cluster's starting state.
struct Setup {
    devices: Vec<String>,
    /// Devices running from the start but not registered (an operator adds them).
    spares: Vec<String>,
    repos: Vec<RepoId>,
    branches: Vec<String>,
    starts: Vec<RepositoryStart>,
    topology: Topology,
    rows: Vec<VersionRow>,
}

fn setup(scenario: &Scenario, rng: &mut rand_chacha::ChaCha8Rng) -> Setup {
    let n_devices = scenario.topology.devices.draw(rng);
    let n_repos = scenario.topology.repositories.draw(rng);
    let devices: Vec<String> = (0..n_devices).map(device_name).collect();
    let spares: Vec<String> = (n_devices..n_devices + scenario.topology.spare_devices)
        .map(device_name)
        .collect();
    let repos: Vec<RepoId> = (0..n_repos)
        .map(|i| RepoId::new(format!("R{}", i + 1)))
        .collect();
    let branches: Vec<String> = (0..scenario.workload.branches)
        .map(|i| format!("refs/heads/b{i}"))
        .collect();
    let service = ServiceId::from("svc");
    let mut topology = Topology::default();
    topology.services.insert(
        service.clone(),
        Service {
            id: service.clone(),
            closed: false,
        },
    );
    for d in &devices {
        let id = DeviceId::new(d.clone());
        topology.devices.insert(
            id.clone(),
            Device {
                id: id.clone(),
                address: format!("{d}:{DEVICE_PORT}"),
            },
        );
        topology.bindings.push(Binding {
            service: service.clone(),
            device: id,
            writable: true,
            disabled: false,
        });
    }
    let mut starts = Vec::new();
    let mut rows = Vec::new();
    for repo in &repos {
        topology.repositories.insert(
            repo.clone(),
            Repository {
                id: repo.clone(),
                service: scenario.topology.clustered.then(|| service.clone()),
                maintenance: None,
            },
        );
        let root = format!("root-{repo}");
        let refs: Refs = branches.iter().map(|b| (b.clone(), root.clone())).collect();
        let has_rows = scenario.topology.initial_rows == InitialRows::AllLeaders;
        if has_rows {
            let digest = Digest::of(refs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            for d in &devices {
                rows.push(VersionRow {
                    repo: repo.clone(),
                    device: DeviceId::new(d.clone()),
                    version: 0,
                    writing: false,
                    write_props: None,
                    lock_owner: None,
                    digest: Some(digest),
                });
            }
        }
        starts.push(RepositoryStart {
            name: repo.to_string(),
            initial_refs: refs,
            has_rows,
        });
    }
    Setup {
        devices,
        spares,
        repos,
        branches,
        starts,
        topology,
        rows,
    }
}

/// Runs one seed of one scenario.
pub fn run(spec: &RunSpec) -> RunResult {
    let scenario = &spec.scenario;
    let seed = spec.seed;
    let mut topo_rng = stream_rng(seed, streams::TOPOLOGY);
    let setup = setup(scenario, &mut topo_rng);
    let latency = (
        scenario.topology.link_latency_ms.min,
        scenario.topology.link_latency_ms.draw(&mut topo_rng),
    );
    // The nemesis has its own stream, so an explicit schedule (which draws nothing) leaves
    // every other draw of the run as it was.
    let (fault_kinds, schedule) = match &scenario.schedule {
        Some(explicit) => {
            // A scenario with a drawn number of devices may name one this run lacks.
            let replicas = (0..scenario.database.replicas).map(db::cluster::replica_name);
            let hosts: BTreeSet<String> = setup
                .devices
                .iter()
                .chain(&setup.spares)
                .cloned()
                .chain(replicas)
                .chain([DB_HOST.to_owned()])
                .collect();
            let present: Vec<_> = explicit
                .iter()
                .filter(|f| f.fault.hosts().iter().all(|h| hosts.contains(*h)))
                .cloned()
                .collect();
            (vec!["schedule"], crate::scenario::planned(&present))
        }
        None => {
            let mut nemesis_rng = stream_rng(seed, streams::NEMESIS);
            let faults = scenario.faults.apply_mix(&mut nemesis_rng);
            let replicas: Vec<String> = (0..scenario.database.replicas)
                .map(db::cluster::replica_name)
                .collect();
            let schedule = nemesis::plan(&faults, &setup.devices, &replicas, &mut nemesis_rng);
            (faults.kinds(), schedule)
        }
    };
    let drawn = Drawn {
        devices: setup.devices.clone(),
        repositories: setup.repos.iter().map(ToString::to_string).collect(),
        latency_ms: latency,
        fault_kinds,
        schedule: schedule.clone(),
    };

    let workload_ms = scenario.workload.duration_s * 1000;
    let final_start_ms = workload_ms + scenario.workload.settle_s * 1000;
    let client_timeout = Duration::from_secs(scenario.workload.client_timeout_s);
    // Generous: the final probes may wait out lock budgets on a frozen cluster.
    let limit = Duration::from_millis(final_start_ms)
        + client_timeout * 8 * (setup.devices.len() as u32 * setup.repos.len() as u32 + 4);

    let trace = Trace::new(spec.keep_trace);
    let mut sim = turmoil::Builder::new()
        .simulation_duration(limit)
        .tick_duration(TICK)
        // A hung host's links hold every connection attempt made meanwhile; released at
        // once, they must not overflow its accept queue (a real kernel would drop them;
        // turmoil gives up the whole run).
        .tcp_capacity(TCP_CAPACITY)
        .rng_seed(seed)
        .epoch(std::time::UNIX_EPOCH + Duration::from_secs(1_750_000_000))
        .min_message_latency(Duration::from_millis(latency.0))
        .max_message_latency(Duration::from_millis(latency.1.max(latency.0)))
        .build();

    // The database hosts.
    let db_cluster = db::SimDbCluster::build(
        &mut sim,
        &scenario.database,
        db::Tables::with(setup.topology.clone(), setup.rows.clone()),
        &mut stream_rng(seed, streams::DATABASE),
    );
    let modes = ModeLog::default();
    let reached = crate::coverage::ReachedLog::default();

    // The devices.
    let board = Arc::new(Mutex::new(Board::default()));
    let config = ProtocolConfig {
        profile: spec.profile,
        ..ProtocolConfig::default()
    };
    let plants = Plants::with(spec.plant);
    let mut stores: BTreeMap<String, SimStore> = BTreeMap::new();
    for (i, name) in setup.devices.iter().chain(&setup.spares).enumerate() {
        let store = SimStore::new();
        let seeded = i < setup.devices.len();
        for (repo, start) in setup.repos.iter().zip(&setup.starts).filter(|_| seeded) {
            let root = format!("root-{repo}");
            store.seed_repo(
                repo.as_str(),
                start.initial_refs.clone(),
                vec![Commit {
                    id: root,
                    parent: None,
                }],
            );
        }
        stores.insert(name.clone(), store.clone());
        let name = name.clone();
        let board = Arc::clone(&board);
        let config = config.clone();
        let trace = trace.clone();
        let rng_stream = streams::DEVICES + i as u64;
        let db_hosts = db_cluster.config.clone();
        let modes = modes.clone();
        let reached = reached.clone();
        sim.host(name.clone(), move || {
            let ports = Ports {
                db: Arc::new(db::SimDb::new(format!("{DB_HOST}:{DB_PORT}"))),
                db_hosts: db_hosts.clone(),
                store: Arc::new(store.clone()),
                net: Arc::new(SimNet::new()),
                clock: Arc::new(SimClock::default()),
                rng: Arc::new(SimRandom::new(seed, rng_stream)),
                failpoints: Arc::new(SimFailpoints {
                    device: name.clone(),
                    board: Arc::clone(&board),
                }),
                events: Arc::new(SimEvents {
                    host: name.clone(),
                    trace: trace.clone(),
                    modes: Some(modes.clone()),
                    reached: reached.clone(),
                }),
                spawn: Arc::new(SimSpawn),
            };
            let (engine, triggers) =
                Engine::new(DeviceId::new(name.clone()), config.clone(), plants, ports);
            let listen = format!("{name}:{DEVICE_PORT}");
            async move {
                stormcell_model::node::run(engine, triggers, &listen).await?;
                Ok(())
            }
        });
    }

    // The workload clients and the final prober.
    let recorder = Recorder::default();
    let initial: BTreeMap<RepoId, Refs> = setup
        .repos
        .iter()
        .cloned()
        .zip(setup.starts.iter().map(|s| s.initial_refs.clone()))
        .collect();
    let device_ids: Vec<DeviceId> = setup.devices.iter().cloned().map(DeviceId::new).collect();
    let push_devices: Vec<DeviceId> = scenario
        .workload
        .push_to
        .iter()
        .map(DeviceId::new)
        .collect();
    let client_setup = |name: String| ClientSetup {
        name,
        push_devices: push_devices.clone(),
        devices: device_ids.clone(),
        repos: setup.repos.clone(),
        branches: setup.branches.clone(),
        recorder: recorder.clone(),
        trace: trace.clone(),
        timeout: client_timeout,
    };
    // Every workload client, the final prober and the operator run as tasks of one
    // simulated host: a host costs a runtime tick every step whether it has work or not,
    // and none of them is ever struck or cut off (faults hit devices, the database and
    // their links), so separate hosts bought nothing. Each still records under its own name.
    let w = &scenario.workload;
    let mut clients = Vec::new();
    for c in 0..w.clients {
        let client = Client::new(
            client_setup(format!("client{}", c + 1)),
            stream_rng(seed, streams::CLIENTS + u64::from(c)),
            initial.clone(),
        );
        let (pw, rw) = (w.push_weight, w.read_weight);
        let think = (w.think_ms.min, w.think_ms.max);
        let rpp = (w.refs_per_push.min, w.refs_per_push.max);
        clients.push(async move {
            client.run(workload_ms, pw, rw, think, rpp).await;
        });
    }
    let prober = {
        let mut prober = Client::new(
            client_setup("prober".to_owned()),
            stream_rng(seed, streams::CLIENTS + 99),
            initial.clone(),
        );
        let all_devices: Vec<DeviceId> = setup
            .devices
            .iter()
            .chain(&setup.spares)
            .cloned()
            .map(DeviceId::new)
            .collect();
        let ask_database = scenario.operator.is_active();
        let repos = setup.repos.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(final_start_ms)).await;
            // After an operator changed bindings, probe the devices active at the end.
            let devices = if ask_database {
                active_at_end(&all_devices).await
            } else {
                all_devices
            };
            for repo in &repos {
                for device in &devices {
                    prober.read(repo, Phase::Final, Some(device)).await;
                    // A ref of its own: a workload push still running on a server
                    // cannot make the probe's compare-and-swap fail.
                    let probe_ref = format!("refs/heads/probe-{device}");
                    prober
                        .push_refs(repo, vec![probe_ref], Phase::Final, Some(device))
                        .await;
                }
            }
            for repo in &repos {
                for device in &devices {
                    prober.read(repo, Phase::Final, Some(device)).await;
                }
            }
        }
    };
    // The operator.
    let operator_board = Arc::new(Mutex::new(OperatorBoard::default()));
    let actions = Arc::new(Mutex::new(Vec::new()));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let operator = scenario.operator.is_active().then(|| {
        let run = OperatorRun {
            admin: Arc::new(stormcell_model::admin::Admin::new(
                config.clone(),
                plants,
                stormcell_model::admin::AdminPorts {
                    db: Arc::new(db::SimDb::new(format!("{DB_HOST}:{DB_PORT}"))),
                    net: Arc::new(SimNet::new()),
                    clock: Arc::new(SimClock::default()),
                    rng: Arc::new(SimRandom::new(seed, streams::OPERATOR)),
                    events: Arc::new(SimEvents {
                        host: "operator".to_owned(),
                        trace: trace.clone(),
                        modes: None,
                        reached: reached.clone(),
                    }),
                },
            )),
            script: scenario.operator.clone(),
            devices: setup.devices.clone(),
            service: ServiceId::from("svc"),
            stores: stores.clone(),
            board: Arc::clone(&operator_board),
            recorder: recorder.clone(),
            trace: trace.clone(),
            actions: Arc::clone(&actions),
            workload_ms,
            final_start_ms,
        };
        let every = Duration::from_secs(scenario.operator.sampling_s());
        let samples = Arc::clone(&samples);
        async move {
            if !every.is_zero() {
                tokio::task::spawn_local(status_sampler::run(
                    Arc::clone(&run.admin),
                    run.service.clone(),
                    every,
                    final_start_ms,
                    samples,
                ));
            }
            run.run().await;
        }
    });

    // The clients, the prober and the operator share one host (see above); the simulation
    // ends when all of them are done.
    sim.client("clients", async move {
        let mut tasks: Vec<tokio::task::JoinHandle<()>> =
            clients.into_iter().map(tokio::task::spawn_local).collect();
        tasks.push(tokio::task::spawn_local(prober));
        tasks.extend(operator.map(tokio::task::spawn_local));
        for task in tasks {
            task.await?;
        }
        Ok(())
    });

    // Drive.
    let mut crash_rng = stream_rng(seed, streams::CRASH);
    let mut driver = Driver {
        trace: trace.clone(),
        faults: Vec::new(),
        down_until: BTreeMap::new(),
        partitioned: BTreeSet::new(),
        one_way: BTreeMap::new(),
        held: BTreeSet::new(),
        timers: Vec::new(),
        db: db_cluster.clone(),
        lost: BTreeSet::new(),
        board: Arc::clone(&operator_board),
        backups: BTreeMap::new(),
        failing_disks: BTreeSet::new(),
        stores: stores.clone(),
        reached: reached.clone(),
    };
    let mut pending: std::collections::VecDeque<Planned> = schedule.into_iter().collect();
    let mut healed = false;
    let mut sim_error = None;
    loop {
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                sim_error = Some(e.to_string());
                break;
            }
        }
        let now = sim.elapsed().as_millis() as u64;
        if !healed {
            while pending.front().is_some_and(|p| p.at_ms <= now) {
                if let Some(p) = pending.pop_front() {
                    driver.apply(&mut sim, &board, &stores, &mut crash_rng, now, p);
                }
            }
            let triggered: Vec<_> =
                std::mem::take(&mut board.lock().unwrap_or_else(|e| e.into_inner()).triggered);
            for t in triggered {
                driver.triggered(&mut sim, &stores, &mut crash_rng, now, t);
            }
            let requests = std::mem::take(&mut lock_board(&operator_board).requests);
            for r in requests {
                driver.request(&mut sim, &stores, &mut crash_rng, now, r);
            }
            driver.run_timers(&mut sim, now);
            if now >= workload_ms {
                healed = true;
                board
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .armed
                    .clear();
                // A write stopped at a failpoint is struck even now, so it cannot resume.
                let triggered: Vec<_> =
                    std::mem::take(&mut board.lock().unwrap_or_else(|e| e.into_inner()).triggered);
                for t in triggered {
                    driver.triggered(&mut sim, &stores, &mut crash_rng, now, t);
                }
                driver.heal(&mut sim, now);
            }
        }
    }
    let virtual_ms = sim.elapsed().as_millis() as u64;
    drop(sim);

    // Collect.
    let expect = match spec.profile {
        Profile::Stormcell => scenario.expect.stormcell,
        Profile::Phabricator => scenario.expect.phabricator,
    };
    // Devices with an active binding at the end, as the database says.
    let active_devices: Vec<String> = {
        // Read off the primary's tables (any host's when none is configured).
        let host = db_cluster
            .primary()
            .and_then(|p| db_cluster.hosts.get(&p).cloned())
            .or_else(|| db_cluster.hosts.values().next().cloned());
        let topology = host
            .map(|h| db::lock_state(&h).tables.topology().clone())
            .unwrap_or_else(|| setup.topology.clone());
        let mut v: Vec<String> = topology
            .bindings
            .iter()
            .filter(|b| b.is_active())
            .map(|b| b.device.to_string())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let final_state = FinalState {
        active_devices,
        refs: stores
            .iter()
            .map(|(d, s)| (d.clone(), s.snapshot_refs()))
            .collect(),
    };
    let ops = recorder.operations();
    let final_outcome = classify(&ops);
    let mut freezes: BTreeMap<String, u64> = BTreeMap::new();
    for op in &ops {
        if let Outcome::Refused { error, .. } = &op.outcome {
            let name = serde_json::to_string(error)
                .unwrap_or_default()
                .trim_matches('"')
                .to_owned();
            *freezes.entry(name).or_default() += 1;
        }
    }
    let mut fault_counts: BTreeMap<String, u64> = BTreeMap::new();
    for f in &driver.faults {
        if matches!(
            f.kind,
            FaultKind::Strike | FaultKind::Partition | FaultKind::Hold
        ) {
            let key = if f.detail.starts_with("database link") {
                "db-link-drop".to_owned()
            } else {
                serde_json::to_string(&f.kind)
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_owned()
            };
            *fault_counts.entry(key).or_default() += 1;
        }
    }
    let history = History {
        availability: scenario.expect.availability.clone(),
        scenario: scenario.name.clone(),
        seed,
        profile: spec.profile.name().to_owned(),
        devices: setup.devices.clone(),
        repositories: setup.starts.clone(),
        ops,
        faults: driver.faults.clone(),
        database: (!db_cluster.replicas.is_empty()).then(|| DatabaseHosts {
            primary: db::cluster::PRIMARY.to_owned(),
            replicas: db_cluster.replicas.clone(),
            health_flips: modes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .health
                .clone(),
        }),
        expect,
        final_state,
        operator: actions.lock().unwrap_or_else(|e| e.into_inner()).clone(),
    };
    let verdicts = checker::check_all(&history);
    let status: Vec<StatusSample> = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    trace.record(
        virtual_ms,
        "harness",
        format!("final outcome {}", final_outcome.name()),
    );
    let reached_points = crate::coverage::collect(&reached, &history.faults);
    RunResult {
        scenario: scenario.name.clone(),
        seed,
        profile: spec.profile,
        plant: spec.plant,
        drawn,
        verdicts,
        final_outcome,
        history,
        trace_hash: trace.hash(),
        trace: trace.entries(),
        virtual_ms,
        faults: fault_counts,
        freezes,
        sim_error,
        read_only_ms: read_only_time(&modes, &driver.faults, virtual_ms),
        status,
        reached: reached_points,
    }
}

/// How long each device spent read-only, by reason, from its mode changes. A strike ends
/// whatever mode the device was in (its next process starts read/write).
fn read_only_time(
    modes: &ModeLog,
    faults: &[FaultEvent],
    end_ms: u64,
) -> BTreeMap<String, BTreeMap<String, u64>> {
    let changes = modes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .modes
        .clone();
    let mut timeline: Vec<(u64, &str, Option<&'static str>)> = changes
        .iter()
        .map(|c| (c.at_ms, c.device.as_str(), c.reason.map(|r| r.name())))
        .collect();
    for f in faults.iter().filter(|f| f.kind == FaultKind::Strike) {
        for h in &f.hosts {
            timeline.push((f.at_ms, h.as_str(), None));
        }
    }
    timeline.sort_by_key(|(t, ..)| *t);
    let mut open: BTreeMap<&str, (u64, &'static str)> = BTreeMap::new();
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut close = |device: &str, since: u64, reason: &str, until: u64| {
        *out.entry(device.to_owned())
            .or_default()
            .entry(reason.to_owned())
            .or_default() += until.saturating_sub(since);
    };
    for (t, device, reason) in timeline {
        if let Some((since, was)) = open.remove(device) {
            close(device, since, was, t);
        }
        if let Some(r) = reason {
            open.insert(device, (t, r));
        }
    }
    for (device, (since, was)) in open {
        close(device, since, was, end_ms);
    }
    out
}

/// The devices actively bound at the end, read from the database (all of them when it
/// cannot be read).
async fn active_at_end(all: &[DeviceId]) -> Vec<DeviceId> {
    let client = db::SimDb::new(format!("{DB_HOST}:{DB_PORT}"));
    let topology = match client.open().await {
        Ok(mut s) => stormcell_model::ports::DbSession::topology(&mut s)
            .await
            .ok(),
        Err(_) => None,
    };
    let Some(topology) = topology else {
        return all.to_vec();
    };
    all.iter()
        .filter(|d| {
            topology
                .bindings
                .iter()
                .any(|b| &b.device == *d && b.is_active())
        })
        .cloned()
        .collect()
}

/// How the final probes went.
fn classify(ops: &[crate::history::Operation]) -> FinalOutcome {
    use crate::history::{ErrorKind, OpKind};
    let finals: Vec<_> = ops.iter().filter(|o| o.phase == Phase::Final).collect();
    if finals.is_empty() {
        return FinalOutcome::Broken;
    }
    let refused = |o: &&crate::history::Operation, k: ErrorKind| matches!(&o.outcome, Outcome::Refused { error, .. } if *error == k);
    if finals.iter().all(|o| o.outcome.is_ok()) {
        return FinalOutcome::Converged;
    }
    if finals
        .iter()
        .all(|o| refused(o, ErrorKind::AmbiguousLeader))
    {
        return FinalOutcome::Ambiguous;
    }
    let reads_ok = finals
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Read))
        .all(|o| o.outcome.is_ok());
    let pushes_frozen = finals
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Push { .. }))
        .all(|o| refused(o, ErrorKind::WriteInterruption));
    if reads_ok && pushes_frozen {
        return FinalOutcome::WriteFrozen;
    }
    let pushes_read_only = finals
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Push { .. }))
        .all(|o| refused(o, ErrorKind::ReadOnly));
    if reads_ok && pushes_read_only {
        return FinalOutcome::ReadOnly;
    }
    FinalOutcome::Broken
}

/// A fault's end, scheduled.
#[derive(Debug, Clone)]
enum Timer {
    Restart(String),
    Repair(String, String),
    Release(String, String),
    LagEnd(String, u64),
    /// A device's disk makes writes durable again.
    DiskHealed(String),
}

/// Applies the schedule to the simulation and records what it did.
struct Driver {
    trace: Trace,
    faults: Vec<FaultEvent>,
    down_until: BTreeMap<String, u64>,
    partitioned: BTreeSet<(String, String)>,
    /// The cut links of `partitioned` that drop one direction only: (from, to).
    one_way: BTreeMap<(String, String), (String, String)>,
    held: BTreeSet<(String, String)>,
    timers: Vec<(u64, Timer)>,
    db: db::SimDbCluster,
    /// Hosts lost for good: healing does not bring them back.
    lost: BTreeSet<String>,
    /// Shared with the operator: what was struck or cut, what is down, its requests.
    board: Arc<Mutex<OperatorBoard>>,
    /// Backups of devices' working copies, by number, for disk losses to restore.
    backups: BTreeMap<u32, crate::store::StoreBackup>,
    /// Devices whose disk fails every sync right now.
    failing_disks: BTreeSet<String>,
    /// Every device's working copies (handles to the same stores the devices use).
    stores: BTreeMap<String, SimStore>,
    /// The run's coverage, for what only the simulated disk sees (torn writes).
    reached: crate::coverage::ReachedLog,
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

impl Driver {
    fn event(&mut self, now: u64, kind: FaultKind, hosts: Vec<String>, detail: String) {
        self.trace.record(
            now,
            "nemesis",
            format!(
                "{} {} {}",
                serde_json::to_string(&kind)
                    .unwrap_or_default()
                    .trim_matches('"'),
                hosts.join(","),
                detail
            ),
        );
        self.faults.push(FaultEvent {
            at_ms: now,
            kind,
            hosts,
            detail,
        });
    }

    #[allow(clippy::too_many_arguments)] // the driver's whole context, passed through
    fn strike(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        stores: &BTreeMap<String, SimStore>,
        rng: &mut rand_chacha::ChaCha8Rng,
        now: u64,
        device: &str,
        down_ms: Option<u64>,
        detail: String,
    ) {
        sim.crash(device);
        let report = stores.get(device).map(|s| s.crash(rng));
        for (repo, _) in report.iter().flat_map(|r| &r.repos).filter(|(_, c)| c.torn) {
            crate::coverage::torn(&self.reached, device, repo);
        }
        let detail = match report {
            Some(r) => format!("{detail}; {r}"),
            None => detail,
        };
        self.event(now, FaultKind::Strike, vec![device.to_owned()], detail);
        {
            let mut board = lock_board(&self.board);
            board.struck.push(device.to_owned());
            board.down.insert(device.to_owned());
        }
        let until = down_ms.map_or(u64::MAX, |d| now + d);
        let entry = self.down_until.entry(device.to_owned()).or_insert(0);
        *entry = (*entry).max(until);
        if until != u64::MAX {
            self.timers.push((until, Timer::Restart(device.to_owned())));
        }
    }

    #[allow(clippy::too_many_arguments)] // one link fault, spelled out
    fn cut(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        now: u64,
        a: &str,
        b: &str,
        until: u64,
        detail: &str,
        one_way: bool,
    ) {
        let p = pair(a, b);
        if self.partitioned.insert(p.clone()) {
            if one_way {
                self.one_way.insert(p.clone(), (a.to_owned(), b.to_owned()));
            }
            self.settle_link(sim, &p);
            let detail = if one_way {
                format!("{detail} (one-way: {a} -> {b} dropped)")
            } else {
                detail.to_owned()
            };
            self.event(
                now,
                FaultKind::Partition,
                vec![p.0.clone(), p.1.clone()],
                detail,
            );
        }
        self.timers.push((until, Timer::Repair(p.0, p.1)));
    }

    fn apply(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        board: &Arc<Mutex<Board>>,
        stores: &BTreeMap<String, SimStore>,
        rng: &mut rand_chacha::ChaCha8Rng,
        now: u64,
        p: Planned,
    ) {
        match p.action {
            Action::Strike { device, down_ms } => self.strike(
                sim,
                stores,
                rng,
                now,
                &device,
                Some(down_ms),
                "lightning".to_owned(),
            ),
            Action::Arm(arm) => {
                self.trace.record(now, "nemesis", p.label.clone());
                board
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .armed
                    .push(arm);
            }
            Action::Partition {
                a,
                b,
                duration_ms,
                one_way,
            } => {
                for x in &a {
                    for y in &b {
                        self.cut(sim, now, x, y, now + duration_ms, "partition", one_way);
                    }
                }
            }
            Action::Hang {
                host,
                peers,
                duration_ms,
            } => {
                for peer in &peers {
                    self.hold(sim, now, &host, peer, duration_ms, "hung host");
                }
            }
            Action::Backup { device, backup } => {
                if let Some(store) = stores.get(&device) {
                    self.backups.insert(backup, store.backup());
                    self.trace
                        .record(now, "nemesis", format!("backup {backup} of {device} taken"));
                }
            }
            Action::DiskLoss {
                device,
                down_ms,
                restore,
            } => {
                let from = match restore {
                    Some(b) => format!("restored from backup {b}"),
                    None => "an empty disk".to_owned(),
                };
                self.strike(
                    sim,
                    stores,
                    rng,
                    now,
                    &device,
                    Some(down_ms),
                    format!("disk lost; restarts on {from}"),
                );
                let from = format!("working copies lost; restarts on {from}");
                self.event(now, FaultKind::DiskLost, vec![device.clone()], from);
                if let Some(store) = stores.get(&device) {
                    match restore.and_then(|b| self.backups.get(&b)) {
                        Some(backup) => store.restore(backup),
                        None => store.wipe(),
                    }
                }
            }
            Action::FsyncFailure {
                device,
                duration_ms,
            } => {
                if let Some(store) = stores.get(&device) {
                    store.set_failing_syncs(true);
                    if self.failing_disks.insert(device.clone()) {
                        self.event(
                            now,
                            FaultKind::DiskFailing,
                            vec![device.clone()],
                            "every sync fails".to_owned(),
                        );
                    }
                    self.timers
                        .push((now + duration_ms, Timer::DiskHealed(device)));
                }
            }
            Action::Lose { host } => {
                self.lost.insert(host.clone());
                self.strike(
                    sim,
                    stores,
                    rng,
                    now,
                    &host,
                    None,
                    "lost for good".to_owned(),
                );
            }
            Action::Promote => {
                let Some(host) = self.db.best_replica() else {
                    self.trace.record(now, "operator", "no replica to promote");
                    return;
                };
                if let Some(p) = self.db.promote(&host, now) {
                    let detail = if p.lost.is_empty() {
                        format!("promoted at #{}; no database rows lost", p.at_seq)
                    } else {
                        format!(
                            "promoted at #{}; lost database rows: {}",
                            p.at_seq,
                            p.lost.join(", ")
                        )
                    };
                    self.event(now, FaultKind::Promote, vec![host], detail);
                }
            }
            Action::Lag {
                host,
                delay_ms,
                duration_ms,
            } => {
                if let Some(old) = self.db.set_delay(&host, delay_ms) {
                    self.event(
                        now,
                        FaultKind::Lag,
                        vec![host.clone()],
                        format!("replication delay {delay_ms}ms"),
                    );
                    self.timers
                        .push((now + duration_ms, Timer::LagEnd(host, old)));
                }
            }
            Action::Hold { a, b, duration_ms } => {
                self.hold(sim, now, &a, &b, duration_ms, "slow link");
            }
        }
    }

    /// Puts a link into the state its faults call for together. The engine keeps one state
    /// per direction, so a hold put on a partitioned link would lift the partition, and
    /// the end of one fault would lift the other: a partition outlasts a hold and the
    /// other way round. A cut drops what the link held (connections break); the end of
    /// the last hold delivers what it held.
    fn settle_link(&self, sim: &mut turmoil::Sim<'_>, p: &(String, String)) {
        let (a, b) = (p.0.as_str(), p.1.as_str());
        let held = self.held.contains(p);
        if !self.partitioned.contains(p) {
            if held {
                sim.hold(a, b);
            } else {
                sim.release(a, b);
            }
            return;
        }
        match self.one_way.get(p) {
            None => sim.partition(a, b),
            Some((from, to)) => {
                if held {
                    sim.hold(a, b);
                } else {
                    sim.repair(a, b);
                }
                sim.partition_oneway(from.as_str(), to.as_str());
            }
        }
    }

    fn hold(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        now: u64,
        a: &str,
        b: &str,
        duration_ms: u64,
        detail: &str,
    ) {
        let p = pair(a, b);
        if self.held.insert(p.clone()) {
            self.settle_link(sim, &p);
            self.event(
                now,
                FaultKind::Hold,
                vec![p.0.clone(), p.1.clone()],
                detail.to_owned(),
            );
        }
        self.timers
            .push((now + duration_ms, Timer::Release(p.0, p.1)));
    }

    fn triggered(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        stores: &BTreeMap<String, SimStore>,
        rng: &mut rand_chacha::ChaCha8Rng,
        now: u64,
        t: crate::env::Triggered,
    ) {
        match t.action {
            ArmedAction::Strike { down } => {
                let detail = format!("write strike at {} on {}", t.point.name(), t.repo);
                self.strike(
                    sim,
                    stores,
                    rng,
                    now,
                    &t.device,
                    down.map(|d| d.as_millis() as u64),
                    detail,
                );
            }
            ArmedAction::StrikePrimary { down } => {
                let detail = format!(
                    "primary struck at {} of a push to {} on {}",
                    t.point.name(),
                    t.repo,
                    t.device
                );
                if down.is_none() {
                    self.lost.insert(DB_HOST.to_owned());
                }
                self.strike(
                    sim,
                    stores,
                    rng,
                    now,
                    DB_HOST,
                    down.map(|d| d.as_millis() as u64),
                    detail,
                );
            }
            ArmedAction::DropDbLink { duration } => {
                let detail = format!("database link drop at {} on {}", t.point.name(), t.repo);
                lock_board(&self.board).cut.push(t.device.clone());
                self.cut(
                    sim,
                    now,
                    &t.device,
                    DB_HOST,
                    now + duration.as_millis() as u64,
                    &detail,
                    false,
                );
            }
        }
    }

    /// Applies what the operator asked for.
    fn request(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        stores: &BTreeMap<String, SimStore>,
        rng: &mut rand_chacha::ChaCha8Rng,
        now: u64,
        r: DriverRequest,
    ) {
        match r {
            DriverRequest::Strike { device, down_ms } => self.strike(
                sim,
                stores,
                rng,
                now,
                &device,
                down_ms,
                "struck by the operator".to_owned(),
            ),
            DriverRequest::Restart { device } => {
                self.end(sim, now, Timer::Restart(device), true);
            }
            DriverRequest::Partition { a, b, duration_ms } => {
                for x in &a {
                    for y in &b {
                        self.cut(
                            sim,
                            now,
                            x,
                            y,
                            now + duration_ms,
                            "partition by the operator",
                            false,
                        );
                    }
                }
            }
        }
    }

    fn run_timers(&mut self, sim: &mut turmoil::Sim<'_>, now: u64) {
        let due: Vec<Timer> = {
            let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.timers)
                .into_iter()
                .partition(|(t, _)| *t <= now);
            self.timers = rest;
            due.into_iter().map(|(_, t)| t).collect()
        };
        for t in due {
            self.end(sim, now, t, false);
        }
    }

    fn end(&mut self, sim: &mut turmoil::Sim<'_>, now: u64, t: Timer, force: bool) {
        match t {
            Timer::DiskHealed(d) => {
                let later = self
                    .timers
                    .iter()
                    .any(|(_, t)| matches!(t, Timer::DiskHealed(x) if *x == d));
                if (force || !later) && self.failing_disks.remove(&d) {
                    if let Some(store) = self.stores.get(&d) {
                        store.set_failing_syncs(false);
                    }
                    self.event(now, FaultKind::DiskRecovered, vec![d], String::new());
                }
            }
            Timer::LagEnd(host, delay_ms) => {
                if self.db.set_delay(&host, delay_ms).is_some() {
                    self.event(now, FaultKind::LagEnd, vec![host], String::new());
                }
            }
            Timer::Restart(d) => {
                let until = self.down_until.get(&d).copied().unwrap_or(0);
                if self.lost.contains(&d) {
                    return;
                }
                if (force || until <= now) && self.down_until.remove(&d).is_some() {
                    lock_board(&self.board).down.remove(&d);
                    sim.bounce(d.as_str());
                    self.event(now, FaultKind::Restart, vec![d], String::new());
                }
            }
            Timer::Repair(a, b) => {
                // A link cut twice stays cut until its last timer.
                let later = self
                    .timers
                    .iter()
                    .any(|(_, t)| matches!(t, Timer::Repair(x, y) if *x == a && *y == b));
                if (force || !later) && self.partitioned.remove(&(a.clone(), b.clone())) {
                    self.one_way.remove(&(a.clone(), b.clone()));
                    self.settle_link(sim, &(a.clone(), b.clone()));
                    self.event(now, FaultKind::Repair, vec![a, b], String::new());
                }
            }
            Timer::Release(a, b) => {
                let later = self
                    .timers
                    .iter()
                    .any(|(_, t)| matches!(t, Timer::Release(x, y) if *x == a && *y == b));
                if (force || !later) && self.held.remove(&(a.clone(), b.clone())) {
                    self.settle_link(sim, &(a.clone(), b.clone()));
                    self.event(now, FaultKind::Release, vec![a, b], String::new());
                }
            }
        }
    }

    /// Ends every fault: the workload is over and the cluster gets its chance to recover.
    fn heal(&mut self, sim: &mut turmoil::Sim<'_>, now: u64) {
        let lags: Vec<Timer> = self
            .timers
            .iter()
            .filter(|(_, t)| matches!(t, Timer::LagEnd(..) | Timer::DiskHealed(..)))
            .map(|(_, t)| t.clone())
            .collect();
        for t in lags {
            self.end(sim, now, t, true);
        }
        self.timers.clear();
        let downs: Vec<String> = self.down_until.keys().cloned().collect();
        for d in downs {
            self.end(sim, now, Timer::Restart(d), true);
        }
        let cuts: Vec<(String, String)> = self.partitioned.iter().cloned().collect();
        for (a, b) in cuts {
            self.end(sim, now, Timer::Repair(a, b), true);
        }
        let holds: Vec<(String, String)> = self.held.iter().cloned().collect();
        for (a, b) in holds {
            self.end(sim, now, Timer::Release(a, b), true);
        }
        self.trace.record(
            now,
            "nemesis",
            "healed: every device up, every link repaired",
        );
    }
}
