//! The search behind checker 8: one compare-and-swap register, swept in time order while
//! keeping every configuration the operations so far can be in (Wing and Gong's search,
//! done "just in time" as in Knossos's linear checker and Porcupine).
//!
//! A configuration is the register's value plus the pending operations it already took
//! effect for. Operations are only linearized when they must be, at the completion of a
//! required one: the closure then tries every order of the pending operations that puts
//! the completed one in. Everything pending at that moment overlaps in real time, so any
//! order among them is allowed. Configurations met twice in one closure are explored once.
//!
//! Three shortcuts keep the search small without changing its answer:
//! - a pending read whose value is the current one is linearized at once: a read leaves the
//!   value alone, so taking it early never closes a door;
//! - a write of unknown outcome is looked up by the value it expects, so the many that can
//!   no longer take effect cost nothing;
//! - such a write is remembered as "taken effect" only when its expected value can come
//!   back (the value has several sources or the register's writes form a cycle); otherwise
//!   leaving the value is enough to stop it from taking effect twice.

use std::collections::{BTreeMap, BTreeSet};

/// A value id of one register. [`ABSENT`] is "the ref does not exist".
pub(super) type Val = u32;

/// The ref does not exist.
pub(super) const ABSENT: Val = 0;

/// A state, not a value: the register holds some value that is not from the future (after
/// an operator action that may discard values, or at the start of a window cut out of the
/// middle of the history). The next operation that needs a value picks it.
pub(super) const HAVOC: Val = u32::MAX;

/// What an operation does to its register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Act {
    /// Observes the value.
    Read(Val),
    /// Compare-and-swap: takes effect only while the value is `old`, and sets `new`.
    Cas { old: Val, new: Val },
    /// May replace the value by any value that is not from the future, any number of
    /// times while pending.
    Havoc,
}

/// How an operation must be linearized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    /// Exactly once, inside its interval (acknowledged pushes, reads).
    Required,
    /// At most once, before its completion (operations straddling a window's start;
    /// operator actions).
    Optional,
    /// At most once, at any time after its invocation (writes of unknown outcome).
    Forever,
}

/// One operation of a register as the search sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct SOp {
    pub inv: u64,
    pub comp: u64,
    pub act: Act,
    pub need: Need,
}

/// What the search needs to know about a register besides its operations.
pub(super) struct Facts<'a> {
    /// Per value id: the earliest invocation of a write that produces it (0 for the initial
    /// value, `u64::MAX` when nothing does). Bounds what [`HAVOC`] may turn into.
    pub born: &'a [u64],
    /// Per operation: whether a `Forever` write must be remembered once it took effect.
    pub tracked: &'a [bool],
}

/// A configuration: the value and the operations (pending, or tracked unknown writes) that
/// took effect, sorted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Config {
    state: Val,
    done: Vec<u32>,
}

impl Config {
    fn has(&self, op: u32) -> bool {
        self.done.binary_search(&op).is_ok()
    }

    fn with(&self, state: Val, op: Option<u32>) -> Config {
        let mut done = self.done.clone();
        if let Some(op) = op {
            if let Err(at) = done.binary_search(&op) {
                done.insert(at, op);
            }
        }
        Config { state, done }
    }

    fn without(&mut self, op: u32) {
        if let Ok(at) = self.done.binary_search(&op) {
            self.done.remove(at);
        }
    }
}

/// Limits of one sweep.
#[derive(Debug, Clone, Copy)]
pub(super) struct Budget {
    /// Configurations a sweep may visit in all.
    pub steps: u64,
    /// Configurations that may be live at once.
    pub width: usize,
}

/// A required operation no configuration could take in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Failure {
    /// Its index in the operations given to the sweep.
    pub op: u32,
    /// When it completed.
    pub at_ms: u64,
}

/// The search ran out of budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Exhausted {
    /// When (the completion being checked).
    pub at_ms: u64,
    /// Configurations visited by then.
    pub steps: u64,
}

/// What one sweep found.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Failures, in time order. After each the sweep goes on both as if the failing
    /// operation had not happened and as if the register held what it saw or wrote.
    pub failures: Vec<Failure>,
    /// Where the budget ran out; the sweep went on from [`HAVOC`] with every pending
    /// operation made optional, so what follows is still checked, more loosely.
    pub exhausted: Vec<Exhausted>,
    /// Configurations visited.
    pub steps: u64,
}

