//! Ref listings built from the refs a read checked (PROTOCOL.md 4.1).
//!
//! The engine's read runs the read sync, then reads the working copy's refs under the
//! working-copy guard, after checking that no unrecorded write shows. What a client is
//! shown must be exactly those refs: a `git upload-pack --advertise-refs` run afterwards,
//! outside the guard, could show a write that starts after the check and is later fenced.
//! So the daemon writes the listings itself:
//!
//! - the protocol v0 advertisement of `GET info/refs` (upload-pack and receive-pack), with
//!   Git's own capability list (taken from a run of Git that advertises no ref at all);
//! - the protocol v2 `ls-refs` answer of `POST git-upload-pack`.
//!
//! Staging refs of atomic pushes (`refs/stormcell-incoming/`) are never among the checked
//! refs, so they are never listed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use stormcell_model::error::StoreError;
use stormcell_model::ids::Oid;

use crate::pktline::{self, Pkt, PktError};

/// The object id Git uses for "no object".
const ZERO: &str = "0000000000000000000000000000000000000000";

/// What a listing needs beside the checked refs: where HEAD points and what annotated tags
/// peel to. Objects never change, so this can be read after the guard is released.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The checked refs.
    pub refs: BTreeMap<String, Oid>,
    /// The ref HEAD names, if HEAD is a symbolic ref.
    pub head: Option<String>,
    /// For refs that point at tag objects: the object the tag chain ends at.
    pub peeled: BTreeMap<String, Oid>,
}

impl Listing {
    /// Reads HEAD and peels the tags of `refs` in the repository at `path`.
    pub async fn describe(path: PathBuf, refs: BTreeMap<String, Oid>) -> Result<Self, StoreError> {
        tokio::task::spawn_blocking(move || describe(&path, refs))
            .await
            .map_err(|e| StoreError(format!("ref listing task failed: {e}")))?
    }

    /// HEAD's object, when HEAD names one of the checked refs.
    fn head_oid(&self) -> Option<(&str, &Oid)> {
        let target = self.head.as_deref()?;
        self.refs.get(target).map(|oid| (target, oid))
    }

    /// The protocol v0 advertisement of `git-upload-pack`: HEAD first, each ref, each
    /// peeled tag; `capabilities` (Git's list, without `symref`) on the first line.
    pub fn upload_pack_v0(&self, capabilities: &str) -> Vec<u8> {
        let mut lines: Vec<String> = Vec::new();
        let mut caps = capabilities.to_owned();
        if let Some((target, oid)) = self.head_oid() {
            caps.push_str(&format!(" symref=HEAD:{target}"));
            lines.push(format!("{oid} HEAD"));
        }
        for (name, oid) in &self.refs {
            lines.push(format!("{oid} {name}"));
            if let Some(peeled) = self.peeled.get(name) {
                lines.push(format!("{peeled} {name}^{{}}"));
            }
        }
        advertisement(lines, &caps)
    }

    /// The protocol v0 advertisement of `git-receive-pack`: each ref, `capabilities` on the
    /// first line (receive-pack shows neither HEAD nor peeled tags).
    pub fn receive_pack_v0(&self, capabilities: &str) -> Vec<u8> {
        let lines = self
            .refs
            .iter()
            .map(|(name, oid)| format!("{oid} {name}"))
            .collect();
        advertisement(lines, capabilities)
    }

    /// The answer to a protocol v2 `ls-refs` command.
    pub fn ls_refs(&self, args: &LsRefs) -> Vec<u8> {
        let mut out = Vec::new();
        if args.wants("HEAD") {
            match (self.head_oid(), self.head.as_deref()) {
                (Some((target, oid)), _) => {
                    let mut line = format!("{oid} HEAD");
                    if args.symrefs {
                        line.push_str(&format!(" symref-target:{target}"));
                    }
                    line.push('\n');
                    pktline::write(&mut out, line.as_bytes());
                }
                (None, Some(target)) if args.unborn => {
                    let mut line = "unborn HEAD".to_owned();
                    if args.symrefs {
                        line.push_str(&format!(" symref-target:{target}"));
                    }
                    line.push('\n');
                    pktline::write(&mut out, line.as_bytes());
                }
                _ => {}
            }
        }
        for (name, oid) in self.refs.iter().filter(|(name, _)| args.wants(name)) {
            let mut line = format!("{oid} {name}");
            if args.peel {
                if let Some(peeled) = self.peeled.get(name) {
                    line.push_str(&format!(" peeled:{peeled}"));
                }
            }
            line.push('\n');
            pktline::write(&mut out, line.as_bytes());
        }
        pktline::flush(&mut out);
        out
    }
}

