//! Filters for the text trace of `replay --trace` (`--repo`, `--host`, `--kinds`) and the
//! operation ids shown next to server events.
//!
//! A server event (a device's protocol event) is annotated with the client operations in
//! flight on that device for that repository when it happened (`[op 12]`, `[ops 12,15]`):
//! the simulator does not carry request ids into the protocol, so this is the set of
//! operations the event may belong to, exact when only one was in flight. It is worked out
//! from the history when the trace is printed and never enters the trace or its hash.

use crate::history::Operation;
use crate::trace::TraceEntry;

/// What to keep of a trace; an empty list keeps everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Repositories: keep entries naming one of them, and entries naming no repository.
    pub repos: Vec<String>,
    /// Hosts: keep entries on one of them or naming one of them.
    pub hosts: Vec<String>,
    /// Kinds (see [`kind_of`]): keep entries of one of them; `lock` keeps `lock-acquired`
    /// and `lock-released`.
    pub kinds: Vec<String>,
}

/// The words of a trace line: runs of letters, digits, `-` and `_`.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|w| !w.is_empty())
}

/// The kind of an entry: `op` for a client operation, `fault` for the nemesis, `operator`
/// for the operator, the event name for a protocol event (`write-recorded`, `synced`, ...),
/// else `server`.
pub fn kind_of(entry: &TraceEntry) -> String {
    if entry.host == "nemesis" {
        return "fault".to_owned();
    }
    if entry.host == "operator" {
        return "operator".to_owned();
    }
    if entry.what.starts_with("op ") {
        return "op".to_owned();
    }
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&entry.what) {
        if let Some(serde_json::Value::String(event)) = map.get("event") {
            return event.clone();
        }
    }
    "server".to_owned()
}

/// The repository a protocol event is about: its `repo` field, or the first argument of
/// its `lock` (`read(R1, repo002)`, `write(R1)`).
fn event_repo(entry: &TraceEntry) -> Option<String> {
    let serde_json::Value::Object(map) = serde_json::from_str(&entry.what).ok()? else {
        return None;
    };
    if let Some(serde_json::Value::String(repo)) = map.get("repo") {
        return Some(repo.clone());
    }
    let serde_json::Value::String(lock) = map.get("lock")? else {
        return None;
    };
    let inner = lock.split_once('(')?.1;
    Some(inner.split([',', ')']).next()?.trim().to_owned())
}

impl Filter {
    /// Whether nothing is filtered.
    pub fn is_empty(&self) -> bool {
        self.repos.is_empty() && self.hosts.is_empty() && self.kinds.is_empty()
    }

    /// Whether `entry` is kept; `known_repos` are the run's repositories (to tell an entry
    /// about another repository from one about none).
    pub fn keeps(&self, entry: &TraceEntry, known_repos: &[String]) -> bool {
        if !self.repos.is_empty() {
            let named: Vec<&str> = words(&entry.what)
                .filter(|w| known_repos.iter().any(|r| r == w))
                .collect();
            if !named.is_empty() && !named.iter().any(|w| self.repos.iter().any(|r| r == w)) {
                return false;
            }
        }
        if !self.hosts.is_empty() {
            let on = self.hosts.contains(&entry.host);
            let names = words(&entry.what).any(|w| self.hosts.iter().any(|h| h == w));
            if !on && !names {
                return false;
            }
        }
        if !self.kinds.is_empty() {
            let kind = kind_of(entry);
            let hit = self.kinds.iter().any(|k| {
                *k == kind
                    || kind
                        .strip_prefix(k.as_str())
                        .is_some_and(|rest| rest.starts_with('-'))
                    || (k == "event" && !matches!(kind.as_str(), "op" | "fault" | "operator"))
            });
            if !hit {
                return false;
            }
        }
        true
    }
}

