//! End-to-end tests of reads through the engine (PROTOCOL.md 4.1, issue 12 item 3): what
//! a client is shown is the refs the engine's read checked, for protocol v0 and v2 alike;
//! staging refs of atomic pushes are never shown; Git's authentication probe before a
//! large push is not a push.
//!
//! Real parts as in `e2e.rs`: PostgreSQL started by the test support, three
//! `stormcell node` processes on loopback, the stock `git` client.

mod support;

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::Duration;

use stormcell_harness::history::{Outcome, Phase};
use support::client::{git, Recorder};
use support::{prerequisites, Cluster, Node};

fn metrics(node: &Node) -> String {
    http(node, "GET", "/metrics", &[], b"").1
}

/// One HTTP/1.1 request on a fresh connection; the status line and the body.
fn http(node: &Node, method: &str, path: &str, headers: &[&str], body: &[u8]) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", node.http_port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes()).expect("request");
    s.write_all(body).expect("body");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("answer");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.lines().next().unwrap_or("").to_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `alice:alice-token-1`, as the support's nodes configure her.
const ALICE: &str = "Authorization: Basic YWxpY2U6YWxpY2UtdG9rZW4tMQ==";

fn pkt(line: &str) -> String {
    format!("{:04x}{line}", line.len() + 4)
}

