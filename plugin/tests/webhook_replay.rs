//! The shared-data replay memory: bucket naming, insert, expiry, eviction,
//! and tolerance of malformed bytes.

use avb_edge::webhook::replay::{
    bucket_contains, bucket_insert, bucket_name, ReplaySlotKey, BUCKET_CAPACITY, BUCKET_COUNT,
    BUCKET_NAME_PREFIX, FORMAT_VERSION,
};

/// A fingerprint in bucket `bucket` with tag `tag` (bytes 0..8 and 8..16).
fn fingerprint(bucket: u64, tag: u64) -> [u8; 32] {
    let mut fingerprint = [0x5a; 32];
    fingerprint[..8].copy_from_slice(&bucket.to_be_bytes());
    fingerprint[8..16].copy_from_slice(&tag.to_be_bytes());
    fingerprint
}

const NOW: u64 = 1_800_000_000;
const WINDOW: u64 = 86_400;

#[test]
fn slot_key_uses_first_eight_bytes_for_bucket_and_next_eight_for_tag() {
    let slot = ReplaySlotKey::from_fingerprint(&fingerprint(BUCKET_COUNT + 7, 42));
    assert_eq!(slot, ReplaySlotKey { bucket: 7, tag: 42 });
}

#[test]
fn bucket_name_is_stable_prefixed_and_bounded() {
    assert_eq!(
        bucket_name(&fingerprint(7, 1)),
        format!("{BUCKET_NAME_PREFIX}0007")
    );
    assert_eq!(
        bucket_name(&fingerprint(7, 1)),
        bucket_name(&fingerprint(7, 2))
    );
    assert_ne!(
        bucket_name(&fingerprint(7, 1)),
        bucket_name(&fingerprint(8, 1))
    );
    assert_eq!(
        bucket_name(&[0xff; 32]),
        format!("{BUCKET_NAME_PREFIX}{:04}", BUCKET_COUNT - 1)
    );
}

#[test]
fn empty_bucket_contains_nothing() {
    assert!(!bucket_contains(&[], &fingerprint(1, 1), NOW));
}

#[test]
fn inserted_fingerprint_is_contained_until_it_expires() {
    let fp = fingerprint(3, 99);
    let bucket = bucket_insert(&[], &fp, NOW + WINDOW, NOW);
    assert!(bucket_contains(&bucket, &fp, NOW));
    assert!(bucket_contains(&bucket, &fp, NOW + WINDOW - 1));
    assert!(!bucket_contains(&bucket, &fp, NOW + WINDOW));
    assert!(!bucket_contains(&bucket, &fp, u64::MAX));
}

#[test]
fn other_fingerprint_in_the_same_bucket_is_not_contained() {
    let bucket = bucket_insert(&[], &fingerprint(3, 99), NOW + WINDOW, NOW);
    assert!(!bucket_contains(&bucket, &fingerprint(3, 100), NOW));
}

#[test]
fn encoding_is_version_byte_then_big_endian_entries() {
    let bucket = bucket_insert(&[], &fingerprint(3, 0x0102), 0x0a0b, 1);
    let mut expected = vec![FORMAT_VERSION];
    expected.extend_from_slice(&0x0102u64.to_be_bytes());
    expected.extend_from_slice(&0x0a0bu64.to_be_bytes());
    assert_eq!(bucket, expected);
}

#[test]
fn reinserting_keeps_one_entry_with_the_later_expiry() {
    let fp = fingerprint(3, 99);
    let first = bucket_insert(&[], &fp, NOW + WINDOW, NOW);
    let extended = bucket_insert(&first, &fp, NOW + 2 * WINDOW, NOW + 10);
    assert_eq!(extended.len(), first.len());
    assert!(bucket_contains(&extended, &fp, NOW + WINDOW + 1));
    let shortened = bucket_insert(&extended, &fp, NOW + 20, NOW + 10);
    assert!(bucket_contains(&shortened, &fp, NOW + WINDOW + 1));
}

