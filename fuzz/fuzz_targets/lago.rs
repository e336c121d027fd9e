//! Lago webhook verification and the replay buckets.
//!
//! Input: `signature\nalgorithm\ncontent-length\nunique-key\nbody` (an empty
//! line means the header is absent). Properties: never panics; a delivery
//! verifies only when an independent oracle finds the configured HMAC key
//! (the first matching id is reported) or the Lago RS256 key signed a token
//! whose `data` is the body; a bucket built from arbitrary bytes stays
//! bounded and remembers what was just inserted.
#![no_main]

use avb_edge::webhook::replay::{bucket_contains, bucket_insert, BUCKET_CAPACITY};
use avb_edge::webhook::{compile_webhook, RawWebhook, SignatureAlgorithm, WebhookHeaders};
use avb_edge_fuzz::{lago_hmac_key_for, lago_jwt_signed_for, lago_webhook_json, split_fields};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn verifier() -> &'static avb_edge::webhook::LagoVerifier {
    static VERIFIER: OnceLock<avb_edge::webhook::LagoVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let raw: RawWebhook = match serde_json::from_value(lago_webhook_json()) {
            Ok(raw) => raw,
            Err(err) => panic!("lago webhook json: {err}"),
        };
        match compile_webhook("lago", &raw, &|_| None) {
            Ok(verifier) => verifier,
            Err(err) => panic!("lago webhook must compile: {err}"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let (fields, body) = split_fields(data, 4);
    let text =
        |bytes: &[u8]| (!bytes.is_empty()).then(|| String::from_utf8_lossy(bytes).into_owned());
    let signature = text(fields[0]);
    let algorithm = text(fields[1]);
    let content_length = std::str::from_utf8(fields[2])
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    let unique_key = text(fields[3]);
    let headers = WebhookHeaders {
        signature: signature.as_deref(),
        algorithm: algorithm.as_deref(),
        unique_key: unique_key.as_deref(),
        content_length,
    };
    let verifier = verifier();
    if let Ok(pending) = verifier.check_headers(&headers) {
        if let Ok(verified) = verifier.verify(&pending, body) {
            let signature = signature.as_deref().unwrap_or_default();
            match pending.algorithm() {
                SignatureAlgorithm::Hmac => assert_eq!(
                    lago_hmac_key_for(signature, body),
                    Some(verified.key_id.as_str()),
                    "hmac delivery verified without the key"
                ),
                SignatureAlgorithm::Jwt => assert!(
                    lago_jwt_signed_for(signature, body),
                    "jwt delivery verified without the lago key"
                ),
            }
            let again = verifier.verify(&pending, body);
            assert_eq!(
                again.map(|v| v.fingerprint).ok(),
                Some(verified.fingerprint)
            );
        }
    }

    // Replay memory: the body doubles as an arbitrary stored bucket.
    let fingerprint = {
        let mut fingerprint = [0u8; 32];
        for (slot, byte) in fingerprint.iter_mut().zip(data.iter().rev()) {
            *slot = *byte;
        }
        fingerprint
    };
    let now = 1_000;
    let _ = bucket_contains(body, &fingerprint, now);
    let updated = bucket_insert(body, &fingerprint, now + 60, now);
    assert!(updated.len() <= 1 + 16 * BUCKET_CAPACITY && updated.len() % 16 == 1);
    assert!(bucket_contains(&updated, &fingerprint, now));
    // Past the new expiry, only an entry that was already there (with a later
    // expiry, which insertion keeps) can remain.
    assert_eq!(
        bucket_contains(&updated, &fingerprint, now + 60),
        bucket_contains(body, &fingerprint, now + 60)
    );
    // An expiry not after `now` records nothing: the bucket then remembers
    // the fingerprint exactly when it already did.
    let unchanged = bucket_insert(body, &fingerprint, now, now);
    assert_eq!(
        bucket_contains(&unchanged, &fingerprint, now),
        bucket_contains(body, &fingerprint, now)
    );
});
