//! Checker 8, linearizability per ref: every (repository, ref) behaves as one
//! compare-and-swap register whose operations each took effect at one instant inside
//! their interval.
//!
//! Linearizability is compositional (P-compositionality): a history is linearizable only
//! if its projection on each register is, so each ref is checked on its own. That makes
//! the check a necessary condition only: a multi-ref push is atomic across refs, which the
//! projection does not see.
//!
//! What each operation means for the register of ref `r` of repository `R`:
//! - a push to `R` with an update of `r` from `old` to `new` is a compare-and-swap (`old`
//!   absent creates the ref; the history format has no deletes). Acknowledged: took effect
//!   exactly once within `[invoked, completed]`. Refused, whatever the kind: never took
//!   effect (every refusal in the format is definite, see `Outcome::Refused`). Unknown: took
//!   effect at most once, at any moment after its invocation, or never;
//! - an acknowledged read of `R` observes `r` at one instant within its interval (absent
//!   from its refs: the ref did not exist). Reads marked possibly stale are left out while
//!   their device could be read-only, as checker 2 exempts them; anywhere else they are
//!   judged like any other read;
//! - when the run is expected to converge, each active device's final refs are one more
//!   read after everything else;
//! - a successful operator action may discard values on purpose (PROTOCOL.md 7.1): the
//!   refs its printed plan listed, and, where it demoted or promoted a row, refs that a
//!   push of unknown outcome wrote (a demote gives up what the cluster never recorded).
//!   While it runs, such a ref may be reset to any value that is not from the future (any
//!   value some push invoked by then wrote, an initial value, or absent). This is looser
//!   than the plan, which names the values and devices, but never cries wolf; other refs,
//!   and every operation outside the action's interval, are still judged;
//! - salvage refs (`refs/salvage/...`) are made by thaws, not by pushes, and are not
//!   checked.
//!
//! The search is [`search`]. When a register fails, the report gives the smallest window
//! (the latest start) that fails on its own: a window starts from any value that is not
//! from the future (or from the initial value when it starts at zero), with the pushes that
//! straddle its start free to take effect or not, so a failing window is proof by itself.
//! It names the anomaly from what the window shows: read from the future, phantom write
//! (a value no push that may have taken effect wrote), stale read (an older value than an
//! acknowledged push), non-monotonic read (an older value than an earlier read saw), lost
//! write (a value on another branch than an acknowledged or observed write), or plain "not
//! linearizable" when it is none of those.
//!
//! The search is bounded: past the bound the verdict says "INCONCLUSIVE" in a note, and
//! the rest of the register is checked from an unconstrained value.

mod search;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use search::{Act, Budget, Facts, Need, SOp, Val, ABSENT, HAVOC};

use super::discards::SALVAGE_PREFIX;
use super::timeline::{overlaps, Timeline};
use super::{end_of_run, ok_read, secs, CheckerId, Verdict, Violation};
use crate::history::{FinalExpectation, History, OpKind, Outcome};

/// Search limits of the main sweep of one register.
const MAIN_BUDGET: Budget = Budget {
    steps: 5_000_000,
    width: 20_000,
};

/// Search limits of one trial window while looking for the smallest failing one.
const WINDOW_BUDGET: Budget = Budget {
    steps: 200_000,
    width: 20_000,
};

/// Failures reported per register; the rest are counted in a note (once a register went
/// wrong, what follows is mostly the same mistake seen again).
const REPORTED_PER_REF: usize = 5;

/// Operations of a window listed in a violation.
const LISTED_PER_WINDOW: usize = 12;

/// The kind of anomaly a failing window shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Anomaly {
    /// A read saw a value older than an acknowledged push that completed before it began.
    StaleRead,
    /// A read saw a value older than one an earlier read (completed before it began) saw.
    NonMonotonicRead,
    /// An acknowledged or observed write was replaced by a write that did not build on it.
    LostWrite,
    /// A value no push that may have taken effect wrote (a refused push's, or made up).
    PhantomWrite,
    /// A value whose every write was invoked only after the observation completed.
    ReadFromTheFuture,
    /// No order explains the window, and it is none of the above.
    NotLinearizable,
}

