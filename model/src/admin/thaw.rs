//! Thaw (PROTOCOL.md 7.1): demote devices (delete their version rows) or promote one
//! (insert version 0 where a repository has no rows), under each repository's write lock,
//! with **[stormcell]** the plan of what is discarded and the salvage of what can be kept.
//!
//! **[stormcell]** Salvage has two steps (PROTOCOL.md 12). First, before any row changes,
//! each device whose working copy holds discarded refs writes them with their objects to a
//! salvage bundle on its own disk, and the bundle is recorded in the database; a bundle that
//! cannot be written stops the thaw with nothing changed, `--force` or not (`--force` only
//! skips the question: it never gives up data that could have been kept). Second, after the
//! rows changed, the same refs are pushed under `refs/salvage/...` to the device whose refs
//! survive, best effort.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::plan::{
    graph_queries, plan_demote, plan_promote, salvage_ref, Facts, Graph, GraphAnswers, Refs,
};
use super::{ActionPlan, Admin, AdminError, AdminSession, Confirm, ThawKind, ThawPlan};
use super::{DiscardSource, SalvageRecord, OPERATOR_USER};
use crate::ids::{DeviceId, Digest, Oid, RepoId, ServiceId, Version};
use crate::plant::Bug;
use crate::ports::{PushPayload, Snapshot};
use crate::rows::{row_versions, RefUpdate, Topology, VersionRow};
use crate::wire::{AncestryQuery, Request, Response};

/// Which repositories a command works on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RepoSelection {
    /// These repositories.
    Named(Vec<RepoId>),
    /// `--all-repositories`: every repository on a service the selected devices are bound
    /// to.
    All,
}

/// `--demote NAME` or `--promote NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThawTarget {
    /// A device, or a service meaning every device bound to it.
    Demote(String),
    /// A device.
    Promote(String),
}

/// `repository thaw`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThawRequest {
    /// The repositories.
    pub repos: RepoSelection,
    /// What to do.
    pub target: ThawTarget,
    /// Skip the confirmation.
    pub force: bool,
}

/// **[stormcell]** Refs kept under `refs/salvage/...` for one device whose data was
/// discarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Salvaged {
    /// The repository.
    pub repo: RepoId,
    /// The device whose refs they were.
    pub device: DeviceId,
    /// The device whose working copy now holds them, when the salvage write succeeded.
    pub to: Option<DeviceId>,
    /// Salvage ref name to commit.
    pub refs: BTreeMap<String, Oid>,
    /// Why the salvage failed, if it did.
    pub error: Option<String>,
}

/// **[stormcell]** Discarded values a thaw could not put in a bundle, for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unbundled {
    /// The repository.
    pub repo: RepoId,
    /// The device whose data they were.
    pub device: DeviceId,
    /// Why there is no bundle of them.
    pub reason: String,
}

/// What a thaw did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThawOutcome {
    /// **[stormcell]** The plan that was shown before confirming (none under phabricator).
    pub plan: Option<ThawPlan>,
    /// The actions applied: repository, device, demote or promote.
    pub applied: Vec<(RepoId, DeviceId, ThawKind)>,
    /// **[stormcell]** What was salvaged.
    pub salvaged: Vec<Salvaged>,
    /// **[stormcell]** The salvage bundles written (and recorded) before the rows changed.
    #[serde(default)]
    pub bundles: Vec<SalvageRecord>,
    /// **[stormcell]** Discarded values that are in no bundle: those seen only in the push
    /// log, because the device's working copy could not be read (a demote of a dead
    /// device) or no longer holds them.
    #[serde(default)]
    pub unbundled: Vec<Unbundled>,
    /// When the rows were changed (the clock port's milliseconds): what the plan lists
    /// was given up then, and pushes acknowledged later were not.
    pub applied_at_ms: Option<u64>,
    /// **[stormcell]** Repositories left alone because their rows changed after the plan
    /// was made (a sync recorded meanwhile); the plan no longer lists them. Run the thaw
    /// again for them.
    #[serde(default)]
    pub unchanged: Vec<RepoId>,
}

/// How many times a forced thaw plans a repository whose rows moved under it before it
/// leaves the repository alone and says so.
const REPLAN_ROUNDS: u32 = 3;