#[test]
fn insert_drops_expired_entries() {
    let mut bucket = Vec::new();
    for tag in 0..5 {
        bucket = bucket_insert(&bucket, &fingerprint(3, tag), NOW + 10, NOW);
    }
    assert_eq!(bucket.len(), 1 + 5 * 16);
    let after_expiry = bucket_insert(&bucket, &fingerprint(3, 100), NOW + 10 + WINDOW, NOW + 10);
    assert_eq!(after_expiry.len(), 1 + 16);
    assert!(bucket_contains(
        &after_expiry,
        &fingerprint(3, 100),
        NOW + 10
    ));
    assert!((0..5).all(|tag| !bucket_contains(&after_expiry, &fingerprint(3, tag), NOW + 5)));
}

#[test]
fn full_bucket_evicts_the_entry_that_expires_soonest() {
    let mut bucket = Vec::new();
    // Expiries deliberately out of order: tag 7 expires soonest.
    for tag in 0..BUCKET_CAPACITY as u64 {
        let expires_at = if tag == 7 { NOW + 50 } else { NOW + 100 + tag };
        bucket = bucket_insert(&bucket, &fingerprint(3, tag), expires_at, NOW);
    }
    assert_eq!(bucket.len(), 1 + BUCKET_CAPACITY * 16);
    let newcomer = fingerprint(3, 1_000);
    let full = bucket_insert(&bucket, &newcomer, NOW + WINDOW, NOW + 1);
    assert_eq!(full.len(), 1 + BUCKET_CAPACITY * 16);
    assert!(bucket_contains(&full, &newcomer, NOW + 1));
    assert!(!bucket_contains(&full, &fingerprint(3, 7), NOW + 1));
    for tag in (0..BUCKET_CAPACITY as u64).filter(|&tag| tag != 7) {
        assert!(
            bucket_contains(&full, &fingerprint(3, tag), NOW + 1),
            "tag {tag}"
        );
    }
}

#[test]
fn bucket_never_grows_beyond_capacity() {
    let mut bucket = Vec::new();
    for tag in 0..200u64 {
        bucket = bucket_insert(&bucket, &fingerprint(9, tag), NOW + WINDOW + tag, NOW);
        assert!(bucket.len() <= 1 + BUCKET_CAPACITY * 16);
    }
    assert!(bucket_contains(&bucket, &fingerprint(9, 199), NOW));
    assert!(!bucket_contains(&bucket, &fingerprint(9, 0), NOW));
}

#[test]
fn expiry_not_after_now_records_nothing() {
    let fp = fingerprint(3, 99);
    for expires_at in [NOW, NOW - 1, 0] {
        let bucket = bucket_insert(&[], &fp, expires_at, NOW);
        assert!(!bucket_contains(&bucket, &fp, NOW));
        assert_eq!(bucket, vec![FORMAT_VERSION]);
    }
}

#[test]
fn malformed_buckets_are_treated_as_empty() {
    let fp = fingerprint(3, 99);
    let good = bucket_insert(&[], &fp, NOW + WINDOW, NOW);
    let mut wrong_version = good.clone();
    wrong_version[0] = FORMAT_VERSION + 1;
    let truncated = good[..good.len() - 1].to_vec();
    let mut too_many = vec![FORMAT_VERSION];
    for _ in 0..=BUCKET_CAPACITY {
        too_many.extend_from_slice(&good[1..]);
    }
    let malformed: [&[u8]; 5] = [
        &wrong_version,
        &truncated,
        &too_many,
        b"\xff",
        b"garbage bytes",
    ];
    for bytes in malformed {
        assert!(!bucket_contains(bytes, &fp, NOW), "{bytes:?}");
        let repaired = bucket_insert(bytes, &fingerprint(3, 5), NOW + WINDOW, NOW);
        assert_eq!(repaired.len(), 1 + 16);
        assert!(bucket_contains(&repaired, &fingerprint(3, 5), NOW));
    }
}

#[test]
fn version_byte_alone_is_an_empty_bucket() {
    assert!(!bucket_contains(&[FORMAT_VERSION], &fingerprint(0, 0), 0));
}