/// A v0 advertisement of `lines`, the first carrying `caps`; with no line at all, Git's
/// `capabilities^{}` placeholder carries them.
fn advertisement(mut lines: Vec<String>, caps: &str) -> Vec<u8> {
    if lines.is_empty() {
        lines.push(format!("{ZERO} capabilities^{{}}"));
    }
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let text = if i == 0 {
            format!("{line}\0{caps}\n")
        } else {
            format!("{line}\n")
        };
        pktline::write(&mut out, text.as_bytes());
    }
    pktline::flush(&mut out);
    out
}

fn describe(path: &std::path::Path, refs: BTreeMap<String, Oid>) -> Result<Listing, StoreError> {
    let err =
        |e: &dyn std::fmt::Display| StoreError(format!("cannot list {}: {e}", path.display()));
    let repo = gix::open_opts(path, gix::open::Options::isolated()).map_err(|e| err(&e))?;
    let head = repo
        .head_name()
        .map_err(|e| err(&e))?
        .map(|name| name.as_bstr().to_string());
    let mut peeled = BTreeMap::new();
    for (name, oid) in &refs {
        let id = gix::ObjectId::from_hex(oid.as_str().as_bytes()).map_err(|e| err(&e))?;
        let object = repo.find_object(id).map_err(|e| err(&e))?;
        if object.kind == gix::object::Kind::Tag {
            let end = object.peel_tags_to_end().map_err(|e| err(&e))?;
            peeled.insert(name.clone(), Oid::new(end.id.to_string()));
        }
    }
    Ok(Listing { refs, head, peeled })
}

/// The capability list of a v0 advertisement Git wrote with every ref hidden, without
/// `symref=` (the listing adds its own, from the checked refs).
pub fn capabilities(advertised: &[u8]) -> Result<String, PktError> {
    let (first, _) = pktline::read(advertised)?;
    let Pkt::Data(line) = first else {
        return Err(PktError("advertisement without a first line".to_owned()));
    };
    let text = std::str::from_utf8(line).map_err(|_| PktError("non-text line".to_owned()))?;
    let (_, caps) = text
        .split_once('\0')
        .ok_or_else(|| PktError("advertisement without capabilities".to_owned()))?;
    Ok(caps
        .split_whitespace()
        .filter(|c| !c.starts_with("symref="))
        .collect::<Vec<_>>()
        .join(" "))
}

/// The arguments of a protocol v2 `ls-refs` command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LsRefs {
    /// Show what symbolic refs (HEAD) point at.
    pub symrefs: bool,
    /// Show what annotated tags peel to.
    pub peel: bool,
    /// Show HEAD even when the branch it names does not exist yet.
    pub unborn: bool,
    /// Only refs starting with one of these (all refs when empty).
    pub prefixes: Vec<String>,
}

impl LsRefs {
    fn wants(&self, name: &str) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }
}

/// A protocol v2 request to `git-upload-pack`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V2Request {
    /// `command=ls-refs`: answered from the checked refs.
    LsRefs(LsRefs),
    /// Any other command (`fetch`, `object-info`): Git answers it, after the read check.
    Other(String),
}

/// Parses a protocol v2 request: `command=<name>`, capabilities, a delimiter, arguments.
pub fn parse_v2(body: &[u8]) -> Result<V2Request, PktError> {
    let mut rest = body;
    let mut command: Option<String> = None;
    let mut in_args = false;
    let mut args = LsRefs::default();
    loop {
        let (pkt, tail) = pktline::read(rest)?;
        rest = tail;
        match pkt {
            Pkt::Flush => break,
            Pkt::Delim => in_args = true,
            Pkt::ResponseEnd => return Err(PktError("unexpected response-end".to_owned())),
            Pkt::Data(data) => {
                let line = std::str::from_utf8(data)
                    .map_err(|_| PktError("non-text request line".to_owned()))?
                    .trim_end_matches('\n');
                if command.is_none() {
                    let name = line
                        .strip_prefix("command=")
                        .ok_or_else(|| PktError(format!("expected a command, got {line:?}")))?;
                    command = Some(name.to_owned());
                } else if in_args {
                    match line {
                        "symrefs" => args.symrefs = true,
                        "peel" => args.peel = true,
                        "unborn" => args.unborn = true,
                        _ => {
                            if let Some(prefix) = line.strip_prefix("ref-prefix ") {
                                args.prefixes.push(prefix.to_owned());
                            }
                        }
                    }
                }
            }
        }
    }
    match command.as_deref() {
        Some("ls-refs") => Ok(V2Request::LsRefs(args)),
        Some(other) => Ok(V2Request::Other(other.to_owned())),
        None => Err(PktError("empty request".to_owned())),
    }
}

