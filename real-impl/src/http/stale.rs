//! Reads that may be stale (PROTOCOL.md 9.6): while the cluster database is read-only, a
//! read sync that cannot prove this device holds the newest version still serves the read
//! (with `stale_reads = "mark"`), and the client is told.
//!
//! The read sync runs on `GET info/refs`, whose answer has no place for a message, so that
//! response carries the [`HEADER`]. The pack that follows on `POST git-upload-pack` is a
//! separate request; the same user's fetch of the same repository shortly after a
//! possibly-stale read gets the [`notice`] as a progress line on its side band, which
//! Git prints as `remote: stormcell: this read may be stale ...`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue};
use futures_util::Stream;
use stormcell_model::ids::RepoId;

use crate::pktline;

/// The response header on a read that may be stale.
pub const HEADER: &str = "X-Stormcell-Possibly-Stale";

/// How long after a possibly-stale advertisement the pack for it counts as part of the
/// same read. A clone asks for its pack within moments; this only bounds the memory.
const SAME_READ: Duration = Duration::from_secs(120);

/// The line a client sees.
pub fn notice(repo: &RepoId) -> String {
    format!(
        "stormcell: this read may be stale: the cluster database is read-only and this \
         device could not confirm it holds the newest version of \"{repo}\""
    )
}

/// Marks a response as possibly stale.
pub fn mark(headers: &mut HeaderMap) {
    headers.insert(HEADER, HeaderValue::from_static("1"));
}

/// Which users' latest reads of which repositories may be stale.
#[derive(Debug, Default)]
pub struct StaleReads {
    seen: Mutex<HashMap<(String, RepoId), Instant>>,
}

impl StaleReads {
    /// Records the outcome of `user`'s read sync of `repo`.
    pub fn note(&self, user: &str, repo: &RepoId, possibly_stale: bool) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let key = (user.to_owned(), repo.clone());
        if possibly_stale {
            let now = Instant::now();
            seen.retain(|_, at| now.duration_since(*at) < SAME_READ);
            seen.insert(key, now);
        } else {
            seen.remove(&key);
        }
    }

    /// Whether `user`'s latest read of `repo`, moments ago, may be stale.
    pub fn recent(&self, user: &str, repo: &RepoId) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&(user.to_owned(), repo.clone()))
            .is_some_and(|at| at.elapsed() < SAME_READ)
    }
}

/// Where the scan of an upload-pack response stands.
#[derive(Debug)]
enum Scan {
    /// Reading pkt-lines; `held` are the bytes of a header not yet decided on.
    Lines { held: Vec<u8>, skip: usize },
    /// The notice went out (or cannot): everything else passes through.
    Done,
}

/// Inserts a side-band progress packet into `git upload-pack`'s response, just before its
/// first side-band packet: the packfile section of protocol v2, or the pack of v0 when the
/// client asked for a side band. A response without one (a negotiation round, `ls-refs`)
/// passes unchanged.
#[derive(Debug)]
pub struct Notice {
    packet: Vec<u8>,
    scan: Scan,
}

impl Notice {
    /// Will insert `line` on band 2.
    pub fn new(line: &str) -> Self {
        let mut packet = Vec::new();
        pktline::sideband(&mut packet, 2, format!("{line}\n").as_bytes());
        Notice {
            packet,
            scan: Scan::Lines {
                held: Vec::new(),
                skip: 0,
            },
        }
    }

    /// Passes one chunk of the response through.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len() + self.packet.len());
        while let Scan::Lines { held, skip } = &mut self.scan {
            // The rest of a packet already decided on.
            let n = (*skip).min(chunk.len());
            out.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
            *skip -= n;
            if *skip > 0 || chunk.is_empty() {
                return out;
            }
            // A header: four hex digits, then the payload's first byte says its band.
            let want = 5 - held.len().min(5);
            let n = want.min(chunk.len());
            held.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
            let Some(len) = held
                .get(..4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| usize::from_str_radix(h, 16).ok())
            else {
                if held.len() >= 4 {
                    // Not pkt-lines after all: leave the stream alone.
                    out.append(held);
                    self.scan = Scan::Done;
                }
                continue;
            };
            if len <= 4 {
                // flush-pkt, delim-pkt, response-end or an empty packet: no payload.
                let rest = held.split_off(4);
                out.append(held);
                // The byte read past it belongs to the next header.
                held.extend(rest);
                continue;
            }
            if held.len() < 5 {
                continue;
            }
            let header_and_band = std::mem::take(held);
            if matches!(header_and_band[4], 1..=3) {
                out.extend_from_slice(&self.packet);
                out.extend_from_slice(&header_and_band);
                out.extend_from_slice(chunk);
                self.scan = Scan::Done;
                return out;
            }
            out.extend_from_slice(&header_and_band);
            *skip = len - 5;
        }
        out.extend_from_slice(chunk);
        out
    }

    /// The bytes still held when the response ends (only a truncated response leaves any).
    pub fn finish(&mut self) -> Vec<u8> {
        match std::mem::replace(&mut self.scan, Scan::Done) {
            Scan::Lines { held, .. } => held,
            Scan::Done => Vec::new(),
        }
    }
}

