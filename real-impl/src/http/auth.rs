//! Who is calling the Git endpoint: a user with a token (HTTP basic or bearer) and
//! per-repository read/write permission, or a peer device presenting its credential
//! (PROTOCOL.md section 10).

use axum::http::HeaderMap;
use base64::Engine as _;

use crate::config::UserConfig;
use crate::db::credentials::PeerCredentials;

/// The header a peer names itself in.
pub const PEER_DEVICE_HEADER: &str = "X-Stormcell-Device";
/// The header a peer presents its credential in.
pub const PEER_CREDENTIAL_HEADER: &str = "X-Stormcell-Credential";

/// An authenticated caller.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A user from the configuration.
    User(UserConfig),
    /// A peer device fetching objects.
    Peer(String),
}

/// Why a caller was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credential: ask for one.
    Missing,
    /// A user credential that matches no user.
    BadUser,
    /// A peer credential that does not match the device.
    BadPeer(String),
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Finds the user a basic or bearer `Authorization` header belongs to.
pub fn user_of<'a>(authorization: &str, users: &'a [UserConfig]) -> Option<&'a UserConfig> {
    if let Some(token) = authorization.strip_prefix("Bearer ") {
        return users.iter().find(|u| u.token == token.trim());
    }
    let encoded = authorization.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, token) = text.split_once(':')?;
    users.iter().find(|u| u.name == name && u.token == token)
}

/// Authenticates a request.
pub async fn authenticate(
    headers: &HeaderMap,
    users: &[UserConfig],
    peers: &PeerCredentials,
) -> Result<Caller, Denied> {
    if let Some(device) = header(headers, PEER_DEVICE_HEADER) {
        let credential = header(headers, PEER_CREDENTIAL_HEADER).unwrap_or("");
        if peers.check(device, credential).await {
            return Ok(Caller::Peer(device.to_owned()));
        }
        return Err(Denied::BadPeer(device.to_owned()));
    }
    let Some(authorization) = header(headers, "Authorization") else {
        return Err(Denied::Missing);
    };
    user_of(authorization, users)
        .cloned()
        .map(Caller::User)
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
