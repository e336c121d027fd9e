//! Bounded, host-independent memory of verified deliveries, laid out for
//! Envoy's shared data (a flat key -> bytes store with compare-and-swap).
//!
//! A fingerprint ([`super::Verified::fingerprint`]) is mapped to one of
//! [`BUCKET_COUNT`] buckets; each bucket is one shared-data value holding at
//! most [`BUCKET_CAPACITY`] `(tag, expires_at)` entries. Memory is therefore
//! bounded at `BUCKET_COUNT * (1 + 16 * BUCKET_CAPACITY)` bytes whatever the
//! traffic, and workers contend only on the bucket they touch. The glue reads
//! a bucket, calls [`bucket_insert`], and writes it back with the CAS token it
//! read, retrying on a CAS mismatch.
//!
//! Encoding of a bucket value: one version byte ([`FORMAT_VERSION`]), then
//! entries of 16 bytes each: the tag (u64, big-endian) and the expiry (u64,
//! big-endian, in the caller's clock unit, normally Unix seconds). Bytes that
//! do not follow this shape are treated as an empty bucket: forgetting is the
//! safe failure here, since a forgotten delivery is merely verified again.

/// Number of buckets (shared-data keys).
pub const BUCKET_COUNT: u64 = 1024;
/// Entries kept per bucket.
pub const BUCKET_CAPACITY: usize = 16;
/// First byte of every encoded bucket.
pub const FORMAT_VERSION: u8 = 1;
/// Prefix of every bucket's shared-data key.
pub const BUCKET_NAME_PREFIX: &str = "avb-edge.webhook-replay.";

const ENTRY_LEN: usize = 16;

/// Where a fingerprint lives: bytes 0..8 choose the bucket, bytes 8..16 are
/// the tag stored in it (independent of the bucket choice, so all 64 tag bits
/// distinguish entries within a bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplaySlotKey {
    pub bucket: u64,
    pub tag: u64,
}

impl ReplaySlotKey {
    pub fn from_fingerprint(fingerprint: &[u8; 32]) -> Self {
        let mut bucket_bytes = [0u8; 8];
        bucket_bytes.copy_from_slice(&fingerprint[..8]);
        let mut tag_bytes = [0u8; 8];
        tag_bytes.copy_from_slice(&fingerprint[8..16]);
        Self {
            bucket: u64::from_be_bytes(bucket_bytes) % BUCKET_COUNT,
            tag: u64::from_be_bytes(tag_bytes),
        }
    }
}

/// The shared-data key of the bucket that holds `fingerprint`.
pub fn bucket_name(fingerprint: &[u8; 32]) -> String {
    let slot = ReplaySlotKey::from_fingerprint(fingerprint);
    format!("{BUCKET_NAME_PREFIX}{:04}", slot.bucket)
}

/// True when `bucket` remembers `fingerprint` and the entry has not expired at `now`.
pub fn bucket_contains(bucket: &[u8], fingerprint: &[u8; 32], now: u64) -> bool {
    let tag = ReplaySlotKey::from_fingerprint(fingerprint).tag;
    decode(bucket)
        .iter()
        .any(|entry| entry.tag == tag && entry.expires_at > now)
}

/// The new value of `bucket` after remembering `fingerprint` until
/// `expires_at`: expired entries are dropped, a fingerprint already present
/// keeps the later expiry, and a full bucket evicts the entry that expires
/// soonest. An `expires_at` not after `now` records nothing.
pub fn bucket_insert(bucket: &[u8], fingerprint: &[u8; 32], expires_at: u64, now: u64) -> Vec<u8> {
    let tag = ReplaySlotKey::from_fingerprint(fingerprint).tag;
    let mut entries = decode(bucket);
    entries.retain(|entry| entry.expires_at > now);
    if expires_at > now {
        if let Some(existing) = entries.iter_mut().find(|entry| entry.tag == tag) {
            existing.expires_at = existing.expires_at.max(expires_at);
        } else {
            while entries.len() >= BUCKET_CAPACITY {
                let soonest = entries
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, entry)| entry.expires_at)
                    .map(|(index, _)| index);
                match soonest {
                    Some(index) => {
                        entries.remove(index);
                    }
                    None => break,
                }
            }
            entries.push(Entry { tag, expires_at });
        }
    }
    encode(&entries)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    tag: u64,
    expires_at: u64,
}

fn decode(bucket: &[u8]) -> Vec<Entry> {
    let Some((&version, body)) = bucket.split_first() else {
        return Vec::new();
    };
    if version != FORMAT_VERSION
        || body.len() % ENTRY_LEN != 0
        || body.len() / ENTRY_LEN > BUCKET_CAPACITY
    {
        return Vec::new();
    }
    body.chunks_exact(ENTRY_LEN)
        .map(|chunk| {
            let mut tag = [0u8; 8];
            let mut expires_at = [0u8; 8];
            tag.copy_from_slice(&chunk[..8]);
            expires_at.copy_from_slice(&chunk[8..]);
            Entry {
                tag: u64::from_be_bytes(tag),
                expires_at: u64::from_be_bytes(expires_at),
            }
        })
        .collect()
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + entries.len() * ENTRY_LEN);
    bytes.push(FORMAT_VERSION);
    for entry in entries {
        bytes.extend_from_slice(&entry.tag.to_be_bytes());
        bytes.extend_from_slice(&entry.expires_at.to_be_bytes());
    }
    bytes
}