/// The devices and repositories a request names.
struct Resolved {
    kind: ThawKind,
    devices: Vec<DeviceId>,
    repos: Vec<RepoId>,
}

fn resolve(topology: &Topology, req: &ThawRequest) -> Result<Resolved, AdminError> {
    let (kind, name) = match &req.target {
        ThawTarget::Demote(n) => (ThawKind::Demote, n),
        ThawTarget::Promote(n) => (ThawKind::Promote, n),
    };
    // A name is a device first, then a service.
    let device = DeviceId::new(name.clone());
    let service = ServiceId::new(name.clone());
    let devices: Vec<DeviceId> = if topology.devices.contains_key(&device) {
        vec![device]
    } else if topology.services.contains_key(&service) {
        if kind == ThawKind::Promote {
            return Err(AdminError::PromoteService(name.clone()));
        }
        let mut v: Vec<DeviceId> = topology
            .bindings
            .iter()
            .filter(|b| b.service == service)
            .map(|b| b.device.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    } else {
        return Err(AdminError::UnknownName(name.clone()));
    };
    let repos = match &req.repos {
        RepoSelection::Named(names) => {
            let mut repos = Vec::new();
            for r in names {
                let Some(repo) = topology.repositories.get(r) else {
                    return Err(AdminError::UnknownRepository(r.clone()));
                };
                if repo.service.is_none() {
                    return Err(AdminError::NotClustered(r.clone()));
                }
                repos.push(r.clone());
            }
            repos.sort();
            repos.dedup();
            repos
        }
        RepoSelection::All => {
            let services: Vec<&ServiceId> = topology
                .bindings
                .iter()
                .filter(|b| devices.contains(&b.device))
                .map(|b| &b.service)
                .collect();
            topology
                .repositories
                .values()
                .filter(|r| r.service.as_ref().is_some_and(|s| services.contains(&s)))
                .map(|r| r.id.clone())
                .collect()
        }
    };
    if repos.is_empty() {
        return Err(AdminError::NothingSelected(format!(
            "no repository is on a service that {name} is bound to"
        )));
    }
    Ok(Resolved {
        kind,
        devices,
        repos,
    })
}

/// One repository's part of a thaw, as prepared under its write lock.
struct Prepared {
    repo: RepoId,
    rows: Vec<VersionRow>,
    /// The devices acted on.
    devices: Vec<DeviceId>,
    plans: Vec<ActionPlan>,
    /// Working copies read for the plan (kept for salvage).
    snapshots: BTreeMap<DeviceId, Snapshot>,
    /// The digest of the promoted device's working copy, when read.
    promoted_digest: Option<Digest>,
}

impl Admin {
    /// **[stormcell]** `repository thaw ... --plan`: what the thaw would discard. Changes
    /// nothing and takes no lock.
    pub async fn plan(&self, req: &ThawRequest) -> Result<ThawPlan, AdminError> {
        if !self.config.rules().thaw_plan {
            return Err(AdminError::NoPlan);
        }
        let mut session = self.connect().await?;
        let topology = session.topology().await?;
        let resolved = resolve(&topology, req)?;
        let mut plan = ThawPlan::default();
        for repo in &resolved.repos {
            let prepared = self
                .prepare(session.as_mut(), &topology, &resolved, repo, false)
                .await?;
            plan.actions.extend(prepared.plans);
        }
        Ok(plan)
    }

    /// `repository thaw`: for each selected repository, under its write lock, demotes or
    /// promotes after the operator confirmed (unless forced); then **[stormcell]** salvages
    /// what the plan found in readable working copies.
    ///
    /// **[stormcell]** The operator is asked before any lock is taken, so a person reading
    /// the plan does not stop every push to the repositories it covers; the thaw then
    /// takes the locks, plans again, and refuses with [`AdminError::PlanChanged`] when the
    /// plan is not the one accepted. Under phabricator the question is asked under the
    /// locks, as the original design does.
    pub async fn thaw(
        &self,
        req: &ThawRequest,
        confirm: &dyn Confirm,
    ) -> Result<ThawOutcome, AdminError> {
        let mut session = self.connect().await?;
        let topology = session.topology().await?;
        let resolved = resolve(&topology, req)?;
        let rules = self.config.rules();
        let lockless = resolved.kind == ThawKind::Demote && self.plants.has(Bug::DemoteWithoutLock);

        let mut unlocked = None;
        let asked = if rules.thaw_asks_before_locking && !req.force {
            let mut prepared = Vec::new();
            for repo in &resolved.repos {
                prepared.push(
                    self.prepare(session.as_mut(), &topology, &resolved, repo, false)
                        .await?,
                );
            }
            let plan = plan_of(&prepared);
            if !confirm
                .confirm(
                    "Accept the possibility of permanent data loss?",
                    &plan.render(),
                )
                .await
            {
                return Err(AdminError::Declined);
            }
            unlocked = Some(prepared);
            Some(plan)
        } else {
            None
        };

        let mut locked: Vec<RepoId> = Vec::new();
        let result = async {
            // The planted bug acts on what the operator read, with no lock and no second
            // look: whatever was written meanwhile is deleted unlisted.
            let mut prepared = match unlocked.take().filter(|_| lockless) {
                Some(prepared) => prepared,
                None => {
                    let mut prepared = Vec::new();
                    for repo in &resolved.repos {
                        if !lockless {
                            self.acquire_write(
                                session.as_mut(),
                                repo,
                                self.config.timing.thaw_lock_budget,
                            )
                            .await?;
                            locked.push(repo.clone());
                        }
                        prepared.push(
                            self.prepare(session.as_mut(), &topology, &resolved, repo, !lockless)
                                .await?,
                        );
                    }
                    prepared
                }
            };
            let plan = rules.thaw_plan.then(|| plan_of(&prepared));
            match &asked {
                Some(asked) if !lockless && plan.as_ref() != Some(asked) => {
                    return Err(AdminError::PlanChanged);
                }
                Some(_) => {}
                None if req.force => {}
                None => {
                    let details = match &plan {
                        Some(p) => p.render(),
                        None => describe(&prepared, resolved.kind),
                    };
                    if !confirm
                        .confirm("Accept the possibility of permanent data loss?", &details)
                        .await
                    {
                        return Err(AdminError::Declined);
                    }
                }
            }
            let at_ms = self.ports.clock.now_ms();
            let mut outcome = ThawOutcome {
                plan,
                applied_at_ms: Some(at_ms),
                ..ThawOutcome::default()
            };
            // Every bundle is written before any row changes, so a refusal changes nothing.
            let mut bundles = Vec::new();
            let salvage_bundle =
                rules.salvage_bundle && !self.plants.has(Bug::DiscardWithoutSalvage);
            if salvage_bundle {
                for p in &prepared {
                    bundles.push(self.bundle(&topology, p, at_ms, &mut outcome).await?);
                }
            }
            // Forced and under the locks, a plan whose rows moved is made again: only a read
            // sync can move them, and each one only brings a row up to what the others had,
            // so a few rounds settle. A plan the operator accepted is never replaced.
            let replan = req.force && asked.is_none() && !lockless;
            for (i, p) in prepared.iter_mut().enumerate() {
                let mut records = bundles.get(i).cloned().unwrap_or_default();
                let mut round = 1;
                loop {
                    for record in &records {
                        session.record_salvage(record).await?;
                        outcome.bundles.push(record.clone());
                    }
                    // [stormcell] The counts before the demote, to tell each demoted
                    // device its new count (PROTOCOL.md 12).
                    let tell = resolved.kind == ThawKind::Demote
                        && self.config.rules().demote_invalidates_claim
                        && !self.plants.has(Bug::ClaimsSurviveDemote);
                    let before = if tell {
                        session.demotions(&p.repo).await?
                    } else {
                        BTreeMap::new()
                    };
                    if self
                        .apply(session.as_mut(), p, resolved.kind, &mut outcome)
                        .await?
                    {
                        if tell {
                            self.tell_demoted(&topology, p, &before).await;
                        }
                        break;
                    }
                    if !replan || round >= REPLAN_ROUNDS {
                        outcome.unchanged.push(p.repo.clone());
                        break;
                    }
                    round += 1;
                    self.emit(format!("thaw: planning {} again (round {round})", p.repo));
                    *p = self
                        .prepare(session.as_mut(), &topology, &resolved, &p.repo, true)
                        .await?;
                    outcome.unbundled.retain(|u| u.repo != p.repo);
                    records = if salvage_bundle {
                        self.bundle(&topology, p, at_ms, &mut outcome).await?
                    } else {
                        Vec::new()
                    };
                }
            }
            if !outcome.unchanged.is_empty() && outcome.applied.is_empty() {
                return Err(AdminError::PlanChanged);
            }
            if replan && outcome.plan.is_some() {
                outcome.plan = Some(plan_of(&prepared));
            }
            // What the plan says of a repository left alone was not discarded.
            if let Some(plan) = outcome.plan.as_mut() {
                plan.actions
                    .retain(|a| !outcome.unchanged.contains(&a.repo));
            }
            Ok((outcome, prepared))
        }
        .await;
        for repo in &locked {
            self.release_write(session.as_mut(), repo).await;
        }
        let (mut outcome, prepared) = result?;
        if rules.salvage && !self.plants.has(Bug::DiscardWithoutSalvage) {
            for p in prepared
                .iter()
                .filter(|p| !outcome.unchanged.contains(&p.repo))
            {
                outcome.salvaged.extend(self.salvage(&topology, p).await);
            }
        }
        drop(session);
        Ok(outcome)
    }

    /// Reads what the plan needs and checks the promote rules, for one repository.
    /// `locked`: the thaw holds the repository's write lock, so no push can move a copy
    /// while it looks.
    async fn prepare(
        &self,
        session: &mut dyn AdminSession,
        topology: &Topology,
        resolved: &Resolved,
        repo: &RepoId,
        locked: bool,
    ) -> Result<Prepared, AdminError> {
        let rows = session.rows(repo).await?;
        let active = topology.active_devices(repo);
        let bound: Vec<DeviceId> = topology
            .bindings_of(repo)
            .iter()
            .map(|b| b.device.clone())
            .collect();
        let devices: Vec<DeviceId> = resolved
            .devices
            .iter()
            .filter(|d| bound.contains(d) || rows.iter().any(|r| &r.device == *d))
            .cloned()
            .collect();
        if resolved.kind == ThawKind::Promote {
            if let Some(device) = devices.first().or(resolved.devices.first()) {
                self.check_promote(repo, device, &rows, &active)?;
            }
        }
        let rules = self.config.rules();
        let mut prepared = Prepared {
            repo: repo.clone(),
            rows,
            devices,
            plans: Vec::new(),
            snapshots: BTreeMap::new(),
            promoted_digest: None,
        };
        // The promoted device's digest is recorded with its row under both profiles.
        if resolved.kind == ThawKind::Promote {
            if let Some(device) = prepared.devices.first() {
                if let Ok(s) = self.snapshot_of(topology, repo, device).await {
                    prepared.promoted_digest = Some(s.digest());
                    prepared.snapshots.insert(device.clone(), s);
                }
            }
        }
        if !(rules.thaw_plan || rules.salvage) {
            return Ok(prepared);
        }
        let events = session.push_events(repo, None).await?;
        let mut copies: BTreeMap<DeviceId, Result<Refs, String>> = BTreeMap::new();
        let at_stake: Vec<DeviceId> = match resolved.kind {
            ThawKind::Demote => prepared.devices.clone(),
            ThawKind::Promote => active
                .iter()
                .filter(|d| !prepared.devices.contains(d))
                .cloned()
                .collect(),
        };
        for d in &at_stake {
            match self.snapshot_of(topology, repo, d).await {
                Ok(s) => {
                    copies.insert(d.clone(), Ok(s.refs.clone()));
                    prepared.snapshots.insert(d.clone(), s);
                }
                Err(e) => {
                    copies.insert(d.clone(), Err(e));
                }
            }
        }
        let kept: Option<(DeviceId, Refs)> = match resolved.kind {
            ThawKind::Promote => prepared.devices.first().and_then(|d| {
                prepared
                    .snapshots
                    .get(d)
                    .map(|s| (d.clone(), s.refs.clone()))
            }),
            ThawKind::Demote => {
                self.surviving_leader(topology, repo, &prepared.rows, &prepared.devices, locked)
                    .await?
            }
        };
        let answers = match &kept {
            Some((device, refs)) if rules.plan_reads_commit_graph => {
                let queries = graph_queries(refs, &copies, &events);
                self.ancestry_of(topology, repo, device, queries).await
            }
            _ => Ok(None),
        };
        let graph = match &answers {
            Ok(Some(a)) => Graph::Read(a),
            Ok(None) => Graph::NotAsked,
            Err(why) => Graph::Unreadable(why),
        };
        let facts = Facts {
            repo,
            rows: &prepared.rows,
            events: &events,
            kept: kept.as_ref().map(|(d, r)| (d, r)),
            copies: &copies,
            graph,
        };
        prepared.plans = match resolved.kind {
            ThawKind::Demote => plan_demote(&facts, &prepared.devices),
            // A promote is planned against a repository without rows, the only case the
            // rules of 7.1 let through.
            ThawKind::Promote if prepared.rows.is_empty() => prepared
                .devices
                .first()
                .map(|d| vec![plan_promote(&facts, d)])
                .unwrap_or_default(),
            ThawKind::Promote => Vec::new(),
        };
        Ok(prepared)
    }

    /// **[stormcell]** Asks `device` the ancestry questions of a plan about its commit
    /// graph; `None` when there is nothing to ask, an error (why) when it cannot answer.
    async fn ancestry_of(
        &self,
        topology: &Topology,
        repo: &RepoId,
        device: &DeviceId,
        queries: Vec<AncestryQuery>,
    ) -> Result<Option<GraphAnswers>, String> {
        if queries.is_empty() {
            return Ok(None);
        }
        let request = Request::PeerAncestry {
            repo: repo.clone(),
            queries: queries.clone(),
        };
        let limit = self.config.timing.peer_request * 3;
        match self.call(topology, device, &request, limit).await? {
            Response::Ancestry { answers } if answers.len() == queries.len() => Ok(Some(
                queries
                    .into_iter()
                    .zip(answers)
                    .map(|(q, a)| ((q.ancestor, q.descendant), a))
                    .collect(),
            )),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// **[stormcell]** Has every device whose working copy holds values the plans of `p`
    /// discard write them to a salvage bundle, and returns the records to enter in the
    /// database. Values seen only in the push log are noted in `outcome` as unbundled.
    /// Fails, naming the device and the reason, when a bundle cannot be written.
    async fn bundle(
        &self,
        topology: &Topology,
        p: &Prepared,
        at_ms: u64,
        outcome: &mut ThawOutcome,
    ) -> Result<Vec<SalvageRecord>, AdminError> {
        let mut by_device: BTreeMap<DeviceId, Refs> = BTreeMap::new();
        let mut log_only: BTreeMap<DeviceId, usize> = BTreeMap::new();
        if p.plans.iter().any(|plan| !plan.discards.is_empty()) {
            self.ports
                .events
                .reached(crate::ports::Coverage::ThawPlanDiscards);
        }
        for plan in &p.plans {
            for d in &plan.discards {
                match d.source {
                    DiscardSource::WorkingCopy => {
                        by_device
                            .entry(d.device.clone())
                            .or_default()
                            .insert(d.ref_name.clone(), d.commit.clone());
                    }
                    DiscardSource::PushLog { .. } => {
                        *log_only.entry(d.device.clone()).or_default() += 1;
                    }
                }
            }
        }
        // A demoted device whose copy could not be read (often a dead one) has nothing to
        // bundle even when the log lists nothing of its own: say so all the same.
        for plan in &p.plans {
            if plan.kind == ThawKind::Demote && !p.snapshots.contains_key(&plan.device) {
                log_only.entry(plan.device.clone()).or_default();
            }
        }
        for (device, n) in log_only {
            let reason = if n == 0 {
                "the device's working copy could not be read, so there is nothing to bundle; \
                 writes on it that were never recorded are lost with it"
                    .to_owned()
            } else {
                format!(
                    "{n} discarded value(s) seen only in the push log: the device's working \
                     copy could not be read or no longer holds them, so there is nothing to \
                     bundle"
                )
            };
            outcome.unbundled.push(Unbundled {
                repo: p.repo.clone(),
                device,
                reason,
            });
        }
        let mut records = Vec::new();
        for (device, refs) in by_device {
            let version = p
                .rows
                .iter()
                .find(|r| r.device == device)
                .map(|r| r.version);
            let label = format!(
                "{device}-v{}-{at_ms}",
                version.map_or_else(|| "none".to_owned(), |v| v.to_string())
            );
            let request = Request::SalvageBundle {
                repo: p.repo.clone(),
                label,
                refs: refs.clone(),
            };
            let limit = self.config.timing.lock_budget + self.config.timing.peer_request * 6;
            let refused = |reason: String| AdminError::SalvageBundle {
                repo: p.repo.clone(),
                device: device.clone(),
                reason,
            };
            let bundle = match self.call(topology, &device, &request, limit).await {
                Ok(Response::Bundle { bundle }) if bundle.refs == refs => bundle,
                Ok(Response::Bundle { bundle }) => {
                    return Err(refused(format!(
                        "the bundle at {} holds other refs than asked",
                        bundle.location
                    )))
                }
                Ok(other) => return Err(refused(format!("unexpected answer {other:?}"))),
                Err(e) => return Err(refused(e)),
            };
            self.ports
                .events
                .reached(crate::ports::Coverage::SalvageWritten);
            self.emit(format!(
                "thaw: bundled {} ref(s) of {device} for {} at {}",
                refs.len(),
                p.repo,
                bundle.location
            ));
            records.push(SalvageRecord {
                repo: p.repo.clone(),
                device,
                version,
                at_ms,
                location: bundle.location,
                refs,
            });
        }
        Ok(records)
    }

    /// The refs of a leader among the rows that survive a demote: active devices first,
    /// in name order, the first that can be read.
    ///
    /// **[stormcell]** A leader's copy counts only when it is the one its row describes
    /// (same digest). A copy from another leader lands in the working copy before its
    /// version is recorded, and this thaw's own demote can keep it from ever being
    /// recorded (the copy is then undone): a plan that took those refs as kept would
    /// discard them unlisted. When every surviving leader's copy differs from its row, a
    /// thaw holding the write lock refuses and changes nothing. Without the lock (the plan
    /// shown before asking) pushes move copies past the rows all the time, so the first
    /// readable copy stands in: the plan is made again under the lock before anything
    /// changes.
    async fn surviving_leader(
        &self,
        topology: &Topology,
        repo: &RepoId,
        rows: &[VersionRow],
        demoted: &[DeviceId],
        locked: bool,
    ) -> Result<Option<(DeviceId, Refs)>, AdminError> {
        let survivors: Vec<&VersionRow> = rows
            .iter()
            .filter(|r| !demoted.contains(&r.device))
            .collect();
        let Some(max) = survivors.iter().map(|r| r.version).max() else {
            return Ok(None);
        };
        let mut leaders: Vec<&VersionRow> =
            survivors.into_iter().filter(|r| r.version == max).collect();
        leaders.sort_by_key(|r| (!topology.is_active(repo, &r.device), r.device.clone()));
        let mut unsettled = None;
        for row in leaders {
            let Ok(s) = self.snapshot_of(topology, repo, &row.device).await else {
                continue;
            };
            if row.digest.is_some_and(|d| d != s.digest()) {
                unsettled.get_or_insert_with(|| (row.device.clone(), s.refs));
                continue;
            }
            return Ok(Some((row.device.clone(), s.refs)));
        }
        match unsettled {
            Some((device, _)) if locked => {
                // The device settles its copy on its next sync (it records a copy it holds
                // but whose version was not recorded yet); asking it to sync now makes
                // "run the command again in a moment" true, not a wait for its next scan.
                let request = Request::Notify {
                    repo: repo.clone(),
                    version: max,
                };
                let _ = self
                    .call(topology, &device, &request, self.config.timing.peer_request)
                    .await;
                Err(AdminError::SurvivorUnsettled {
                    repo: repo.clone(),
                    device,
                })
            }
            other => Ok(other),
        }
    }

    /// The promote rules of 7.1.
    fn check_promote(
        &self,
        repo: &RepoId,
        device: &DeviceId,
        rows: &[VersionRow],
        active: &[DeviceId],
    ) -> Result<(), AdminError> {
        if !active.contains(device) {
            return Err(AdminError::PromoteInactive {
                repo: repo.clone(),
                device: device.clone(),
            });
        }
        if rows.is_empty() || self.plants.has(Bug::PromoteWithRows) {
            return Ok(());
        }
        let mut with_rows: Vec<DeviceId> = rows.iter().map(|r| r.device.clone()).collect();
        with_rows.sort();
        let (on_active, on_inactive): (Vec<DeviceId>, Vec<DeviceId>) =
            with_rows.into_iter().partition(|d| active.contains(d));
        if on_active.is_empty() {
            Err(AdminError::DemoteFirst {
                repo: repo.clone(),
                devices: on_inactive,
            })
        } else {
            Err(AdminError::HasLeaders {
                repo: repo.clone(),
                devices: on_active,
            })
        }
    }

    /// Applies one repository's actions. Returns `false`, having changed nothing, when
    /// **[stormcell]** the rows are no longer those the plan was made from.
    ///
    /// The write lock keeps pushes out, but not read syncs: a device copying from the
    /// demoted one may record that version between the plan and the demote, and the data
    /// the plan lists as discarded would then live on under that device's row. The demote is
    /// therefore conditional on the rows the plan saw, so what the plan lists is exactly
    /// what goes.
    async fn apply(
        &self,
        session: &mut dyn AdminSession,
        p: &Prepared,
        kind: ThawKind,
        outcome: &mut ThawOutcome,
    ) -> Result<bool, AdminError> {
        if kind == ThawKind::Demote {
            // Every device of one repository in one statement, so a service's demote is
            // all or nothing too.
            let with_rows = p
                .devices
                .iter()
                .filter(|d| p.rows.iter().any(|r| &r.device == *d))
                .count() as u64;
            // Both plants act on rows without a second look: the unlocked one on the plan
            // the operator read.
            let unchecked = self.plants.has(Bug::UnconditionalDemote)
                || self.plants.has(Bug::DemoteWithoutLock);
            let planned =
                (self.config.rules().thaw_plan && !unchecked).then(|| row_versions(&p.rows));
            let deleted = session
                .delete_rows(&p.repo, &p.devices, planned.as_deref())
                .await?;
            if planned.is_some() && deleted < with_rows {
                self.emit(format!(
                    "thaw: the rows of {} changed while the plan was made; nothing demoted",
                    p.repo
                ));
                return Ok(false);
            }
        }
        for device in &p.devices {
            match kind {
                ThawKind::Demote => {
                    self.emit(format!("thaw: demoted {device} for {}", p.repo));
                    self.ports
                        .events
                        .reached(crate::ports::Coverage::ThawDemoted);
                }
                ThawKind::Promote => {
                    if self.plants.has(Bug::PromoteWithRows) && !p.rows.is_empty() {
                        let max: Version = p.rows.iter().map(|r| r.version).max().unwrap_or(0);
                        session
                            .set_version(&p.repo, device, max, p.promoted_digest, None)
                            .await?;
                    } else if !session
                        .insert_initial(&p.repo, device, p.promoted_digest)
                        .await?
                    {
                        // Rows appeared since the check: someone else resolved it.
                        let rows = session.rows(&p.repo).await?;
                        return Err(AdminError::HasLeaders {
                            repo: p.repo.clone(),
                            devices: rows.into_iter().map(|r| r.device).collect(),
                        });
                    }
                    self.emit(format!("thaw: promoted {device} for {}", p.repo));
                    self.ports
                        .events
                        .reached(crate::ports::Coverage::ThawPromoted);
                }
            }
            outcome.applied.push((p.repo.clone(), device.clone(), kind));
        }
        Ok(true)
    }

    /// **[stormcell]** Tells each device whose row the demote deleted that it was demoted
    /// (PROTOCOL.md 12), so it forgets its version at once: the demote then holds even if
    /// the primary is lost before a replica has it. Best effort: a device that cannot be
    /// told meets the demote in the database on its next sync.
    async fn tell_demoted(
        &self,
        topology: &Topology,
        p: &Prepared,
        before: &BTreeMap<DeviceId, u64>,
    ) {
        for device in p
            .devices
            .iter()
            .filter(|d| p.rows.iter().any(|r| &r.device == *d))
        {
            let request = Request::Demoted {
                repo: p.repo.clone(),
                demotes: before.get(device).copied().unwrap_or(0) + 1,
            };
            let limit = self.config.timing.peer_request;
            if let Err(e) = self.call(topology, device, &request, limit).await {
                self.emit(format!(
                    "thaw: could not tell {device} it was demoted for {} ({e}); it will learn \
                     it from the database",
                    p.repo
                ));
            }
        }
    }

    /// **[stormcell]** Writes the discarded refs each readable device held under
    /// `refs/salvage/<device>/<version>/...`, as a normal push to the device whose refs
    /// survive (so the salvage is recorded, versioned and replicated like any write).
    async fn salvage(&self, topology: &Topology, p: &Prepared) -> Vec<Salvaged> {
        let mut by_device: BTreeMap<DeviceId, Vec<(String, Oid)>> = BTreeMap::new();
        let mut target: Option<DeviceId> = None;
        for plan in &p.plans {
            target = target.or_else(|| plan.kept_from.clone());
            for d in &plan.discards {
                if d.source != DiscardSource::WorkingCopy {
                    continue;
                }
                let version = p
                    .rows
                    .iter()
                    .find(|r| r.device == d.device)
                    .map(|r| r.version);
                by_device.entry(d.device.clone()).or_default().push((
                    salvage_ref(&d.device, version, &d.ref_name),
                    d.commit.clone(),
                ));
            }
        }
        let mut out = Vec::new();
        for (device, refs) in by_device {
            let mut salvaged = Salvaged {
                repo: p.repo.clone(),
                device: device.clone(),
                to: None,
                refs: refs.iter().cloned().collect(),
                error: None,
            };
            let Some(to) = target.clone() else {
                salvaged.error = Some("no surviving device to keep the refs".to_owned());
                out.push(salvaged);
                continue;
            };
            let pack = p
                .snapshots
                .get(&device)
                .map(|s| s.objects.clone())
                .unwrap_or_default();
            let payload = PushPayload {
                user: OPERATOR_USER.to_owned(),
                updates: refs
                    .iter()
                    .map(|(name, commit)| RefUpdate {
                        name: name.clone(),
                        old: None,
                        new: Some(commit.clone()),
                    })
                    .collect(),
                pack,
                spool: None,
            };
            let request = Request::Push {
                repo: p.repo.clone(),
                payload,
                progress: false,
            };
            let limit = self.config.timing.lock_budget + self.config.timing.peer_request * 6;
            match self.call(topology, &to, &request, limit).await {
                Ok(Response::PushOk { .. }) => {
                    self.emit(format!(
                        "thaw: salvaged {} ref(s) of {device} for {} onto {to}",
                        refs.len(),
                        p.repo
                    ));
                    salvaged.to = Some(to);
                }
                Ok(other) => salvaged.error = Some(format!("unexpected answer {other:?}")),
                Err(e) => salvaged.error = Some(e),
            }
            if let Some(e) = &salvaged.error {
                self.emit(format!(
                    "thaw: salvage of {device} for {} failed: {e}",
                    p.repo
                ));
            }
            out.push(salvaged);
        }
        out
    }
}

/// What the thaw will do, for the confirmation when no plan is computed.
fn describe(prepared: &[Prepared], kind: ThawKind) -> String {
    let verb = match kind {
        ThawKind::Demote => "demote",
        ThawKind::Promote => "promote",
    };
    prepared
        .iter()
        .flat_map(|p| {
            p.devices
                .iter()
                .map(move |d| format!("Repository {}: {verb} {d}\n", p.repo))
        })
        .collect()
}

/// The plan of everything `prepared` would do.
fn plan_of(prepared: &[Prepared]) -> ThawPlan {
    ThawPlan {
        actions: prepared.iter().flat_map(|p| p.plans.clone()).collect(),
    }
}