impl Anomaly {
    /// The anomaly's name, as it starts a violation's explanation.
    pub fn name(self) -> &'static str {
        match self {
            Anomaly::StaleRead => "stale-read",
            Anomaly::NonMonotonicRead => "non-monotonic-read",
            Anomaly::LostWrite => "lost-write",
            Anomaly::PhantomWrite => "phantom-write",
            Anomaly::ReadFromTheFuture => "read-from-the-future",
            Anomaly::NotLinearizable => "not-linearizable",
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a register operation comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// `history.ops[i]`.
    Op(usize),
    /// The final refs of an active device.
    Final(usize),
    /// `history.operator[i]`.
    Action(usize),
}

/// One (repository, ref) with its operations.
struct Register<'h> {
    repo: &'h str,
    name: &'h str,
    /// Value id to commit; id 0 ([`ABSENT`]) has an empty text.
    values: Vec<&'h str>,
    ids: BTreeMap<&'h str, Val>,
    initial: Val,
    /// Per value: earliest invocation of a push that may have taken effect and wrote it.
    born: Vec<u64>,
    ops: Vec<SOp>,
    sources: Vec<Source>,
    tracked: Vec<bool>,
    /// Value to the refused pushes that wrote it.
    refused: BTreeMap<Val, Vec<u64>>,
    /// Value to the values pushes that may have taken effect moved it to.
    edges: BTreeMap<Val, BTreeSet<Val>>,
}

impl<'h> Register<'h> {
    fn new(repo: &'h str, name: &'h str) -> Self {
        Register {
            repo,
            name,
            values: vec![""],
            ids: BTreeMap::new(),
            initial: ABSENT,
            born: vec![u64::MAX],
            ops: Vec::new(),
            sources: Vec::new(),
            tracked: Vec::new(),
            refused: BTreeMap::new(),
            edges: BTreeMap::new(),
        }
    }

    fn intern(&mut self, commit: Option<&'h str>) -> Val {
        let Some(commit) = commit else {
            return ABSENT;
        };
        if let Some(&id) = self.ids.get(commit) {
            return id;
        }
        let id = self.values.len() as Val;
        self.values.push(commit);
        self.born.push(u64::MAX);
        self.ids.insert(commit, id);
        id
    }

    fn push_op(&mut self, op: SOp, source: Source) {
        self.ops.push(op);
        self.sources.push(source);
    }

    fn show(&self, v: Val) -> String {
        match v {
            ABSENT => format!("no {}", self.name),
            HAVOC => "any value".to_owned(),
            v => self
                .values
                .get(v as usize)
                .copied()
                .unwrap_or("?")
                .to_owned(),
        }
    }

    /// Whether `to` follows `from` through writes that may have taken effect.
    fn reaches(&self, from: Val, to: Val) -> bool {
        let mut seen = BTreeSet::from([from]);
        let mut stack = vec![from];
        while let Some(v) = stack.pop() {
            if v == to {
                return true;
            }
            for &n in self.edges.get(&v).into_iter().flatten() {
                if seen.insert(n) {
                    stack.push(n);
                }
            }
        }
        false
    }

    /// Marks the unknown writes that must be remembered once they took effect: those whose
    /// expected value can come back, because it has several sources or the writes form a
    /// cycle. Elsewhere a value is entered at most once, so leaving it is enough.
    fn finish(&mut self) {
        let mut sources = vec![0u32; self.values.len()];
        if let Some(s) = sources.get_mut(self.initial as usize) {
            *s += 1;
        }
        for op in &self.ops {
            if let Act::Cas { new, .. } = op.act {
                if let Some(s) = sources.get_mut(new as usize) {
                    *s += 1;
                }
            }
        }
        let cyclic = self.has_cycle();
        self.tracked = self
            .ops
            .iter()
            .map(|op| match (op.need, op.act) {
                (Need::Forever, Act::Cas { old, .. }) => {
                    cyclic || sources.get(old as usize).is_some_and(|&s| s >= 2)
                }
                _ => false,
            })
            .collect();
    }

    fn has_cycle(&self) -> bool {
        let mut indegree: BTreeMap<Val, usize> = BTreeMap::new();
        for (&from, tos) in &self.edges {
            indegree.entry(from).or_default();
            for &to in tos {
                *indegree.entry(to).or_default() += 1;
            }
        }
        let total = indegree.len();
        let mut ready: Vec<Val> = indegree
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&v, _)| v)
            .collect();
        let mut done = 0;
        while let Some(v) = ready.pop() {
            done += 1;
            for &to in self.edges.get(&v).into_iter().flatten() {
                if let Some(d) = indegree.get_mut(&to) {
                    *d -= 1;
                    if *d == 0 {
                        ready.push(to);
                    }
                }
            }
        }
        done < total
    }
}

/// One failing window.
#[derive(Debug, Clone)]
struct Finding {
    /// What the window shows.
    anomaly: Anomaly,
    /// The ids of the history operations in the window (final-state reads and operator
    /// actions have none), in order of invocation. The explanation lists them in words;
    /// the tests check this list.
    #[cfg_attr(not(test), allow(dead_code))]
    window_ops: Vec<u64>,
    /// The violation as reported.
    violation: Violation,
}

