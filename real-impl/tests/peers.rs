//! End-to-end tests of what peers may do (PROTOCOL.md section 10, issue 12 item 8): a
//! peer with another device's credential is refused, a device bound to no service reads
//! nothing, a relayed push is checked against the named user's permissions, objects come
//! only from registered bound devices over the peer connection (never from a URL in a
//! peer's message), and the Git endpoint takes no device credential.
//!
//! Real parts as in `e2e.rs`: PostgreSQL started by the test support, three
//! `stormcell node` processes on loopback, the stock `git` client; the test itself
//! speaks the peer handshake and wire frames, as a misbehaving device would.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stormcell_harness::history::Phase;
use stormcell_model::admin::OPERATOR_USER;
use stormcell_model::error::ErrorCode;
use stormcell_model::ids::{Oid, RepoId};
use stormcell_model::ports::PushPayload;
use stormcell_model::rows::RefUpdate;
use stormcell_model::wire::{Request, Response};
use support::client::{git, Recorder};
use support::{prerequisites, Cluster, Node};

/// Opens a peer connection to `node` as `device` presenting `credential`, with the
/// handshake `greeting`; the connection and the listener's answer line.
fn hello(node: &Node, greeting: &str, device: &str, credential: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", node.peer_port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    s.write_all(format!("{greeting} {device} {credential}\n").as_bytes())
        .expect("hello");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while s.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    (s, String::from_utf8_lossy(&line).into_owned())
}

fn write_frame<T: serde::Serialize>(s: &mut TcpStream, msg: &T) {
    let body = serde_json::to_vec(msg).expect("json");
    s.write_all(&(body.len() as u32).to_be_bytes())
        .expect("length");
    s.write_all(&body).expect("frame");
}

fn read_frame(s: &mut TcpStream) -> serde_json::Value {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("a frame");
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).expect("the frame's body");
    serde_json::from_slice(&body).expect("json")
}

/// Sends one peer request as `device` and returns the final answer (progress skipped).
fn call(node: &Node, device: &str, request: &Request) -> Response {
    let (mut s, answer) = hello(
        node,
        "stormcell-peer 1",
        device,
        &format!("credential-of-{device}"),
    );
    assert_eq!(answer, "ok", "{device} is admitted");
    write_frame(&mut s, request);
    loop {
        let value = read_frame(&mut s);
        let response: Response = serde_json::from_value(value).expect("a response");
        if !matches!(response, Response::Progress { .. }) {
            return response;
        }
    }
}

fn refused_with(response: &Response, code: ErrorCode, words: &str) {
    match response {
        Response::Error { code: c, message } => {
            assert_eq!(*c, code, "{message}");
            assert!(message.contains(words), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A plain HTTP server that records whatever connects to it.
fn trap() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut head = String::new();
            let mut reader = BufReader::new(conn);
            while reader.read_line(&mut head).unwrap_or(0) > 2 {}
            log.lock().unwrap_or_else(|e| e.into_inner()).push(head);
        }
    });
    (port, seen)
}

fn push(user: &str, name: &str, new: &str, pack: Vec<u8>) -> Request {
    Request::Push {
        repo: RepoId::new("R1"),
        payload: PushPayload {
            user: user.to_owned(),
            updates: vec![RefUpdate {
                name: name.to_owned(),
                old: None,
                new: Some(Oid::new(new)),
            }],
            pack,
            spool: None,
        },
        progress: false,
    }
}

