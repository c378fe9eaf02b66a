//! Where things are in a scenario file, so that errors can name the line and the field.
//!
//! toml's typed deserializer reports the byte span of an error but not the key path (it
//! keeps the path privately and drops it once a span is known), and validation after
//! deserializing knows the path but not the span. Parsing the text a second time into a list
//! of every key with its dotted path and position answers both questions.
//!
//! Only keys and array elements carry positions: toml has no span for a table that exists
//! only through a longer header (`faults` in `[faults.strikes]`), so asking for the span of
//! every value would fail on ordinary files.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// Every key (and array element) of a TOML document with its dotted path and byte offset.
#[derive(Debug)]
pub(super) struct Locator {
    /// `(offset, path)`, sorted by offset; array elements are spelled `points[1]`.
    places: Vec<(usize, String)>,
}

impl Locator {
    /// The keys of `text`, or `None` when it is not valid TOML (the typed parse says why).
    pub(super) fn new(text: &str) -> Option<Locator> {
        let root: Node = toml::from_str(text).ok()?;
        let mut places = Vec::new();
        root.flatten("", &mut places);
        places.sort();
        Some(Locator { places })
    }

    /// Byte offset of the key at the dotted `path`, or of its nearest ancestor that the file
    /// spells out (a field left at its default has no place of its own).
    pub(super) fn offset_of(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some((offset, _)) = self.places.iter().find(|(_, p)| p == path) {
                return Some(*offset);
            }
            path = &path[..path.rfind('.')?];
        }
    }

    /// The path of the innermost key or array element that the error at byte `offset` of
    /// `text` is about: the last one that starts at or before it, or for an error reported at
    /// a `[table]` header, the table the header names.
    pub(super) fn path_at(&self, text: &str, offset: usize) -> Option<String> {
        let limit = header_end(text, offset).unwrap_or(offset);
        self.last_before(limit)
    }

    /// The path of the table whose span is `span` (serde reports a missing field at its
    /// table), or `None` for the top level.
    pub(super) fn table_at(&self, text: &str, span: std::ops::Range<usize>) -> Option<String> {
        if span.is_empty() {
            // Only the top-level table has an empty span: it has no keys of its own.
            None
        } else if let Some(end) = header_end(text, span.start) {
            self.last_before(end)
        } else if text[span.start.min(text.len())..].starts_with('{') {
            self.last_before(span.start)
        } else {
            // The top-level table's span runs from its first key to its last.
            None
        }
    }

    fn last_before(&self, limit: usize) -> Option<String> {
        self.places
            .iter()
            .take_while(|(start, _)| *start <= limit)
            .last()
            .map(|(_, path)| path.clone())
    }
}

/// When `offset` is the `[` of a table header, the end of the header's line: the header's
/// keys come after the `[`, and the last of them names the table.
fn header_end(text: &str, offset: usize) -> Option<usize> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let at_header = text[line_start..offset].trim().is_empty() && text[offset..].starts_with('[');
    at_header.then(|| text[offset..].find('\n').map_or(text.len(), |i| offset + i))
}

/// 1-based line of byte `offset` in `text`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A TOML value reduced to its structure and the spans of its keys and array elements.
#[derive(Debug)]
enum Node {
    Table(Vec<(Spanned<String>, Node)>),
    Array(Vec<Spanned<Node>>),
    Leaf,
}

impl Node {
    fn flatten(&self, path: &str, places: &mut Vec<(usize, String)>) {
        match self {
            Node::Table(entries) => {
                for (key, value) in entries {
                    let child = if path.is_empty() {
                        key.get_ref().clone()
                    } else {
                        format!("{path}.{}", key.get_ref())
                    };
                    value.flatten(&child, places);
                    places.push((key.span().start, child));
                }
            }
            Node::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let child = format!("{path}[{i}]");
                    item.get_ref().flatten(&child, places);
                    places.push((item.span().start, child));
                }
            }
            Node::Leaf => {}
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Node::Table(entries))
    }
}