/// What the checker found, before it becomes a verdict.
#[derive(Debug, Default)]
struct Analysis {
    findings: Vec<Finding>,
    notes: Vec<String>,
    /// Registers whose search ran out of budget somewhere.
    inconclusive: usize,
}

/// Runs the linearizability checker.
pub(crate) fn check(history: &History) -> Verdict {
    let analysis = analyse(history, MAIN_BUDGET);
    let mut verdict = Verdict::new(CheckerId::Linearizable);
    verdict.violations = analysis.findings.into_iter().map(|f| f.violation).collect();
    verdict.notes = analysis.notes;
    verdict
}

/// The finds and notes of the checker, with the main sweep's budget given.
fn analyse(history: &History, budget: Budget) -> Analysis {
    let mut analysis = Analysis::default();
    let built = build(history);
    let mut totals = [0usize; 4];
    let mut steps = 0u64;
    for reg in &built.registers {
        for op in &reg.ops {
            let slot = match (op.act, op.need) {
                (Act::Cas { .. }, Need::Required) => 0,
                (Act::Cas { .. }, _) => 1,
                (Act::Read(_), _) => 2,
                (Act::Havoc, _) => 3,
            };
            totals[slot] += 1;
        }
        let facts = Facts {
            born: &reg.born,
            tracked: &reg.tracked,
        };
        let outcome = search::sweep(&reg.ops, &facts, reg.initial, u64::MAX, budget, false);
        steps += outcome.steps;
        if !outcome.exhausted.is_empty() {
            analysis.inconclusive += 1;
        }
        for e in &outcome.exhausted {
            analysis.notes.push(format!(
                "INCONCLUSIVE: {} {} at {}: the search bound of {} configurations was reached; \
                 the operations before it are not judged, those after it are judged from an \
                 unconstrained value",
                reg.repo,
                reg.name,
                secs(e.at_ms),
                budget.steps
            ));
        }
        // Windows may not reach back past an earlier failure or exhaustion: the sweep went on
        // from a guess there, which a window cannot repeat.
        let mut cuts: Vec<u64> = outcome.exhausted.iter().map(|e| e.at_ms).collect();
        let mut reported = 0usize;
        let mut cascades = 0usize;
        for failure in &outcome.failures {
            let lower = cuts.iter().copied().filter(|&c| c < failure.at_ms).max();
            cuts.push(failure.at_ms);
            if reported >= REPORTED_PER_REF {
                continue;
            }
            match describe(history, &built, reg, failure.op, lower) {
                Some(finding) => {
                    reported += 1;
                    analysis.findings.push(finding);
                }
                None => cascades += 1,
            }
        }
        if cascades > 0 {
            analysis.notes.push(format!(
                "{} {}: {cascades} later failing operations not reported: no window after \
                 the earlier failure fails on its own, so they may only echo it",
                reg.repo, reg.name
            ));
        }
        let unlisted = outcome.failures.len() - reported - cascades;
        if unlisted > 0 {
            analysis.notes.push(format!(
                "{} {}: {unlisted} more failing operations after the first {reported} not \
                 listed",
                reg.repo, reg.name
            ));
        }
    }
    analysis.findings.sort_by(|a, b| {
        (a.violation.at_ms, a.violation.op).cmp(&(b.violation.at_ms, b.violation.op))
    });
    let mut notes = vec![format!(
        "checked {} refs in {} repositories as compare-and-swap registers: {} acknowledged \
         and {} unknown push updates, {} read observations (final state included), {} \
         operator windows; {steps} configurations visited",
        built.registers.len(),
        built.repositories,
        totals[0],
        totals[1],
        totals[2],
        totals[3]
    )];
    notes.push(format!(
        "exempted {} possibly-stale reads while their device could be read-only",
        built.exempted
    ));
    if built.salvage > 0 {
        notes.push(format!("skipped {} salvage refs", built.salvage));
    }
    if !built.actions.is_empty() {
        notes.push(format!(
            "operator actions that may discard values let the refs their plans listed (and, \
             where they changed rows, refs with writes of unknown outcome) take any earlier \
             value while they ran: {}",
            built.actions.join("; ")
        ));
    }
    if history.expect != FinalExpectation::Converged {
        notes.push("final state not judged: the run is not expected to converge".to_owned());
    }
    if !analysis.findings.is_empty() {
        let mut by_kind: BTreeMap<Anomaly, usize> = BTreeMap::new();
        for f in &analysis.findings {
            *by_kind.entry(f.anomaly).or_default() += 1;
        }
        let listed: Vec<String> = by_kind.iter().map(|(a, n)| format!("{a} {n}")).collect();
        notes.push(format!("anomalies: {}", listed.join(", ")));
    }
    if analysis.inconclusive > 0 {
        notes.push(format!(
            "INCONCLUSIVE on {} refs: see the notes above; a pass there is not a proof",
            analysis.inconclusive
        ));
    }
    notes.append(&mut analysis.notes);
    analysis.notes = notes;
    analysis
}

