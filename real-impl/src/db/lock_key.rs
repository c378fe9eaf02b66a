//! Stable 64-bit keys for PostgreSQL advisory locks, derived from lock names. Every device
//! must derive the same key from the same name, across builds and platforms, so the key is
//! an FNV-1a hash of a fixed text form (not Rust's randomized hasher).

use std::hash::Hasher;

use stormcell_model::ids::RepoId;
use stormcell_model::ports::LockName;

fn key_of(parts: &[&str]) -> i64 {
    let mut h = fnv::FnvHasher::default();
    h.write(b"stormcell");
    for p in parts {
        // A separator that cannot occur in names keeps ("ab","c") apart from ("a","bc").
        h.write_u8(0);
        h.write(p.as_bytes());
    }
    h.finish() as i64
}

/// The advisory-lock key of a session lock.
pub fn lock_key(lock: &LockName) -> i64 {
    match lock {
        LockName::Write(r) => key_of(&["write", r.as_str()]),
        LockName::Read(r, d) => key_of(&["read", r.as_str(), d.as_str()]),
        LockName::Pull(r, d) => key_of(&["pull", r.as_str(), d.as_str()]),
    }
}

/// The transaction-lock key that serializes first-row inserts of a repository.
pub fn rows_key(repo: &RepoId) -> i64 {
    key_of(&["rows", repo.as_str()])
}

#[cfg(test)]
mod tests {
    use stormcell_model::ids::DeviceId;

    use super::*;

    #[test]
    fn keys_are_stable_and_distinct() {
        let r = RepoId::new("R1");
        let d = DeviceId::new("repo001");
        let w = lock_key(&LockName::Write(r.clone()));
        // Fixed value: changing the derivation would let old and new daemons disagree.
        assert_eq!(w, -6_234_809_114_432_095_710);
        let all = [
            w,
            lock_key(&LockName::Read(r.clone(), d.clone())),
            lock_key(&LockName::Pull(r.clone(), d.clone())),
            lock_key(&LockName::Write(RepoId::new("R2"))),
            rows_key(&r),
        ];
        let set: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(set.len(), all.len());
        assert_ne!(key_of(&["ab", "c"]), key_of(&["a", "bc"]));
    }
}
