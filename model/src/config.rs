//! The protocol's tunables and profile. Every number of PROTOCOL.md is a value here, not a
//! literal in the code.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::profile::ProfileRules;

/// Which behaviour the protocol follows where stormcell differs from the design it was
/// learned from (PROTOCOL.md, "Profiles").
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Every **[stormcell]** item of PROTOCOL.md.
    #[default]
    Stormcell,
    /// The seed design's behaviour, kept so the simulator can show why we differ.
    Phabricator,
}

impl Profile {
    /// Every profile, in a stable order.
    pub const ALL: [Profile; 2] = [Profile::Stormcell, Profile::Phabricator];

    /// The profile's name as used on the command line and in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Stormcell => "stormcell",
            Profile::Phabricator => "phabricator",
        }
    }

    /// What the profile does at each **[stormcell]** item: all of them under stormcell,
    /// none under phabricator.
    pub const fn rules(self) -> ProfileRules {
        match self {
            Profile::Stormcell => ProfileRules::STORMCELL,
            Profile::Phabricator => ProfileRules::PHABRICATOR,
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown profile `{s}` (expected `stormcell` or `phabricator`)"))
    }
}

/// Timeouts, budgets and intervals (PROTOCOL.md sections 2, 4, 5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// Budget for taking the read or write lock of a read or a push.
    pub lock_budget: Duration,
    /// Budget for taking the write lock of a thaw.
    pub thaw_lock_budget: Duration,
    /// Time limit of one whole copy from a leader: its answer and the transfer of the
    /// objects, which is stopped (the transfer killed) when the limit passes.
    pub copy_limit: Duration,
    /// Time limit for a leader to answer a fetch request (its refs and where to get the
    /// objects; in the simulator, the objects too), within `copy_limit`: a hung leader is
    /// given up after this, not after the whole copy limit.
    pub fetch_answer: Duration,
    /// How long step 6 of a write keeps retrying on connection errors.
    pub release_window: Duration,
    /// Pause between release retries.
    pub release_retry: Duration,
    /// Time limit of one peer request other than a fetch.
    pub peer_request: Duration,
    /// Minimum time between two pulls of one repository by the out-of-sync trigger.
    pub out_of_sync_pull_gap: Duration,
    /// How often the background loop scans for out-of-sync repositories.
    pub scan_interval: Duration,
    /// Floor of the idle refresh interval.
    pub idle_floor: Duration,
    /// Cap of the idle refresh interval.
    pub idle_cap: Duration,
    /// At most this many background pulls run at once on a device.
    pub max_pulls: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lock_budget: Duration::from_secs(120),
            thaw_lock_budget: Duration::from_secs(300),
            copy_limit: Duration::from_secs(15 * 60),
            fetch_answer: Duration::from_secs(60),
            release_window: Duration::from_secs(300),
            release_retry: Duration::from_secs(1),
            peer_request: Duration::from_secs(10),
            out_of_sync_pull_gap: Duration::from_secs(120),
            scan_interval: Duration::from_secs(15),
            idle_floor: Duration::from_secs(15),
            idle_cap: Duration::from_secs(6 * 3600),
            max_pulls: 4,
        }
    }
}

/// Everything a node needs to know about how to behave.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolConfig {
    /// Stormcell or phabricator behaviour.
    pub profile: Profile,
    /// Timeouts and intervals.
    pub timing: Timing,
    /// Database health and connection numbers.
    pub failover: crate::failover::FailoverTiming,
}

impl ProtocolConfig {
    /// What the profile does at each **[stormcell]** item.
    pub const fn rules(&self) -> ProfileRules {
        self.profile.rules()
    }
}