/// A response body with the [`Notice`] inserted.
pub struct WithNotice<S> {
    inner: S,
    notice: Notice,
    ended: bool,
}

impl<S> WithNotice<S> {
    /// `inner` with `line` inserted on its side band.
    pub fn new(inner: S, line: &str) -> Self {
        WithNotice {
            inner,
            notice: Notice::new(line),
            ended: false,
        }
    }
}

impl<S, E> Stream for WithNotice<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let out = self.notice.feed(&chunk);
                Poll::Ready(Some(Ok(Bytes::from(out))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                self.ended = true;
                let rest = self.notice.finish();
                if rest.is_empty() {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Ok(Bytes::from(rest))))
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        pktline::write(&mut out, payload);
        out
    }

    fn band(b: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        pktline::sideband(&mut out, b, payload);
        out
    }

    /// Feeds `input` in chunks of `size` and returns the output.
    fn run(input: &[u8], size: usize) -> Vec<u8> {
        let mut n = Notice::new("stormcell: this read may be stale");
        let mut out = Vec::new();
        for c in input.chunks(size) {
            out.extend(n.feed(c));
        }
        out.extend(n.finish());
        out
    }

    fn notice_packet() -> Vec<u8> {
        band(2, b"stormcell: this read may be stale\n")
    }

    #[test]
    fn the_notice_precedes_the_v2_packfile_in_any_chunking() {
        let head = [
            pkt(b"acknowledgments\n"),
            pkt(b"ready\n"),
            b"0001".to_vec(),
            pkt(b"packfile\n"),
        ]
        .concat();
        let pack = [
            band(2, b"Enumerating objects: 3\n"),
            band(1, b"PACK...."),
            b"0000".to_vec(),
        ]
        .concat();
        let input = [head.clone(), pack.clone()].concat();
        let expected = [head, notice_packet(), pack].concat();
        for size in [1, 2, 3, 4, 5, 7, 64, 4096] {
            assert_eq!(run(&input, size), expected, "chunks of {size}");
        }
    }

    #[test]
    fn v0_gets_it_after_the_acknowledgements() {
        let input = [pkt(b"NAK\n"), band(1, b"PACK"), b"0000".to_vec()].concat();
        let expected = [
            pkt(b"NAK\n"),
            notice_packet(),
            band(1, b"PACK"),
            b"0000".to_vec(),
        ]
        .concat();
        assert_eq!(run(&input, 3), expected);
    }

    #[test]
    fn responses_without_a_side_band_pass_unchanged() {
        let ls_refs = [
            pkt(b"0123456789012345678901234567890123456789 refs/heads/main\n"),
            b"0000".to_vec(),
        ]
        .concat();
        for size in [1, 5, 100] {
            assert_eq!(run(&ls_refs, size), ls_refs);
        }
        let truncated = b"00".to_vec();
        assert_eq!(run(&truncated, 1), truncated);
        let not_pkt = b"HTTP garbage".to_vec();
        assert_eq!(run(&not_pkt, 2), not_pkt);
    }

    #[test]
    fn stale_reads_are_remembered_per_user_and_repository() {
        let s = StaleReads::default();
        let r1 = RepoId::new("R1");
        s.note("alice", &r1, true);
        assert!(s.recent("alice", &r1));
        assert!(!s.recent("bob", &r1));
        assert!(!s.recent("alice", &RepoId::new("R2")));
        s.note("alice", &r1, false);
        assert!(!s.recent("alice", &r1));
    }

    #[test]
    fn the_header_marks_the_response() {
        let mut h = HeaderMap::new();
        mark(&mut h);
        assert_eq!(h.get(HEADER).and_then(|v| v.to_str().ok()), Some("1"));
        assert!(notice(&RepoId::new("R1")).contains("may be stale"));
    }
}
