//! Leaders (PROTOCOL.md section 3): which devices hold the newest version of a repository
//! and which of them can be fetched from.

use crate::ids::{DeviceId, Version};
use crate::ports::env::{shuffle, Random};
use crate::rows::VersionRow;

/// The leader picture of one repository, computed from all of its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaders {
    /// The largest version over all rows (including inactive devices); `None` without rows.
    pub max: Option<Version>,
    /// Devices whose row is at `max`, in name order.
    pub leaders: Vec<DeviceId>,
}

impl Leaders {
    /// Computes the leaders from every row of a repository.
    pub fn of(rows: &[VersionRow]) -> Self {
        let max = rows.iter().map(|r| r.version).max();
        let mut leaders: Vec<DeviceId> = rows
            .iter()
            .filter(|r| Some(r.version) == max)
            .map(|r| r.device.clone())
            .collect();
        leaders.sort();
        Leaders { max, leaders }
    }

    /// Whether a device needs sync: it has no row, or its row is below `max`.
    pub fn needs_sync(&self, rows: &[VersionRow], device: &DeviceId) -> bool {
        match (rows.iter().find(|r| &r.device == device), self.max) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(row), Some(max)) => row.version < max,
        }
    }

    /// Whether the device is a leader.
    pub fn is_leader(&self, device: &DeviceId) -> bool {
        self.leaders.contains(device)
    }

    /// Leaders that can be fetched from (actively bound, not `this` device), in a random
    /// order drawn from `rng`.
    pub fn fetchable(
        &self,
        this: &DeviceId,
        is_active: impl Fn(&DeviceId) -> bool,
        rng: &dyn Random,
    ) -> Vec<DeviceId> {
        let mut v: Vec<DeviceId> = self
            .leaders
            .iter()
            .filter(|d| *d != this && is_active(d))
            .cloned()
            .collect();
        shuffle(rng, &mut v);
        v
    }
}

/// Rows with `writing = true`, in device order.
pub fn writing_rows(rows: &[VersionRow]) -> Vec<&VersionRow> {
    let mut v: Vec<&VersionRow> = rows.iter().filter(|r| r.writing).collect();
    v.sort_by(|a, b| a.device.cmp(&b.device));
    v
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ids::RepoId;

    pub(crate) fn row(device: &str, version: Version) -> VersionRow {
        VersionRow {
            repo: RepoId::from("R1"),
            device: DeviceId::from(device),
            version,
            writing: false,
            write_props: None,
            lock_owner: None,
            digest: None,
        }
    }

    struct Fixed;
    impl Random for Fixed {
        fn below(&self, _n: u64) -> u64 {
            0
        }
    }

    #[test]
    fn no_rows_means_no_leaders_and_no_sync_needed() {
        let l = Leaders::of(&[]);
        assert_eq!(l.max, None);
        assert!(l.leaders.is_empty());
        assert!(!l.needs_sync(&[], &DeviceId::from("a")));
    }

    #[test]
    fn leaders_are_the_rows_at_max_including_inactive_devices() {
        let rows = vec![row("c", 3), row("a", 5), row("b", 5)];
        let l = Leaders::of(&rows);
        assert_eq!(l.max, Some(5));
        assert_eq!(l.leaders, vec![DeviceId::from("a"), DeviceId::from("b")]);
        assert!(l.needs_sync(&rows, &DeviceId::from("c")));
        assert!(!l.needs_sync(&rows, &DeviceId::from("a")));
        // A device with no row needs sync once any row exists.
        assert!(l.needs_sync(&rows, &DeviceId::from("d")));
        // Only active leaders other than this device are fetchable.
        let fetchable = l.fetchable(&DeviceId::from("c"), |d| d.as_str() != "b", &Fixed);
        assert_eq!(fetchable, vec![DeviceId::from("a")]);
        let none = l.fetchable(&DeviceId::from("a"), |d| d.as_str() != "b", &Fixed);
        assert!(none.is_empty());
    }

    #[test]
    fn writing_rows_are_found() {
        let mut rows = vec![row("b", 1), row("a", 1)];
        rows[0].writing = true;
        let w = writing_rows(&rows);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].device, DeviceId::from("b"));
    }
}