/// Sweeps `ops` from `initial`, up to and including completions at `until_ms`. With
/// `first_only` it stops at the first failure or exhaustion.
pub(super) fn sweep(
    ops: &[SOp],
    facts: &Facts<'_>,
    initial: Val,
    until_ms: u64,
    budget: Budget,
    first_only: bool,
) -> Outcome {
    let mut engine = Engine {
        ops,
        facts,
        need: ops.iter().map(|o| o.need).collect(),
        pending: Vec::new(),
        pending_reads: BTreeMap::new(),
        unknown_by_old: BTreeMap::new(),
        steps: 0,
        total: 0,
        budget,
    };
    // Invocations before completions at the same millisecond: operations that touch are
    // taken as concurrent, which can only allow more orders.
    let mut events: Vec<(u64, u8, u32)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        let i = i as u32;
        if op.inv > until_ms {
            continue;
        }
        events.push((op.inv, 0, i));
        if op.need != Need::Forever && op.comp <= until_ms {
            events.push((op.comp, 1, i));
        }
    }
    events.sort_unstable();

    let mut out = Outcome::default();
    let mut configs = vec![Config {
        state: initial,
        done: Vec::new(),
    }];
    for (at_ms, kind, i) in events {
        if kind == 0 {
            engine.invoke(i);
            continue;
        }
        match engine.need[i as usize] {
            Need::Forever => {}
            Need::Optional => {
                // It may have taken effect or not: keep both. Nothing else forces the
                // search to try it, so try it now, before it is gone.
                match engine.closure(&configs, i, at_ms) {
                    Ok(fired) => configs.extend(fired),
                    Err(()) => {
                        out.exhausted.push(Exhausted {
                            at_ms,
                            steps: engine.steps,
                        });
                        if first_only {
                            break;
                        }
                        configs = engine.restart();
                    }
                }
                engine.retire(i);
                for c in &mut configs {
                    c.without(i);
                }
                dedup(&mut configs);
            }
            Need::Required => match engine.closure(&configs, i, at_ms) {
                Ok(next) if !next.is_empty() => {
                    engine.retire(i);
                    configs = next;
                    for c in &mut configs {
                        c.without(i);
                    }
                    dedup(&mut configs);
                }
                Ok(_) => {
                    out.failures.push(Failure { op: i, at_ms });
                    if first_only {
                        break;
                    }
                    // Go on with both readings of the failure, so that one mistake is
                    // reported once: the operation was wrong (a stale replica answered), or
                    // it shows what the register holds from now on.
                    engine.retire(i);
                    let now = match ops[i as usize].act {
                        Act::Read(v) => Some(v),
                        Act::Cas { new, .. } => Some(new),
                        Act::Havoc => None,
                    };
                    if let Some(v) = now {
                        let moved: Vec<Config> = configs
                            .iter()
                            .map(|c| Config {
                                state: v,
                                done: c.done.clone(),
                            })
                            .collect();
                        configs.extend(moved);
                        dedup(&mut configs);
                    }
                }
                Err(()) => {
                    out.exhausted.push(Exhausted {
                        at_ms,
                        steps: engine.steps,
                    });
                    if first_only {
                        break;
                    }
                    engine.retire(i);
                    configs = engine.restart();
                }
            },
        }
    }
    out.steps = engine.total;
    out
}

fn dedup(configs: &mut Vec<Config>) {
    configs.sort_unstable();
    configs.dedup();
}

struct Engine<'a> {
    ops: &'a [SOp],
    facts: &'a Facts<'a>,
    need: Vec<Need>,
    /// Invoked, not yet completed, not `Forever`.
    pending: Vec<u32>,
    /// The pending reads, by the value they saw.
    pending_reads: BTreeMap<Val, Vec<u32>>,
    /// Invoked `Forever` writes, by the value they expect.
    unknown_by_old: BTreeMap<Val, Vec<u32>>,
    /// Configurations visited since the last restart, and in all.
    steps: u64,
    total: u64,
    budget: Budget,
}

