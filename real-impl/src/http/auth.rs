//! Who is calling the Git endpoint: a user with a token (HTTP basic or bearer) and
//! per-repository read/write permission (PROTOCOL.md section 10). Devices never call it:
//! objects move between devices over the peer connection ([`crate::objects`]), so no
//! device credential ever travels in an HTTP header.

use axum::http::HeaderMap;
use base64::Engine as _;

use crate::config::UserConfig;
use crate::secret::same;

/// Why a caller was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credential: ask for one.
    Missing,
    /// A user credential that matches no user.
    BadUser,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Finds the user a basic or bearer `Authorization` header belongs to. Tokens are compared
/// in constant time, and every user's token is compared, so the time taken says nothing
/// about which user or how much of a token matched.
pub fn user_of<'a>(authorization: &str, users: &'a [UserConfig]) -> Option<&'a UserConfig> {
    let (name, token) = if let Some(token) = authorization.strip_prefix("Bearer ") {
        (None, token.trim().to_owned())
    } else {
        let encoded = authorization.strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (name, token) = text.split_once(':')?;
        (Some(name.to_owned()), token.to_owned())
    };
    let mut found = None;
    for user in users {
        let token_matches = same(user.token.as_bytes(), token.as_bytes());
        let name_matches = name.as_deref().is_none_or(|n| n == user.name);
        if token_matches && name_matches && found.is_none() {
            found = Some(user);
        }
    }
    found
}

/// Authenticates a request.
pub fn authenticate(headers: &HeaderMap, users: &[UserConfig]) -> Result<UserConfig, Denied> {
    let Some(authorization) = header(headers, "Authorization") else {
        return Err(Denied::Missing);
    };
    user_of(authorization, users)
        .cloned()
        .ok_or(Denied::BadUser)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Vec<UserConfig> {
        vec![UserConfig {
            name: "alice".into(),
            token: "alice-token".into(),
            read: vec!["*".into()],
            write: vec!["R1".into()],
        }]
    }

    #[test]
    fn basic_and_bearer_tokens_find_their_user() {
        let u = users();
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:alice-token")
        );
        assert_eq!(user_of(&basic, &u).map(|u| u.name.as_str()), Some("alice"));
        assert!(user_of("Bearer alice-token", &u).is_some());
        let wrong = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:nope")
        );
        assert!(user_of(&wrong, &u).is_none());
        assert!(user_of("Bearer nope", &u).is_none());
        assert!(user_of("Basic !!!", &u).is_none());
    }
}
