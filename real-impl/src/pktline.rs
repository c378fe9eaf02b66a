//! Git's pkt-line framing and side-band multiplexing, as far as the daemon needs them:
//! parsing push commands and status reports, and writing progress and reports.

use thiserror::Error;

/// The largest payload of one pkt-line.
pub const MAX_PAYLOAD: usize = 65516;

/// Malformed pkt-line data.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed pkt-line data: {0}")]
pub struct PktError(pub String);

/// One pkt-line item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pkt<'a> {
    /// `0000`.
    Flush,
    /// `0001` (protocol v2).
    Delim,
    /// `0002` (protocol v2).
    ResponseEnd,
    /// A line's payload.
    Data(&'a [u8]),
}

/// Reads one pkt-line from the start of `buf`; returns it and the rest.
pub fn read(buf: &[u8]) -> Result<(Pkt<'_>, &[u8]), PktError> {
    let Some(head) = buf.get(..4) else {
        return Err(PktError("truncated length".to_owned()));
    };
    let text = std::str::from_utf8(head).map_err(|_| PktError("non-hex length".to_owned()))?;
    let len =
        usize::from_str_radix(text, 16).map_err(|_| PktError(format!("bad length {text:?}")))?;
    match len {
        0 => Ok((Pkt::Flush, &buf[4..])),
        1 => Ok((Pkt::Delim, &buf[4..])),
        2 => Ok((Pkt::ResponseEnd, &buf[4..])),
        3 => Err(PktError("length 3 is invalid".to_owned())),
        n => {
            let data = buf
                .get(4..n)
                .ok_or_else(|| PktError(format!("line of {n} bytes is truncated")))?;
            Ok((Pkt::Data(data), &buf[n..]))
        }
    }
}

/// Appends one data line (split into several when larger than a pkt-line holds).
pub fn write(out: &mut Vec<u8>, data: &[u8]) {
    for chunk in data.chunks(MAX_PAYLOAD) {
        out.extend_from_slice(format!("{:04x}", chunk.len() + 4).as_bytes());
        out.extend_from_slice(chunk);
    }
}

/// Appends a flush packet.
pub fn flush(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0000");
}

/// Appends `data` on side-band channel `band` (1 data, 2 progress, 3 error).
pub fn sideband(out: &mut Vec<u8>, band: u8, data: &[u8]) {
    for chunk in data.chunks(MAX_PAYLOAD - 1) {
        let mut line = Vec::with_capacity(chunk.len() + 1);
        line.push(band);
        line.extend_from_slice(chunk);
        write(out, &line);
    }
}

/// One command of a push: `old new ref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The old object id (all zeros to create).
    pub old: String,
    /// The new object id (all zeros to delete).
    pub new: String,
    /// The ref.
    pub name: String,
}

/// The start of a receive-pack request: commands and the capabilities of the first one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRequest {
    /// The ref updates.
    pub commands: Vec<Command>,
    /// Capabilities the client asked for.
    pub capabilities: Vec<String>,
}

impl PushRequest {
    /// Whether the client asked for a capability.
    pub fn has(&self, cap: &str) -> bool {
        self.capabilities.iter().any(|c| c == cap)
    }

    /// Whether the client multiplexes its answer (and so can show progress).
    pub fn sideband(&self) -> bool {
        self.has("side-band-64k") || self.has("side-band")
    }
}

/// Parses the command list that starts a receive-pack request.
pub fn parse_push(body: &[u8]) -> Result<PushRequest, PktError> {
    let mut rest = body;
    let mut commands = Vec::new();
    let mut capabilities = Vec::new();
    loop {
        let (pkt, tail) = read(rest)?;
        rest = tail;
        let Pkt::Data(line) = pkt else { break };
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let (text, caps) = match line.iter().position(|&b| b == 0) {
            Some(i) => (&line[..i], Some(&line[i + 1..])),
            None => (line, None),
        };
        let text = std::str::from_utf8(text).map_err(|_| PktError("non-UTF-8 command".into()))?;
        if text.starts_with("shallow ") {
            continue;
        }
        if let Some(caps) = caps {
            capabilities = String::from_utf8_lossy(caps)
                .split(' ')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
        }
        let mut parts = text.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(old), Some(new), Some(name)) if old.len() >= 40 && new.len() >= 40 => commands
                .push(Command {
                    old: old.to_owned(),
                    new: new.to_owned(),
                    name: name.to_owned(),
                }),
            _ => return Err(PktError(format!("bad command {text:?}"))),
        }
    }
    Ok(PushRequest {
        commands,
        capabilities,
    })
}

/// The request `body` with `cap` added to the capabilities its first command carries
/// (nothing changes when the client asked for it already). Everything after the command
/// list (push options, the pack) is kept byte for byte.
pub fn with_capability(body: &[u8], cap: &str) -> Result<Vec<u8>, PktError> {
    let mut out = Vec::with_capacity(body.len() + cap.len() + 1);
    let mut rest = body;
    let mut added = false;
    loop {
        let (pkt, tail) = read(rest)?;
        let Pkt::Data(line) = pkt else {
            // The end of the command list: the rest goes through untouched.
            out.extend_from_slice(rest);
            return Ok(out);
        };
        rest = tail;
        let is_shallow = line.starts_with(b"shallow ");
        if added || is_shallow {
            write(&mut out, line);
            continue;
        }
        added = true;
        let (line, newline) = match line.strip_suffix(b"\n") {
            Some(l) => (l, true),
            None => (line, false),
        };
        let mut edited = line.to_vec();
        match line.iter().position(|&b| b == 0) {
            Some(i) => {
                let caps = String::from_utf8_lossy(&line[i + 1..]);
                if !caps.split(' ').any(|c| c == cap) {
                    if !caps.is_empty() {
                        edited.push(b' ');
                    }
                    edited.extend_from_slice(cap.as_bytes());
                }
            }
            None => {
                edited.push(0);
                edited.extend_from_slice(cap.as_bytes());
            }
        }
        if newline {
            edited.push(b'\n');
        }
        write(&mut out, &edited);
    }
}