fn ls_remote(cluster: &Cluster, node: &Node, version: u8) -> String {
    let out = git(&cluster.client_dir())
        .args(["-c", &format!("protocol.version={version}")])
        .args(["ls-remote", &node.url("R1")])
        .output()
        .expect("ls-remote runs");
    assert!(
        out.status.success(),
        "ls-remote v{version} on {}: {}",
        node.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Counts of pushes by result, as the node's metrics show them.
fn pushes(node: &Node) -> Vec<String> {
    metrics(node)
        .lines()
        .filter(|l| l.starts_with("stormcell_pushes_total{"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn reads_show_the_checked_refs_never_staging_refs_and_the_auth_probe_is_no_push() {
    let Some(pg) = prerequisites("reads_show_the_checked_refs") else {
        return;
    };
    let mut cluster = Cluster::start(&pg, |_| String::new());
    let mut client = {
        let nodes: Vec<&Node> = cluster.nodes.iter().collect();
        Recorder::new(&cluster.client_dir(), "reads", &nodes, "R1")
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

    // Device 3 misses the next push, then a protocol v2 clone of it gets the newest refs:
    // ls-refs runs the read sync.
    cluster.nodes[2].kill9();
    let c2 = client.commit(Some(&c1));
    let (o, text) = client.push(
        cluster.node(0),
        "R1",
        "refs/heads/main",
        Some(&c1),
        &c2,
        Phase::Workload,
    );
    assert!(o.is_ok(), "push while device 3 is down: {text}");
    cluster.nodes[2].restart();
    let (o, text) = client.clone(cluster.node(2), "R1", Phase::Workload);
    match &o {
        Outcome::Ok {
            refs: Some(refs), ..
        } => assert_eq!(refs.get("refs/heads/main"), Some(&c2), "{text}"),
        other => panic!("v2 clone of the device that was behind: {other:?} {text}"),
    }

    // A staging ref left in a working copy (a push that died mid-way) is never listed:
    // not by the v0 advertisement, not by v2 ls-refs, not to a raw ls-refs request.
    let node1_repo = cluster.node(1).dir.join("data/repos/R1.git");
    // Device 2 holds the newest version once a read synced it.
    let (o, text) = client.read(cluster.node(1), "R1", Phase::Workload);
    assert!(o.is_ok(), "{text}");
    let staged = std::process::Command::new("git")
        .arg("-C")
        .arg(&node1_repo)
        .args(["update-ref", "refs/stormcell-incoming/999-0/0", &c1])
        .status()
        .expect("git update-ref");
    assert!(staged.success());
    for version in [0, 2] {
        let listed = ls_remote(&cluster, cluster.node(1), version);
        assert!(
            listed.contains(&format!("{c2}\trefs/heads/main")),
            "v{version}: {listed}"
        );
        assert!(
            listed.contains(&format!("{c2}\tHEAD")),
            "v{version}: {listed}"
        );
        assert!(
            !listed.contains("stormcell-incoming"),
            "v{version}: {listed}"
        );
    }
    // A v2 ls-refs posted with no advertisement before it still runs the read and lists
    // the checked refs.
    let body = format!(
        "{}{}0001{}{}0000",
        pkt("command=ls-refs\n"),
        pkt("object-format=sha1\n"),
        pkt("symrefs\n"),
        pkt("peel\n")
    );
    let (status, answer) = http(
        cluster.node(1),
        "POST",
        "/R1.git/git-upload-pack",
        &[
            ALICE,
            "Git-Protocol: version=2",
            "Content-Type: application/x-git-upload-pack-request",
        ],
        body.as_bytes(),
    );
    assert!(status.contains("200"), "{status} {answer}");
    assert!(
        answer.contains(&format!("{c2} refs/heads/main\n")),
        "{answer}"
    );
    assert!(
        answer.contains(&format!("{c2} HEAD symref-target:refs/heads/main\n")),
        "{answer}"
    );
    assert!(!answer.contains("stormcell-incoming"), "{answer}");

    // A push larger than Git's post buffer: Git first probes with a lone flush packet.
    // The probe is answered without a write: one push counted, and it succeeds.
    let before = pushes(cluster.node(0));
    let scratch = cluster.client_dir().join("large");
    assert!(git(&cluster.client_dir())
        .args(["init", "-q", "--bare"])
        .arg(&scratch)
        .status()
        .expect("git init")
        .success());
    let mut hash = git(&scratch)
        .args(["hash-object", "-w", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("hash-object");
    {
        // Incompressible, so the pack stays larger than the post buffer.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let data: Vec<u8> = (0..400_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let mut stdin = hash.stdin.take().expect("stdin");
        stdin.write_all(&data).expect("blob written");
    }
    let blob = String::from_utf8(hash.wait_with_output().expect("blob").stdout).expect("hex");
    let tree_line = format!("100644 blob {}\tlarge.bin\n", blob.trim());
    let mut mktree = git(&scratch)
        .arg("mktree")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("mktree");
    mktree
        .stdin
        .take()
        .expect("stdin")
        .write_all(tree_line.as_bytes())
        .expect("tree written");
    let tree = String::from_utf8(mktree.wait_with_output().expect("tree").stdout).expect("hex");
    let c3 = String::from_utf8(
        git(&scratch)
            .args(["commit-tree", tree.trim(), "-m", "large"])
            .env("GIT_AUTHOR_NAME", "alice")
            .env("GIT_AUTHOR_EMAIL", "alice@example.com")
            .env("GIT_COMMITTER_NAME", "alice")
            .env("GIT_COMMITTER_EMAIL", "alice@example.com")
            .output()
            .expect("commit-tree")
            .stdout,
    )
    .expect("hex")
    .trim()
    .to_owned();
    let out = git(&scratch)
        .args(["-c", "http.postBuffer=65536", "push", "--porcelain"])
        .arg(cluster.node(0).url("R1"))
        .arg(format!("{c3}:refs/heads/large"))
        .output()
        .expect("git push");
    assert!(
        out.status.success(),
        "large push: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        cluster
            .node(0)
            .log()
            .contains("authentication probe answered"),
        "Git did not probe, so this test shows nothing: {}",
        cluster.node(0).log()
    );
    let after = pushes(cluster.node(0));
    let ok = |lines: &[String]| -> u64 {
        lines
            .iter()
            .find_map(|l| l.strip_prefix("stormcell_pushes_total{result=\"ok\"} "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(ok(&after), ok(&before) + 1, "{before:?} -> {after:?}");
    assert_eq!(
        after.len(),
        before.len(),
        "a push of another result was counted: {before:?} -> {after:?}"
    );
    assert!(
        !cluster.node(0).log().contains("push refused"),
        "{}",
        cluster.node(0).log()
    );
    let listed = ls_remote(&cluster, cluster.node(2), 2);
    assert!(
        listed.contains(&format!("{c3}\trefs/heads/large")),
        "{listed}"
    );
}
