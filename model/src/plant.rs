//! Planted bugs: deliberate protocol mutations the simulator switches on to prove that its
//! checkers catch them. They exist only with the `plant` feature, which the daemon never
//! enables; without it [`Plants::has`] is a constant `false` the compiler removes.

use serde::{Deserialize, Serialize};

/// One deliberate protocol mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bug {
    /// Reads are served without the read sync of 4.1.
    SkipReadSync,
    /// The push is acknowledged before step 6 records the new version.
    AckBeforeVersionBump,
    /// The write lock is released before `writing` is cleared.
    ReleaseLockBeforeClearWriting,
    /// Step 2 of 4.2 ignores rows with `writing = true`.
    IgnoreWritingFlag,
    /// The working copy is not made durable before the write counts.
    SkipFsync,
    /// Read-only reads trust the replica's version rows instead of asking the peers.
    TrustReplicaVersions,
    /// A device never returns to read/write once its primary was severed.
    NeverRecover,
    /// A write goes out on a replica connection while read-only.
    WriteOnReplica,
    /// A thaw's promote ignores existing version rows and makes the device a leader at the
    /// current largest version.
    PromoteWithRows,
    /// A thaw's demote deletes rows without holding the repository's write lock.
    DemoteWithoutLock,
    /// Service status counts only devices that take writes, as if a binding set to
    /// Prevent Writes were inactive.
    StatusIgnoresInactive,
    /// The change of primary is remembered in memory only: a process started after a
    /// promotion trusts the promoted replica's rows.
    EpochInMemory,
    /// A device whose working copy is gone or older than its row says serves and writes
    /// it as current.
    TrustEmptyWorkingCopy,
    /// Step 6 of a write ignores how many rows its conditional update changed.
    IgnoreRowCount,
    /// A read sync records its version whatever happened to the rows since it read them.
    UnconditionalSyncUpdate,
    /// A push whose working copy could not be made durable is acknowledged anyway.
    AckBeforeDurable,
    /// Step 3 of 4.2 is skipped: a push lands on whatever copy the device holds, however
    /// far behind the leaders it is.
    SkipWriteSync,
    /// While read-only, a read that some peer did not vouch for is served unmarked.
    UnmarkedStaleRead,
    /// A thaw discards what readable working copies held without salvaging it (no bundle,
    /// no salvage refs).
    DiscardWithoutSalvage,
    /// A thaw's demote deletes the rows whatever happened to them since its plan read
    /// them.
    UnconditionalDemote,
    /// A demote leaves the demoted device's durable local version counting as a claim
    /// with its peers (no demote count, no notice to the device), so what the demote
    /// discarded comes back with a read-only read or the first sync after a promotion.
    ClaimsSurviveDemote,
}

impl Bug {
    /// Every planted bug, in a stable order.
    pub const ALL: [Bug; 21] = [
        Bug::SkipReadSync,
        Bug::AckBeforeVersionBump,
        Bug::ReleaseLockBeforeClearWriting,
        Bug::IgnoreWritingFlag,
        Bug::SkipFsync,
        Bug::TrustReplicaVersions,
        Bug::NeverRecover,
        Bug::WriteOnReplica,
        Bug::PromoteWithRows,
        Bug::DemoteWithoutLock,
        Bug::StatusIgnoresInactive,
        Bug::EpochInMemory,
        Bug::TrustEmptyWorkingCopy,
        Bug::IgnoreRowCount,
        Bug::UnconditionalSyncUpdate,
        Bug::AckBeforeDurable,
        Bug::SkipWriteSync,
        Bug::UnmarkedStaleRead,
        Bug::DiscardWithoutSalvage,
        Bug::UnconditionalDemote,
        Bug::ClaimsSurviveDemote,
    ];

