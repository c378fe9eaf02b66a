//! What each profile does where stormcell differs from the design it was learned from:
//! one switch per **[stormcell]** item of PROTOCOL.md, so every branch of the protocol code
//! names the item it implements, and [`ProfileRules::ITEMS`] lists the items against the
//! spec.
//!
//! The items lean on each other (fenced recovery needs the pre-write digest, salvage needs
//! the plan, ...): only the two profiles' sets, everything or nothing, are behaviours the
//! simulator checks.

use serde::{Deserialize, Serialize};

/// One **[stormcell]** item of PROTOCOL.md, as listed in [`ProfileRules::ITEMS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleItem {
    /// The [`ProfileRules`] field that switches it.
    pub field: &'static str,
    /// The PROTOCOL.md section that marks it (`"4.2"`, `"12"`).
    pub section: &'static str,
    /// What stormcell does there, in one line.
    pub summary: &'static str,
}

/// Defines [`ProfileRules`] and its table from one list, so a field cannot exist without
/// its table entry, nor an entry without its field.
macro_rules! profile_rules {
    ($($field:ident, $section:literal, $summary:literal;)+) => {
        /// One switch per **[stormcell]** item of PROTOCOL.md: `true` is stormcell's
        /// behaviour, `false` the seed design's. Get it from [`Profile::rules`].
        ///
        /// [`Profile::rules`]: crate::config::Profile::rules
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ProfileRules {
            $(
                #[doc = concat!("PROTOCOL.md ", $section, ": ", $summary)]
                pub $field: bool,
            )+
        }

        impl ProfileRules {
            /// Every item, in PROTOCOL.md's order: field, section, summary.
            pub const ITEMS: &'static [RuleItem] = &[
                $(RuleItem { field: stringify!($field), section: $section, summary: $summary },)+
            ];

            /// Every item switched on, or every item off.
            const fn uniform(on: bool) -> Self {
                ProfileRules { $($field: on,)+ }
            }

            /// Each item with its value here, in the order of [`ProfileRules::ITEMS`].
            pub fn values(&self) -> impl Iterator<Item = (&'static RuleItem, bool)> {
                Self::ITEMS.iter().zip([$(self.$field,)+])
            }
        }
    };
}

profile_rules! {
    pre_write_digest, "1",
        "a `writing` row carries the working copy's ref digest from before the write, so \
         fenced recovery can tell whether the write reached the disk.";
    digest_in_rows, "1",
        "a version row records the ref digest the device had when it reached its version.";
    release_locks_on_every_path, "2",
        "every lock goes as soon as it is not needed, on error paths too, instead of \
         leaking until the process exits.";
    sync_records_leader_digest, "4.1",
        "a read sync that copied from a leader records the leader's digest with the version.";
    release_checks_row_count, "4.2",
        "step 6 must change exactly one row; otherwise the push is not acknowledged and the \
         device does not lead.";
    bump_only_on_change, "4.2",
        "only a push that changed refs gets a new version; a rejected one keeps the old.";
    writes_hidden_until_recorded, "4.2",
        "not marked in PROTOCOL.md: a write (or maintenance lock) keeps its device's read \
         lock until its version is recorded, and reads and peer copies never show a write \
         that is not recorded, which keeps 4.1's promise of no stale read on the writer.";
    client_retries_other_device, "4.3",
        "a read that fails on a device for a reason other than a freeze is retried on \
         another device by the client.";
    notify_after_write, "5",
        "after an acknowledged write the writer tells the other active devices to pull now.";
    observed_counter, "5",
        "an observed repository's version is a counter bumped when its refs change, with \
         the digest, not the largest commit row id.";
    fenced_recovery, "6",
        "an interrupted write whose writer is gone is cleared or adopted from the \
         interrupted device's working copy, without a person.";
    thaw_plan, "7.1",
        "`thaw --plan` shows exactly which refs a thaw would discard, and the thaw shows \
         that plan before it acts.";
    salvage, "7.1",
        "refs only a demoted device held are kept under `refs/salvage/...` so a discarded \
         write can be recovered by hand.";
    failed_maintenance_lock_releases, "7.2",
        "a maintenance lock that fails on one repository releases those already locked \
         through step 6.";
    status_shows_digest, "8.2",
        "repository status shows each device's digest and whether it matches the leader's.";
    health_per_daemon, "9.2",
        "database health records are kept per node daemon, not per process.";
    least_lagged_replica, "9.4",
        "read-only mode uses the healthy replica with the least lag, not the first enabled.";
    daemon_recovers_read_write, "9.4",
        "a running daemon returns to read/write once the primary's health record is \
         healthy again.";
    peer_verified_reads, "9.6",
        "a read sync while read-only asks the active peers for their durable versions and \
         marks (or refuses) a read whose freshness it cannot prove.";
    durable_generation, "12",
        "the primary's generation is stored beside the working copies, and rows of a new \
         generation are verified with the peers before they are trusted.";
    device_incarnation, "12",
        "a working copy that is not the one its row describes (wiped, replaced, restored) \
         is not served, written or copied from as current.";
    demote_invalidates_claim, "12",
        "a demote also invalidates the demoted device's durable local version, so its \
         discarded data cannot come back.";
    conditional_sync, "12",
        "a read sync records its version only if the rows are still the ones it read, \
         otherwise it starts over.";
    background_recovery, "12",
        "fenced recovery is also attempted by reads and background pulls, not only by the \
         next push.";
    thaw_asks_before_locking, "12",
        "a thaw asks for confirmation before it takes locks, then plans again under them \
         and refuses if the plan changed.";
    salvage_bundle, "12",
        "salvage writes the discarded refs and objects to a recorded bundle file before \
         the row is deleted.";
    plan_reads_commit_graph, "12",
        "thaw plans read ancestry from the commit graph, so force pushes and long pushes \
         cannot hide a discard.";
    lock_hand_off, "12",
        "a released lock wakes its waiters; polling is only the fallback.";
    bounded_database_waits, "12",
        "every health check and connection attempt is bounded, a session that misses one \
         is closed, hosts are checked in parallel, and a read whose host hangs moves to a \
         healthy replica.";
}

