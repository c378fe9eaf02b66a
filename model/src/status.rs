//! Status (PROTOCOL.md section 8): service sync status (8.1) and repository status (8.2),
//! as plain functions over rows.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, Digest, Version};
use crate::rows::VersionRow;

/// The sync status of one repository of a service (8.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum RepoSync {
    /// No active device has a row.
    Ambiguous,
    /// Every active device is at the leader version.
    Synchronized,
    /// Some devices are behind, but the change is spreading (two or more leaders, or the
    /// leading push is recent).
    Partial {
        /// Versions between the leader and the furthest-behind active device.
        lag: Version,
    },
    /// Only one active device has the newest change and it is older than the window.
    Unsynchronized {
        /// How long the change has been unreplicated.
        for_ms: u64,
    },
}

/// Computes the sync status of one repository.
///
/// `leader_pushed_ms` is when the push event that produced the leader version was recorded
/// (`None` when unknown), `now_ms` the current time and `window` the age under which a
/// lone leader still counts as spreading (`300 s`).
pub fn repo_sync(
    rows: &[VersionRow],
    active: &[DeviceId],
    leader_pushed_ms: Option<u64>,
    now_ms: u64,
    window: Duration,
) -> RepoSync {
    let active_rows: Vec<&VersionRow> =
        rows.iter().filter(|r| active.contains(&r.device)).collect();
    let Some(leader) = active_rows.iter().map(|r| r.version).max() else {
        return RepoSync::Ambiguous;
    };
    let leaders = active_rows.iter().filter(|r| r.version == leader).count();
    if leaders == active.len() {
        return RepoSync::Synchronized;
    }
    // A device with no row is as far behind as it can be.
    let lowest = active
        .iter()
        .map(|d| {
            active_rows
                .iter()
                .find(|r| &r.device == d)
                .map_or(0, |r| r.version)
        })
        .min()
        .unwrap_or(leader);
    let age_ms = leader_pushed_ms.map(|t| now_ms.saturating_sub(t));
    let recent = age_ms.is_none_or(|age| age < window.as_millis() as u64);
    if leaders >= 2 || recent {
        RepoSync::Partial {
            lag: leader - lowest,
        }
    } else {
        RepoSync::Unsynchronized {
            for_ms: age_ms.unwrap_or(0),
        }
    }
}

/// The sync status of a whole service: the first that applies (8.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum ServiceSync {
    /// Some repository has no leader.
    AmbiguousLeader,
    /// Some repository has unreplicated changes older than the window.
    Unsynchronized {
        /// The longest time a change has been unreplicated.
        for_ms: u64,
    },
    /// Some repository is catching up.
    Partial {
        /// The largest lag.
        lag: Version,
    },
    /// Every repository is synchronized.
    Synchronized,
    /// The service hosts no repository.
    NoRepositories,
}

/// Combines per-repository statuses into the service's status.
pub fn service_sync(repos: &[RepoSync]) -> ServiceSync {
    if repos.is_empty() {
        return ServiceSync::NoRepositories;
    }
    if repos.iter().any(|r| matches!(r, RepoSync::Ambiguous)) {
        return ServiceSync::AmbiguousLeader;
    }
    let unsync = repos
        .iter()
        .filter_map(|r| match r {
            RepoSync::Unsynchronized { for_ms } => Some(*for_ms),
            _ => None,
        })
        .max();
    if let Some(for_ms) = unsync {
        return ServiceSync::Unsynchronized { for_ms };
    }
    let lag = repos
        .iter()
        .filter_map(|r| match r {
            RepoSync::Partial { lag } => Some(*lag),
            _ => None,
        })
        .max();
    match lag {
        Some(lag) => ServiceSync::Partial { lag },
        None => ServiceSync::Synchronized,
    }
}

/// One line of repository status (8.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceLine {
    /// The device.
    pub device: DeviceId,
    /// Its version.
    pub version: Version,
    /// Whether it is writing, and since when (wall-clock ms).
    pub writing_since_ms: Option<u64>,
    /// The last writer on this device.
    pub last_writer: Option<String>,
    /// **[stormcell]** Its digest.
    pub digest: Option<Digest>,
    /// **[stormcell]** Whether its digest matches the leader's.
    pub matches_leader: Option<bool>,
}

