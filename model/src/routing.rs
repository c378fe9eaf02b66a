//! Routing (PROTOCOL.md section 4.3): which device a client should try first, and when a
//! failed request may be retried on another device.

use crate::error::ErrorCode;
use crate::ids::DeviceId;
use crate::leaders::Leaders;
use crate::ports::env::{shuffle, Random};
use crate::rows::VersionRow;

/// The order in which to try devices for a write: the device holding `writing` first,
/// then devices at `max`, then the rest, each group in random order. Only writable
/// devices are considered.
pub fn write_order(rows: &[VersionRow], writable: &[DeviceId], rng: &dyn Random) -> Vec<DeviceId> {
    let leaders = Leaders::of(rows);
    let rank = |d: &DeviceId| {
        if rows.iter().any(|r| &r.device == d && r.writing) {
            0
        } else if leaders.is_leader(d) {
            1
        } else {
            2
        }
    };
    let mut out = Vec::with_capacity(writable.len());
    for group in 0..3 {
        let mut g: Vec<DeviceId> = writable
            .iter()
            .filter(|d| rank(d) == group)
            .cloned()
            .collect();
        shuffle(rng, &mut g);
        out.extend(g);
    }
    out
}

/// The order in which to try devices for a read: any active device, in random order.
pub fn read_order(active: &[DeviceId], rng: &dyn Random) -> Vec<DeviceId> {
    let mut v = active.to_vec();
    shuffle(rng, &mut v);
    v
}

/// **[stormcell]** Whether a failed read may be retried on another device: yes when the
/// device could not be reached or answered with something other than a freeze or a
/// refusal about the repository itself. `None` means no answer came at all.
pub fn read_may_retry_elsewhere(code: Option<ErrorCode>) -> bool {
    match code {
        None => true,
        Some(c) => matches!(
            c,
            ErrorCode::DatabaseUnavailable | ErrorCode::LockTimeout | ErrorCode::Internal
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaders::tests::row;

    struct First;
    impl Random for First {
        fn below(&self, _n: u64) -> u64 {
            0
        }
    }

    #[test]
    fn writes_prefer_the_writer_then_leaders() {
        let mut rows = vec![row("a", 1), row("b", 2), row("c", 2)];
        rows[0].writing = true;
        let devs: Vec<DeviceId> = ["a", "b", "c", "d"]
            .iter()
            .map(|d| DeviceId::from(*d))
            .collect();
        let order = write_order(&rows, &devs, &First);
        assert_eq!(order[0], DeviceId::from("a"));
        assert!(
            order[1..3].contains(&DeviceId::from("b"))
                && order[1..3].contains(&DeviceId::from("c"))
        );
        assert_eq!(order[3], DeviceId::from("d"));
    }

    #[test]
    fn only_non_freeze_failures_move_a_read_elsewhere() {
        assert!(read_may_retry_elsewhere(None));
        assert!(!read_may_retry_elsewhere(Some(ErrorCode::LeaderLost)));
        assert!(read_may_retry_elsewhere(Some(
            ErrorCode::DatabaseUnavailable
        )));
        assert!(!read_may_retry_elsewhere(Some(ErrorCode::AmbiguousLeader)));
        assert!(!read_may_retry_elsewhere(Some(ErrorCode::NotFound)));
    }
}
