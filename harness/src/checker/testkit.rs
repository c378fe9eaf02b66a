//! A small builder of hand-made histories for the checkers' unit tests.
//!
//! The default history has two devices `R1` and `R2`, both active, one repository `repo1`
//! that starts with rows and `refs/heads/main` at `c0`, final expectation Converged, and a
//! final state where every device holds the initial refs. Tests change what they need.

use crate::history::{
    DatabaseHosts, ErrorKind, FaultEvent, FaultKind, FinalExpectation, FinalState, HealthFlip,
    History, OpKind, Operation, Outcome, Phase, RefUpdate, Refs, RepositoryStart,
};

/// Builds a [`History`] op by op.
pub(crate) struct HistoryBuilder {
    pub(crate) history: History,
    next_id: u64,
    /// Repository the `push`/`read` shortcuts use.
    repo: String,
}

/// Refs from `(name, commit)` pairs.
pub(crate) fn refs(pairs: &[(&str, &str)]) -> Refs {
    pairs
        .iter()
        .map(|(n, c)| ((*n).to_owned(), (*c).to_owned()))
        .collect()
}

/// Outcome Ok of a push.
pub(crate) fn ok() -> Outcome {
    Outcome::Ok {
        refs: None,
        possibly_stale: false,
    }
}

/// Outcome Ok of a read that saw `pairs`.
pub(crate) fn ok_refs(pairs: &[(&str, &str)]) -> Outcome {
    Outcome::Ok {
        refs: Some(refs(pairs)),
        possibly_stale: false,
    }
}

/// Outcome Ok of a read marked possibly stale that saw `pairs`.
pub(crate) fn stale_refs(pairs: &[(&str, &str)]) -> Outcome {
    Outcome::Ok {
        refs: Some(refs(pairs)),
        possibly_stale: true,
    }
}

/// A refusal of kind `error`.
pub(crate) fn refused(error: ErrorKind) -> Outcome {
    Outcome::Refused {
        error,
        message: format!("{error:?}"),
    }
}

/// An unknown outcome.
pub(crate) fn unknown() -> Outcome {
    Outcome::Unknown {
        reason: "timeout".to_owned(),
    }
}

impl HistoryBuilder {
    /// The default history described in the module documentation.
    pub(crate) fn new() -> Self {
        let devices = vec!["R1".to_owned(), "R2".to_owned()];
        let initial = refs(&[("refs/heads/main", "c0")]);
        let mut final_refs = std::collections::BTreeMap::new();
        for d in &devices {
            let mut per_repo = std::collections::BTreeMap::new();
            per_repo.insert("repo1".to_owned(), initial.clone());
            final_refs.insert(d.clone(), per_repo);
        }
        HistoryBuilder {
            history: History {
                scenario: "test".to_owned(),
                seed: 1,
                profile: "stormcell".to_owned(),
                devices: devices.clone(),
                repositories: vec![RepositoryStart {
                    name: "repo1".to_owned(),
                    initial_refs: initial,
                    has_rows: true,
                }],
                ops: Vec::new(),
                faults: Vec::new(),
                database: None,
                expect: FinalExpectation::Converged,
                availability: Default::default(),
                final_state: FinalState {
                    active_devices: devices,
                    refs: final_refs,
                },
                operator: Vec::new(),
            },
            next_id: 1,
            repo: "repo1".to_owned(),
        }
    }

    /// Sets whether `repo1` starts with version rows.
    pub(crate) fn has_rows(&mut self, has_rows: bool) -> &mut Self {
        for start in &mut self.history.repositories {
            start.has_rows = has_rows;
        }
        self
    }

    /// Sets the final expectation.
    /// The availability the history's scenario expects.
    pub(crate) fn availability(&mut self, availability: crate::history::Availability) -> &mut Self {
        self.history.availability = availability;
        self
    }

    pub(crate) fn expect(&mut self, expect: FinalExpectation) -> &mut Self {
        self.history.expect = expect;
        self
    }

    /// Sets the devices whose binding is active at the end.
    pub(crate) fn active(&mut self, devices: &[&str]) -> &mut Self {
        self.history.final_state.active_devices = devices.iter().map(|d| (*d).to_owned()).collect();
        self
    }

    /// Records an operation on any repository in any phase, invoked and completed at
    /// `times`; returns its id.
    pub(crate) fn op_full(
        &mut self,
        repo: &str,
        device: &str,
        phase: Phase,
        (invoked_ms, completed_ms): (u64, u64),
        kind: OpKind,
        outcome: Outcome,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.history.ops.push(Operation {
            id,
            client: format!("client-{device}"),
            device: device.to_owned(),
            repo: repo.to_owned(),
            phase,
            invoked_ms,
            completed_ms,
            kind,
            outcome,
        });
        id
    }

    /// Records a workload operation on `repo`; returns its id.
    pub(crate) fn op_on(
        &mut self,
        repo: &str,
        device: &str,
        invoked_ms: u64,
        completed_ms: u64,
        kind: OpKind,
        outcome: Outcome,
    ) -> u64 {
        self.op_full(
            repo,
            device,
            Phase::Workload,
            (invoked_ms, completed_ms),
            kind,
            outcome,
        )
    }

