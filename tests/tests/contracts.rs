//! Port contract tests (ARCHITECTURE.md, "Port contracts"): one suite per port, written once
//! against the port's trait and run on both adapters, the simulator's and the daemon's.
//! Whatever the port's contract says holds on both sides, so a passing simulation speaks
//! for the daemon.
//!
//! - working copies (`Store`): `SimStore`, and `GitStore` on temporary bare repositories
//!   with the `git` binary;
//! - cluster database (`ClusterDb`/`DbSession`, `AdminDb`): the simulated SQL host in a
//!   turmoil simulation, and PostgreSQL (a primary, and a streaming replica where a test
//!   needs one) started by the test from the system's binaries;
//! - network (`Network`): turmoil TCP, and the daemon's TCP with its credential handshake
//!   on loopback.
//!
//! Real database tests need the PostgreSQL server binaries; without them they say so
//! (`SKIPPED ...` on standard error) and pass without checking anything.
//!
//! Differences these checks found between the adapters, each fixed on the weaker side:
//! - `GitStore` counted a push as accepted when any ref moved, and Git's own atomic
//!   receive-pack still applies the other refs when one command fails its connectivity
//!   check; pushes now stage objects with receive-pack and move refs in one transaction.
//! - `GitStore` refused to delete the branch `HEAD` names (receive-pack's policy); the
//!   port's compare-and-swap delete now applies like any other update.
//! - `PgConnector` handed out a pooled session without a round trip, so a hung host cost
//!   the full query timeout on first use; pooled sessions are checked within the connect
//!   timeout.
//! - A `PgSession` that missed an answer could be used again (and take a late answer for
//!   the next query's), and after its server restarted still claimed the locks it had
//!   held; like the simulated session it now fails every call once broken.
//! - `TcpNetwork` put no bound on a connect (nor the handshake after it) to a host that
//!   stopped answering; it fails as timed out after the connect timeout, as `SimNet` does.

#[path = "contracts/db.rs"]
mod db;
#[path = "contracts/db_real.rs"]
mod db_real;
#[path = "contracts/db_sim.rs"]
mod db_sim;
#[path = "contracts/net.rs"]
mod net;
#[path = "contracts/store.rs"]
mod store;
#[path = "contracts/store_kits.rs"]
mod store_kits;

// What the daemon's end-to-end tests use to run PostgreSQL, shared rather than copied
// (`postgres` finds `free_port` in its parent module, here the crate root).
#[path = "../../real-impl/tests/support/loopback.rs"]
mod loopback;
#[allow(dead_code)]
#[path = "../../real-impl/tests/support/postgres.rs"]
mod postgres;

use loopback::free_port;

/// What a contract check returns: any failure to reach the adapter, or a failed assertion
/// (which panics).
pub type Checked = Result<(), Box<dyn std::error::Error>>;

/// Instantiates each named check of `suite` as a test per adapter: `$run(check)` runs it.
macro_rules! contract_tests {
    ($adapter:ident, $run:expr, $suite:ident: $($check:ident),+ $(,)?) => {
        mod $adapter {
            $(
                #[test]
                fn $check() {
                    #[allow(clippy::redundant_closure_call)]
                    ($run)(stringify!($check), crate::$suite::$check);
                }
            )+
        }
    };
}

/// Runs a store check on the simulated store.
fn on_sim_store<F, Fut>(_name: &str, check: F)
where
    F: FnOnce(store_kits::SimKit) -> Fut,
    Fut: std::future::Future<Output = Checked>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    if let Err(e) = rt.block_on(check(store_kits::SimKit::default())) {
        panic!("contract failed on SimStore: {e}");
    }
}

/// Runs a store check on Git working copies.
fn on_git_store<F, Fut>(_name: &str, check: F)
where
    F: FnOnce(store_kits::GitKit) -> Fut,
    Fut: std::future::Future<Output = Checked>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    if let Err(e) = rt.block_on(check(store_kits::GitKit::new())) {
        panic!("contract failed on GitStore: {e}");
    }
}

