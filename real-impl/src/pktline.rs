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

/// How long the command list at the start of a receive-pack request is, its closing
/// packet included, once `buf` holds all of it; `None` while `buf` ends inside it. What
/// follows (push options, the pack) is not looked at, so a pushed pack never has to be in
/// memory to learn the commands.
pub fn push_head_len(buf: &[u8]) -> Result<Option<usize>, PktError> {
    let mut at = 0;
    loop {
        let Some(head) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        let text = std::str::from_utf8(head).map_err(|_| PktError("non-hex length".to_owned()))?;
        let len = usize::from_str_radix(text, 16)
            .map_err(|_| PktError(format!("bad length {text:?}")))?;
        match len {
            // Where `parse_push` stops: the command list ends at its first non-data packet.
            0..=2 => return Ok(Some(at + 4)),
            3 => return Err(PktError("length 3 is invalid".to_owned())),
            n if buf.len() < at + n => return Ok(None),
            n => at += n,
        }
    }
}

/// The request `body` with its commands replaced by `commands`, the first carrying
/// `capabilities`. Shallow lines and everything after the command list (push options, the
/// pack) are kept byte for byte.
pub fn restage(
    body: &[u8],
    commands: &[Command],
    capabilities: &[String],
) -> Result<Vec<u8>, PktError> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    loop {
        let (pkt, tail) = read(rest)?;
        rest = tail;
        match pkt {
            Pkt::Data(line) if line.starts_with(b"shallow ") => write(&mut out, line),
            Pkt::Data(_) => {}
            _ => break,
        }
    }
    for (i, c) in commands.iter().enumerate() {
        let mut line = format!("{} {} {}", c.old, c.new, c.name).into_bytes();
        if i == 0 {
            line.push(0);
            line.extend_from_slice(capabilities.join(" ").as_bytes());
        }
        line.push(b'\n');
        write(&mut out, &line);
    }
    flush(&mut out);
    out.extend_from_slice(rest);
    Ok(out)
}

/// A status report as receive-pack writes it: the unpack status, then `ok` or `ng` per
/// command in order (`None` is ok), then a flush; inside side band 1 when `sideband`.
pub fn status_report(unpack: &str, statuses: &[(&str, Option<&str>)], banded: bool) -> Vec<u8> {
    let mut report = Vec::new();
    write(&mut report, format!("unpack {unpack}\n").as_bytes());
    for (name, failure) in statuses {
        let line = match failure {
            None => format!("ok {name}\n"),
            Some(why) => format!("ng {name} {}\n", why.replace('\n', " ")),
        };
        write(&mut report, line.as_bytes());
    }
    flush(&mut report);
    if !banded {
        return report;
    }
    let mut out = Vec::new();
    sideband(&mut out, 1, &report);
    flush(&mut out);
    out
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
    fn restaged_commands_keep_shallow_lines_and_the_pack() {
        let zero = "0".repeat(40);
        let a = "a".repeat(40);
        let mut body = Vec::new();
        write(&mut body, format!("shallow {a}\n").as_bytes());
        write(
            &mut body,
            format!("{zero} {a} refs/heads/main\0report-status side-band-64k\n").as_bytes(),
        );
        flush(&mut body);
        body.extend_from_slice(b"PACK....");
        let staged = [Command {
            old: zero.clone(),
            new: a.clone(),
            name: "refs/incoming/0".to_owned(),
        }];
        let caps = vec!["report-status".to_owned(), "atomic".to_owned()];
        let edited = restage(&body, &staged, &caps).expect("restages");
        let req = parse_push(&edited).expect("parses");
        assert_eq!(req.commands, staged.to_vec());
        assert_eq!(req.capabilities, caps);
        assert!(edited.starts_with(format!("0035shallow {a}\n").as_bytes()));
        assert!(edited.ends_with(b"0000PACK...."));
        assert!(restage(b"00", &staged, &caps).is_err());
    }

    #[test]
    fn status_reports_round_trip() {
        for sideband in [false, true] {
            let report = status_report(
                "ok",
                &[
                    ("refs/heads/a", None),
                    ("refs/heads/b", Some("stale\ninfo")),
                ],
                sideband,
            );
            let (unpack, refs) = parse_report(&report, sideband).expect("parses");
            assert_eq!(unpack, "ok");
            assert_eq!(
                refs,
                vec![
                    RefStatus::Ok("refs/heads/a".to_owned()),
                    RefStatus::Ng("refs/heads/b".to_owned(), "stale info".to_owned()),
                ]
            );
        }
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
    fn the_command_list_is_found_without_reading_the_pack() {
        let mut body = Vec::new();
        write(
            &mut body,
            b"shallow 1111111111111111111111111111111111111111",
        );
        write(
            &mut body,
            b"0000000000000000000000000000000000000000 2222222222222222222222222222222222222222 refs/heads/main\0report-status\n",
        );
        flush(&mut body);
        let head = body.len();
        body.extend_from_slice(b"PACK\0\0\0\x02 and whatever follows");
        assert_eq!(push_head_len(&body), Ok(Some(head)));
        for cut in 0..head {
            assert_eq!(push_head_len(&body[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(push_head_len(b"0000PACK"), Ok(Some(4)));
        assert!(push_head_len(b"zzzz").is_err());
        assert_eq!(parse_push(&body[..head]).map(|r| r.commands.len()), Ok(1));
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        assert!(read(b"00").is_err());
        assert!(read(b"0010abc").is_err());
        assert!(read(b"zzzz").is_err());
        assert!(parse_push(b"0009abcd\n0000").is_err());
    }
}
