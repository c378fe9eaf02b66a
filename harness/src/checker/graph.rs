//! Commit ancestry, rebuilt from the history alone.
//!
//! Commits are opaque strings. The roots of a repository are the values of its initial refs;
//! every ref update `(name, old, new)` of every push on it (whatever the outcome or phase)
//! defines `new` with parent `old` (a root when `old` is absent). A push that was refused
//! or lost still tells us how its commit relates to others, and the checkers need that to
//! judge what a read or the final state shows.

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{History, OpKind};

/// The commits of one repository and their parents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitGraph {
    /// Commit to its parents. Well-formed histories give at most one parent per commit;
    /// a set keeps conflicting definitions instead of silently picking one.
    parents: BTreeMap<String, BTreeSet<String>>,
    /// Longest distance to a root. A proper ancestor always has a smaller depth, which lets
    /// an ancestry walk stop as soon as it is no deeper than its target. Only meaningful
    /// while `acyclic`.
    depth: BTreeMap<String, u64>,
    /// False when the (malformed) parent relation has a cycle; walks then run without the
    /// depth cut-off.
    acyclic: bool,
    /// Oddities met while building: conflicting parents, self-parents, cycles.
    anomalies: Vec<String>,
}

impl Default for CommitGraph {
    fn default() -> Self {
        Self::new()
    }
}

impl CommitGraph {
    /// An empty graph.
    pub fn new() -> Self {
        CommitGraph {
            parents: BTreeMap::new(),
            depth: BTreeMap::new(),
            acyclic: true,
            anomalies: Vec::new(),
        }
    }

    /// The graph of every repository named in the history (in `repositories` or by an
    /// operation), by repository name.
    pub fn for_history(history: &History) -> BTreeMap<String, CommitGraph> {
        let mut graphs: BTreeMap<String, CommitGraph> = BTreeMap::new();
        for start in &history.repositories {
            let graph = graphs.entry(start.name.clone()).or_default();
            for commit in start.initial_refs.values() {
                graph.add_commit(commit, None);
            }
        }
        for op in &history.ops {
            let graph = graphs.entry(op.repo.clone()).or_default();
            if let OpKind::Push { updates } = &op.kind {
                for update in updates {
                    graph.add_commit(&update.new, update.old.as_deref());
                }
            }
        }
        for graph in graphs.values_mut() {
            graph.finish();
        }
        graphs
    }

    /// The graph of one repository (empty when the history never names it).
    pub fn for_repo(history: &History, repo: &str) -> CommitGraph {
        Self::for_history(history).remove(repo).unwrap_or_default()
    }

    /// Records `commit` with parent `parent` (a root when `None`). Call [`Self::finish`]
    /// after the last commit.
    pub fn add_commit(&mut self, commit: &str, parent: Option<&str>) {
        match parent {
            None => {
                // Creating a ref at an existing commit says nothing about its parents.
                self.parents.entry(commit.to_owned()).or_default();
            }
            Some(parent) if parent == commit => {
                self.anomalies.push(format!(
                    "commit {commit} is given itself as parent (ignored)"
                ));
                self.parents.entry(commit.to_owned()).or_default();
            }
            Some(parent) => {
                self.parents.entry(parent.to_owned()).or_default();
                let parents = self.parents.entry(commit.to_owned()).or_default();
                if !parents.is_empty() && !parents.contains(parent) {
                    let known: Vec<&str> = parents.iter().map(String::as_str).collect();
                    self.anomalies.push(format!(
                        "commit {commit} is given several parents: {} and {parent}",
                        known.join(", ")
                    ));
                }
                parents.insert(parent.to_owned());
            }
        }
    }

    /// Computes the depths used to cut ancestry walks short; call after the last
    /// [`Self::add_commit`].
    pub fn finish(&mut self) {
        let (depth, cycle) = longest_depths(&self.parents);
        self.depth = depth;
        if let Some(commit) = cycle {
            self.acyclic = false;
            self.anomalies.push(format!(
                "commit {commit} is its own ancestor (parent cycle)"
            ));
        }
    }

    /// Whether the graph knows `commit`.
    pub fn contains(&self, commit: &str) -> bool {
        self.parents.contains_key(commit)
    }

    /// Number of known commits.
    pub fn len(&self) -> usize {
        self.parents.len()
    }

    /// Whether the graph knows no commit.
    pub fn is_empty(&self) -> bool {
        self.parents.is_empty()
    }

    /// Oddities met while building the graph (a well-formed history has none).
    pub fn anomalies(&self) -> &[String] {
        &self.anomalies
    }

    /// Whether `a` is `b` or a descendant of `b` (`b` is reached by following parents
    /// from `a`). Unknown commits are only equal to themselves.
    pub fn is_descendant_or_equal(&self, a: &str, b: &str) -> bool {
        if a == b {
            return true;
        }
        if !self.contains(a) || !self.contains(b) {
            return false;
        }
        let target_depth = self.depth.get(b).copied().unwrap_or(0);
        let mut stack = vec![a];
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        while let Some(commit) = stack.pop() {
            if commit == b {
                return true;
            }
            if !seen.insert(commit) {
                continue;
            }
            if self.acyclic && self.depth.get(commit).copied().unwrap_or(0) <= target_depth {
                // Not `b` and no deeper than it: cannot descend from it.
                continue;
            }
            if let Some(parents) = self.parents.get(commit) {
                stack.extend(parents.iter().map(String::as_str));
            }
        }
        false
    }