    /// The bug's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Bug::SkipReadSync => "skip-read-sync",
            Bug::AckBeforeVersionBump => "ack-before-version-bump",
            Bug::ReleaseLockBeforeClearWriting => "release-lock-before-clear-writing",
            Bug::IgnoreWritingFlag => "ignore-writing-flag",
            Bug::SkipFsync => "skip-fsync",
            Bug::TrustReplicaVersions => "trust-replica-versions",
            Bug::NeverRecover => "never-recover",
            Bug::WriteOnReplica => "write-on-replica",
            Bug::PromoteWithRows => "promote-with-rows",
            Bug::DemoteWithoutLock => "demote-without-lock",
            Bug::StatusIgnoresInactive => "status-ignores-inactive",
            Bug::EpochInMemory => "epoch-in-memory",
            Bug::TrustEmptyWorkingCopy => "trust-empty-working-copy",
            Bug::IgnoreRowCount => "ignore-row-count",
            Bug::UnconditionalSyncUpdate => "unconditional-sync-update",
            Bug::AckBeforeDurable => "ack-before-durable",
            Bug::SkipWriteSync => "skip-write-sync",
            Bug::UnmarkedStaleRead => "unmarked-stale-read",
            Bug::DiscardWithoutSalvage => "discard-without-salvage",
            Bug::UnconditionalDemote => "unconditional-demote",
            Bug::ClaimsSurviveDemote => "claims-survive-demote",
        }
    }

    /// What the mutation does, for help text.
    pub fn description(self) -> &'static str {
        match self {
            Bug::SkipReadSync => "serve reads without synchronizing from a leader first",
            Bug::AckBeforeVersionBump => "acknowledge a push before its version is recorded",
            Bug::ReleaseLockBeforeClearWriting => {
                "release the write lock before clearing the writing flag"
            }
            Bug::IgnoreWritingFlag => "accept writes while another write is interrupted",
            Bug::SkipFsync => "count a write as durable without syncing it to disk",
            Bug::TrustReplicaVersions => {
                "while read-only, trust the replica's versions instead of asking the peers"
            }
            Bug::NeverRecover => "stay read-only after the primary database is healthy again",
            Bug::WriteOnReplica => "send a write on a replica connection while read-only",
            Bug::PromoteWithRows => {
                "promote a device to leader at the current version even though rows exist"
            }
            Bug::DemoteWithoutLock => "demote a device without taking the write lock",
            Bug::StatusIgnoresInactive => {
                "leave devices set to Prevent Writes out of the service sync status"
            }
            Bug::EpochInMemory => {
                "remember a change of primary in memory only, so a restarted device trusts \
                 the promoted replica's rows"
            }
            Bug::TrustEmptyWorkingCopy => {
                "serve and write a lost or restored working copy as the version its row claims"
            }
            Bug::IgnoreRowCount => "acknowledge a push whose version update changed no row",
            Bug::UnconditionalSyncUpdate => {
                "record a sync's version even if a demote or write changed the rows meanwhile"
            }
            Bug::AckBeforeDurable => "acknowledge a push whose working copy failed to sync",
            Bug::SkipWriteSync => "take a push without first synchronizing from a leader",
            Bug::UnmarkedStaleRead => {
                "while read-only, serve a read no peer vouched for without marking it possibly \
                 stale"
            }
            Bug::DiscardWithoutSalvage => {
                "discard what a thaw's plan found in working copies without bundling or \
                 salvaging it"
            }
            Bug::UnconditionalDemote => {
                "demote even though the rows changed after the thaw's plan read them"
            }
            Bug::ClaimsSurviveDemote => {
                "let a demoted device's old local version count with its peers, bringing back \
                 what the demote discarded"
            }
        }
    }
}

impl std::fmt::Display for Bug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Bug {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Bug::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
            format!("unknown planted bug `{s}` (known: {})", names.join(", "))
        })
    }
}

/// The set of planted bugs switched on for one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plants {
    #[cfg(feature = "plant")]
    bug: Option<Bug>,
}

impl Plants {
    /// No planted bug.
    pub fn none() -> Self {
        Self::default()
    }

    /// One planted bug switched on.
    #[cfg(feature = "plant")]
    pub fn with(bug: Option<Bug>) -> Self {
        Plants { bug }
    }

    /// Whether a bug is switched on.
    #[inline]
    pub fn has(&self, bug: Bug) -> bool {
        #[cfg(feature = "plant")]
        {
            self.bug == Some(bug)
        }
        #[cfg(not(feature = "plant"))]
        {
            let _ = bug;
            false
        }
    }
}
