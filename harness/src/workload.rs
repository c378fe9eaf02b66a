//! Workload clients: they push (fast-forward commits on a few branches, compare-and-swap
//! on the old value, like `git push` without force) and read on random devices, with
//! client timeouts, and record every operation in the history.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use stormcell_model::error::ErrorCode;
use stormcell_model::ids::{DeviceId, Oid, RepoId};
use stormcell_model::ports::{Network, PushPayload};
use stormcell_model::routing;
use stormcell_model::rows::RefUpdate as ModelRefUpdate;
use stormcell_model::wire::{read_frame, write_frame, Request, Response};

use crate::history::{ErrorKind, OpKind, Operation, Outcome, Phase, RefUpdate, Refs};
use crate::net::SimNet;
use crate::store::{encode_commits, Commit};
use crate::trace::{sim_now_ms, Trace};

/// The port every device's node service listens on.
pub const DEVICE_PORT: u16 = 7000;

/// Where operations go.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    ops: Arc<Mutex<Vec<Operation>>>,
    next_id: Arc<Mutex<u64>>,
}

impl Recorder {
    /// A fresh operation id.
    pub fn next_id(&self) -> u64 {
        let mut id = self.next_id.lock().unwrap_or_else(|e| e.into_inner());
        *id += 1;
        *id
    }

    /// Records a finished operation.
    pub fn push(&self, op: Operation) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// Every operation recorded, in invocation order.
    pub fn operations(&self) -> Vec<Operation> {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone();
        ops.sort_by_key(|o| (o.invoked_ms, o.id));
        ops
    }
}

/// What a client needs to know to run.
#[derive(Debug, Clone)]
pub struct ClientSetup {
    /// Its name.
    pub name: String,
    /// The devices pushes go to; empty for any of `devices`.
    pub push_devices: Vec<DeviceId>,
    /// The devices it may talk to.
    pub devices: Vec<DeviceId>,
    /// The repositories.
    pub repos: Vec<RepoId>,
    /// Branch names, such as `refs/heads/b0`.
    pub branches: Vec<String>,
    /// Where to record.
    pub recorder: Recorder,
    /// The trace.
    pub trace: Trace,
    /// Per-operation timeout.
    pub timeout: Duration,
}

/// One client talking to devices.
pub struct Client {
    setup: ClientSetup,
    rng: ChaCha8Rng,
    net: SimNet,
    /// The last values this client saw, per repository and branch.
    known: BTreeMap<RepoId, Refs>,
    commits: u64,
}

/// What one attempt of a request came back with.
enum Reply {
    Answer(Response),
    /// Nothing was sent: the device could not be reached.
    Unreachable(String),
    /// The request was sent but no answer came.
    Lost(String),
}

impl Client {
    /// A client with its own random stream.
    pub fn new(setup: ClientSetup, rng: ChaCha8Rng, initial: BTreeMap<RepoId, Refs>) -> Self {
        Client {
            setup,
            rng,
            net: SimNet::default(),
            known: initial,
            commits: 0,
        }
    }

    fn device_order(&mut self) -> Vec<DeviceId> {
        let rng = RngAdapter(Mutex::new(&mut self.rng));
        routing::read_order(&self.setup.devices, &rng)
    }

    async fn send(&self, device: &DeviceId, request: &Request) -> Reply {
        let addr = format!("{device}:{DEVICE_PORT}");
        let connect = tokio::time::timeout(self.setup.timeout, self.net.connect(&addr)).await;
        let mut conn = match connect {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Reply::Unreachable(e.to_string()),
            Err(_) => return Reply::Unreachable("connect timed out".to_owned()),
        };
        let exchange = async {
            write_frame(&mut conn, request)
                .await
                .map_err(|e| e.to_string())?;
            loop {
                match read_frame::<_, Response>(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    Response::Progress { .. } => continue,
                    answer => return Ok::<_, String>(answer),
                }
            }
        };
        match tokio::time::timeout(self.setup.timeout, exchange).await {
            Ok(Ok(answer)) => Reply::Answer(answer),
            Ok(Err(e)) => Reply::Lost(e),
            Err(_) => Reply::Lost(format!("no answer within {:?}", self.setup.timeout)),
        }
    }

    fn record(
        &self,
        device: &DeviceId,
        repo: &RepoId,
        phase: Phase,
        invoked_ms: u64,
        kind: OpKind,
        outcome: Outcome,
    ) -> Operation {
        let op = Operation {
            id: self.setup.recorder.next_id(),
            client: self.setup.name.clone(),
            device: device.to_string(),
            repo: repo.to_string(),
            phase,
            invoked_ms,
            completed_ms: sim_now_ms(),
            kind,
            outcome,
        };
        self.setup.trace.record(
            op.completed_ms,
            &self.setup.name,
            format!(
                "op {} {} {} on {}: {}",
                op.id,
                kind_name(&op.kind),
                op.repo,
                op.device,
                outcome_text(&op.outcome)
            ),
        );
        self.setup.recorder.push(op.clone());
        op
    }