/// One line of a status report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefStatus {
    /// `ok <ref>`.
    Ok(String),
    /// `ng <ref> <reason>`.
    Ng(String, String),
}

/// Reads receive-pack's status report from its output, removing side-band framing when
/// `sideband` is set. Returns the unpack status and the per-ref lines.
pub fn parse_report(output: &[u8], sideband: bool) -> Result<(String, Vec<RefStatus>), PktError> {
    let report = if sideband {
        let mut inner = Vec::new();
        let mut rest = output;
        while !rest.is_empty() {
            let (pkt, tail) = read(rest)?;
            rest = tail;
            match pkt {
                Pkt::Data(d) if d.first() == Some(&1) => inner.extend_from_slice(&d[1..]),
                Pkt::Data(_) => {}
                _ => break,
            }
        }
        inner
    } else {
        output.to_vec()
    };
    let mut unpack = String::new();
    let mut refs = Vec::new();
    let mut rest = report.as_slice();
    while !rest.is_empty() {
        let (pkt, tail) = read(rest)?;
        rest = tail;
        let Pkt::Data(line) = pkt else { break };
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\n');
        if let Some(s) = line.strip_prefix("unpack ") {
            unpack = s.to_owned();
        } else if let Some(r) = line.strip_prefix("ok ") {
            refs.push(RefStatus::Ok(r.to_owned()));
        } else if let Some(r) = line.strip_prefix("ng ") {
            let (name, reason) = r.split_once(' ').unwrap_or((r, ""));
            refs.push(RefStatus::Ng(name.to_owned(), reason.to_owned()));
        }
    }
    Ok((unpack, refs))
}

/// Builds a status report refusing every command with `reason` (one line, as Git shows it).
pub fn refusal_report(commands: &[Command], reason: &str) -> Vec<u8> {
    let reason: String = reason.replace('\n', " ");
    let mut out = Vec::new();
    write(&mut out, b"unpack ok\n");
    for c in commands {
        write(&mut out, format!("ng {} {reason}\n", c.name).as_bytes());
    }
    flush(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_commands_and_capabilities_parse() {
        let mut body = Vec::new();
        let zero = "0".repeat(40);
        let a = "a".repeat(40);
        write(
            &mut body,
            format!("{zero} {a} refs/heads/main\0report-status side-band-64k agent=git/2\n")
                .as_bytes(),
        );
        write(&mut body, format!("{a} {zero} refs/heads/old\n").as_bytes());
        flush(&mut body);
        body.extend_from_slice(b"PACK....");
        let req = parse_push(&body).expect("parses");
        assert_eq!(req.commands.len(), 2);
        assert_eq!(req.commands[0].name, "refs/heads/main");
        assert_eq!(req.commands[1].new, zero);
        assert!(req.sideband() && req.has("report-status"));
    }

    #[test]
    fn a_capability_is_added_once_to_the_first_command_only() {
        let zero = "0".repeat(40);
        let a = "a".repeat(40);
        let mut body = Vec::new();
        write(&mut body, format!("shallow {a}\n").as_bytes());
        write(
            &mut body,
            format!("{zero} {a} refs/heads/main\0report-status side-band-64k\n").as_bytes(),
        );
        write(&mut body, format!("{a} {zero} refs/heads/old\n").as_bytes());
        flush(&mut body);
        body.extend_from_slice(b"PACK....");
        let edited = with_capability(&body, "atomic").expect("edits");
        let req = parse_push(&edited).expect("parses");
        assert!(req.has("atomic") && req.has("report-status") && req.sideband());
        assert_eq!(req.commands.len(), 2);
        assert!(edited.ends_with(b"0000PACK...."));
        // Asked for already: the body is unchanged.
        assert_eq!(with_capability(&edited, "atomic").expect("edits"), edited);
        // A command list without capabilities gets them.
        let mut bare = Vec::new();
        write(&mut bare, format!("{zero} {a} refs/heads/main").as_bytes());
        flush(&mut bare);
        let req = parse_push(&with_capability(&bare, "atomic").expect("edits")).expect("parses");
        assert_eq!(req.capabilities, vec!["atomic".to_owned()]);
        assert!(with_capability(b"00", "atomic").is_err());
    }

    #[test]
    fn reports_parse_with_and_without_sideband() {
        let mut report = Vec::new();
        write(&mut report, b"unpack ok\n");
        write(&mut report, b"ok refs/heads/main\n");
        write(&mut report, b"ng refs/heads/x fetch first\n");
        flush(&mut report);
        let (unpack, refs) = parse_report(&report, false).expect("plain");
        assert_eq!(unpack, "ok");
        assert_eq!(
            refs,
            vec![
                RefStatus::Ok("refs/heads/main".into()),
                RefStatus::Ng("refs/heads/x".into(), "fetch first".into())
            ]
        );
        let mut muxed = Vec::new();
        sideband(&mut muxed, 2, b"progress\n");
        sideband(&mut muxed, 1, &report);
        flush(&mut muxed);
        assert_eq!(parse_report(&muxed, true).expect("muxed").1, refs);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        assert!(read(b"00").is_err());
        assert!(read(b"0010abc").is_err());
        assert!(read(b"zzzz").is_err());
        assert!(parse_push(b"0009abcd\n0000").is_err());
    }
}