/// The ids of the operations in flight on the entry's host for the repository its event is
/// about, when it is a protocol event.
pub fn ops_in_flight(entry: &TraceEntry, ops: &[Operation]) -> Vec<u64> {
    let Some(repo) = event_repo(entry) else {
        return Vec::new();
    };
    ops.iter()
        .filter(|o| {
            o.device == entry.host
                && o.repo == repo
                && o.invoked_ms <= entry.at_ms
                && entry.at_ms <= o.completed_ms
        })
        .map(|o| o.id)
        .collect()
}

/// One line of the printed trace: the entry, with the operations in flight for a server
/// event.
pub fn render(entry: &TraceEntry, ops: &[Operation]) -> String {
    let ids = ops_in_flight(entry, ops);
    match ids.as_slice() {
        [] => entry.to_string(),
        [one] => format!("{entry}  [op {one}]"),
        many => format!(
            "{entry}  [ops {}]",
            many.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{OpKind, Outcome, Phase};

    fn entry(at_ms: u64, host: &str, what: &str) -> TraceEntry {
        TraceEntry {
            at_ms,
            host: host.to_owned(),
            what: what.to_owned(),
        }
    }

    fn op(id: u64, device: &str, repo: &str, from: u64, to: u64) -> Operation {
        Operation {
            id,
            client: "client1".into(),
            device: device.into(),
            repo: repo.into(),
            phase: Phase::Workload,
            invoked_ms: from,
            completed_ms: to,
            kind: OpKind::Read,
            outcome: Outcome::Ok {
                refs: None,
                possibly_stale: false,
            },
        }
    }

    #[test]
    fn filters_by_repository_host_and_kind() {
        let repos = vec!["R1".to_owned(), "R2".to_owned()];
        let write = entry(
            10,
            "repo001",
            r#"{"event":"write-recorded","repo":"R1","version":1}"#,
        );
        let lock = entry(
            11,
            "repo002",
            r#"{"event":"lock-acquired","lock":"read(R2, repo002)"}"#,
        );
        let client = entry(12, "client1", "op 3 read R2 on repo001: ok");
        let fault = entry(13, "nemesis", "strike repo002 for 5.0s");
        let all = [&write, &lock, &client, &fault];
        let kept = |f: &Filter| -> Vec<u64> {
            all.iter()
                .filter(|e| f.keeps(e, &repos))
                .map(|e| e.at_ms)
                .collect()
        };
        let by_repo = Filter {
            repos: vec!["R2".into()],
            ..Filter::default()
        };
        assert_eq!(kept(&by_repo), [11, 12, 13]);
        let by_host = Filter {
            hosts: vec!["repo002".into()],
            ..Filter::default()
        };
        assert_eq!(kept(&by_host), [11, 13]);
        let by_kind = Filter {
            kinds: vec!["lock".into(), "fault".into()],
            ..Filter::default()
        };
        assert_eq!(kept(&by_kind), [11, 13]);
        let events = Filter {
            kinds: vec!["event".into()],
            ..Filter::default()
        };
        assert_eq!(kept(&events), [10, 11]);
        assert_eq!(kind_of(&write), "write-recorded");
    }

    #[test]
    fn server_events_name_the_operations_in_flight() {
        let ops = [
            op(1, "repo001", "R1", 0, 20),
            op(2, "repo001", "R1", 5, 30),
            op(3, "repo002", "R1", 0, 30),
            op(4, "repo001", "R2", 0, 30),
        ];
        let write = entry(
            10,
            "repo001",
            r#"{"event":"write-recorded","repo":"R1","version":1}"#,
        );
        assert_eq!(ops_in_flight(&write, &ops), [1, 2]);
        assert!(render(&write, &ops).ends_with("[ops 1,2]"));
        let lock = entry(
            25,
            "repo001",
            r#"{"event":"lock-released","lock":"write(R1)"}"#,
        );
        assert!(render(&lock, &ops).ends_with("[op 2]"));
        let client = entry(25, "client1", "op 2 read R1 on repo001: ok");
        assert_eq!(render(&client, &ops), client.to_string());
    }
}
