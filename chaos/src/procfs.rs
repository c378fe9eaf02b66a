//! What `/proc` says about processes and sockets: a process's children, and which
//! process holds the client end of a loopback TCP connection (so the fault proxy knows
//! which device dialled a peer).

use std::collections::BTreeSet;

/// The parent of `pid`, from `/proc/PID/stat`.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces, so parse after the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The direct children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&p| parent(p) == Some(pid))
        .collect()
}

/// The socket inode of the IPv4 TCP connection from `127.0.0.1:local_port` to
/// `127.0.0.1:remote_port`, from `/proc/net/tcp`.
fn socket_inode(local_port: u16, remote_port: u16) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("0100007F:{local_port:04X}");
    let remote = format!("0100007F:{remote_port:04X}");
    text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })
}

/// Whether process `pid` has the socket `inode` open.
fn holds(pid: u32, inode: u64) -> bool {
    let wanted = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == wanted.as_str())
        })
}

/// Which of `candidates` (or a descendant of one) holds the client end of the loopback
/// connection from `client_port` to `server_port`; `None` when none does (an admin
/// command, say, or a connection already gone).
pub fn owner(client_port: u16, server_port: u16, candidates: &BTreeSet<u32>) -> Option<u32> {
    let inode = socket_inode(client_port, server_port)?;
    if let Some(&pid) = candidates.iter().find(|&&pid| holds(pid, inode)) {
        return Some(pid);
    }
    // A child of a node (none dials peers today, but a helper might): walk up from
    // whoever holds the socket.
    let holder = all_pids().into_iter().find(|&pid| holds(pid, inode))?;
    let mut at = holder;
    for _ in 0..16 {
        if candidates.contains(&at) {
            return Some(at);
        }
        at = parent(at)?;
    }
    None
}