/// Repository status: one line per device with a row, in device order.
pub fn repository_status(rows: &[VersionRow]) -> Vec<DeviceLine> {
    let max = rows.iter().map(|r| r.version).max();
    let leader_digest = rows
        .iter()
        .filter(|r| Some(r.version) == max)
        .find_map(|r| r.digest);
    let mut lines: Vec<DeviceLine> = rows
        .iter()
        .map(|r| DeviceLine {
            device: r.device.clone(),
            version: r.version,
            writing_since_ms: r
                .writing
                .then(|| r.write_props.as_ref().map_or(0, |p| p.since_ms)),
            last_writer: r.write_props.as_ref().map(|p| p.user.clone()),
            digest: r.digest,
            matches_leader: match (r.digest, leader_digest) {
                (Some(d), Some(l)) => Some(d == l),
                _ => None,
            },
        })
        .collect();
    lines.sort_by(|a, b| a.device.cmp(&b.device));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaders::tests::row;

    const W: Duration = Duration::from_secs(300);

    fn devs(names: &[&str]) -> Vec<DeviceId> {
        names.iter().map(|n| DeviceId::from(*n)).collect()
    }

    #[test]
    fn repository_sync_rules() {
        let active = devs(&["a", "b", "c"]);
        assert_eq!(repo_sync(&[], &active, None, 0, W), RepoSync::Ambiguous);
        // Rows only on inactive devices: no active leader.
        assert_eq!(
            repo_sync(&[row("z", 4)], &active, None, 0, W),
            RepoSync::Ambiguous
        );
        let all = [row("a", 3), row("b", 3), row("c", 3)];
        assert_eq!(
            repo_sync(&all, &active, Some(0), 1_000_000, W),
            RepoSync::Synchronized
        );
        // Two leaders: partial whatever the age; lag counts a missing row as version 0.
        let two = [row("a", 3), row("b", 3)];
        assert_eq!(
            repo_sync(&two, &active, Some(0), 1_000_000, W),
            RepoSync::Partial { lag: 3 }
        );
        // One leader, recent push: partial.
        let one = [row("a", 5), row("b", 3), row("c", 4)];
        assert_eq!(
            repo_sync(&one, &active, Some(1_000), 200_000, W),
            RepoSync::Partial { lag: 2 }
        );
        // One leader, old push: unsynchronized for its age.
        assert_eq!(
            repo_sync(&one, &active, Some(1_000), 721_000, W),
            RepoSync::Unsynchronized { for_ms: 720_000 }
        );
    }

    #[test]
    fn inactive_devices_do_not_count_towards_the_leader() {
        // The inactive device "z" is ahead; among active devices "a" and "b" agree.
        let rows = [row("a", 3), row("b", 3), row("z", 9)];
        assert_eq!(
            repo_sync(&rows, &devs(&["a", "b"]), None, 0, W),
            RepoSync::Synchronized
        );
    }

    #[test]
    fn service_shows_the_first_that_applies() {
        assert_eq!(service_sync(&[]), ServiceSync::NoRepositories);
        let p = RepoSync::Partial { lag: 2 };
        let u = RepoSync::Unsynchronized { for_ms: 5 };
        assert_eq!(
            service_sync(&[RepoSync::Synchronized]),
            ServiceSync::Synchronized
        );
        assert_eq!(
            service_sync(&[p.clone(), RepoSync::Partial { lag: 7 }]),
            ServiceSync::Partial { lag: 7 }
        );
        assert_eq!(
            service_sync(&[p.clone(), u.clone()]),
            ServiceSync::Unsynchronized { for_ms: 5 }
        );
        assert_eq!(
            service_sync(&[u, RepoSync::Ambiguous, p]),
            ServiceSync::AmbiguousLeader
        );
    }

    #[test]
    fn repository_status_marks_digest_matches() {
        let mut a = row("a", 3);
        a.digest = Some(Digest(1));
        let mut b = row("b", 2);
        b.digest = Some(Digest(2));
        b.writing = true;
        let lines = repository_status(&[b, a]);
        assert_eq!(lines[0].device, DeviceId::from("a"));
        assert_eq!(lines[0].matches_leader, Some(true));
        assert_eq!(lines[1].matches_leader, Some(false));
        assert_eq!(lines[1].writing_since_ms, Some(0));
    }
}