/// What one operator action may discard in one repository.
struct Discarding<'h> {
    /// Index in `history.operator`.
    action: usize,
    /// The refs its plan listed.
    listed: BTreeSet<&'h str>,
    /// Whether it demoted or promoted a row.
    rows_changed: bool,
}

/// Every register of a history.
struct Built<'h> {
    registers: Vec<Register<'h>>,
    repositories: usize,
    exempted: usize,
    salvage: usize,
    /// Devices whose final refs are observations, by [`Source::Final`] index.
    finals: Vec<&'h str>,
    /// Descriptions of the operator actions that may discard values.
    actions: Vec<String>,
}

fn build(history: &History) -> Built<'_> {
    let timeline = Timeline::of(history);
    let read_only = super::read_only::possibly_read_only(history, &timeline);
    let exempt = |op: &crate::history::Operation| {
        read_only
            .as_ref()
            .and_then(|windows| windows.get(op.device.as_str()))
            .is_some_and(|spans| overlaps(spans, op.invoked_ms, op.completed_ms))
    };

    // Ref names per repository, and the operations of each repository.
    let mut names: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut initial: BTreeMap<&str, &crate::history::Refs> = BTreeMap::new();
    for start in &history.repositories {
        initial.insert(start.name.as_str(), &start.initial_refs);
        names
            .entry(start.name.as_str())
            .or_default()
            .extend(start.initial_refs.keys().map(String::as_str));
    }
    let mut by_repo: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        by_repo.entry(op.repo.as_str()).or_default().push(i);
        let set = names.entry(op.repo.as_str()).or_default();
        match &op.kind {
            OpKind::Push { updates } => set.extend(updates.iter().map(|u| u.name.as_str())),
            OpKind::Read => {
                if let Some((refs, _)) = ok_read(op) {
                    set.extend(refs.keys().map(String::as_str));
                }
            }
        }
    }
    let converged = history.expect == FinalExpectation::Converged;
    let mut seen_devices = BTreeSet::new();
    let finals: Vec<&str> = if converged {
        history
            .final_state
            .active_devices
            .iter()
            .map(String::as_str)
            .filter(|d| seen_devices.insert(*d))
            .collect()
    } else {
        Vec::new()
    };
    for device in &finals {
        for (repo, refs) in history.final_state.refs.get(*device).into_iter().flatten() {
            names
                .entry(repo.as_str())
                .or_default()
                .extend(refs.keys().map(String::as_str));
        }
    }
    // Operator actions that may discard values, per repository: the refs their plans
    // listed, and whether they changed rows there (a demote or promote gives up writes the
    // cluster never recorded, PROTOCOL.md 7.1).
    let mut havocs: BTreeMap<&str, Vec<Discarding<'_>>> = BTreeMap::new();
    let mut actions = Vec::new();
    for (i, action) in history.operator.iter().enumerate() {
        if !action.ok {
            continue;
        }
        let mut per_repo: BTreeMap<&str, Discarding<'_>> = BTreeMap::new();
        let fresh = || Discarding {
            action: i,
            listed: BTreeSet::new(),
            rows_changed: false,
        };
        for d in action.demoted.iter().chain(&action.promoted) {
            per_repo
                .entry(d.repo.as_str())
                .or_insert_with(fresh)
                .rows_changed = true;
        }
        for d in action.plan.iter().flatten() {
            per_repo
                .entry(d.repo.as_str())
                .or_insert_with(fresh)
                .listed
                .insert(d.name.as_str());
        }
        if per_repo.is_empty() {
            continue;
        }
        actions.push(format!(
            "`{}` ({}-{})",
            action.command,
            secs(action.started_ms),
            secs(action.completed_ms)
        ));
        for (repo, d) in per_repo {
            havocs.entry(repo).or_default().push(d);
        }
    }

    let end_ms = end_of_run(history);
    let mut registers = Vec::new();
    let mut exempted = 0usize;
    let mut salvage = 0usize;
    let no_ops = Vec::new();
    for (&repo, set) in &names {
        let mut regs: Vec<Register<'_>> = Vec::new();
        for &name in set {
            if name.starts_with(SALVAGE_PREFIX) {
                salvage += 1;
                continue;
            }
            let mut reg = Register::new(repo, name);
            let start = initial
                .get(repo)
                .and_then(|refs| refs.get(name))
                .map(String::as_str);
            reg.initial = reg.intern(start);
            if let Some(b) = reg.born.get_mut(reg.initial as usize) {
                *b = 0;
            }
            regs.push(reg);
        }
        let index: BTreeMap<&str, usize> =
            regs.iter().enumerate().map(|(i, r)| (r.name, i)).collect();
        for &i in by_repo.get(repo).unwrap_or(&no_ops) {
            let op = &history.ops[i];
            let inv = op.invoked_ms;
            let comp = op.completed_ms.max(inv);
            match &op.kind {
                OpKind::Push { updates } => {
                    for u in updates {
                        let Some(&r) = index.get(u.name.as_str()) else {
                            continue;
                        };
                        let reg = &mut regs[r];
                        let old = reg.intern(u.old.as_deref());
                        let new = reg.intern(Some(u.new.as_str()));
                        let (need, comp) = match &op.outcome {
                            Outcome::Refused { .. } => {
                                reg.refused.entry(new).or_default().push(op.id);
                                continue;
                            }
                            Outcome::Ok { .. } => (Need::Required, comp),
                            Outcome::Unknown { .. } => (Need::Forever, u64::MAX),
                        };
                        if let Some(b) = reg.born.get_mut(new as usize) {
                            *b = (*b).min(inv);
                        }
                        reg.edges.entry(old).or_default().insert(new);
                        let act = Act::Cas { old, new };
                        reg.push_op(
                            SOp {
                                inv,
                                comp,
                                act,
                                need,
                            },
                            Source::Op(i),
                        );
                    }
                }
                OpKind::Read => {
                    let Some((refs, stale)) = ok_read(op) else {
                        continue;
                    };
                    if stale && exempt(op) {
                        exempted += 1;
                        continue;
                    }
                    for reg in &mut regs {
                        let v = reg.intern(refs.get(reg.name).map(String::as_str));
                        reg.push_op(
                            SOp {
                                inv,
                                comp,
                                act: Act::Read(v),
                                need: Need::Required,
                            },
                            Source::Op(i),
                        );
                    }
                }
            }
        }
        for d in havocs.get(repo).into_iter().flatten() {
            let action = &history.operator[d.action];
            let done_ms = action.completed_ms.max(action.started_ms);
            for reg in &mut regs {
                let unrecorded = reg
                    .ops
                    .iter()
                    .any(|o| o.need == Need::Forever && o.inv <= done_ms);
                let may_discard = d.listed.contains(reg.name) || (d.rows_changed && unrecorded);
                if !may_discard {
                    continue;
                }
                reg.push_op(
                    SOp {
                        inv: action.started_ms,
                        comp: action.completed_ms.max(action.started_ms),
                        act: Act::Havoc,
                        need: Need::Optional,
                    },
                    Source::Action(d.action),
                );
            }
        }
        // The final state is read after everything the history mentions.
        let at = end_ms.saturating_add(1);
        for (f, device) in finals.iter().enumerate() {
            let Some(refs) = history
                .final_state
                .refs
                .get(*device)
                .and_then(|repos| repos.get(repo))
            else {
                continue;
            };
            for reg in &mut regs {
                let v = reg.intern(refs.get(reg.name).map(String::as_str));
                reg.push_op(
                    SOp {
                        inv: at,
                        comp: at,
                        act: Act::Read(v),
                        need: Need::Required,
                    },
                    Source::Final(f),
                );
            }
        }
        for mut reg in regs {
            reg.finish();
            registers.push(reg);
        }
    }
    Built {
        registers,
        repositories: names.len(),
        exempted,
        salvage,
        finals,
        actions,
    }
}

