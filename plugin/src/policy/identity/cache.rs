//! A bounded cache of verified tokens, so a repeated token costs one SHA-256
//! instead of a signature check and two JSON parses.
//!
//! Keyed by the token's SHA-256: the raw token is never stored. An entry is
//! used only inside the token's own validity window and is dropped when the
//! window closes. Capacity is bounded; when full, the oldest entry goes
//! (first in, first out), all in O(1). A cache belongs to one policy:
//! [`crate::policy::Policy::decide_cached`] clears it when it sees a cache
//! filled under a different policy revision.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use sha2::{Digest, Sha256};

use super::claims::Identity;
use super::verifier::VerifiedToken;

/// Capacity of [`TokenCache::default`].
pub const DEFAULT_TOKEN_CACHE_CAPACITY: usize = 1024;

/// SHA-256 of a token.
pub(crate) type TokenDigest = [u8; 32];

pub(crate) fn token_digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// The key is already a uniform hash, so its first bytes are a fine hash and
/// no random seed (host randomness inside the Wasm VM) is needed.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(23) ^ u64::from_le_bytes(word);
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CachedToken {
    pub token: VerifiedToken,
    pub identity: Identity,
    /// Insertion sequence number, to tell live entries from stale queue slots.
    sequence: u64,
}

/// Verified tokens of one policy, bounded and keyed by SHA-256.
#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    entries: HashMap<TokenDigest, CachedToken, BuildHasherDefault<DigestHasher>>,
    /// Insertion order; may hold stale slots of removed entries (compacted).
    order: VecDeque<(TokenDigest, u64)>,
    next_sequence: u64,
    revision: String,
}

impl Default for TokenCache {
    fn default() -> TokenCache {
        TokenCache::new(DEFAULT_TOKEN_CACHE_CAPACITY)
    }
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens (0 disables caching).
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            capacity,
            entries: HashMap::default(),
            order: VecDeque::new(),
            next_sequence: 0,
            revision: String::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    /// Bind the cache to a policy revision, clearing it if it held another's tokens.
    pub(crate) fn bind(&mut self, revision: &str) {
        if self.revision != revision {
            self.clear();
            revision.clone_into(&mut self.revision);
        }
    }

    /// The cached entry for `digest`, if present; `is_current` decides whether
    /// the token is still valid now, and a token that is not is dropped.
    pub(crate) fn get(
        &mut self,
        digest: &TokenDigest,
        is_current: impl FnOnce(&VerifiedToken) -> bool,
    ) -> Option<&CachedToken> {
        let current = is_current(&self.entries.get(digest)?.token);
        if !current {
            self.entries.remove(digest);
            return None;
        }
        self.entries.get(digest)
    }

    pub(crate) fn insert(&mut self, digest: TokenDigest, token: VerifiedToken, identity: Identity) {
        if self.capacity == 0 {
            return;
        }
        while self.entries.len() >= self.capacity && !self.entries.contains_key(&digest) {
            self.evict_oldest();
        }
        let sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.entries.insert(
            digest,
            CachedToken {
                token,
                identity,
                sequence,
            },
        );
        self.order.push_back((digest, sequence));
        if self.order.len() > self.capacity.saturating_mul(2) {
            let entries = &self.entries;
            self.order
                .retain(|(key, seq)| entries.get(key).is_some_and(|e| e.sequence == *seq));
        }
    }

    fn evict_oldest(&mut self) {
        while let Some((key, sequence)) = self.order.pop_front() {
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.sequence == sequence)
            {
                self.entries.remove(&key);
                return;
            }
        }
        // The queue lost track (cannot happen); keep the bound regardless.
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::keys::Algorithm;
    use super::*;

    fn token(exp: u64) -> VerifiedToken {
        VerifiedToken {
            claims: json!({"sub": "a"}),
            issuer: "iss".into(),
            algorithm: Algorithm::Hs256,
            key_id: None,
            expires_at: exp,
            not_before: None,
            issued_at: None,
        }
    }

    fn identity() -> Identity {
        Identity {
            subject: "a".into(),
            tenant: None,
            roles: vec![],
        }
    }

    #[test]
    fn entries_are_found_by_digest_until_no_longer_current() {
        let mut cache = TokenCache::new(4);
        let digest = token_digest("t1");
        cache.insert(digest, token(100), identity());
        assert!(cache.get(&digest, |t| t.expires_at > 50).is_some());
        assert!(cache.get(&digest, |t| t.expires_at > 150).is_none());
        assert!(cache.is_empty(), "an expired entry is dropped");
    }

    #[test]
    fn capacity_is_a_hard_bound_and_oldest_goes_first() {
        let mut cache = TokenCache::new(3);
        for i in 0..10 {
            cache.insert(token_digest(&format!("t{i}")), token(100), identity());
            assert!(cache.len() <= 3);
        }
        assert!(cache.get(&token_digest("t9"), |_| true).is_some());
        assert!(cache.get(&token_digest("t6"), |_| true).is_none());
        assert!(cache.order.len() <= 6);
    }

    #[test]
    fn zero_capacity_disables_caching() {
        let mut cache = TokenCache::new(0);
        cache.insert(token_digest("t"), token(100), identity());
        assert!(cache.is_empty());
        assert_eq!(cache.capacity(), 0);
    }

    #[test]
    fn binding_to_another_revision_clears() {
        let mut cache = TokenCache::default();
        cache.bind("rev1");
        cache.insert(token_digest("t"), token(100), identity());
        cache.bind("rev1");
        assert_eq!(cache.len(), 1);
        cache.bind("rev2");
        assert!(cache.is_empty());
    }

    #[test]
    fn reinserting_after_removal_keeps_the_bound() {
        let mut cache = TokenCache::new(2);
        for round in 0..50 {
            let digest = token_digest("same");
            cache.insert(digest, token(100), identity());
            assert!(cache.get(&digest, |_| round % 2 == 0).is_some() == (round % 2 == 0));
            cache.insert(token_digest(&format!("x{round}")), token(100), identity());
            assert!(cache.len() <= 2);
            assert!(cache.order.len() <= 4);
        }
    }
}