/// A protocol v2 error packet: Git stops and shows `remote error: <message>`.
pub fn error_packet(message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    pktline::write(&mut out, format!("ERR {message}\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(c: char) -> Oid {
        Oid::new(std::iter::repeat_n(c, 40).collect::<String>())
    }

    fn listing() -> Listing {
        let mut refs = BTreeMap::new();
        refs.insert("refs/heads/main".to_owned(), oid('a'));
        refs.insert("refs/tags/v1".to_owned(), oid('b'));
        let mut peeled = BTreeMap::new();
        peeled.insert("refs/tags/v1".to_owned(), oid('a'));
        Listing {
            refs,
            head: Some("refs/heads/main".to_owned()),
            peeled,
        }
    }

    fn lines(mut buf: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let (pkt, rest) = pktline::read(buf).expect("pkt-line");
            out.push(match pkt {
                Pkt::Data(d) => String::from_utf8_lossy(d).into_owned(),
                Pkt::Flush => "<flush>".to_owned(),
                Pkt::Delim => "<delim>".to_owned(),
                Pkt::ResponseEnd => "<end>".to_owned(),
            });
            buf = rest;
        }
        out
    }

    #[test]
    fn v0_upload_pack_lists_head_refs_and_peeled_tags() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        assert_eq!(
            lines(&listing().upload_pack_v0("multi_ack ofs-delta")),
            vec![
                format!("{a} HEAD\0multi_ack ofs-delta symref=HEAD:refs/heads/main\n"),
                format!("{a} refs/heads/main\n"),
                format!("{b} refs/tags/v1\n"),
                format!("{a} refs/tags/v1^{{}}\n"),
                "<flush>".to_owned(),
            ]
        );
    }

    #[test]
    fn an_empty_listing_advertises_capabilities_only() {
        let empty = Listing {
            head: Some("refs/heads/main".to_owned()),
            ..Listing::default()
        };
        assert_eq!(
            lines(&empty.upload_pack_v0("ofs-delta")),
            vec![
                format!("{ZERO} capabilities^{{}}\0ofs-delta\n"),
                "<flush>".to_owned()
            ]
        );
        assert_eq!(
            lines(&empty.receive_pack_v0("atomic")),
            vec![
                format!("{ZERO} capabilities^{{}}\0atomic\n"),
                "<flush>".to_owned()
            ]
        );
    }

    #[test]
    fn receive_pack_lists_refs_without_head_or_peeled_tags() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        assert_eq!(
            lines(&listing().receive_pack_v0("atomic")),
            vec![
                format!("{a} refs/heads/main\0atomic\n"),
                format!("{b} refs/tags/v1\n"),
                "<flush>".to_owned(),
            ]
        );
    }

    #[test]
    fn git_capabilities_lose_their_symref() {
        let mut adv = Vec::new();
        pktline::write(
            &mut adv,
            format!("{ZERO} capabilities^{{}}\0multi_ack symref=HEAD:refs/heads/x agent=git/2\n")
                .as_bytes(),
        );
        pktline::flush(&mut adv);
        assert_eq!(capabilities(&adv).unwrap(), "multi_ack agent=git/2");
        assert!(capabilities(b"0000").is_err());
    }

    fn request(lines: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in lines {
            match *l {
                "<delim>" => out.extend_from_slice(b"0001"),
                _ => pktline::write(&mut out, format!("{l}\n").as_bytes()),
            }
        }
        pktline::flush(&mut out);
        out
    }

    #[test]
    fn ls_refs_requests_parse_and_are_answered_from_the_listing() {
        let body = request(&[
            "command=ls-refs",
            "agent=git/2.47",
            "object-format=sha1",
            "<delim>",
            "peel",
            "symrefs",
            "unborn",
            "ref-prefix HEAD",
            "ref-prefix refs/tags/",
        ]);
        let V2Request::LsRefs(args) = parse_v2(&body).unwrap() else {
            panic!("not ls-refs");
        };
        assert!(args.peel && args.symrefs && args.unborn);
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        assert_eq!(
            lines(&listing().ls_refs(&args)),
            vec![
                format!("{a} HEAD symref-target:refs/heads/main\n"),
                format!("{b} refs/tags/v1 peeled:{a}\n"),
                "<flush>".to_owned(),
            ]
        );
        let unborn = Listing {
            head: Some("refs/heads/main".to_owned()),
            ..Listing::default()
        };
        assert_eq!(
            lines(&unborn.ls_refs(&args)),
            vec![
                "unborn HEAD symref-target:refs/heads/main\n".to_owned(),
                "<flush>".to_owned()
            ]
        );
        assert_eq!(
            parse_v2(&request(&["command=fetch", "<delim>", "want x"])).unwrap(),
            V2Request::Other("fetch".to_owned())
        );
        assert!(parse_v2(b"0000").is_err());
        assert!(parse_v2(&request(&["want x"])).is_err());
    }
}