/// The smallest failing window found for a failure.
struct Window {
    start_ms: u64,
    from_initial: bool,
    /// Indices into the register's operations.
    ops: Vec<u32>,
}

/// Runs the window of `reg` starting at `start_ms` (or from the initial value) up to the
/// completion of `x`; `Some(ops in it)` when it fails.
fn window_fails(reg: &Register<'_>, x: u32, start_ms: u64, from_initial: bool) -> Option<Vec<u32>> {
    let until = reg.ops[x as usize].comp;
    let mut sub: Vec<SOp> = Vec::new();
    let mut tracked: Vec<bool> = Vec::new();
    let mut map: Vec<u32> = Vec::new();
    for (j, op) in reg.ops.iter().enumerate() {
        if op.inv > until {
            continue;
        }
        let need = if from_initial || op.inv >= start_ms {
            op.need
        } else {
            match (op.act, op.need) {
                (Act::Havoc, _) if op.comp >= start_ms => Need::Optional,
                (Act::Cas { .. }, Need::Forever) => Need::Forever,
                // It may have taken effect before the window or inside it.
                (Act::Cas { .. }, Need::Required) if op.comp >= start_ms => Need::Optional,
                _ => continue,
            }
        };
        sub.push(SOp { need, ..*op });
        tracked.push(reg.tracked.get(j).copied().unwrap_or(false));
        map.push(j as u32);
    }
    let facts = Facts {
        born: &reg.born,
        tracked: &tracked,
    };
    let initial = if from_initial { reg.initial } else { HAVOC };
    let outcome = search::sweep(&sub, &facts, initial, until, WINDOW_BUDGET, true);
    if outcome.failures.is_empty() {
        return None;
    }
    Some(map)
}