    /// `commit` and all its ancestors. With it, "does `commit` contain X" for many X costs
    /// one walk instead of one walk per X.
    pub fn ancestry<'a>(&'a self, commit: &'a str) -> BTreeSet<&'a str> {
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut stack = vec![commit];
        while let Some(c) = stack.pop() {
            if !seen.insert(c) {
                continue;
            }
            if let Some(parents) = self.parents.get(c) {
                stack.extend(parents.iter().map(String::as_str));
            }
        }
        seen
    }
}

/// Longest distance of every commit to a root, and a commit on a cycle if there is one
/// (commits on a cycle get whatever depth their other parents give).
fn longest_depths(
    parents: &BTreeMap<String, BTreeSet<String>>,
) -> (BTreeMap<String, u64>, Option<String>) {
    let mut depth: BTreeMap<&str, u64> = BTreeMap::new();
    let mut cycle: Option<String> = None;
    for start in parents.keys() {
        if depth.contains_key(start.as_str()) {
            continue;
        }
        // Iterative post-order walk: histories can have long chains, too deep to recurse.
        let mut on_path: BTreeSet<&str> = BTreeSet::new();
        let mut stack: Vec<(&str, bool)> = vec![(start.as_str(), false)];
        while let Some((commit, expanded)) = stack.pop() {
            if expanded {
                on_path.remove(commit);
                let d = parents
                    .get(commit)
                    .into_iter()
                    .flatten()
                    .filter_map(|p| depth.get(p.as_str()).map(|d| d + 1))
                    .max()
                    .unwrap_or(0);
                depth.insert(commit, d);
                continue;
            }
            if depth.contains_key(commit) {
                continue;
            }
            if !on_path.insert(commit) {
                cycle.get_or_insert_with(|| commit.to_owned());
                continue;
            }
            stack.push((commit, true));
            for parent in parents.get(commit).into_iter().flatten() {
                if depth.contains_key(parent.as_str()) {
                    continue;
                }
                if on_path.contains(parent.as_str()) {
                    cycle.get_or_insert_with(|| parent.clone());
                    continue;
                }
                stack.push((parent.as_str(), false));
            }
        }
    }
    let depth = depth.into_iter().map(|(c, d)| (c.to_owned(), d)).collect();
    (depth, cycle)
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    fn chain() -> CommitGraph {
        let mut g = CommitGraph::new();
        g.add_commit("c0", None);
        g.add_commit("c1", Some("c0"));
        g.add_commit("c2", Some("c1"));
        g.add_commit("b1", Some("c1"));
        g.finish();
        g
    }

    #[test]
    fn ancestry_follows_parents() {
        let g = chain();
        assert!(g.is_descendant_or_equal("c2", "c0"));
        assert!(g.is_descendant_or_equal("c2", "c1"));
        assert!(g.is_descendant_or_equal("c2", "c2"));
        assert!(!g.is_descendant_or_equal("c1", "c2"));
        assert!(!g.is_descendant_or_equal("b1", "c2"));
        assert!(!g.is_descendant_or_equal("c2", "b1"));
        assert!(g.is_descendant_or_equal("b1", "c0"));
        assert!(!g.is_descendant_or_equal("zz", "c0"));
        assert!(g.is_descendant_or_equal("zz", "zz"));
        assert!(g.anomalies().is_empty());
        let up: Vec<&str> = g.ancestry("c2").into_iter().collect();
        assert_eq!(up, ["c0", "c1", "c2"]);
        assert_eq!(g.ancestry("zz").len(), 1);
        assert_eq!(g.len(), 4);
    }

    #[test]
    fn long_chains_do_not_recurse() {
        let mut g = CommitGraph::new();
        g.add_commit("c0", None);
        for i in 1..50_000 {
            g.add_commit(&format!("c{i}"), Some(&format!("c{}", i - 1)));
        }
        g.finish();
        assert!(g.is_descendant_or_equal("c49999", "c0"));
        assert!(!g.is_descendant_or_equal("c0", "c49999"));
    }

    #[test]
    fn cycles_and_conflicts_are_noted_not_fatal() {
        let mut g = CommitGraph::new();
        g.add_commit("a", Some("b"));
        g.add_commit("b", Some("a"));
        g.add_commit("c", Some("a"));
        g.add_commit("c", Some("x"));
        g.add_commit("d", Some("d"));
        g.finish();
        assert!(g.is_descendant_or_equal("c", "b"));
        assert!(g.is_descendant_or_equal("c", "x"));
        assert!(!g.is_descendant_or_equal("a", "c"));
        assert_eq!(g.anomalies().len(), 3, "{:?}", g.anomalies());
    }

    #[test]
    fn built_from_pushes_of_any_outcome() {
        let mut b = HistoryBuilder::new();
        b.push(
            "R1",
            10,
            20,
            &[("refs/heads/main", Some("c0"), "c1")],
            unknown(),
        );
        b.push(
            "R1",
            30,
            40,
            &[("refs/heads/main", Some("c1"), "c2")],
            refused(crate::history::ErrorKind::Rejected),
        );
        let g = CommitGraph::for_repo(&b.build(), "repo1");
        assert!(g.is_descendant_or_equal("c2", "c0"));
        assert!(CommitGraph::for_repo(&b.build(), "other").is_empty());
    }
}