    /// Records a workload push on `repo1` with `(name, old, new)` updates.
    pub(crate) fn push(
        &mut self,
        device: &str,
        invoked_ms: u64,
        completed_ms: u64,
        updates: &[(&str, Option<&str>, &str)],
        outcome: Outcome,
    ) -> u64 {
        let repo = self.repo.clone();
        self.op_on(
            &repo,
            device,
            invoked_ms,
            completed_ms,
            push_kind(updates),
            outcome,
        )
    }

    /// Records a workload read on `repo1`.
    pub(crate) fn read(
        &mut self,
        device: &str,
        invoked_ms: u64,
        completed_ms: u64,
        outcome: Outcome,
    ) -> u64 {
        let repo = self.repo.clone();
        self.op_on(
            &repo,
            device,
            invoked_ms,
            completed_ms,
            OpKind::Read,
            outcome,
        )
    }

    /// Records a final-phase operation on `repo1`.
    pub(crate) fn final_op(
        &mut self,
        device: &str,
        at_ms: u64,
        kind: OpKind,
        outcome: Outcome,
    ) -> u64 {
        let repo = self.repo.clone();
        self.op_full(
            &repo,
            device,
            Phase::Final,
            (at_ms, at_ms + 10),
            kind,
            outcome,
        )
    }

    /// Records successful final probes on every active device, from `at_ms` on: a push
    /// without ref updates (so it changes nothing the other checkers look at) and a read
    /// that sees `seen`.
    pub(crate) fn final_probes(&mut self, at_ms: u64, seen: &[(&str, &str)]) {
        let devices = self.history.final_state.active_devices.clone();
        for (i, device) in devices.iter().enumerate() {
            let t = at_ms + 100 * i as u64;
            self.final_op(device, t, push_kind(&[]), ok());
            self.final_op(device, t + 50, OpKind::Read, ok_refs(seen));
        }
    }

    /// Sets the final refs of `repo1` on `device`.
    pub(crate) fn final_refs(&mut self, device: &str, pairs: &[(&str, &str)]) -> &mut Self {
        self.history
            .final_state
            .refs
            .entry(device.to_owned())
            .or_default()
            .insert(self.repo.clone(), refs(pairs));
        self
    }

    /// Sets the final refs of `repo1` on every device.
    pub(crate) fn final_refs_all(&mut self, pairs: &[(&str, &str)]) -> &mut Self {
        for device in self.history.devices.clone() {
            self.final_refs(&device, pairs);
        }
        self
    }

    /// Removes everything recorded in the final state for `device`.
    pub(crate) fn drop_final_state(&mut self, device: &str) -> &mut Self {
        self.history.final_state.refs.remove(device);
        self
    }

    /// Records a fault event.
    pub(crate) fn fault(&mut self, at_ms: u64, kind: FaultKind, hosts: &[&str]) -> &mut Self {
        self.history.faults.push(FaultEvent {
            at_ms,
            kind,
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            detail: String::new(),
        });
        self
    }

    /// Records a fault event with a detail (a promotion's lost rows, say).
    pub(crate) fn fault_with(
        &mut self,
        at_ms: u64,
        kind: FaultKind,
        hosts: &[&str],
        detail: &str,
    ) -> &mut Self {
        self.fault(at_ms, kind, hosts);
        if let Some(f) = self.history.faults.last_mut() {
            f.detail = detail.to_owned();
        }
        self
    }

    /// Gives the run a database primary `db` and one replica `db-r1`.
    pub(crate) fn with_replica(&mut self) -> &mut Self {
        self.history.database = Some(DatabaseHosts {
            primary: "db".to_owned(),
            replicas: vec!["db-r1".to_owned()],
            health_flips: Vec::new(),
        });
        self
    }

    /// Records that `device`'s health record of `host` flipped at `at_ms`.
    pub(crate) fn health_flip(
        &mut self,
        at_ms: u64,
        device: &str,
        host: &str,
        healthy: bool,
    ) -> &mut Self {
        if let Some(db) = &mut self.history.database {
            db.health_flips.push(HealthFlip {
                at_ms,
                device: device.to_owned(),
                host: host.to_owned(),
                healthy,
            });
        }
        self
    }

    /// The history built so far.
    pub(crate) fn build(&self) -> History {
        self.history.clone()
    }
}

/// A push op kind from `(name, old, new)` updates.
/// An operator action that succeeded and changed no rows (maintenance, clusterize, ...).
pub(crate) fn operator_action(
    started_ms: u64,
    completed_ms: u64,
    command: &str,
) -> crate::history::OperatorAction {
    crate::history::OperatorAction {
        applied_ms: None,
        started_ms,
        completed_ms,
        command: command.to_owned(),
        ok: true,
        result: "ok".to_owned(),
        demoted: Vec::new(),
        promoted: Vec::new(),
        plan: None,
    }
}

pub(crate) fn push_kind(updates: &[(&str, Option<&str>, &str)]) -> OpKind {
    OpKind::Push {
        updates: updates
            .iter()
            .map(|(name, old, new)| RefUpdate {
                name: (*name).to_owned(),
                old: old.map(str::to_owned),
                new: (*new).to_owned(),
            })
            .collect(),
    }
}
