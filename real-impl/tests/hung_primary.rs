//! The primary database hangs (SIGSTOP: it still accepts connections and never answers),
//! with real parts: a PostgreSQL primary and streaming replica, three `stormcell node`
//! processes and the stock `git` client (issue 12, item 4; PROTOCOL.md 9.3, 9.4).
//!
//! Reads go on from the replica, pushes are refused as read-only, and no request hangs:
//! the health checks find the hung host within their 2 s limit and every wait on it ends
//! then. The bounds asserted here are generous liveness guards; the figures the benchmark
//! reports (`real-impl/bench/run.sh`) are printed for the record.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stormcell_harness::history::{ErrorKind, FaultKind, Outcome, Phase};
use support::client::{git, Recorder};
use support::{prerequisites, Cluster};

/// No request may take longer than this while the primary hangs (a liveness bound, far
/// above the benchmark's target, so a slow shared machine does not fail the test).
const REQUEST_BOUND: Duration = Duration::from_secs(15);
/// How long the primary stays hung.
const HANG: Duration = Duration::from_secs(20);

fn history_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.history.json"))
}

/// Processes stopped with SIGSTOP, continued when this is dropped: a failing assertion
/// unwinds through here, so the server is never left stopped.
struct Stopped(Vec<u32>);

impl Stopped {
    fn signal(pids: &[u32], signal: &str) {
        for pid in pids {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .status();
        }
    }

    fn stop(pids: Vec<u32>) -> Stopped {
        Self::signal(&pids, "STOP");
        Stopped(pids)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        Self::signal(&self.0, "CONT");
    }
}

/// Copies the nodes' logs next to the history when dropped, pass or fail, for a look at
/// what each device waited on.
struct KeepLogs(Vec<(String, std::path::PathBuf)>);

impl Drop for KeepLogs {
    fn drop(&mut self) {
        for (name, log) in &self.0 {
            let kept = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("hung_primary.{name}.log"));
            let _ = std::fs::copy(log, kept);
        }
    }
}

/// What a client listing refs in a loop saw.
#[derive(Default)]
struct Lister {
    /// Every attempt's duration and whether it was served.
    attempts: Vec<(Duration, bool, String)>,
}

#[test]
fn with_the_primary_hung_reads_go_on_and_writes_are_refused_without_hanging() {
    let Some(pg) = prerequisites("hung_primary") else {
        return;
    };
    let cluster = Cluster::start_with(&pg, true, |_| String::new());
    let _logs = KeepLogs(
        cluster
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.dir.join("node.log")))
            .collect(),
    );
    let mut client = {
        let nodes: Vec<_> = cluster.nodes.iter().collect();
        Recorder::new(&cluster.client_dir(), "e2e-hung-primary", &nodes, "R1")
    };
    client.database_hosts("db1", &["db2"]);
    let c1 = client.commit(None);
    let (o, text) = client.push(
        cluster.node(0),
        "R1",
        "refs/heads/main",
        None,
        &c1,
        Phase::Workload,
    );
    assert!(o.is_ok(), "first push: {text}");
    // Every device holds the push and has idle database sessions pooled, as a busy
    // device would when its primary hangs.
    for i in 0..3 {
        for _ in 0..3 {
            let (o, text) = client.read(cluster.node(i), "R1", Phase::Workload);
            assert!(o.is_ok(), "read before the hang: {text}");
        }
    }
    // The replica has the push before the hang, so reads on it are current.
    std::thread::sleep(Duration::from_secs(1));

    // A client that lists refs from device 3 over and over, across the moment the
    // primary hangs: some of its requests are in flight on the primary right then.
    let listing = Arc::new(AtomicBool::new(true));
    let lister = Arc::new(Mutex::new(Lister::default()));
    let background = {
        let listing = Arc::clone(&listing);
        let lister = Arc::clone(&lister);
        let url = cluster.node(2).url("R1");
        let dir = cluster.client_dir();
        std::thread::spawn(move || {
            while listing.load(Ordering::Relaxed) {
                let t = Instant::now();
                let out = git(&dir)
                    .args(["ls-remote", &url])
                    .output()
                    .expect("git ls-remote runs");
                let text = String::from_utf8_lossy(&out.stderr).into_owned();
                lister
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .attempts
                    .push((t.elapsed(), out.status.success(), text));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    let hung = Stopped::stop(cluster.primary.pids());
    client.fault(FaultKind::Strike, "db1", "SIGSTOP");
    let hung_at = Instant::now();
    let c2 = client.commit(Some(&c1));
    let mut longest = Duration::ZERO;
    let mut refused_after = None;
    let mut reads = 0;
    let mut round = 0;
    while hung_at.elapsed() < HANG {
        let t = Instant::now();
        let (o, text) = client.push(
            cluster.node(round % 3),
            "R1",
            "refs/heads/main",
            Some(&c1),
            &c2,
            Phase::Workload,
        );
        let took = t.elapsed();
        longest = longest.max(took);
        assert!(
            took < REQUEST_BOUND,
            "a push took {took:?} while the primary hung: {text}"
        );
        assert!(
            matches!(
                o,
                Outcome::Refused {
                    error: ErrorKind::ReadOnly,
                    ..
                }
            ),
            "a push while the primary hangs is refused as read-only: {o:?} {text}"
        );
        refused_after.get_or_insert(hung_at.elapsed());

        let t = Instant::now();
        let node = cluster.node((round + 1) % 3);
        let (o, text) = if round % 2 == 0 {
            client.read(node, "R1", Phase::Workload)
        } else {
            client.clone(node, "R1", Phase::Workload)
        };
        let took = t.elapsed();
        longest = longest.max(took);
        assert!(
            took < REQUEST_BOUND,
            "a read took {took:?} while the primary hung: {text}"
        );
        assert!(
            o.is_ok(),
            "a read while the primary hangs is served: {text}"
        );
        reads += 1;
        round += 1;
    }
    listing.store(false, Ordering::Relaxed);
    background.join().expect("the listing thread ends");
    {
        let lister = lister.lock().unwrap_or_else(|e| e.into_inner());
        for (took, served, text) in &lister.attempts {
            longest = longest.max(*took);
            assert!(
                *took < REQUEST_BOUND,
                "a background listing took {took:?} while the primary hung: {text}"
            );
            assert!(
                *served,
                "a background listing across the hang was not served: {text}"
            );
        }
        // Figures for the report, not assertions (timings on shared machines are noise).
        eprintln!(
            "primary hung {HANG:?}: {} pushes refused as read-only (the first after {:?}), \
             {reads} reads and {} background listings served, the longest request {longest:?}",
            round,
            refused_after.unwrap_or_default(),
            lister.attempts.len(),
        );
    }

    // The primary answers again: pushes go through on every device once its own health
    // record of the primary recovers.
    drop(hung);
    client.fault(FaultKind::Restart, "db1", "SIGCONT");
    let resumed = Instant::now();
    for i in 0..3 {
        // A ref of each device's own, so no push's compare-and-swap meets another's.
        let name = format!("refs/heads/after-hang-{i}");
        client.push_until_writable(cluster.node(i), "R1", &name, None, &c2);
        eprintln!(
            "the primary answers again: {} takes pushes {:?} after SIGCONT",
            cluster.node(i).name,
            resumed.elapsed()
        );
    }

    let nodes: Vec<_> = cluster.nodes.iter().collect();
    client.final_phase(&nodes, "R1");
    client.check(&history_path("hung_primary"));
}
