//! Names and ids (PROTOCOL.md section 1).

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// Wraps a name.
            pub fn new(name: impl Into<String>) -> Self {
                Self(name.into())
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

name_type!(
    /// A device: one host running the node daemon, such as `repo001`.
    DeviceId
);
name_type!(
    /// A repository's short name, such as `R1`.
    RepoId
);
name_type!(
    /// A service: a named group of bindings.
    ServiceId
);
name_type!(
    /// A Git object id (a commit), as text.
    Oid
);
name_type!(
    /// An opaque token identifying one writer (`lock_owner`).
    LockOwner
);

/// A version number of a repository on a device.
pub type Version = u64;

/// A primary database's generation (PROTOCOL.md 12): it changes with every change of
/// primary and survives any process, so a device can tell, even after a restart, that the
/// rows it reads may lack versions an earlier primary acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Generation {
    /// How many times the primary was replaced (0: the database's first primary).
    pub promotions: u64,
    /// What identifies this primary's history beyond the count (for PostgreSQL, the system
    /// identifier and timeline, which change even on a promotion made by hand).
    pub lineage: String,
}

impl Generation {
    /// Whether this is the database's first primary: its rows were never replaced by a
    /// replica's, so a device that never verified anything may trust them.
    pub fn is_original(&self) -> bool {
        self.promotions == 0
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.promotions, self.lineage)
    }
}

/// The hash of the sorted list of (ref name, object id) pairs of a working copy
/// (PROTOCOL.md section 1, **[stormcell]**). Equal digests mean equal refs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Digest(pub u64);

impl Digest {
    /// Computes the digest of a set of refs given in any order.
    pub fn of<'a>(refs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut pairs: Vec<(&str, &str)> = refs.into_iter().collect();
        pairs.sort_unstable();
        // FNV-1a: stable across builds and platforms, which a digest stored in the
        // database must be.
        let mut h = fnv::FnvHasher::default();
        for (name, oid) in pairs {
            std::hash::Hasher::write(&mut h, name.as_bytes());
            std::hash::Hasher::write_u8(&mut h, 0);
            std::hash::Hasher::write(&mut h, oid.as_bytes());
            std::hash::Hasher::write_u8(&mut h, b'\n');
        }
        Digest(std::hash::Hasher::finish(&h))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_ignores_order_and_sees_every_pair() {
        let a = Digest::of([("refs/heads/a", "1"), ("refs/heads/b", "2")]);
        let b = Digest::of([("refs/heads/b", "2"), ("refs/heads/a", "1")]);
        assert_eq!(a, b);
        let c = Digest::of([("refs/heads/a", "1"), ("refs/heads/b", "3")]);
        assert_ne!(a, c);
        // Concatenation ambiguity must not collide.
        let d = Digest::of([("refs/heads/a1", "")]);
        let e = Digest::of([("refs/heads/a", "1")]);
        assert_ne!(d, e);
    }
}
