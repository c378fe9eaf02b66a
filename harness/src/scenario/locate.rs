//! Where things are in a scenario file: a tree of every key with its byte span, so that
//! errors can name the line and the field path.
//!
//! toml's typed deserializer reports a span but not the key path (it keeps the path privately
//! and drops it once a span is known), and validation after deserializing knows the path but
//! not the span. Parsing the text a second time into this tree answers both questions.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// The keys of a TOML document with their spans.
#[derive(Debug)]
pub(super) struct Locator {
    root: Node,
}

#[derive(Debug)]
enum Node {
    Table(Vec<(Spanned<String>, Spanned<Node>)>),
    Array(Vec<Spanned<Node>>),
    Leaf,
}

impl Locator {
    /// The tree of `text`, or `None` when it is not valid TOML (the typed parse reports why).
    pub(super) fn new(text: &str) -> Option<Locator> {
        toml::from_str(text).ok().map(|root| Locator { root })
    }

    /// Byte offset of the key at the dotted `path`, or of its nearest ancestor that the file
    /// spells out (a field left at its default has no place of its own).
    pub(super) fn offset_of(&self, path: &str) -> Option<usize> {
        let mut node = &self.root;
        let mut found = None;
        for part in path.split('.') {
            let Node::Table(entries) = node else { break };
            let Some((key, value)) = entries.iter().find(|(key, _)| key.get_ref() == part) else {
                break;
            };
            found = Some(key.span().start);
            node = value.get_ref();
        }
        found
    }

    /// The dotted path of the innermost key whose key or value covers byte `offset`, with
    /// array elements as `[i]`.
    pub(super) fn path_at(&self, offset: usize) -> Option<String> {
        let mut path = String::new();
        search(&self.root, offset, &mut path).then_some(path)
    }
}

/// Appends to `path` the innermost key under `node` that covers `offset`; false if none does.
///
/// Children are searched whether or not their parent's span covers `offset`: a `[table]`
/// header's span does not cover the keys written below it.
fn search(node: &Node, offset: usize, path: &mut String) -> bool {
    let covers = |span: std::ops::Range<usize>| span.contains(&offset) || span.start == offset;
    let len = path.len();
    match node {
        Node::Table(entries) => {
            for (key, value) in entries {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key.get_ref());
                if search(value.get_ref(), offset, path)
                    || covers(key.span())
                    || covers(value.span())
                {
                    return true;
                }
                path.truncate(len);
            }
        }
        Node::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push_str(&format!("[{i}]"));
                if search(item.get_ref(), offset, path) || covers(item.span()) {
                    return true;
                }
                path.truncate(len);
            }
        }
        Node::Leaf => {}
    }
    false
}

/// 1-based line of byte `offset` in `text`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
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