/// The latest start whose window fails, no earlier than just after `lower` (a previous
/// failure or exhaustion), or from the initial value when there is none.
fn smallest_window(reg: &Register<'_>, x: u32, lower: Option<u64>) -> Option<Window> {
    let x_inv = reg.ops[x as usize].inv;
    let mut starts: Vec<u64> = reg
        .ops
        .iter()
        .map(|o| o.inv)
        .filter(|&t| t <= x_inv && lower.is_none_or(|l| t > l))
        .collect();
    starts.sort_unstable_by(|a, b| b.cmp(a));
    starts.dedup();
    // Gallop back from the failing operation, then bisect: a window that fails still
    // fails when it starts earlier (what it saw at its start was a value not from the
    // future either way).
    let mut good: Option<usize> = None;
    let mut bad: Option<(usize, Vec<u32>)> = None;
    let mut step = 0usize;
    let mut k = 0usize;
    while k < starts.len() {
        match window_fails(reg, x, starts[k], false) {
            Some(ops) => {
                bad = Some((k, ops));
                break;
            }
            None => good = Some(k),
        }
        step = if step == 0 { 1 } else { step * 2 };
        k = good.map_or(0, |g| g + step);
    }
    let Some((mut hi, mut hi_ops)) = bad else {
        if lower.is_none() {
            let ops = window_fails(reg, x, 0, true)?;
            return Some(Window {
                start_ms: 0,
                from_initial: true,
                ops,
            });
        }
        return None;
    };
    let mut lo = good;
    while let Some(l) = lo {
        if l + 1 >= hi {
            break;
        }
        let mid = l + (hi - l) / 2;
        match window_fails(reg, x, starts[mid], false) {
            Some(ops) => {
                hi = mid;
                hi_ops = ops;
            }
            None => lo = Some(mid),
        }
    }
    Some(Window {
        start_ms: starts[hi],
        from_initial: false,
        ops: hi_ops,
    })
}

/// The violation for the failure of operation `x` of `reg`; `None` when it follows an
/// earlier failure (or exhausted search) at `lower` and no window after that fails on its
/// own: the sweep went on from a guess there, so the failure may only echo the first.
fn describe(
    history: &History,
    built: &Built<'_>,
    reg: &Register<'_>,
    x: u32,
    lower: Option<u64>,
) -> Option<Finding> {
    let xo = reg.ops[x as usize];
    let window = smallest_window(reg, x, lower);
    if window.is_none() && lower.is_some() {
        return None;
    }
    let (anomaly, why) = classify(history, built, reg, x, window.as_ref());

    // The operations worth listing: the required ones and writes that started inside the
    // window, plus straddling writes that touch a value the window's required operations
    // use.
    let mut used: BTreeSet<Val> = BTreeSet::new();
    let mut listed: Vec<u32> = Vec::new();
    let (start_ms, context) = match &window {
        Some(w) => {
            for &j in &w.ops {
                let o = reg.ops[j as usize];
                if o.inv >= w.start_ms || w.from_initial {
                    match o.act {
                        Act::Read(v) => {
                            used.insert(v);
                        }
                        Act::Cas { old, .. } => {
                            used.insert(old);
                        }
                        Act::Havoc => {}
                    }
                }
            }
            for &j in &w.ops {
                let o = reg.ops[j as usize];
                let inside = o.inv >= w.start_ms || w.from_initial;
                let relevant = match o.act {
                    Act::Cas { old, new } => used.contains(&old) || used.contains(&new),
                    _ => false,
                };
                if inside || relevant {
                    listed.push(j);
                }
            }
            let context = if w.from_initial {
                format!("starting from the initial value {}", reg.show(reg.initial))
            } else {
                "starting from any value not from the future".to_owned()
            };
            (w.start_ms, context)
        }
        None => {
            listed.push(x);
            (
                xo.inv,
                "(no window cut off from the earlier history fails on its own)".to_owned(),
            )
        }
    };
    let window_ops: Vec<u64> = listed
        .iter()
        .filter_map(|&j| match reg.sources[j as usize] {
            Source::Op(i) => history.ops.get(i).map(|o| o.id),
            _ => None,
        })
        .collect();
    let mut shown: Vec<String> = listed
        .iter()
        .take(LISTED_PER_WINDOW)
        .map(|&j| describe_op(history, built, reg, j))
        .collect();
    if listed.len() > LISTED_PER_WINDOW {
        shown.push(format!("and {} more", listed.len() - LISTED_PER_WINDOW));
    }

    let (op, device) = match reg.sources[x as usize] {
        Source::Op(i) => history
            .ops
            .get(i)
            .map_or((None, None), |o| (Some(o.id), Some(o.device.clone()))),
        Source::Final(f) => (None, built.finals.get(f).map(|d| (*d).to_owned())),
        Source::Action(_) => (None, None),
    };
    let at_ms = match xo.act {
        Act::Read(_) => xo.inv,
        _ => xo.comp,
    };
    let seen = match xo.act {
        Act::Read(v) => format!("{} saw {}", what(history, built, reg, x), reg.show(v)),
        Act::Cas { old, new } => format!(
            "{} acknowledged {}: {} -> {}",
            what(history, built, reg, x),
            reg.name,
            reg.show(old),
            reg.show(new)
        ),
        Act::Havoc => what(history, built, reg, x),
    };
    let expected = format!(
        "{} of {} to behave as one compare-and-swap register: some order of the \
         operations of window {}-{}, each taking effect inside its interval",
        reg.name,
        reg.repo,
        secs(start_ms),
        secs(xo.comp)
    );
    let explanation = format!(
        "{anomaly}: {why}; no order explains the window {}-{} {context}: {}",
        secs(start_ms),
        secs(xo.comp),
        shown.join("; ")
    );
    Some(Finding {
        anomaly,
        window_ops,
        violation: Violation {
            checker: CheckerId::Linearizable,
            op,
            device,
            repo: Some(reg.repo.to_owned()),
            at_ms,
            expected,
            seen,
            explanation,
        },
    })
}

