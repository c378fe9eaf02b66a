//! End-to-end tests with real parts: a PostgreSQL server started from the system's
//! binaries, three `stormcell node` processes on loopback, and the stock `git` client.
//! Each test records its client history and runs the simulator's checkers on it.
//!
//! They skip, saying why, only when the PostgreSQL server binaries are absent;
//! `tests/run-all.sh` installs them.

mod support;

use std::time::{Duration, Instant};

use stormcell_harness::history::{ErrorKind, FaultKind, Outcome, Phase};
use stormcell_model::admin::{ThawOutcome, ThawPlan};
use support::certs::TestCa;
use support::client::{git, Recorder};
use support::{prerequisites, Cluster};

fn history_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.history.json"))
}

/// The cluster of this test runs its peer connections over TLS (a `[tls]` section with a
/// CA made here); the other tests run plain TCP.
#[test]
fn push_to_one_device_clone_from_another() {
    let Some(pg) = prerequisites("push_to_one_device_clone_from_another") else {
        return;
    };
    let certs = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(certs.path());
    let tls: Vec<String> = (1..=3)
        .map(|i| ca.tls_section(&format!("repo00{i}")))
        .collect();
    let cluster = Cluster::start(&pg, |i| tls[i].clone());
    let nodes: Vec<_> = cluster.nodes.iter().collect();
    let mut client = Recorder::new(&cluster.client_dir(), "e2e-push-clone", &nodes, "R1");

    // A push to device 1...
    let c1 = client.commit(None);
    let (o, text) = client.push(
        nodes[0],
        "R1",
        "refs/heads/main",
        None,
        &c1,
        Phase::Workload,
    );
    assert!(o.is_ok(), "push to repo001: {text}");
    assert!(
        text.contains("# Acquired write lock") && text.contains("# Write recorded at version"),
        "the cluster's progress lines reach the client: {text}"
    );

    // ...is what a clone from device 3 sees.
    let clone = cluster.client_dir().join("clone3");
    let out = git(&cluster.client_dir())
        .args(["clone", "-q", &nodes[2].url("R1")])
        .arg(&clone)
        .output()
        .expect("git clone");
    assert!(
        out.status.success(),
        "clone from repo003: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = git(&clone)
        .args(["rev-parse", "HEAD"])
        .output()
        .expect("rev-parse");
    assert_eq!(String::from_utf8_lossy(&head.stdout).trim(), c1);

    // Protocol v0 clients are served too.
    let out = git(&cluster.client_dir())
        .args(["-c", "protocol.version=0", "ls-remote", &nodes[1].url("R1")])
        .output()
        .expect("ls-remote");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&c1));

    // A push to device 3 on top of it, read back from device 1 and 2.
    let c2 = client.commit(Some(&c1));
    let (o, text) = client.push(
        nodes[2],
        "R1",
        "refs/heads/main",
        Some(&c1),
        &c2,
        Phase::Workload,
    );
    assert!(o.is_ok(), "push to repo003: {text}");
    for node in &nodes[..2] {
        let (o, text) = client.read(node, "R1", Phase::Workload);
        match o {
            Outcome::Ok {
                refs: Some(refs), ..
            } => {
                assert_eq!(refs.get("refs/heads/main"), Some(&c2), "{}", node.name)
            }
            other => panic!("read on {}: {other:?} {text}", node.name),
        }
    }

    // A push that expects a stale value is rejected and changes nothing.
    let c3 = client.commit(Some(&c1));
    let (o, text) = client.push(
        nodes[1],
        "R1",
        "refs/heads/main",
        Some(&c1),
        &c3,
        Phase::Workload,
    );
    assert!(
        matches!(
            o,
            Outcome::Refused {
                error: ErrorKind::Rejected,
                ..
            }
        ),
        "{o:?} {text}"
    );

    // Wrong tokens and wrong peer credentials are refused.
    let bad = nodes[0].url("R1").replace("alice-token-1", "wrong-token");
    let out = git(&cluster.client_dir())
        .args(["ls-remote", &bad])
        .output()
        .expect("ls-remote");
    assert!(!out.status.success());
    let out = std::process::Command::new("git")
        .args(["-c", "http.extraHeader=X-Stormcell-Device: repo002"])
        .args([
            "-c",
            "http.extraHeader=X-Stormcell-Credential: not-the-credential",
        ])
        .args([
            "ls-remote",
            &format!("http://127.0.0.1:{}/R1.git", nodes[0].http_port),
        ])
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("ls-remote");
    // Devices never log in to the Git endpoint (objects move over the peer connection),
    // so peer headers open nothing there; tests/peers.rs covers the peer port.
    assert!(!out.status.success());

    // Every device ran its peer connections over TLS, and none was refused.
    for node in &nodes {
        let log = node.log();
        assert!(log.contains("tls=true"), "{}: {log}", node.name);
        // (Port probes of the test's start-up show up as refused handshakes; no real
        // peer may fail its handshake.)
        assert!(
            !log.contains("connection to peer failed") && !log.contains("invalid peer certificate"),
            "{}: {log}",
            node.name
        );
    }
    // A peer without a certificate of the cluster's CA is refused and logged.
    {
        use std::io::{Read, Write};
        let mut plain =
            std::net::TcpStream::connect(("127.0.0.1", nodes[0].peer_port)).expect("connect");
        let _ = plain.write_all(b"stormcell-peer 1 repo002 credential-of-repo002\n");
        let mut answer = Vec::new();
        let _ = plain.read_to_end(&mut answer);
        assert!(!answer.starts_with(b"ok"), "a plain peer was admitted");
        let start = Instant::now();
        let refused = || {
            nodes[0]
                .log()
                .lines()
                .any(|l| l.contains("TLS handshake failed") && !l.contains("handshake eof"))
        };
        while !refused() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "refusal not logged"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // A `[tls]` section naming a missing file stops the node, naming the field.
    let config = std::fs::read_to_string(nodes[0].config_path()).expect("config");
    let bad = cluster.dir.path().join("bad-tls.toml");
    let missing = certs.path().join("missing.pem");
    let cert_line = config
        .lines()
        .find(|l| l.starts_with("cert = "))
        .expect("cert line");
    std::fs::write(
        &bad,
        config.replace(cert_line, &format!("cert = \"{}\"", missing.display())),
    )
    .expect("bad config");
    let out = std::process::Command::new(support::stormcell())
        .args(["node", "--config"])
        .arg(&bad)
        .output()
        .expect("stormcell runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("field `tls.cert`: cannot read"), "{err}");

    client.final_phase(&nodes, "R1");
    client.check(&history_path("push_to_one_device_clone_from_another"));

    let status = cluster.admin(&["repository", "status", "R1"]);
    assert_eq!(
        status.matches(" yes").count(),
        3,
        "every device matches the leader:\n{status}"
    );

    // The metrics saw the reads' syncs, and every device is level with the cluster.
    for node in &nodes {
        let start = Instant::now();
        loop {
            let text = metrics(node);
            if text.contains("stormcell_versions_behind{repo=\"R1\"} 0")
                && text.contains("stormcell_repositories_behind 0")
            {
                assert!(text.contains("stormcell_sync_wait_seconds_count"), "{text}");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{} never level: {text}",
                node.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Waits until `path` exists (liveness bound only).
fn wait_for_file(path: &std::path::Path, log: &dyn Fn() -> String) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{} never appeared; log:\n{}",
            path.display(),
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A cluster in which device 1 (`repo001`) died holding a push after its refs were
/// written, before its version was recorded: a write interruption.
struct Interrupted {
    cluster: Cluster,
    client: Recorder,
    /// The first push, through device 2: every device's starting point.
    c1: String,
    /// The killed push's commit.
    c2: String,
    /// How the killed push's client saw it end, and what it printed.
    killed: (Outcome, String),
}

fn interrupt_a_push(pg: &std::path::Path, scenario: &str) -> Interrupted {
    let marker_dir = tempfile::tempdir().expect("tempdir");
    let marker = marker_dir.path().join("hit");
    let failpoint = format!(
        "\n[failpoint]\npoint = \"after-refs-written\"\nmarker = \"{}\"\n",
        marker.display()
    );
    let mut cluster = Cluster::start(pg, |i| {
        if i == 0 {
            failpoint.clone()
        } else {
            String::new()
        }
    });
    let mut client = {
        let nodes: Vec<_> = cluster.nodes.iter().collect();
        Recorder::new(&cluster.client_dir(), scenario, &nodes, "R1")
    };
    let c1 = client.commit(None);
    let (o, text) = client.push(
        cluster.node(1),
        "R1",
        "refs/heads/main",
        None,
        &c1,
        Phase::Workload,
    );
    assert!(o.is_ok(), "first push: {text}");

    let c2 = client.commit(Some(&c1));
    let pending = client.start_push(cluster.node(0), "R1", "refs/heads/main", Some(&c1), &c2);
    wait_for_file(&marker, &|| cluster.node(0).log());
    cluster.nodes[0].kill9();
    client.fault(
        FaultKind::Strike,
        "repo001",
        "kill -9 at after-refs-written",
    );
    let killed = client.finish_push(pending);
    Interrupted {
        cluster,
        client,
        c1,
        c2,
        killed,
    }
}

#[test]
fn kill_during_a_push_freezes_then_recovers_without_losing_acknowledged_pushes() {
    let Some(pg) = prerequisites("kill_during_a_push") else {
        return;
    };
    let Interrupted {
        mut cluster,
        mut client,
        c1,
        killed: (o, text),
        ..
    } = interrupt_a_push(&pg, "e2e-kill-mid-push");
    let hosts = cluster.hosts();
    assert!(
        matches!(o, Outcome::Unknown { .. }),
        "the killed push's client cannot know: {o:?} {text}"
    );

    // Frozen for writes while the interrupted device is down...
    let c3 = client.commit(Some(&c1));
    let (o, text) = client.push(
        cluster.node(1),
        "R1",
        "refs/heads/main",
        Some(&c1),
        &c3,
        Phase::Workload,
    );
    assert!(
        matches!(
            o,
            Outcome::Refused {
                error: ErrorKind::WriteInterruption,
                ..
            }
        ),
        "writes freeze: {o:?} {text}"
    );
    assert!(
        text.contains("thaw R1 --demote repo001"),
        "the refusal names the resolving command: {text}"
    );
    // ...while reads go on.
    let (o, text) = client.read(cluster.node(2), "R1", Phase::Workload);
    assert!(o.is_ok(), "reads go on during a write freeze: {text}");
    let status = cluster.admin(&["repository", "status", "R1"]);
    assert!(
        status.contains("yes (for"),
        "status shows the interrupted write:\n{status}"
    );

    // The device comes back (without the failpoint): fenced recovery adopts the write
    // that reached its disk, and pushes go on.
    cluster.nodes[0].start(&hosts, "");
    client.fault(FaultKind::Restart, "repo001", "restarted");
    let (o, text) = client.read(cluster.node(2), "R1", Phase::Workload);
    let main = match &o {
        Outcome::Ok {
            refs: Some(refs), ..
        } => refs.get("refs/heads/main").cloned(),
        _ => None,
    };
    let c4 = client.commit(main.as_deref());
    let (o4, text4) = client.push(
        cluster.node(1),
        "R1",
        "refs/heads/main",
        main.as_deref(),
        &c4,
        Phase::Workload,
    );
    if !o4.is_ok() {
        // The first push after the restart may find the version adopted under it; the
        // next one, on top of what a read shows, goes through.
        let (o, _) = client.read(cluster.node(1), "R1", Phase::Workload);
        let main = match &o {
            Outcome::Ok {
                refs: Some(refs), ..
            } => refs.get("refs/heads/main").cloned(),
            _ => None,
        };
        let c5 = client.commit(main.as_deref());
        let (o5, text5) = client.push(
            cluster.node(1),
            "R1",
            "refs/heads/main",
            main.as_deref(),
            &c5,
            Phase::Workload,
        );
        assert!(
            o5.is_ok(),
            "after recovery pushes go on: {text4}\n{text5}\n{text}"
        );
    }
    let log: String = cluster.nodes.iter().map(|n| n.log()).collect();
    assert!(
        log.contains("\"event\":\"recovered\""),
        "fenced recovery ran and was logged"
    );
    assert!(
        log.contains("\"how\":\"adopted\""),
        "the interrupted write was adopted, not dropped"
    );

    let nodes: Vec<_> = cluster.nodes.iter().collect();
    client.final_phase(&nodes, "R1");
    client.check(&history_path("kill_during_a_push"));
}

/// A node's metrics text (empty when it cannot be had).
fn metrics(node: &support::Node) -> String {
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", node.http_port)) else {
        return String::new();
    };
    use std::io::{Read, Write};
    let request = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if conn.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut text = String::new();
    let _ = conn.read_to_string(&mut text);
    text
}

/// Whether a node's metrics say it is read-only for `reason`.
fn read_only_for(node: &support::Node, reason: &str) -> bool {
    metrics(node).contains(&format!("stormcell_read_only{{reason=\"{reason}\"}} 1"))
}

/// The number of reads a node served marked possibly stale.
fn possibly_stale_reads(node: &support::Node) -> u64 {
    metrics(node)
        .lines()
        .find_map(|l| l.strip_prefix("stormcell_possibly_stale_reads_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn with_the_primary_down_pushes_are_refused_as_read_only_and_clones_still_served() {
    let Some(pg) = prerequisites("primary_down") else {
        return;
    };
    let mut cluster = Cluster::start_with(&pg, true, |_| String::new());
    let mut client = {
        let nodes: Vec<_> = cluster.nodes.iter().collect();
        Recorder::new(&cluster.client_dir(), "e2e-primary-down", &nodes, "R1")
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
    // Every device holds the first push before the outage.
    for i in 1..3 {
        let (o, text) = client.read(cluster.node(i), "R1", Phase::Workload);
        assert!(o.is_ok(), "read: {text}");
    }

    cluster.primary.stop();
    client.fault(FaultKind::Strike, "db1", "primary stopped");
    let c2 = client.commit(Some(&c1));
    let t = Instant::now();
    let (o, text) = client.push(
        cluster.node(1),
        "R1",
        "refs/heads/main",
        Some(&c1),
        &c2,
        Phase::Workload,
    );
    // A figure for the report, not an assertion (timings on shared machines are noise).
    eprintln!(
        "first push after the primary stopped refused after {} ms",
        t.elapsed().as_millis()
    );
    assert!(
        matches!(
            o,
            Outcome::Refused {
                error: ErrorKind::ReadOnly,
                ..
            }
        ),
        "a push without the primary is refused as read-only: {o:?} {text}"
    );
    assert!(
        text.contains("read-only mode (unreachable primary)"),
        "{text}"
    );

    // Once the health record says the primary is gone, the refusal names that instead.
    let start = Instant::now();
    while !read_only_for(cluster.node(1), "severed") {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the primary never counted as severed"
        );
        let _ = client.push(
            cluster.node(1),
            "R1",
            "refs/heads/main",
            Some(&c1),
            &c2,
            Phase::Workload,
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let t = Instant::now();
    let (o, text) = client.push(
        cluster.node(1),
        "R1",
        "refs/heads/main",
        Some(&c1),
        &c2,
        Phase::Workload,
    );
    eprintln!(
        "push refused as read-only after {} ms",
        t.elapsed().as_millis()
    );
    assert!(
        text.contains("read-only mode (severed primary)"),
        "{o:?} {text}"
    );

    // Reads are served from the replica.
    let clone = cluster.client_dir().join("clone-during-outage");
    let out = git(&cluster.client_dir())
        .args(["clone", "-q", &cluster.node(2).url("R1")])
        .arg(&clone)
        .output()
        .expect("git clone");
    assert!(
        out.status.success(),
        "clone while the primary is down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (o, text) = client.read(cluster.node(0), "R1", Phase::Workload);
    assert!(o.is_ok(), "read while the primary is down: {text}");
    // Every peer answered, so those reads were proven fresh.
    assert_eq!(possibly_stale_reads(cluster.node(2)), 0);

    // With a peer gone as well, nothing proves the replica's rows current: the read is
    // still served, marked possibly stale, and the client is told.
    cluster.nodes[0].kill9();
    client.fault(FaultKind::Strike, "repo001", "kill -9");
    let (o, text) = client.clone(cluster.node(2), "R1", Phase::Workload);
    assert!(
        matches!(
            o,
            Outcome::Ok {
                possibly_stale: true,
                ..
            }
        ),
        "a clone without the primary and a peer is served as possibly stale: {o:?} {text}"
    );
    assert_eq!(main_of(&o), Some(c1.clone()), "{text}");
    assert_eq!(possibly_stale_reads(cluster.node(2)), 1);

    // The primary returns: pushes go through again once its health record recovers.
    cluster.primary.start();
    client.fault(FaultKind::Restart, "db1", "primary started");
    let hosts = cluster.hosts();
    cluster.nodes[0].start(&hosts, "");
    client.fault(FaultKind::Restart, "repo001", "started");
    client.push_until_writable(cluster.node(1), "R1", "refs/heads/main", Some(&c1), &c2);

    let nodes: Vec<_> = cluster.nodes.iter().collect();
    client.final_phase(&nodes, "R1");
    client.check(&history_path("primary_down"));
}

/// Reads `main` of `repo` off a successful read outcome.
fn main_of(o: &Outcome) -> Option<String> {
    match o {
        Outcome::Ok {
            refs: Some(refs), ..
        } => refs.get("refs/heads/main").cloned(),
        _ => None,
    }
}

#[test]
fn promoting_the_replica_repoints_the_devices_without_losing_acknowledged_pushes() {
    let Some(pg) = prerequisites("promote_replica") else {
        return;
    };
    let started = Instant::now();
    let mut cluster = Cluster::start_with(&pg, true, |_| String::new());
    let mut client = {
        let nodes: Vec<_> = cluster.nodes.iter().collect();
        Recorder::new(&cluster.client_dir(), "e2e-promote-replica", &nodes, "R1")
    };
    client.database_hosts("db1", &["db2"]);

    // Two acknowledged pushes on two devices before the primary goes.
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
    let c2 = client.commit(Some(&c1));
    let (o, text) = client.push(
        cluster.node(1),
        "R1",
        "refs/heads/main",
        Some(&c1),
        &c2,
        Phase::Workload,
    );
    assert!(o.is_ok(), "second push: {text}");

    cluster.primary.stop();
    client.fault(FaultKind::Strike, "db1", "primary stopped");

    // Bad input changes nothing and names what is wrong.
    let replica = cluster.replica.as_ref().expect("replica").conninfo();
    let configs: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.config_path().display().to_string())
        .collect();
    let before = std::fs::read_to_string(&configs[0]).expect("config");
    let (ok, _, err) = cluster.admin_try(
        &replica,
        None,
        &["db", "promote", "db9", "--config", &configs[0]],
    );
    assert!(
        !ok && err.contains("db9"),
        "an unknown host is refused: {err}"
    );
    assert_eq!(
        std::fs::read_to_string(&configs[0]).expect("config"),
        before
    );

    let mut args = vec!["db", "promote", "db2"];
    for c in &configs {
        args.extend(["--config", c.as_str()]);
    }
    let t = Instant::now();
    let (ok, out, err) = cluster.admin_try(&replica, None, &args);
    assert!(ok, "db promote: {err}");
    assert!(out.contains("promoted \"db2\""), "{out}");
    client.fault(FaultKind::Promote, "db2", "stormcell db promote db2");
    eprintln!("db promote took {} ms", t.elapsed().as_millis());
    let rewritten = std::fs::read_to_string(&configs[0]).expect("config");
    assert!(rewritten.contains("enabled = false"), "{rewritten}");

    // The nodes pick the new primary up by themselves, and pushes go through again.
    let t = Instant::now();
    let c3 = client.commit(Some(&c2));
    loop {
        let (o, text) = client.push(
            cluster.node(2),
            "R1",
            "refs/heads/main",
            Some(&c2),
            &c3,
            Phase::Workload,
        );
        if o.is_ok() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "writes never reached the new primary: {text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "first push accepted {} ms after the promotion",
        t.elapsed().as_millis()
    );
    for i in 0..3 {
        let (o, text) = client.read(cluster.node(i), "R1", Phase::Workload);
        assert_eq!(main_of(&o), Some(c3.clone()), "read on {i}: {text}");
    }
    let log = cluster.node(0).log();
    assert!(
        log.contains("database hosts changed"),
        "the node logged the re-pointing"
    );
    let status = cluster.admin_try(&replica, Some(0), &["db", "status"]);
    assert!(status.1.contains("db2 (primary)"), "{}", status.1);

    let nodes: Vec<_> = cluster.nodes.iter().collect();
    client.final_phase(&nodes, "R1");
    client.check(&history_path("promote_replica"));
    eprintln!("promote test took {} ms", started.elapsed().as_millis());
}

/// Runs `repository thaw ... --json` as device 2 and records it as an operator action.
fn thaw(cluster: &Cluster, client: &mut Recorder, args: &[&str]) -> ThawOutcome {
    let started = client.now_ms();
    let mut full = vec!["--json", "repository", "thaw"];
    full.extend_from_slice(args);
    let out = cluster.admin_as(1, &full);
    let outcome: ThawOutcome = serde_json::from_str(&out).expect("thaw prints its outcome");
    client.operator(
        started,
        &format!("stormcell repository thaw {}", args.join(" ")),
        true,
        "ok",
        Some(&outcome),
    );
    outcome
}

/// `repository status R1 --json`.
fn rows(cluster: &Cluster) -> String {
    cluster.admin_as(1, &["--json", "repository", "status", "R1"])
}

#[test]
fn thaw_through_the_cli_plans_demotes_and_promotes() {
    let Some(pg) = prerequisites("thaw_cli") else {
        return;
    };
    let started = Instant::now();
    // A write interruption: device 1 dies holding a push after its refs are written.
    let Interrupted {
        mut cluster,
        mut client,
        c1,
        c2,
        killed: (o, _),
    } = interrupt_a_push(&pg, "e2e-thaw-cli");
    let hosts = cluster.hosts();
    assert!(matches!(o, Outcome::Unknown { .. }), "{o:?}");
    let c3 = client.commit(Some(&c1));
    let (o, text) = client.push(
        cluster.node(1),
        "R1",
        "refs/heads/main",
        Some(&c1),
        &c3,
        Phase::Workload,
    );
    assert!(
        matches!(
            o,
            Outcome::Refused {
                error: ErrorKind::WriteInterruption,
                ..
            }
        ),
        "writes freeze: {o:?} {text}"
    );

    // The plan says what a demote would do and changes nothing.
    let before = rows(&cluster);
    let plan = cluster.admin_as(
        1,
        &[
            "--json",
            "repository",
            "thaw",
            "R1",
            "--demote",
            "repo001",
            "--plan",
        ],
    );
    let plan: ThawPlan = serde_json::from_str(&plan).expect("plan JSON");
    assert_eq!(plan.actions.len(), 1, "{plan:?}");
    assert_eq!(plan.actions[0].device.as_str(), "repo001");
    assert!(plan.actions[0].kept_from.is_some(), "{plan:?}");
    let text = cluster.admin_as(
        1,
        &["repository", "thaw", "R1", "--demote", "repo001", "--plan"],
    );
    assert!(text.contains("Repository R1: demote repo001"), "{text}");
    // Without a terminal and without --force nobody confirms: nothing changes.
    let (ok, _, err) = cluster.admin_try(
        &cluster.primary.conninfo(),
        Some(1),
        &["repository", "thaw", "R1", "--demote", "repo001"],
    );
    assert!(!ok && err.contains("Nothing changed"), "{err}");
    // Bad input names the flag or the name.
    let (ok, _, err) = cluster.admin_try(
        &cluster.primary.conninfo(),
        Some(1),
        &["repository", "thaw", "R1", "--promote", "S1", "--force"],
    );
    assert!(!ok && err.contains("--promote"), "{err}");
    let (ok, _, err) = cluster.admin_try(
        &cluster.primary.conninfo(),
        Some(1),
        &["repository", "thaw", "R1", "--demote", "nobody", "--force"],
    );
    assert!(!ok && err.contains("nobody"), "{err}");
    assert_eq!(rows(&cluster), before, "plans and refusals change nothing");

    // Demote the interrupted device: writes resume.
    let t = Instant::now();
    let outcome = thaw(
        &cluster,
        &mut client,
        &["R1", "--demote", "repo001", "--force"],
    );
    eprintln!("thaw --demote took {} ms", t.elapsed().as_millis());
    assert_eq!(outcome.applied.len(), 1, "{outcome:?}");
    let (o, text) = client.push(
        cluster.node(1),
        "R1",
        "refs/heads/main",
        Some(&c1),
        &c3,
        Phase::Workload,
    );
    assert!(o.is_ok(), "writes resume after the demote: {text}");

    // Demote the whole service: no rows are left, so the repository is frozen as an
    // ambiguous leader until a device is promoted.
    thaw(&cluster, &mut client, &["R1", "--demote", "S1", "--force"]);
    let frozen = client.commit(Some(&c3));
    let (o, text) = client.push(
        cluster.node(2),
        "R1",
        "refs/heads/main",
        Some(&c3),
        &frozen,
        Phase::Workload,
    );
    assert!(
        matches!(
            o,
            Outcome::Refused {
                error: ErrorKind::AmbiguousLeader,
                ..
            }
        ),
        "no rows and three devices: ambiguous: {o:?} {text}"
    );

    // Device 1 returns; while the repository is ambiguous it does not sync, so its working
    // copy still holds the interrupted write. The promote's plan lists it as discarded...
    cluster.nodes[0].start(&hosts, "");
    client.fault(FaultKind::Restart, "repo001", "restarted");
    let before = rows(&cluster);
    let plan = cluster.admin_as(
        1,
        &[
            "--json",
            "repository",
            "thaw",
            "R1",
            "--promote",
            "repo002",
            "--plan",
        ],
    );
    let plan: ThawPlan = serde_json::from_str(&plan).expect("plan JSON");
    assert!(
        plan.discards()
            .any(|(_, d)| d.device.as_str() == "repo001" && d.commit.to_string() == c2),
        "the plan lists the interrupted write on repo001: {plan:?}"
    );
    assert_eq!(rows(&cluster), before, "a plan changes nothing");

    // A device that cannot write its salvage bundle stops the thaw, --force or not, and
    // no row changes.
    let salvage = cluster.nodes[0].dir.join("data/salvage");
    std::fs::create_dir_all(&salvage).expect("salvage directory");
    let blocker = salvage.join("R1");
    std::fs::write(&blocker, b"not a directory").expect("blocking file");
    let (ok, _, err) = cluster.admin_try(
        &cluster.primary.conninfo(),
        Some(1),
        &[
            "repository",
            "thaw",
            "R1",
            "--promote",
            "repo002",
            "--force",
        ],
    );
    assert!(
        !ok && err.contains("\"repo001\" could not write the salvage bundle"),
        "{err}"
    );
    assert_eq!(rows(&cluster), before, "a refused bundle changes no row");
    std::fs::remove_file(&blocker).expect("unblock");

    // ...and the promote salvages it onto the promoted device: writes resume on top of
    // the promoted device's refs.
    let outcome = thaw(
        &cluster,
        &mut client,
        &["R1", "--promote", "repo002", "--force"],
    );
    assert_eq!(outcome.applied.len(), 1, "{outcome:?}");
    assert!(
        outcome
            .salvaged
            .iter()
            .any(|s| s.to.as_ref().is_some_and(|t| t.as_str() == "repo002")),
        "{outcome:?}"
    );
    // Before the row changed, repo001 kept what it held in a salvage bundle on its own
    // disk: a real bundle file, which Git accepts and which holds the interrupted write.
    let bundle = outcome
        .bundles
        .iter()
        .find(|b| b.device.as_str() == "repo001")
        .unwrap_or_else(|| panic!("no bundle of repo001: {outcome:?}"));
    assert!(
        bundle.refs.values().any(|c| c.to_string() == c2),
        "{bundle:?}"
    );
    let file = std::path::Path::new(&bundle.location);
    assert!(file.is_file(), "{}", bundle.location);
    assert!(
        file.to_string_lossy().contains("/salvage/R1/repo001-"),
        "{}",
        bundle.location
    );
    let verify = git(&cluster.client_dir().join("scratch"))
        .args(["bundle", "verify"])
        .arg(file)
        .output()
        .expect("git bundle verify");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let heads = git(&cluster.client_dir().join("scratch"))
        .args(["bundle", "list-heads"])
        .arg(file)
        .output()
        .expect("git bundle list-heads");
    assert!(
        String::from_utf8_lossy(&heads.stdout).contains(&c2),
        "{}",
        String::from_utf8_lossy(&heads.stdout)
    );
    let c4 = client.commit(Some(&c3));
    let (o, text) = client.push(
        cluster.node(2),
        "R1",
        "refs/heads/main",
        Some(&c3),
        &c4,
        Phase::Workload,
    );
    assert!(o.is_ok(), "writes resume after the promote: {text}");
    let (o, text) = client.read(cluster.node(0), "R1", Phase::Workload);
    assert_eq!(main_of(&o), Some(c4.clone()), "{text}");
    assert!(
        cluster
            .node(1)
            .disk_refs("R1")
            .iter()
            .any(|(name, commit)| name.starts_with("refs/salvage/repo001/") && *commit == c2),
        "the interrupted write is kept under refs/salvage/"
    );

    let nodes: Vec<_> = cluster.nodes.iter().collect();
    client.final_phase(&nodes, "R1");
    client.check(&history_path("thaw_cli"));

    // After the checked history: a maintenance lock on device 2 changes a ref in its
    // working copy, and the change spreads; read-only maintenance refuses pushes.
    let out = cluster.admin_as(
        1,
        &[
            "repository",
            "lock",
            "R1",
            "--run",
            &format!("git update-ref refs/heads/maint {c4}"),
        ],
    );
    assert!(out.contains("recorded as version"), "{out}");
    let ls = |node: &support::Node| {
        let out = git(&cluster.client_dir())
            .args(["ls-remote", &node.url("R1")])
            .output()
            .expect("ls-remote");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        ls(cluster.node(2)).contains(&format!("{c4}\trefs/heads/maint")),
        "the maintenance change reached device 3"
    );
    cluster.admin_as(
        1,
        &["repository", "maintenance", "R1", "--start", "moving disks"],
    );
    let out = git(&cluster.client_dir().join("scratch"))
        .args([
            "push",
            &cluster.node(0).url("R1"),
            &format!("{c4}:refs/heads/m2"),
        ])
        .output()
        .expect("push");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("moving disks"),
        "{text}"
    );
    cluster.admin_as(1, &["repository", "maintenance", "R1", "--stop"]);
    let (ok, _, err) = cluster.admin_try(
        &cluster.primary.conninfo(),
        Some(1),
        &["repository", "maintenance", "R9", "--stop"],
    );
    assert!(!ok && err.contains("R9"), "{err}");
    eprintln!("thaw test took {} ms", started.elapsed().as_millis());
}

#[test]
fn new_repositories_go_to_open_services_and_clusterize_moves_no_data() {
    let Some(pg) = prerequisites("allocation") else {
        return;
    };
    let cluster = Cluster::start(&pg, |_| String::new());
    cluster.admin(&["service", "create", "S2"]);
    cluster.admin(&["service", "bind", "S2", "repo003"]);
    cluster.admin(&["service", "close", "S1"]);

    // Allocation picks among open services only (PROTOCOL.md 7.5).
    for name in ["R2", "R3", "R4"] {
        let out = cluster.admin(&["repository", "create", name]);
        assert!(out.contains("on service \"S2\""), "{name}: {out}");
    }
    cluster.admin(&["service", "close", "S2"]);
    let (ok, _, err) = cluster.admin_try(
        &cluster.primary.conninfo(),
        None,
        &["repository", "create", "R9"],
    );
    assert!(!ok, "no open service: creating must fail");
    assert!(err.contains("No open service"), "{err}");
    cluster.admin(&["service", "open", "S1"]);
    let out = cluster.admin(&["repository", "create", "R5"]);
    assert!(out.contains("on service \"S1\""), "{out}");
    let list = cluster.admin(&["repository", "list", "--json"]);
    let repos: serde_json::Value = serde_json::from_str(&list).expect("JSON list");
    let service_of = |name: &str| {
        repos
            .as_array()
            .and_then(|a| a.iter().find(|r| r["name"] == name))
            .map(|r| r["service"].clone())
    };
    assert_eq!(service_of("R2"), Some(serde_json::json!("S2")), "{list}");
    assert_eq!(service_of("R5"), Some(serde_json::json!("S1")), "{list}");
    assert_eq!(
        service_of("R9"),
        None,
        "a refused create leaves nothing: {list}"
    );

    // R2 lives on repo003 alone: repo001 is not bound to its service.
    let (n1, n3) = (cluster.node(0), cluster.node(2));
    let mut client = Recorder::new(&cluster.client_dir(), "e2e-allocation", &[n1, n3], "R2");
    let c1 = client.commit(None);
    let (o, text) = client.push(n3, "R2", "refs/heads/main", None, &c1, Phase::Workload);
    assert!(o.is_ok(), "push to repo003: {text}");
    let c2 = client.commit(Some(&c1));
    let (o, text) = client.push(n1, "R2", "refs/heads/main", Some(&c1), &c2, Phase::Workload);
    assert!(
        matches!(
            o,
            Outcome::Refused {
                error: ErrorKind::NotBound,
                ..
            }
        ),
        "repo001 does not serve R2: {o:?} {text}"
    );

    // Off its service the repository is not served; its data stays where it was.
    let started = client.now_ms();
    cluster.admin(&["repository", "clusterize", "R2", "--remove-service"]);
    // Recorded, so the checkers know why the next read is refused.
    client.operator(
        started,
        "stormcell repository clusterize R2 --remove-service",
        true,
        "",
        None,
    );
    let (o, text) = client.read(n3, "R2", Phase::Workload);
    assert!(matches!(o, Outcome::Refused { .. }), "{o:?} {text}");
    assert!(text.contains("not-found"), "{text}");
    assert_eq!(n3.disk_refs("R2").get("refs/heads/main"), Some(&c1));

    // Back on S2 it is served again as it was: clusterize touched no version rows.
    cluster.admin(&["repository", "clusterize", "R2", "--service", "S2"]);
    let (o, text) = client.read(n3, "R2", Phase::Workload);
    assert_eq!(main_of(&o), Some(c1.clone()), "{text}");

    // A device bound later catches up by itself on its first read (expand, 7.5).
    cluster.admin(&["service", "bind", "S2", "repo001"]);
    let (o, text) = client.read(n1, "R2", Phase::Workload);
    assert_eq!(main_of(&o), Some(c1.clone()), "{text}");
    let (o, text) = client.push(n1, "R2", "refs/heads/main", Some(&c1), &c2, Phase::Workload);
    assert!(o.is_ok(), "push to repo001 once bound: {text}");

    client.final_phase(&[n1, n3], "R2");
    client.check(&history_path("allocation"));
}

/// Reads `R1` on `node` until the read succeeds (a device coming back may refuse for a
/// moment while it checks its peers) or a minute passed; returns the last outcome.
fn read_until_served(client: &mut Recorder, node: &support::Node) -> (Outcome, String) {
    let t = Instant::now();
    loop {
        let (o, text) = client.read(node, "R1", Phase::Workload);
        if o.is_ok() || t.elapsed() > Duration::from_secs(60) {
            return (o, text);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Asserts that a read served `main` at `expect` (and `others` at their commits).
fn assert_served(read: &(Outcome, String), expect: &str, others: &[(&str, &str)], what: &str) {
    let (o, text) = read;
    let Outcome::Ok {
        refs: Some(refs), ..
    } = o
    else {
        panic!("{what}: not served: {o:?} {text}");
    };
    assert_eq!(
        refs.get("refs/heads/main").map(String::as_str),
        Some(expect),
        "{what}: a stale main: {text}"
    );
    for (name, oid) in others {
        assert_eq!(
            refs.get(*name).map(String::as_str),
            Some(*oid),
            "{what}: {name}: {text}"
        );
    }
}

/// Starts `cluster`'s devices again with `plant` switched on (a daemon built with the
/// `plant` feature), so a procedure can run against today's fixed code and a restored bug.
fn plant_on(cluster: &mut Cluster, plant: Option<&str>) {
    if plant.is_none() {
        return;
    }
    for node in &mut cluster.nodes {
        node.plant = plant.map(str::to_owned);
        node.restart();
    }
}

/// The first of the two losses once seen on the daemon: an acknowledged push W recorded
/// on the primary only (the replica was behind), the lagging replica promoted, and the
/// other devices restarted after the promotion. A restarted process must not trust the
/// promoted replica's rows: the generation stored beside its working copies differs from
/// the new primary's, so it asks its peers first. Returns the checkers' violations; under
/// `plant` the procedure records what happens instead of asserting it.
fn lagging_promotion(pg: &std::path::Path, plant: Option<&str>) -> Vec<String> {
    let strict = plant.is_none();
    let mut cluster = Cluster::start_with(pg, true, |_| String::new());
    plant_on(&mut cluster, plant);
    let mut client = {
        let nodes: Vec<_> = cluster.nodes.iter().collect();
        Recorder::new(&cluster.client_dir(), "e2e-promote-lagging", &nodes, "R1")
    };
    client.database_hosts("db1", &["db2"]);

    // One push every device reads, so all three are leaders of version 1 on both hosts.
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
    for i in 0..3 {
        let read = read_until_served(&mut client, cluster.node(i));
        assert_served(&read, &c1, &[], "before the lag");
    }

    // Devices 2 and 3 go down (so they cannot pull what comes next), and the replica
    // falls behind: W is acknowledged on device 1 and on the primary only.
    for i in 1..3 {
        let name = cluster.nodes[i].name.clone();
        cluster.nodes[i].kill9();
        client.fault(FaultKind::Strike, &name, "kill -9");
    }
    cluster.replica.as_mut().expect("replica").stop();
    client.fault(
        FaultKind::Strike,
        "db2",
        "replica stopped: it receives nothing",
    );
    let w = client.commit(Some(&c1));
    let (o, text) = client.push(
        cluster.node(0),
        "R1",
        "refs/heads/main",
        Some(&c1),
        &w,
        Phase::Workload,
    );
    assert!(o.is_ok(), "push W: {text}");

    // The primary dies; the replica comes back without W's rows and is promoted.
    cluster.primary.stop();
    client.fault(FaultKind::Strike, "db1", "primary stopped");
    let replica = cluster.replica.as_mut().expect("replica");
    replica.start();
    let replica = replica.conninfo();
    client.fault(
        FaultKind::Restart,
        "db2",
        "replica back without W, primary gone",
    );
    let configs: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.config_path().display().to_string())
        .collect();
    let mut args = vec!["db", "promote", "db2"];
    for c in &configs {
        args.extend(["--config", c.as_str()]);
    }
    let (ok, _, err) = cluster.admin_try(&replica, None, &args);
    assert!(ok, "db promote: {err}");
    client.fault(FaultKind::Promote, "db2", "stormcell db promote db2");

    // Devices 2 and 3 come back after the promotion: they never saw the primary change.
    for i in 1..3 {
        let name = cluster.nodes[i].name.clone();
        cluster.nodes[i].restart();
        client.fault(FaultKind::Restart, &name, "restarted");
    }

    // Every read serves W (or refuses while checking); none serves version 1 as current.
    for i in [1, 2, 0] {
        let read = read_until_served(&mut client, cluster.node(i));
        if strict {
            assert_served(&read, &w, &[], "after the promotion");
        }
    }
    // A push on a restarted device builds on W; the version it takes is new everywhere.
    let c3 = client.commit(Some(&w));
    let t = Instant::now();
    loop {
        let (o, text) = client.push(
            cluster.node(1),
            "R1",
            "refs/heads/main",
            Some(&w),
            &c3,
            Phase::Workload,
        );
        let rejected = matches!(
            o,
            Outcome::Refused {
                error: ErrorKind::Rejected,
                ..
            }
        );
        assert!(
            !(strict && rejected),
            "the restarted device did not know W: {text}"
        );
        if o.is_ok() || rejected || t.elapsed() > Duration::from_secs(60) {
            assert!(o.is_ok() || !strict, "push on top of W: {text}");
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for i in 0..3 {
        let read = read_until_served(&mut client, cluster.node(i));
        if strict {
            assert_served(&read, &c3, &[], "after the new push");
        }
    }
    if strict {
        assert!(
            cluster
                .node(1)
                .log()
                .contains("rows verified with the peers for generation"),
            "the restarted device said why it checked its peers:\n{}",
            cluster.node(1).log()
        );
    }

    // A device that ran through the promotion takes writes again once its health records
    // say so (a window of checks); the final phase starts when every device does.
    for node in &cluster.nodes {
        let t = Instant::now();
        loop {
            let c = client.commit(Some(&c3));
            let branch = format!("refs/heads/writable-{}", node.name);
            let (o, _) = client.push(node, "R1", &branch, None, &c, Phase::Workload);
            let read_only = matches!(
                o,
                Outcome::Refused {
                    error: ErrorKind::ReadOnly,
                    ..
                }
            );
            if !read_only || t.elapsed() > Duration::from_secs(60) {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let nodes: Vec<_> = cluster.nodes.iter().collect();
    let failed = client.try_final_phase(&nodes, "R1");
    assert!(failed.is_empty() || !strict, "{}", failed.join("\n"));
    client.violations(&history_path(&format!(
        "promote_lagging_replica{}",
        plant.map(|p| format!("-{p}")).unwrap_or_default()
    )))
}

#[test]
fn promoting_a_lagging_replica_then_restarting_devices_loses_no_acknowledged_push() {
    let Some(pg) = prerequisites("promote_lagging_replica") else {
        return;
    };
    let violations = lagging_promotion(&pg, None);
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// The second loss once seen on the daemon: a device restarted under the same name with
/// its data directory gone. It must not serve the empty copy as current nor let its next
/// push delete what the others hold: it copies the repository back from a leader. When no
/// other device holds its version, the repository freezes with a message that names the
/// device and the command, and bringing the disk back resolves it. Returns the checkers'
/// violations; under `plant` the procedure records what happens instead of asserting it.
fn lost_data_dir(pg: &std::path::Path, plant: Option<&str>) -> Vec<String> {
    let strict = plant.is_none();
    let mut cluster = Cluster::start(pg, |_| String::new());
    plant_on(&mut cluster, plant);
    let mut client = {
        let nodes: Vec<_> = cluster.nodes.iter().collect();
        Recorder::new(&cluster.client_dir(), "e2e-data-dir-lost", &nodes, "R1")
    };
    let lose_disk = |cluster: &mut Cluster, client: &mut Recorder, i: usize, to: &str| {
        let node = &mut cluster.nodes[i];
        node.kill9();
        let name = node.name.clone();
        client.fault(
            FaultKind::Strike,
            &name,
            "kill -9; data directory moved away",
        );
        std::fs::rename(node.dir.join("data"), node.dir.join(to)).expect("move data_dir");
        client.fault(FaultKind::DiskLost, &name, "data directory moved away");
        node.restart();
        client.fault(FaultKind::Restart, &name, "restarted on an empty data_dir");
    };

    // Every device holds main and a tag.
    let c1 = client.commit(None);
    let (o, text) = client.push(
        cluster.node(0),
        "R1",
        "refs/heads/main",
        None,
        &c1,
        Phase::Workload,
    );
    assert!(o.is_ok(), "{text}");
    let t1 = client.commit(Some(&c1));
    let (o, text) = client.push(
        cluster.node(1),
        "R1",
        "refs/tags/v1",
        None,
        &t1,
        Phase::Workload,
    );
    assert!(o.is_ok(), "{text}");
    for i in 0..3 {
        let read = read_until_served(&mut client, cluster.node(i));
        assert_served(&read, &c1, &[("refs/tags/v1", &t1)], "before the loss");
    }

    // Device 3 loses its disk while the others hold everything.
    lose_disk(&mut cluster, &mut client, 2, "data.lost");
    let read = read_until_served(&mut client, cluster.node(2));
    if strict {
        assert_served(&read, &c1, &[("refs/tags/v1", &t1)], "after the loss");
    }
    // Its next push of an unrelated branch deletes nothing anywhere.
    let b = client.commit(None);
    let (o, text) = client.push(
        cluster.node(2),
        "R1",
        "refs/heads/other",
        None,
        &b,
        Phase::Workload,
    );
    assert!(
        o.is_ok() || !strict,
        "push to the device that lost its disk: {text}"
    );
    for i in 0..3 {
        let read = read_until_served(&mut client, cluster.node(i));
        if strict {
            let others = [
                ("refs/tags/v1", t1.as_str()),
                ("refs/heads/other", b.as_str()),
            ];
            assert_served(&read, &c1, &others, "after the unrelated push");
        }
    }

    // Device 3 alone holds the newest version (the others are down, so they cannot pull
    // it), and then loses its disk: nothing else holds that version, so the repository
    // freezes and says what to do.
    for i in 0..2 {
        let node = &mut cluster.nodes[i];
        node.kill9();
        client.fault(FaultKind::Strike, &node.name.clone(), "kill -9");
    }
    let c2 = client.commit(Some(&c1));
    let (o, text) = client.push(
        cluster.node(2),
        "R1",
        "refs/heads/main",
        Some(&c1),
        &c2,
        Phase::Workload,
    );
    assert!(o.is_ok() || !strict, "{text}");
    lose_disk(&mut cluster, &mut client, 2, "data.lost2");
    for i in 0..2 {
        cluster.nodes[i].restart();
        client.fault(
            FaultKind::Restart,
            &cluster.nodes[i].name.clone(),
            "restarted",
        );
    }
    let (o, text) = client.read(cluster.node(2), "R1", Phase::Workload);
    if strict {
        assert!(
            !o.is_ok(),
            "an empty copy is never served as current: {o:?} {text}"
        );
        assert!(
            text.contains("does not hold that version") && text.contains("--demote repo003"),
            "the refusal names the device and the command: {text}"
        );
    }
    let (o, text) = client.read(cluster.node(0), "R1", Phase::Workload);
    assert!(
        !o.is_ok() || !strict,
        "nor is an older copy elsewhere: {o:?} {text}"
    );

    // The disk comes back (say, it was only unmounted): the device serves it again.
    let node = &mut cluster.nodes[2];
    node.kill9();
    std::fs::remove_dir_all(node.dir.join("data")).expect("remove the empty data_dir");
    std::fs::rename(node.dir.join("data.lost2"), node.dir.join("data")).expect("restore");
    node.restart();
    client.fault(
        FaultKind::Restart,
        "repo003",
        "restarted on its own disk again",
    );
    for i in [2, 0, 1] {
        let read = read_until_served(&mut client, cluster.node(i));
        if strict {
            assert_served(&read, &c2, &[], "with the disk back");
        }
    }

    let nodes: Vec<_> = cluster.nodes.iter().collect();
    let failed = client.try_final_phase(&nodes, "R1");
    assert!(failed.is_empty() || !strict, "{}", failed.join("\n"));
    client.violations(&history_path(&format!(
        "data_dir_lost{}",
        plant.map(|p| format!("-{p}")).unwrap_or_default()
    )))
}

#[test]
fn a_device_whose_data_directory_is_gone_copies_back_and_loses_nothing() {
    let Some(pg) = prerequisites("data_dir_lost") else {
        return;
    };
    let violations = lost_data_dir(&pg, None);
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// The same two procedures against a daemon with today's fix taken out again: the
/// checkers must see the loss (the daemon is built with the `plant` feature).
#[cfg(feature = "plant")]
#[test]
fn the_checkers_catch_both_losses_when_the_fixes_are_taken_out() {
    let Some(pg) = prerequisites("plants_of_both_losses") else {
        return;
    };
    for (plant, procedure) in [
        (
            "epoch-in-memory",
            lagging_promotion as fn(&std::path::Path, Option<&str>) -> Vec<String>,
        ),
        ("trust-empty-working-copy", lost_data_dir),
    ] {
        let violations = procedure(&pg, Some(plant));
        eprintln!("{plant}: {}", violations.join("\n"));
        assert!(
            violations
                .iter()
                .any(|v| v.contains("stale-read") || v.contains("durability")),
            "{plant}: the checkers missed the loss: {violations:?}"
        );
    }
}
