//! Operations with real parts (issue 12, item 9): removing a device, rotating a
//! credential, host names as peer addresses, the start's checks of a node's own identity,
//! the right `db promote` needs, and `db status`'s replication lag.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stormcell_harness::history::Phase;
use support::client::Recorder;
use support::{prerequisites, stormcell, Cluster};

/// Runs `stormcell node --config FILE`, which must stop by itself (a liveness bound, not a
/// timing target), and returns what it printed on standard error.
fn node_refuses_to_start(config: &Path) -> String {
    let mut child = Command::new(stormcell())
        .args(["node", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stormcell runs");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(!status.success(), "the node must refuse to start: {err}");
            return err;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the node did not refuse to start with {}", config.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A copy of node `i`'s configuration with `from` replaced by `to`.
fn altered_config(cluster: &Cluster, i: usize, from: &str, to: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(cluster.node(i).config_path()).expect("config");
    assert!(text.contains(from), "{from} in the configuration");
    let path = cluster
        .dir
        .path()
        .join(format!("altered-{i}-{}.toml", to.len()));
    std::fs::write(&path, text.replace(from, to)).expect("written");
    path
}

/// Runs SQL on the `stormcell` database of the server on `port` (support's `psql` runs on
/// the `postgres` database).
fn sql(pg_bin: &Path, port: u16, text: &str) -> String {
    let out = Command::new(pg_bin.join("psql"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args([
            "-d",
            "stormcell",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            text,
        ])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {text:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rows_of(pg: &Path, cluster: &Cluster, device: &str) -> String {
    sql(
        pg,
        cluster.primary.port,
        &format!("SELECT count(*) FROM versions WHERE device = '{device}'"),
    )
}

#[test]
fn devices_are_removed_only_when_they_serve_nothing_and_credentials_rotate() {
    let Some(pg) = prerequisites("operations") else {
        return;
    };
    let mut cluster = Cluster::start(&pg, |_| String::new());
    let conninfo = cluster.primary.conninfo();

    // A host name is a peer address.
    let port = support::free_port();
    cluster.admin(&[
        "device",
        "add",
        "repo004",
        "--address",
        &format!("localhost:{port}"),
        "--http-url",
        "http://localhost:1",
        "--credential",
        "credential-of-repo004",
    ]);
    let list = cluster.admin(&["device", "list"]);
    assert!(list.contains(&format!("localhost:{port}")), "{list}");
    let (ok, _, err) = cluster.admin_try(
        &conninfo,
        None,
        &[
            "device",
            "add",
            "repo005",
            "--address",
            "localhost",
            "--http-url",
            "http://localhost:1",
            "--credential",
            "credential-of-repo005",
        ],
    );
    assert!(!ok && err.contains("--address"), "{err}");

    // Bound to nothing: removed.
    cluster.admin(&["device", "remove", "repo004"]);
    let list = cluster.admin(&["device", "list"]);
    assert!(!list.contains("repo004"), "{list}");
    let (ok, _, err) = cluster.admin_try(&conninfo, None, &["device", "remove", "repo004"]);
    assert!(!ok && err.contains("no device \"repo004\""), "{err}");

    // A device still bound is refused, naming how to contract it.
    let (ok, _, err) = cluster.admin_try(&conninfo, None, &["device", "remove", "repo003"]);
    assert!(!ok && err.contains("still bound to S1"), "{err}");

    // Contracted, but the only holder of a repository's newest version: refused.
    cluster.admin(&["binding", "set", "S1", "repo003", "--writable", "false"]);
    cluster.admin(&["binding", "set", "S1", "repo003", "--disabled", "true"]);
    cluster.nodes[2].kill9();
    sql(
        &pg,
        cluster.primary.port,
        "UPDATE versions SET version = version + 5 WHERE repo = 'R1' AND device = 'repo003'",
    );
    let (ok, _, err) = cluster.admin_try(&conninfo, None, &["device", "remove", "repo003"]);
    assert!(
        !ok && err.contains("alone holds the newest version of R1"),
        "{err}"
    );
    assert_eq!(
        rows_of(&pg, &cluster, "repo003").trim(),
        "1",
        "nothing removed"
    );
    sql(
        &pg,
        cluster.primary.port,
        "UPDATE versions SET version = version - 5 WHERE repo = 'R1' AND device = 'repo003'",
    );
    cluster.admin(&["device", "remove", "repo003"]);
    assert_eq!(rows_of(&pg, &cluster, "repo003").trim(), "0");
    let list = cluster.admin(&["device", "list"]);
    assert!(!list.contains("repo003"), "{list}");

    // The start refuses a device name that is not registered, naming the field.
    let removed = cluster.node(2).config_path();
    let err = node_refuses_to_start(&removed);
    assert!(err.contains("field `device`"), "{err}");

    // Rotation: the old credential no longer starts the node...
    cluster.admin(&[
        "device",
        "credential",
        "repo002",
        "--credential",
        "rotated-credential-2",
    ]);
    cluster.nodes[1].kill9();
    let err = node_refuses_to_start(&cluster.node(1).config_path());
    assert!(err.contains("field `credential`"), "{err}");
    // ...the new one does, and the device works with its peers again.
    let rotated = altered_config(
        &cluster,
        1,
        "credential = \"credential-of-repo002\"",
        "credential = \"rotated-credential-2\"",
    );
    std::fs::copy(&rotated, cluster.node(1).config_path()).expect("rotated config in place");
    cluster.nodes[1].restart();

    let mut client = {
        let nodes: Vec<_> = cluster.nodes[..2].iter().collect();
        Recorder::new(&cluster.client_dir(), "e2e-operations", &nodes, "R1")
    };
    let c1 = client.commit(None);
    let (o, text) = client.push(
        cluster.node(0),
        "R1",
        "refs/heads/main",
        None,
        &c1,
        Phase::Workload,
    );
    assert!(o.is_ok(), "push: {text}");
    // Device 2 must fetch the push from device 1, presenting its new credential.
    let (o, text) = client.read(cluster.node(1), "R1", Phase::Workload);
    assert!(o.is_ok(), "read on the rotated device: {text}");
    assert_eq!(
        cluster.node(1).disk_refs("R1").get("refs/heads/main"),
        Some(&c1),
        "the rotated device copied the push from its peer"
    );

    // An invalid log level stops the start with an error naming the field.
    let bad_level = altered_config(
        &cluster,
        0,
        "level = \"info,stormcell_node=debug\"",
        "level = \"verbose\"",
    );
    let err = node_refuses_to_start(&bad_level);
    assert!(err.contains("field `log.level`"), "{err}");
}

/// `db status --json` of node 0's configuration, as JSON.
fn db_status(cluster: &Cluster) -> serde_json::Value {
    let (ok, out, err) = cluster.admin_try(
        &cluster.primary.conninfo(),
        Some(0),
        &["--json", "db", "status"],
    );
    assert!(ok, "db status: {err}");
    serde_json::from_str(&out).expect("db status --json is JSON")
}

fn replica_of(status: &serde_json::Value) -> serde_json::Value {
    status
        .as_array()
        .and_then(|hosts| {
            hosts
                .iter()
                .find(|h| h["role"].as_str().is_some_and(|r| r.contains("replica")))
        })
        .cloned()
        .expect("a replica line")
}

#[test]
fn promote_rights_are_shown_and_granted_and_status_shows_lag_behind_the_primary() {
    let Some(pg) = prerequisites("operations_db") else {
        return;
    };
    let cluster = Cluster::start_with(&pg, true, |_| String::new());
    let replica = cluster.replica.as_ref().expect("replica");

    // A role that may use the schema but not promote.
    sql(
        &pg,
        cluster.primary.port,
        "CREATE ROLE opsrole LOGIN;
         GRANT ALL ON SCHEMA public TO opsrole;
         GRANT ALL ON ALL TABLES IN SCHEMA public TO opsrole;
         GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO opsrole;",
    );
    let as_opsrole = cluster
        .primary
        .conninfo()
        .replace("user=postgres", "user=opsrole");
    let (ok, out, err) = cluster.admin_try(&as_opsrole, None, &["db", "migrate"]);
    assert!(ok, "migrate as opsrole: {err}");
    assert!(
        out.contains("may not run pg_promote") && out.contains("db grant --role opsrole"),
        "{out}"
    );
    // A standby takes no grant.
    let (ok, _, err) = cluster.admin_try(
        &replica.conninfo(),
        None,
        &["db", "grant", "--role", "opsrole"],
    );
    assert!(!ok && err.contains("standby"), "{err}");
    cluster.admin(&["db", "grant", "--role", "opsrole"]);
    let (ok, out, err) = cluster.admin_try(&as_opsrole, None, &["db", "migrate"]);
    assert!(ok, "{err}");
    assert!(out.contains("may run pg_promote"), "{out}");
    // The grant reaches the replica by replication, where `db promote` will need it.
    let start = Instant::now();
    loop {
        // Function rights are per database: the one `db promote` connects to.
        let granted = sql(
            &pg,
            replica.port,
            "SELECT has_function_privilege('opsrole', 'pg_catalog.pg_promote(boolean, integer)', 'EXECUTE')",
        );
        if granted.trim() == "t" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the grant never reached the replica"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Idle and caught up: no lag, however long since the last transaction (the time since
    // the last replayed transaction grows while the primary is idle; lag does not).
    std::thread::sleep(Duration::from_secs(4));
    let start = Instant::now();
    let line = loop {
        let line = replica_of(&db_status(&cluster));
        if line["lag_bytes"].as_u64() == Some(0) {
            break line;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the replica never caught up: {line}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(line["lag_s"].as_f64(), Some(0.0), "{line}");
    assert_eq!(line["streaming"].as_bool(), Some(true), "{line}");

    // Replay paused while the primary writes: the replica is behind, in bytes.
    replica.psql("SELECT pg_wal_replay_pause()");
    sql(
        &pg,
        cluster.primary.port,
        "CREATE TABLE lag_probe AS SELECT generate_series(1, 10000) AS n",
    );
    let line = replica_of(&db_status(&cluster));
    replica.psql("SELECT pg_wal_replay_resume()");
    let behind = line["lag_bytes"].as_u64().unwrap_or(0);
    assert!(behind > 0, "a paused replica is behind: {line}");
    eprintln!("paused replica: {line}");
}