/// `"read op 17 on R2"`, `"push op 12 on R1"`, `"the final state of R1"`.
fn what(history: &History, built: &Built<'_>, reg: &Register<'_>, j: u32) -> String {
    match reg.sources[j as usize] {
        Source::Op(i) => history.ops.get(i).map_or_else(
            || "an operation".to_owned(),
            |o| format!("{} op {} on {}", super::op_kind_name(o), o.id, o.device),
        ),
        Source::Final(f) => format!(
            "the final state of {}",
            built.finals.get(f).copied().unwrap_or("?")
        ),
        Source::Action(a) => history.operator.get(a).map_or_else(
            || "an operator action".to_owned(),
            |a| format!("operator action `{}`", a.command),
        ),
    }
}

/// One operation of a window, for the explanation.
fn describe_op(history: &History, built: &Built<'_>, reg: &Register<'_>, j: u32) -> String {
    let o = reg.ops[j as usize];
    let when = if o.need == Need::Forever {
        format!("{}-, unknown outcome", secs(o.inv))
    } else {
        format!("{}-{}", secs(o.inv), secs(o.comp))
    };
    let act = match o.act {
        Act::Read(v) => format!("saw {}", reg.show(v)),
        Act::Cas { old, new } => format!("{} -> {}", reg.show(old), reg.show(new)),
        Act::Havoc => "may discard values".to_owned(),
    };
    format!("{} [{when}] {act}", what(history, built, reg, j))
}