#[test]
fn peers_cannot_overreach() {
    let Some(pg) = prerequisites("peers_cannot_overreach") else {
        return;
    };
    let cluster = Cluster::start(&pg, |_| String::new());
    // A registered device bound to no service.
    let loner_port = support::free_port();
    cluster.admin(&[
        "device",
        "add",
        "loner",
        "--address",
        &format!("127.0.0.1:{loner_port}"),
        "--http-url",
        "http://127.0.0.1:1",
        "--credential",
        "credential-of-loner",
    ]);
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    let mut client = Recorder::new(&cluster.client_dir(), "peers", &nodes, "R1");

    // Objects reach the other devices over the peer connection.
    let c1 = client.commit(None);
    let (o, text) = client.push(
        nodes[0],
        "R1",
        "refs/heads/main",
        None,
        &c1,
        Phase::Workload,
    );
    assert!(o.is_ok(), "push: {text}");
    let (o, text) = client.clone(nodes[1], "R1", Phase::Workload);
    assert!(o.is_ok(), "clone from device 2: {text}");
    assert_eq!(nodes[1].disk_refs("R1").get("refs/heads/main"), Some(&c1));

    // The Git endpoint takes no device credential: peer headers are not a login.
    let out = std::process::Command::new("git")
        .args(["-c", "http.extraHeader=X-Stormcell-Device: repo002"])
        .args([
            "-c",
            "http.extraHeader=X-Stormcell-Credential: credential-of-repo002",
        ])
        .args([
            "ls-remote",
            &format!("http://127.0.0.1:{}/R1.git", nodes[0].http_port),
        ])
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("ls-remote");
    assert!(
        !out.status.success(),
        "a device credential opened the Git endpoint"
    );

    // Another device's credential is refused, for the protocol and for objects.
    for greeting in ["stormcell-peer 1", "stormcell-objects 1"] {
        let (_, answer) = hello(nodes[0], greeting, "repo002", "credential-of-repo003");
        assert_eq!(answer, "denied", "{greeting}");
    }
    assert!(
        nodes[0].log().contains("wrong credential for device"),
        "{}",
        nodes[0].log()
    );

    // A device bound to no service reads nothing: no read, fetch, version, probe...
    let r1 = RepoId::new("R1");
    for request in [
        Request::Read {
            repo: r1.clone(),
            progress: false,
        },
        Request::PeerFetch {
            repo: r1.clone(),
            unrecorded: true,
        },
        Request::PeerVersion {
            repo: r1.clone(),
            read_only: false,
        },
    ] {
        refused_with(
            &call(nodes[0], "loner", &request),
            ErrorCode::NotBound,
            "not bound to the service of repository \"R1\"",
        );
    }
    // ...and no objects.
    let (mut s, answer) = hello(
        nodes[0],
        "stormcell-objects 1",
        "loner",
        "credential-of-loner",
    );
    assert_eq!(answer, "ok");
    write_frame(
        &mut s,
        &serde_json::json!({ "repo": "R1", "wants": [c1], "haves": [] }),
    );
    let refusal = read_frame(&mut s);
    assert_eq!(refusal["answer"], "refused", "{refusal}");
    assert!(
        refusal["message"]
            .as_str()
            .is_some_and(|m| m.contains("not bound")),
        "{refusal}"
    );
    // A bound device gets a snapshot naming its source device, not an address.
    match call(
        nodes[0],
        "repo002",
        &Request::PeerFetch {
            repo: r1.clone(),
            unrecorded: false,
        },
    ) {
        Response::Snapshot { snapshot } => {
            let source: serde_json::Value =
                serde_json::from_slice(&snapshot.objects).expect("json source");
            assert_eq!(source, serde_json::json!({ "device": "repo001" }));
        }
        other => panic!("a bound device's fetch: {other:?}"),
    }

    // A relayed push is checked against the named user's permissions.
    refused_with(
        &call(
            nodes[0],
            "repo002",
            &push("mallory", "refs/heads/evil", &c1, Vec::new()),
        ),
        ErrorCode::Rejected,
        "user \"mallory\" may not write repository \"R1\"",
    );
    assert!(!nodes[0].disk_refs("R1").contains_key("refs/heads/evil"));

    // A fetch URL from a peer's message is never used: the operator's salvage names its
    // source, and only a registered, bound device is asked for objects.
    let (port, seen) = trap();
    let missing = "1234567890123456789012345678901234567890";
    let foreign = format!(r#"{{"url":"http://127.0.0.1:{port}/R1.git"}}"#);
    let unbound = r#"{"device":"loner"}"#;
    for (pack, words) in [
        (foreign.as_str(), "snapshot names no object source"),
        (unbound, "not bound"),
    ] {
        let answer = call(
            nodes[0],
            "repo002",
            &push(
                OPERATOR_USER,
                "refs/salvage/x",
                missing,
                pack.as_bytes().to_vec(),
            ),
        );
        match &answer {
            Response::Error { message, .. } => assert!(message.contains(words), "{message}"),
            other => panic!("a push with objects from {pack}: {other:?}"),
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        seen.lock().unwrap_or_else(|e| e.into_inner()).is_empty(),
        "the daemon contacted a URL from a peer's message: {:?}",
        seen.lock().unwrap_or_else(|e| e.into_inner())
    );
    assert!(!nodes[0].disk_refs("R1").contains_key("refs/salvage/x"));

    // Nothing above froze the repository: a push and a read on every device still work.
    let c2 = client.commit(Some(&c1));
    let (o, text) = client.push(
        nodes[2],
        "R1",
        "refs/heads/main",
        Some(&c1),
        &c2,
        Phase::Workload,
    );
    assert!(o.is_ok(), "push after the refusals: {text}");
    for node in &nodes {
        let out = git(&cluster.client_dir())
            .args(["ls-remote", &node.url("R1")])
            .output()
            .expect("ls-remote");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&c2),
            "{}: {}",
            node.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