impl ProfileRules {
    /// The stormcell profile: every item.
    pub const STORMCELL: ProfileRules = ProfileRules::uniform(true);
    /// The phabricator profile: the seed design's behaviour, no item.
    pub const PHABRICATOR: ProfileRules = ProfileRules::uniform(false);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::config::Profile;

    #[test]
    fn every_field_is_in_the_table_once() {
        let fields: Vec<&str> = ProfileRules::ITEMS.iter().map(|i| i.field).collect();
        let unique: BTreeSet<&str> = fields.iter().copied().collect();
        assert_eq!(
            unique.len(),
            fields.len(),
            "a field is listed twice: {fields:?}"
        );
        // The serialized struct names its fields, independently of the table.
        let json = serde_json::to_value(ProfileRules::STORMCELL).expect("plain struct");
        let serialized: BTreeSet<&str> = json
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(serialized, unique);
        for item in ProfileRules::ITEMS {
            assert!(!item.section.is_empty(), "{} has no section", item.field);
            assert!(!item.summary.is_empty(), "{} has no summary", item.field);
        }
    }

    #[test]
    fn rules_round_trip_through_serde() {
        for profile in Profile::ALL {
            let rules = profile.rules();
            let json = serde_json::to_string(&rules).expect("plain struct");
            let back: ProfileRules = serde_json::from_str(&json).expect("own output");
            assert_eq!(back, rules);
        }
    }

    #[test]
    fn stormcell_is_every_item_and_phabricator_none() {
        for (item, on) in Profile::Stormcell.rules().values() {
            assert!(on, "stormcell lacks {}", item.field);
        }
        for (item, on) in Profile::Phabricator.rules().values() {
            assert!(!on, "phabricator has {}", item.field);
        }
        assert_eq!(
            Profile::Stormcell.rules().values().count(),
            ProfileRules::ITEMS.len()
        );
    }

    /// The sections of `text` (PROTOCOL.md) that carry a **[stormcell]** marker, and every
    /// numbered section. Markers outside numbered sections (the introduction and
    /// "Profiles", which describe the marking itself) are no items.
    fn marked_sections(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut current: Option<String> = None;
        let mut marked = BTreeSet::new();
        let mut all = BTreeSet::new();
        for line in text.lines() {
            if let Some(heading) = line.strip_prefix('#') {
                let first = heading.trim_start_matches('#').split_whitespace().next();
                current = first
                    .map(|w| w.trim_end_matches('.'))
                    .filter(|w| {
                        !w.is_empty()
                            && w.split('.')
                                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    })
                    .map(str::to_owned);
                if let Some(s) = &current {
                    all.insert(s.clone());
                }
            }
            if let Some(s) = current.as_ref().filter(|_| line.contains("[stormcell]")) {
                marked.insert(s.clone());
            }
        }
        (marked, all)
    }

    #[test]
    fn marked_sections_are_found() {
        let sample = "# Title\nmarked **[stormcell]** here\n## 1. Words\n- a **[stormcell]** b\n\
                      ## 2. Locks\nnothing\n### 4.2 Write\n**[stormcell]** x\n\
                      ## 12. Incarnations **[stormcell]**\n## Profiles\n**[stormcell]**\n";
        let (marked, all) = marked_sections(sample);
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(marked, set(&["1", "4.2", "12"]));
        assert_eq!(all, set(&["1", "2", "4.2", "12"]));
    }

    fn protocol_md() -> PathBuf {
        // PROTOCOL.md lives beside the project, not in it: `../shared` from the root.
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/PROTOCOL.md")
    }

    #[test]
    fn table_covers_every_marked_section_of_the_spec() {
        let path = protocol_md();
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!(
                "NOT CHECKED: {} cannot be read, so the [stormcell] items are not compared \
                 with the spec",
                path.display()
            );
            return;
        };
        let (marked, all) = marked_sections(&text);
        assert!(
            !marked.is_empty(),
            "no [stormcell] marker in {}",
            path.display()
        );
        let covered: BTreeSet<String> = ProfileRules::ITEMS
            .iter()
            .map(|i| i.section.to_owned())
            .collect();
        let missing: Vec<&String> = marked.difference(&covered).collect();
        assert!(
            missing.is_empty(),
            "sections of {} with a [stormcell] item no ProfileRules field covers: {missing:?}",
            path.display()
        );
        let unknown: Vec<&String> = covered.difference(&all).collect();
        assert!(
            unknown.is_empty(),
            "ProfileRules cites sections {} does not have: {unknown:?}",
            path.display()
        );
        eprintln!(
            "checked: the {} marked sections of {} are covered by the {} items",
            marked.len(),
            path.display(),
            ProfileRules::ITEMS.len()
        );
    }
}
