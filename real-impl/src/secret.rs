//! Comparing secrets (PROTOCOL.md section 10): user tokens and device credentials are
//! compared in constant time, so how long a refusal takes says nothing about how much of
//! a guess was right.

use subtle::ConstantTimeEq;

/// Whether `a` and `b` are equal, in time that depends only on their lengths.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// What replaces a password in anything printed.
const HIDDEN: &str = "********";

/// A libpq connection string fit to print: the password of a URL
/// (`postgresql://user:secret@host/db`) and any `password` parameter, in URL or
/// `key=value` form, replaced by asterisks.
pub fn redact_conninfo(conninfo: &str) -> String {
    let trimmed = conninfo.trim_start();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        return redact_url(trimmed);
    }
    redact_keywords(conninfo)
}

fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    // The authority ends at the first '/', '?' or '#'; its user information at the last '@'.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:{HIDDEN}@{hosts}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k == "password" => format!("{k}={HIDDEN}"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// `key=value` pairs: values may be single-quoted, with `\'` and `\\` escapes.
fn redact_keywords(conninfo: &str) -> String {
    let mut out = String::with_capacity(conninfo.len());
    let mut chars = conninfo.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            out.push(c);
            chars.next();
            continue;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        out.push_str(&key);
        let mut gap = String::new();
        while let Some(&c) = chars.peek() {
            if !c.is_whitespace() {
                break;
            }
            gap.push(c);
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            out.push_str(&gap);
            continue;
        }
        out.push('=');
        chars.next();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            value.push('\'');
            chars.next();
            while let Some(c) = chars.next() {
                value.push(c);
                if c == '\\' {
                    if let Some(escaped) = chars.next() {
                        value.push(escaped);
                    }
                } else if c == '\'' {
                    break;
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        if key == "password" {
            out.push_str(HIDDEN);
        } else {
            out.push_str(&value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_only_when_every_byte_is() {
        assert!(same(b"alice-token", b"alice-token"));
        assert!(!same(b"alice-token", b"alice-tokem"));
        assert!(!same(b"alice-token", b"alice-token-1"));
        assert!(!same(b"", b"x"));
        assert!(same(b"", b""));
    }

    #[test]
    fn passwords_never_survive_redaction() {
        assert_eq!(
            redact_conninfo("host=db1 port=5432 user=stormcell password=s3cret dbname=sc"),
            "host=db1 port=5432 user=stormcell password=******** dbname=sc"
        );
        assert_eq!(
            redact_conninfo("host=db1 password = 'my \\' secret' user=x"),
            "host=db1 password=******** user=x"
        );
        assert_eq!(
            redact_conninfo("postgresql://stormcell:s3cret@db1:5432/sc?sslmode=require"),
            "postgresql://stormcell:********@db1:5432/sc?sslmode=require"
        );
        assert_eq!(
            redact_conninfo("postgres://db1/sc?user=x&password=s3cret"),
            "postgres://db1/sc?user=x&password=********"
        );
        assert_eq!(
            redact_conninfo("host=/tmp/pg port=5433 user=postgres"),
            "host=/tmp/pg port=5433 user=postgres"
        );
        for s in [
            "password=s3cret",
            "postgresql://u:s3cret@h/d",
            "postgresql://u@h/d?password=s3cret",
        ] {
            assert!(!redact_conninfo(s).contains("s3cret"), "{s}");
        }
    }
}