    /// Reads `repo`, trying devices in routing order until one answers with something
    /// other than a reason to go elsewhere. Returns the refs seen, if any.
    pub async fn read(
        &mut self,
        repo: &RepoId,
        phase: Phase,
        only: Option<&DeviceId>,
    ) -> Option<Refs> {
        let order = match only {
            Some(d) => vec![d.clone()],
            None => self.device_order(),
        };
        for device in order {
            let invoked = sim_now_ms();
            let request = Request::Read {
                repo: repo.clone(),
                progress: false,
            };
            let (outcome, retry) = match self.send(&device, &request).await {
                Reply::Answer(Response::ReadOk {
                    refs,
                    possibly_stale,
                }) => {
                    let refs: Refs = refs.into_iter().map(|(k, v)| (k, v.0)).collect();
                    (
                        Outcome::Ok {
                            refs: Some(refs),
                            possibly_stale,
                        },
                        false,
                    )
                }
                Reply::Answer(Response::Error { code, message }) => {
                    let retry = routing::read_may_retry_elsewhere(Some(code));
                    (refusal(code, message), retry)
                }
                Reply::Answer(other) => (
                    Outcome::Unknown {
                        reason: format!("unexpected answer {other:?}"),
                    },
                    true,
                ),
                Reply::Unreachable(reason) => (
                    Outcome::Refused {
                        error: ErrorKind::Unreachable,
                        message: reason,
                    },
                    true,
                ),
                Reply::Lost(reason) => (Outcome::Unknown { reason }, true),
            };
            let op = self.record(&device, repo, phase, invoked, OpKind::Read, outcome);
            if let Outcome::Ok {
                refs: Some(refs), ..
            } = &op.outcome
            {
                self.known.insert(repo.clone(), refs.clone());
                return Some(refs.clone());
            }
            if !retry {
                return None;
            }
        }
        None
    }

    /// Pushes one new commit onto each of `count` random branches of `repo`. Tries the
    /// next device only when nothing was sent to the previous one.
    pub async fn push(
        &mut self,
        repo: &RepoId,
        count: u32,
        phase: Phase,
        only: Option<&DeviceId>,
    ) -> Option<Outcome> {
        let mut branches = self.setup.branches.clone();
        let mut chosen = Vec::new();
        for _ in 0..count.max(1).min(branches.len() as u32) {
            let i = self.rng.random_range(0..branches.len());
            chosen.push(branches.remove(i));
        }
        chosen.sort();
        self.push_refs(repo, chosen, phase, only).await
    }

    /// Pushes one new commit onto each of the named refs of `repo` (creating a ref this
    /// client has not seen). Tries the next device only when nothing was sent to the
    /// previous one.
    pub async fn push_refs(
        &mut self,
        repo: &RepoId,
        chosen: Vec<String>,
        phase: Phase,
        only: Option<&DeviceId>,
    ) -> Option<Outcome> {
        let known = self.known.get(repo).cloned().unwrap_or_default();
        let mut updates = Vec::new();
        let mut commits = Vec::new();
        for name in chosen {
            self.commits += 1;
            let new = format!("{}-{}", self.setup.name, self.commits);
            let old = known.get(&name).cloned();
            commits.push(Commit {
                id: new.clone(),
                parent: old.clone(),
            });
            updates.push(RefUpdate { name, old, new });
        }
        let payload = PushPayload {
            user: self.setup.name.clone(),
            updates: updates
                .iter()
                .map(|u| ModelRefUpdate {
                    name: u.name.clone(),
                    old: u.old.clone().map(Oid),
                    new: Some(Oid(u.new.clone())),
                })
                .collect(),
            pack: encode_commits(&commits),
            spool: None,
        };
        let order = match only {
            Some(d) => vec![d.clone()],
            None if !self.setup.push_devices.is_empty() => {
                let rng = RngAdapter(Mutex::new(&mut self.rng));
                routing::read_order(&self.setup.push_devices, &rng)
            }
            None => self.device_order(),
        };
        for device in order {
            let invoked = sim_now_ms();
            let request = Request::Push {
                repo: repo.clone(),
                payload: payload.clone(),
                progress: false,
            };
            let (outcome, retry) = match self.send(&device, &request).await {
                Reply::Answer(Response::PushOk { .. }) => (
                    Outcome::Ok {
                        refs: None,
                        possibly_stale: false,
                    },
                    false,
                ),
                Reply::Answer(Response::Error { code, message }) => (refusal(code, message), false),
                Reply::Answer(other) => (
                    Outcome::Unknown {
                        reason: format!("unexpected answer {other:?}"),
                    },
                    false,
                ),
                Reply::Unreachable(reason) => (
                    Outcome::Refused {
                        error: ErrorKind::Unreachable,
                        message: reason,
                    },
                    true,
                ),
                Reply::Lost(reason) => (Outcome::Unknown { reason }, false),
            };
            let op = self.record(
                &device,
                repo,
                phase,
                invoked,
                OpKind::Push {
                    updates: updates.clone(),
                },
                outcome,
            );
            if op.outcome.is_ok() {
                let known = self.known.entry(repo.clone()).or_default();
                for u in &updates {
                    known.insert(u.name.clone(), u.new.clone());
                }
            }
            if !retry {
                return Some(op.outcome);
            }
        }
        None
    }

