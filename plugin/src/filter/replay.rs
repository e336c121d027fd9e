//! The webhook replay memory in Envoy shared data (shared by all workers of
//! one Envoy). The bucket layout and its rules are pure code in
//! `crate::webhook::replay`; this file only does the compare-and-swap.

use crate::webhook::replay;
use proxy_wasm::hostcalls;

/// Whether a delivery with this fingerprint was answered 2xx within its window.
pub fn seen(fingerprint: &[u8; 32], now_secs: u64) -> bool {
    let key = replay::bucket_name(fingerprint);
    match hostcalls::get_shared_data(&key) {
        Ok((Some(bytes), _)) => replay::bucket_contains(&bytes, fingerprint, now_secs),
        _ => false,
    }
}

/// Remembers a delivery that the upstream answered 2xx, until `expires_at`.
pub fn remember(fingerprint: &[u8; 32], expires_at: u64, now_secs: u64) {
    let key = replay::bucket_name(fingerprint);
    for _ in 0..16 {
        let (bytes, cas) = hostcalls::get_shared_data(&key).unwrap_or((None, None));
        let next = replay::bucket_insert(
            bytes.as_deref().unwrap_or(&[]),
            fingerprint,
            expires_at,
            now_secs,
        );
        if hostcalls::set_shared_data(&key, Some(&next), cas.or(Some(0))).is_ok() {
            return;
        }
    }
}