/// Names the anomaly of failing operation `x` and says why, from what came before it and
/// what its failing window holds.
fn classify(
    history: &History,
    built: &Built<'_>,
    reg: &Register<'_>,
    x: u32,
    window: Option<&Window>,
) -> (Anomaly, String) {
    let xo = reg.ops[x as usize];
    let who = what(history, built, reg, x);
    let (v, is_read) = match xo.act {
        Act::Read(v) => (v, true),
        Act::Cas { old, .. } => (old, false),
        Act::Havoc => return (Anomaly::NotLinearizable, who),
    };
    let shown = reg.show(v);
    let verb = if is_read { "saw" } else { "expected" };
    let born = reg.born.get(v as usize).copied().unwrap_or(u64::MAX);
    if v != reg.initial && born == u64::MAX {
        if v == ABSENT {
            return (
                Anomaly::LostWrite,
                format!(
                    "{who} {verb} {shown}, but the ref existed from the start and nothing \
                     deletes refs"
                ),
            );
        }
        let why = match reg.refused.get(&v).and_then(|ops| ops.first()) {
            Some(op) => format!(
                "{who} {verb} {} at {shown}, which only push op {op} wrote, and it was \
                 refused: a refused push took effect",
                reg.name
            ),
            None => format!(
                "{who} {verb} {} at {shown}, which no push wrote and the repository did not \
                 start with",
                reg.name
            ),
        };
        return (Anomaly::PhantomWrite, why);
    }
    if v != reg.initial && born > xo.comp {
        return (
            Anomaly::ReadFromTheFuture,
            format!(
                "{who} {verb} {} at {shown} by {}, but the first push that wrote it was \
                 invoked only at {}",
                reg.name,
                secs(xo.comp),
                secs(born)
            ),
        );
    }
    // What had to be there before x began: acknowledged pushes, then earlier reads.
    let before = |j: usize| reg.ops[j].need == Need::Required && reg.ops[j].comp < xo.inv;
    let acked = (0..reg.ops.len())
        .filter(|&j| before(j))
        .filter_map(|j| match reg.ops[j].act {
            Act::Cas { new, .. } if new != v && !reg.reaches(new, v) => Some((j, new)),
            _ => None,
        })
        .max_by_key(|&(j, _)| (reg.ops[j].comp, j));
    if let Some((j, w)) = acked {
        let p = what(history, built, reg, j as u32);
        let ack = secs(reg.ops[j].comp);
        if is_read && reg.reaches(v, w) {
            return (
                Anomaly::StaleRead,
                format!(
                    "{who} started at {}, after {p} was acknowledged at {ack} ({} at {}), \
                     yet saw the older {shown}",
                    secs(xo.inv),
                    reg.name,
                    reg.show(w)
                ),
            );
        }
        return (
            Anomaly::LostWrite,
            format!(
                "{p} was acknowledged at {ack} ({} at {}), yet {who}, which started at {}, \
                 {verb} {shown}, which does not build on it: the acknowledged write was \
                 overwritten",
                reg.name,
                reg.show(w),
                secs(xo.inv)
            ),
        );
    }
    let observed = (0..reg.ops.len())
        .filter(|&j| before(j))
        .filter_map(|j| match reg.ops[j].act {
            Act::Read(w) if w != v && !reg.reaches(w, v) => Some((j, w)),
            _ => None,
        })
        .max_by_key(|&(j, _)| (reg.ops[j].comp, j));
    if let Some((j, w)) = observed {
        let r = what(history, built, reg, j as u32);
        let unknown_only = reg
            .ops
            .iter()
            .filter(|o| matches!(o.act, Act::Cas { new, .. } if new == w))
            .all(|o| o.need == Need::Forever)
            && w != reg.initial;
        let note = if unknown_only {
            " (written only by pushes of unknown outcome: once observed, a write has taken \
             effect)"
        } else {
            ""
        };
        if is_read && reg.reaches(v, w) {
            return (
                Anomaly::NonMonotonicRead,
                format!(
                    "{r} completed at {} and saw {} at {}{note}, yet {who}, which started \
                     at {}, saw the older {shown}: reads went backwards",
                    secs(reg.ops[j].comp),
                    reg.name,
                    reg.show(w),
                    secs(xo.inv)
                ),
            );
        }
        return (
            Anomaly::LostWrite,
            format!(
                "{r} completed at {} and saw {} at {}{note}, yet {who}, which started at {}, \
                 {verb} {shown}, which does not build on it: the observed write was \
                 overwritten",
                secs(reg.ops[j].comp),
                reg.name,
                reg.show(w),
                secs(xo.inv)
            ),
        );
    }
    // Two acknowledged pushes from the same value, overlapping in time.
    if !is_read {
        let rival = (0..reg.ops.len()).find(|&j| {
            j != x as usize
                && reg.ops[j].need == Need::Required
                && matches!(reg.ops[j].act, Act::Cas { old, .. } if old == v)
                && reg.ops[j].comp <= xo.comp
        });
        if let Some(j) = rival {
            return (
                Anomaly::LostWrite,
                format!(
                    "{} and {who} were both acknowledged as compare-and-swaps from {shown}: \
                     one overwrote the other",
                    what(history, built, reg, j as u32)
                ),
            );
        }
    }
    // Overlapping reads of the window that saw an older and a newer value, with no write
    // in the window to move between them as often as they need: one went backwards.
    let rival = window.into_iter().flat_map(|w| &w.ops).find_map(|&j| {
        let o = reg.ops[j as usize];
        match o.act {
            Act::Read(w) if j != x && o.need == Need::Required && w != v => {
                (reg.reaches(w, v) || reg.reaches(v, w)).then_some((j, w))
            }
            _ => None,
        }
    });
    if let (Some((j, w)), true) = (rival, is_read) {
        return (
            Anomaly::NonMonotonicRead,
            format!(
                "{who} saw {} at {shown} while {} saw {}, and no write in the window moves \
                 the ref between them as often as these reads need: some read went backwards",
                reg.name,
                what(history, built, reg, j),
                reg.show(w)
            ),
        );
    }
    (
        Anomaly::NotLinearizable,
        format!("{who} {verb} {} at {shown}", reg.name),
    )
}

#[cfg(test)]
mod tests;
