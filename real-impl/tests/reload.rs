//! A running node re-reads its configuration file on SIGHUP: a broken file is reported by
//! field and ignored, a changed `[database]` section is applied, and the node keeps serving
//! throughout. (The promotion test in `e2e.rs` shows the applied hosts being used.)

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::Node;

/// Two database hosts nobody listens on: the node starts without its database.
fn hosts(primary: &str, replica: &str) -> String {
    let port = |_: &str| support::free_port();
    format!(
        "[[database.hosts]]\nname = \"{primary}\"\naddress = \"host=127.0.0.1 port={} user=postgres dbname=stormcell connect_timeout=1\"\nrole = \"primary\"\n\
         [[database.hosts]]\nname = \"{replica}\"\naddress = \"host=127.0.0.1 port={} user=postgres dbname=stormcell connect_timeout=1\"\nrole = \"replica\"\n",
        port(primary),
        port(replica),
    )
}

fn hang_up(node: &Node) {
    let pid = node.pid().expect("node runs");
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits (a liveness bound only) until the log holds `what` more often than `before`.
fn wait_for_log(node: &Node, what: &str, before: usize) -> String {
    let start = Instant::now();
    loop {
        let log = node.log();
        if log.matches(what).count() > before {
            return log;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the log never said {what:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serves_metrics(node: &Node) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", node.http_port)) else {
        return false;
    };
    let request = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut text = String::new();
    conn.write_all(request.as_bytes()).is_ok()
        && conn.read_to_string(&mut text).is_ok()
        && text.starts_with("HTTP/1.1 200")
}

#[test]
fn sighup_rereads_the_database_section_and_survives_a_broken_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::new("repo001", dir.path().join("repo001"));
    node.start(&hosts("db1", "db2"), "");
    let config = node.config_path();
    let good = std::fs::read_to_string(&config).expect("config");
    const HUP: &str = "SIGHUP: re-reading the configuration";

    // A broken file: reported with the field, ignored, the node keeps serving.
    let broken = good.replacen("role = \"replica\"", "role = \"leader\"", 1);
    std::fs::write(&config, &broken).expect("write");
    hang_up(&node);
    let log = wait_for_log(&node, "configuration file is invalid", 0);
    assert!(log.contains(HUP), "{log}");
    assert!(log.contains("role"), "the error names the field:\n{log}");
    assert!(node.running(), "a broken file does not stop the node");
    assert!(serves_metrics(&node));

    // The roles swapped: the new primary is in force at once.
    let swapped = good
        .replacen("role = \"primary\"", "role = \"was-primary\"", 1)
        .replacen("role = \"replica\"", "role = \"primary\"", 1)
        .replacen("role = \"was-primary\"", "role = \"replica\"", 1);
    std::fs::write(&config, &swapped).expect("write");
    let hups = node.log().matches(HUP).count();
    hang_up(&node);
    let log = wait_for_log(&node, "database hosts changed", 0);
    assert!(log.matches(HUP).count() > hups, "{log}");
    let applied = log
        .lines()
        .rev()
        .find(|l| l.contains("database hosts changed"))
        .unwrap_or_default();
    assert!(applied.contains("db2"), "db2 is the primary now: {applied}");
    assert!(node.running());
    assert!(serves_metrics(&node));

    // Nothing changed: a hangup re-reads and leaves everything as it was.
    let changes = log.matches("database hosts changed").count();
    let hups = log.matches(HUP).count();
    hang_up(&node);
    let log = wait_for_log(&node, HUP, hups);
    assert_eq!(log.matches("database hosts changed").count(), changes);
    assert!(node.running());
}