contract_tests!(store_sim, crate::on_sim_store, store:
    an_unknown_repository_is_empty,
    ref_updates_are_compare_and_swap,
    a_push_with_one_failing_ref_applies_nothing,
    what_sync_made_durable_survives_a_restart,
    a_write_marker_survives_a_restart_until_cleared,
    a_forgotten_claim_stays_forgotten,
    equal_refs_have_equal_digests_and_a_mirror_is_exact,
    an_import_with_a_missing_object_changes_nothing,
    ancestry_is_read_from_the_commit_graph,
    a_salvage_bundle_keeps_refs_the_copy_no_longer_holds,
);
contract_tests!(store_git, crate::on_git_store, store:
    an_unknown_repository_is_empty,
    ref_updates_are_compare_and_swap,
    a_push_with_one_failing_ref_applies_nothing,
    what_sync_made_durable_survives_a_restart,
    a_write_marker_survives_a_restart_until_cleared,
    a_forgotten_claim_stays_forgotten,
    equal_refs_have_equal_digests_and_a_mirror_is_exact,
    an_import_with_a_missing_object_changes_nothing,
    ancestry_is_read_from_the_commit_graph,
    a_salvage_bundle_keeps_refs_the_copy_no_longer_holds,
);

/// The database checks; the ones that need a replica say so.
macro_rules! db_tests {
    ($adapter:ident, $run:path) => {
        mod $adapter {
            use crate::db;
            #[test]
            fn locks_exclude_and_end_with_their_session() {
                $run(
                    "locks_exclude_and_end_with_their_session",
                    false,
                    db::locks_exclude_and_end_with_their_session,
                );
            }
            #[test]
            fn a_release_hands_the_lock_to_the_first_waiter() {
                $run(
                    "a_release_hands_the_lock_to_the_first_waiter",
                    false,
                    db::a_release_hands_the_lock_to_the_first_waiter,
                );
            }
            #[test]
            fn a_lost_session_loses_its_locks() {
                $run(
                    "a_lost_session_loses_its_locks",
                    false,
                    db::a_lost_session_loses_its_locks,
                );
            }
            #[test]
            fn connect_never_hands_out_a_dead_session() {
                $run(
                    "connect_never_hands_out_a_dead_session",
                    false,
                    db::connect_never_hands_out_a_dead_session,
                );
            }
            #[test]
            fn a_hung_host_costs_bounded_waits() {
                $run(
                    "a_hung_host_costs_bounded_waits",
                    false,
                    db::a_hung_host_costs_bounded_waits,
                );
            }
            #[test]
            fn set_version_is_conditional_on_the_rows() {
                $run(
                    "set_version_is_conditional_on_the_rows",
                    false,
                    db::set_version_is_conditional_on_the_rows,
                );
            }
            #[test]
            fn finish_write_changes_only_the_writers_row() {
                $run(
                    "finish_write_changes_only_the_writers_row",
                    false,
                    db::finish_write_changes_only_the_writers_row,
                );
            }
            #[test]
            fn push_ids_rise_above_every_version() {
                $run(
                    "push_ids_rise_above_every_version",
                    false,
                    db::push_ids_rise_above_every_version,
                );
            }
            #[test]
            fn admin_edits_and_demotes() {
                $run(
                    "admin_edits_and_demotes",
                    false,
                    db::admin_edits_and_demotes,
                );
            }
            #[test]
            fn salvage_bundles_are_recorded() {
                $run(
                    "salvage_bundles_are_recorded",
                    false,
                    db::salvage_bundles_are_recorded,
                );
            }
            #[test]
            fn a_promotion_starts_a_new_generation() {
                $run(
                    "a_promotion_starts_a_new_generation",
                    true,
                    db::a_promotion_starts_a_new_generation,
                );
            }
        }
    };
}

/// Runs a database check in the simulator (the name is only for the real side's skips).
fn on_sim_db<F, Fut>(_name: &str, replica: bool, check: F)
where
    F: FnOnce(db_sim::SimEnv) -> Fut + 'static,
    Fut: std::future::Future<Output = Checked> + 'static,
{
    db_sim::run(replica, check);
}

db_tests!(db_sim_host, crate::on_sim_db);
db_tests!(db_postgres, crate::db_real::run);

contract_tests!(net_sim, |_, check| crate::net::run_sim(check), net:
    bytes_cross_both_ways_and_a_close_is_seen,
    a_connect_where_nothing_listens_fails_promptly,
    a_connect_to_a_hung_host_is_bounded,
);
contract_tests!(net_tcp, |_, check| crate::net::run_tcp(check), net:
    bytes_cross_both_ways_and_a_close_is_seen,
    a_connect_where_nothing_listens_fails_promptly,
    a_connect_to_a_hung_host_is_bounded,
);