    /// The workload loop: random pushes and reads until `until_ms` of virtual time.
    pub async fn run(
        mut self,
        until_ms: u64,
        push_weight: u32,
        read_weight: u32,
        think_ms: (u64, u64),
        refs_per_push: (u32, u32),
    ) {
        let mut must_read: Option<RepoId> = None;
        loop {
            let think = self.rng.random_range(think_ms.0..=think_ms.1);
            tokio::time::sleep(Duration::from_millis(think)).await;
            if sim_now_ms() >= until_ms {
                return;
            }
            let repo = match must_read.take() {
                Some(r) => {
                    self.read(&r, Phase::Workload, None).await;
                    continue;
                }
                None => self.setup.repos[self.rng.random_range(0..self.setup.repos.len())].clone(),
            };
            let total = u64::from(push_weight) + u64::from(read_weight);
            let is_push = self.rng.random_range(0..total.max(1)) < u64::from(push_weight);
            if is_push {
                let count = self.rng.random_range(refs_per_push.0..=refs_per_push.1);
                let outcome = self.push(&repo, count, Phase::Workload, None).await;
                // A rejected or uncertain push means our view is stale: look again first.
                if !matches!(outcome, Some(Outcome::Ok { .. })) {
                    must_read = Some(repo);
                }
            } else {
                self.read(&repo, Phase::Workload, None).await;
            }
        }
    }
}

fn refusal(code: ErrorCode, message: String) -> Outcome {
    let error = match code {
        ErrorCode::WriteInterruption => ErrorKind::WriteInterruption,
        ErrorCode::LeaderLost => ErrorKind::LeaderLost,
        ErrorCode::AmbiguousLeader => ErrorKind::AmbiguousLeader,
        ErrorCode::NotBound => ErrorKind::NotBound,
        ErrorCode::LockTimeout => ErrorKind::LockTimeout,
        ErrorCode::Rejected => ErrorKind::Rejected,
        ErrorCode::DatabaseUnavailable => ErrorKind::DatabaseUnavailable,
        ErrorCode::Maintenance => ErrorKind::Maintenance,
        ErrorCode::ReadOnly => ErrorKind::ReadOnly,
        ErrorCode::MayNotBeRecorded => return Outcome::Unknown { reason: message },
        ErrorCode::NotFound | ErrorCode::Internal => ErrorKind::Other,
    };
    Outcome::Refused { error, message }
}

fn kind_name(kind: &OpKind) -> String {
    match kind {
        OpKind::Read => "read".to_owned(),
        OpKind::Push { updates } => {
            let u: Vec<String> = updates
                .iter()
                .map(|u| {
                    format!(
                        "{}:{}->{}",
                        u.name.trim_start_matches("refs/heads/"),
                        u.old.as_deref().unwrap_or("-"),
                        u.new
                    )
                })
                .collect();
            format!("push [{}]", u.join(" "))
        }
    }
}

fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok {
            refs: Some(refs),
            possibly_stale,
        } => {
            let r: Vec<String> = refs
                .iter()
                .map(|(k, v)| format!("{}={v}", k.trim_start_matches("refs/heads/")))
                .collect();
            format!(
                "ok{} {}",
                if *possibly_stale {
                    " (possibly stale)"
                } else {
                    ""
                },
                r.join(" ")
            )
        }
        Outcome::Ok { refs: None, .. } => "ok".to_owned(),
        Outcome::Refused { error, .. } => format!(
            "refused ({})",
            serde_json::to_string(error)
                .unwrap_or_default()
                .trim_matches('"')
        ),
        Outcome::Unknown { reason } => format!("unknown ({reason})"),
    }
}

/// Lets routing draw from a client's own stream.
struct RngAdapter<'a>(Mutex<&'a mut ChaCha8Rng>);

impl stormcell_model::ports::Random for RngAdapter<'_> {
    fn below(&self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .random_range(0..n)
    }
}
