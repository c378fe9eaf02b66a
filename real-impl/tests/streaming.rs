//! End-to-end tests of streamed pushes (issue 12 item 6): a push's body goes through a
//! spool file under the device's `data_dir/spool` and from there into `git receive-pack`,
//! gzip-decoded on the way when the client compressed it, bounded by the configured
//! maximum; the spool file is gone once the push is answered, whichever way it ended.
//!
//! Real parts as in `e2e.rs`: PostgreSQL started by the test support, three
//! `stormcell node` processes on loopback, the stock `git` client, and requests made by
//! hand where the test needs a body Git would not send (gzip at will, over the limit).

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::client::git;
use support::{prerequisites, Cluster, Node};

/// The nodes' maximum request body, in MiB.
const LIMIT_MB: usize = 8;

/// `alice:alice-token-1`, as the support's nodes configure her.
const ALICE: &str = "Authorization: Basic YWxpY2U6YWxpY2UtdG9rZW4tMQ==";

const ZERO: &str = "0000000000000000000000000000000000000000";

/// Incompressible bytes (xorshift), so a pack is as large as its blobs.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("git runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A commit on top of the client's `HEAD` adding a blob of `mb` MiB of noise; its id.
fn commit_noise(repo: &Path, mb: usize, seed: u64) -> String {
    let name = format!("blob{seed}");
    std::fs::write(repo.join(&name), noise(mb << 20, seed)).expect("blob written");
    run(git(repo).args(["add", &name]));
    run(git(repo).args([
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "commit",
        "-q",
        "-m",
        &name,
    ]));
    run(git(repo).args(["rev-parse", "HEAD"]))
}