impl Engine<'_> {
    /// Gives up on what came before, not on what comes after: any value, and whatever is
    /// pending may or may not have taken effect already. A fresh allowance for the rest.
    fn restart(&mut self) -> Vec<Config> {
        for p in self.pending.clone() {
            self.need[p as usize] = Need::Optional;
        }
        self.steps = 0;
        vec![Config {
            state: HAVOC,
            done: Vec::new(),
        }]
    }

    fn invoke(&mut self, i: u32) {
        let op = &self.ops[i as usize];
        if op.need == Need::Forever {
            if let Act::Cas { old, .. } = op.act {
                self.unknown_by_old.entry(old).or_default().push(i);
            }
            return;
        }
        self.pending.push(i);
        if let Act::Read(v) = op.act {
            self.pending_reads.entry(v).or_default().push(i);
        }
    }

    fn retire(&mut self, i: u32) {
        self.pending.retain(|&p| p != i);
        if let Act::Read(v) = self.ops[i as usize].act {
            if let Some(list) = self.pending_reads.get_mut(&v) {
                list.retain(|&p| p != i);
            }
        }
    }

    /// Whether state `state` can serve as value `v` at a moment no later than `now_ms`.
    fn matches(&self, state: Val, v: Val, now_ms: u64) -> bool {
        state == v
            || (state == HAVOC
                && (v == ABSENT
                    || self
                        .facts
                        .born
                        .get(v as usize)
                        .is_some_and(|&b| b <= now_ms)))
    }

    /// Takes in every pending read of the current value.
    fn normalize(&self, mut c: Config) -> Config {
        if c.state != HAVOC {
            if let Some(reads) = self.pending_reads.get(&c.state) {
                for &r in reads {
                    if self.need[r as usize] != Need::Required {
                        continue;
                    }
                    if let Err(at) = c.done.binary_search(&r) {
                        c.done.insert(at, r);
                    }
                }
            }
        }
        c
    }

    /// Every configuration reachable from `configs` by linearizing pending operations in
    /// which `target` took effect (for an operator action: in which the value was reset);
    /// expansion stops there, what follows is explored at later completions. `Err` when
    /// the budget ran out.
    fn closure(&mut self, configs: &[Config], target: u32, now_ms: u64) -> Result<Vec<Config>, ()> {
        let mut seen: BTreeSet<Config> = BTreeSet::new();
        let mut stack: Vec<Config> = Vec::new();
        for c in configs {
            let c = self.normalize(c.clone());
            if !seen.contains(&c) {
                seen.insert(c.clone());
                stack.push(c);
            }
        }
        // An operator action's goal is to have reset the value; it is not remembered as
        // done, since it may reset it again while it runs.
        let havoc_goal = matches!(self.ops[target as usize].act, Act::Havoc);
        let mut out = Vec::new();
        let mut next: Vec<Config> = Vec::new();
        while let Some(c) = stack.pop() {
            self.steps += 1;
            self.total += 1;
            if self.steps > self.budget.steps || seen.len() > self.budget.width {
                return Err(());
            }
            if c.has(target) || (havoc_goal && c.state == HAVOC) {
                out.push(c);
                continue;
            }
            next.clear();
            for &p in &self.pending {
                if c.has(p) {
                    continue;
                }
                match self.ops[p as usize].act {
                    Act::Read(v) => {
                        // A concrete value was handled by `normalize`; from HAVOC the read
                        // picks the value.
                        if c.state == HAVOC && self.matches(HAVOC, v, now_ms) {
                            next.push(c.with(v, Some(p)));
                        }
                    }
                    Act::Cas { old, new } => {
                        if self.matches(c.state, old, now_ms) {
                            next.push(c.with(new, Some(p)));
                        }
                    }
                    Act::Havoc => {
                        if c.state != HAVOC {
                            next.push(c.with(HAVOC, None));
                        }
                    }
                }
            }
            // From HAVOC an unknown write adds nothing: its new value is not from the
            // future, so HAVOC may become it directly.
            if c.state != HAVOC {
                if let Some(list) = self.unknown_by_old.get(&c.state) {
                    for &u in list {
                        let tracked = self.facts.tracked.get(u as usize).copied() == Some(true);
                        if tracked && c.has(u) {
                            continue;
                        }
                        if let Act::Cas { new, .. } = self.ops[u as usize].act {
                            next.push(c.with(new, tracked.then_some(u)));
                        }
                    }
                }
            }
            for n in next.drain(..) {
                let n = self.normalize(n);
                if !seen.contains(&n) {
                    seen.insert(n.clone());
                    stack.push(n);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}