/// A receive-pack request creating `name` at `new`, with the pack of what `new` adds to
/// `have` (everything when `None`).
fn push_request(repo: &Path, name: &str, new: &str, have: Option<&str>) -> Vec<u8> {
    let line = format!("{ZERO} {new} {name}\0report-status agent=stormcell-test\n");
    let mut body = format!("{:04x}{line}0000", line.len() + 4).into_bytes();
    let mut pack = git(repo)
        .args(["pack-objects", "--stdout", "--revs", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("pack-objects");
    {
        let mut stdin = pack.stdin.take().expect("stdin");
        let mut revs = format!("{new}\n");
        if let Some(have) = have {
            revs.push_str(&format!("^{have}\n"));
        }
        stdin.write_all(revs.as_bytes()).expect("revs");
    }
    let out = pack.wait_with_output().expect("pack-objects runs");
    assert!(out.status.success(), "pack-objects failed");
    body.extend_from_slice(&out.stdout);
    body
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("in memory");
    e.finish().expect("in memory")
}

/// POSTs `body` to node's receive-pack; the status line and the answer's body.
fn post_receive_pack(node: &Node, body: &[u8], gzipped: bool) -> (String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", node.http_port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let mut request = format!(
        "POST /R1.git/git-receive-pack HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         {ALICE}\r\nContent-Type: application/x-git-receive-pack-request\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    if gzipped {
        request.push_str("Content-Encoding: gzip\r\n");
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes()).expect("request");
    // A refused body may be answered before it is all sent; the answer is what counts.
    let _ = s.write_all(body);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head.lines().next().unwrap_or("").to_owned();
    (status, answer[split..].to_vec())
}

/// What is in node's spool directory.
fn spooled(node: &Node) -> Vec<String> {
    std::fs::read_dir(node.dir.join("data/spool"))
        .expect("the spool directory exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// The `stormcell_pushes_total` lines of node's metrics.
fn pushes(node: &Node) -> Vec<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", node.http_port)).expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("metrics");
    answer
        .lines()
        .filter(|l| l.starts_with("stormcell_pushes_total{"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn pushes_stream_through_a_spool_file_gzip_or_not_and_bounded() {
    let Some(pg) = prerequisites("pushes_stream_through_a_spool_file") else {
        return;
    };
    let cluster = Cluster::start(&pg, |_| format!("[http]\nmax_request_mb = {LIMIT_MB}\n"));
    let node = cluster.node(0);
    let repo = cluster.client_dir().join("work");
    std::fs::create_dir_all(&repo).expect("client dir");
    run(git(&repo).args(["init", "-q", "-b", "main"]));

    // A stock Git push of a 3 MiB pack, larger than Git's post buffer: sent chunked,
    // after Git's authentication probe.
    let c1 = commit_noise(&repo, 3, 1);
    run(git(&repo).args(["push", "-q", &node.url("R1"), "main"]));
    assert_eq!(
        node.disk_refs("R1").get("refs/heads/main"),
        Some(&c1),
        "the chunked push applied"
    );
    assert_eq!(spooled(node), Vec::<String>::new(), "after a chunked push");

    // The same size once more, as Git sends a push that fits its post buffer.
    let c2 = commit_noise(&repo, 3, 2);
    run(git(&repo).args([
        "-c",
        "http.postBuffer=16777216",
        "push",
        "-q",
        &node.url("R1"),
        "main",
    ]));
    assert_eq!(node.disk_refs("R1").get("refs/heads/main"), Some(&c2));
    assert_eq!(
        spooled(node),
        Vec::<String>::new(),
        "after a one-buffer push"
    );

    // By hand, gzip-compressed: decoded on the way into the spool file.
    let c3 = commit_noise(&repo, 3, 3);
    let body = push_request(&repo, "refs/heads/gz", &c3, Some(&c2));
    assert!(body.len() > 3 << 20);
    let (status, answer) = post_receive_pack(node, &gzip(&body), true);
    let answer = String::from_utf8_lossy(&answer);
    assert!(status.contains("200"), "{status} {answer}");
    assert!(answer.contains("unpack ok"), "{answer}");
    assert!(answer.contains("ok refs/heads/gz"), "{answer}");
    assert_eq!(node.disk_refs("R1").get("refs/heads/gz"), Some(&c3));
    assert_eq!(spooled(node), Vec::<String>::new(), "after a gzip push");

    // And uncompressed, by hand.
    let c4 = commit_noise(&repo, 2, 4);
    let body = push_request(&repo, "refs/heads/plain", &c4, Some(&c3));
    let (status, answer) = post_receive_pack(node, &body, false);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("ok refs/heads/plain"), "{status} {answer}");
    assert_eq!(node.disk_refs("R1").get("refs/heads/plain"), Some(&c4));

    // Over the limit once decoded: a small gzip body expanding to more than 8 MiB (a
    // valid command list, then zeros) is refused with 413; no push is recorded, no ref
    // moves, no file stays.
    let refs_before = node.disk_refs("R1");
    let pushes_before = pushes(node);
    let c5 = commit_noise(&repo, 1, 5);
    let mut bomb = push_request(&repo, "refs/heads/bomb", &c5, Some(&c4));
    bomb.resize((LIMIT_MB << 20) + 1, 0);
    let zipped = gzip(&bomb);
    assert!(zipped.len() < 2 << 20, "the compressed body is small");
    let (status, answer) = post_receive_pack(node, &zipped, true);
    let answer = String::from_utf8_lossy(&answer);
    assert!(status.contains("413"), "{status} {answer}");
    assert!(answer.contains("request too large"), "{answer}");
    // Uncompressed over the limit: refused the same way.
    let (status, answer) = post_receive_pack(node, &bomb, false);
    assert!(
        status.contains("413"),
        "{status} {}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(node.disk_refs("R1"), refs_before, "nothing changed");
    assert_eq!(pushes(node), pushes_before, "no push was recorded");
    assert_eq!(spooled(node), Vec::<String>::new(), "after refused bodies");
    // A bad gzip body is a bad request, and leaves nothing either.
    let (status, _) = post_receive_pack(node, b"certainly not gzip", true);
    assert!(status.contains("400"), "{status}");
    assert_eq!(spooled(node), Vec::<String>::new(), "after a bad body");

    // The pushed history is whole on another device too (it came from device 1's copy).
    let clone = cluster.client_dir().join("clone");
    run(git(&cluster.client_dir())
        .args(["clone", "-q", "--bare", &cluster.node(1).url("R1")])
        .arg(&clone));
    assert_eq!(
        run(git(&clone).args(["rev-parse", "refs/heads/main", "refs/heads/gz"])),
        format!("{c2}\n{c3}")
    );
    run(git(&clone).args(["fsck", "--no-progress", "--connectivity-only"]));
}
