//! Every way `compile_webhook` refuses a `webhooks.<name>` entry, and what it
//! accepts at the edges of each limit.

// clippy.toml allows these inside #[test] functions only; this crate is all
// test code, and its fixture helpers fail the test by panicking on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use avb_edge::webhook::{
    compile_webhook, LagoVerifier, PublicKeyError, RawHmacKey, RawLagoJwt, RawWebhook,
    SignatureAlgorithm, WebhookConfigError, MAX_BODY_BYTES_LIMIT, MAX_REPLAY_WINDOW_SECONDS,
};

const SECRET: &str = "6a1e7c1e-4b7a-4f0e-9a53-2f6d8c4b1e77";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/lago/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn key(id: &str, secret: Option<&str>, secret_env: Option<&str>) -> RawHmacKey {
    RawHmacKey {
        id: id.to_owned(),
        secret: secret.map(str::to_owned),
        secret_env: secret_env.map(str::to_owned),
    }
}

fn jwt_section(public_key: Option<String>, public_key_env: Option<&str>) -> RawLagoJwt {
    RawLagoJwt {
        issuer: "https://api.getlago.com".to_owned(),
        public_key,
        public_key_env: public_key_env.map(str::to_owned),
    }
}

/// A configuration that compiles; each test breaks one thing.
fn valid() -> RawWebhook {
    RawWebhook {
        provider: "lago".to_owned(),
        algorithms: vec!["hmac".to_owned(), "jwt".to_owned()],
        hmac_keys: vec![
            key("current", Some(SECRET), None),
            key("previous", None, Some("LAGO_HMAC_KEY_PREVIOUS")),
        ],
        jwt: Some(jwt_section(Some(fixture("lago_public.pem")), None)),
        max_body_bytes: 1_048_576,
        replay_window_seconds: 86_400,
    }
}

fn env(name: &str) -> Option<String> {
    match name {
        "LAGO_HMAC_KEY_PREVIOUS" => Some("0f3b2c1d-9e8f-4a7b-8c6d-5e4f3a2b1c0d".to_owned()),
        "EMPTY" => Some(String::new()),
        "PADDED" => Some(format!("{SECRET}\n")),
        _ => None,
    }
}

fn compile(raw: &RawWebhook) -> Result<LagoVerifier, WebhookConfigError> {
    compile_webhook("lago", raw, &env)
}

fn error_of(raw: &RawWebhook) -> WebhookConfigError {
    match compile(raw) {
        Ok(verifier) => panic!("configuration was accepted: {verifier:?}"),
        Err(error) => error,
    }
}

fn with(change: impl FnOnce(&mut RawWebhook)) -> RawWebhook {
    let mut raw = valid();
    change(&mut raw);
    raw
}

#[test]
fn valid_configuration_compiles_with_its_settings() {
    let verifier = compile(&valid()).unwrap();
    assert_eq!(verifier.name(), "lago");
    assert_eq!(verifier.max_body_bytes(), 1_048_576);
    assert_eq!(verifier.replay_window_seconds(), 86_400);
    assert_eq!(
        verifier.algorithms(),
        &[SignatureAlgorithm::Hmac, SignatureAlgorithm::Jwt]
    );
    assert_eq!(
        verifier.hmac_key_ids().collect::<Vec<_>>(),
        ["current", "previous"]
    );
}

#[test]
fn issue_example_parses_from_json_with_defaults() {
    let raw: RawWebhook = serde_json::from_str(
        r#"{"provider":"lago","algorithms":["hmac"],"hmac_keys":[{"id":"current","secret":"6a1e7c1e-4b7a-4f0e-9a53-2f6d8c4b1e77"}]}"#,
    )
    .unwrap();
    let verifier = compile(&raw).unwrap();
    assert_eq!(verifier.max_body_bytes(), 1_048_576);
    assert_eq!(verifier.replay_window_seconds(), 0);
}

#[test]
fn unknown_configuration_field_is_refused_by_serde() {
    let misspelt = serde_json::from_str::<RawWebhook>(
        r#"{"provider":"lago","algorithms":["hmac"],"hmac_key":[{"id":"a","secret":"b"}]}"#,
    );
    assert!(misspelt.is_err());
    let misspelt_key = serde_json::from_str::<RawWebhook>(
        r#"{"provider":"lago","algorithms":["hmac"],"hmac_keys":[{"id":"a","secrets":"b"}]}"#,
    );
    assert!(misspelt_key.is_err());
}

#[test]
fn invalid_webhook_names_are_refused() {
    for name in ["", "la go", "lago\n", "lago/hooks", &"x".repeat(65)] {
        assert!(
            matches!(
                compile_webhook(name, &valid(), &env),
                Err(WebhookConfigError::InvalidName { .. })
            ),
            "{name:?}"
        );
    }
    assert!(compile_webhook(&"x".repeat(64), &valid(), &env).is_ok());
    assert!(compile_webhook("lago.eu-1_b", &valid(), &env).is_ok());
}

#[test]
fn provider_other_than_lago_is_refused() {
    let error = error_of(&with(|raw| raw.provider = "stripe".to_owned()));
    assert_eq!(
        error,
        WebhookConfigError::UnsupportedProvider {
            webhook: "lago".to_owned(),
            provider: "stripe".to_owned()
        }
    );
    assert_eq!(
        error.to_string(),
        "webhook `lago`: provider `stripe` is not supported (only \"lago\")"
    );
}

#[test]
fn empty_algorithm_list_is_refused() {
    assert!(matches!(
        error_of(&with(|raw| raw.algorithms.clear())),
        WebhookConfigError::NoAlgorithms { .. }
    ));
}

#[test]
fn unknown_algorithm_is_refused() {
    for algorithm in ["HMAC", "rs256", "", "none"] {
        assert_eq!(
            error_of(&with(|raw| raw.algorithms.push(algorithm.to_owned()))),
            WebhookConfigError::UnknownAlgorithm {
                webhook: "lago".to_owned(),
                algorithm: algorithm.to_owned()
            }
        );
    }
}

#[test]
fn duplicate_algorithm_is_refused() {
    assert_eq!(
        error_of(&with(|raw| raw.algorithms.push("hmac".to_owned()))),
        WebhookConfigError::DuplicateAlgorithm {
            webhook: "lago".to_owned(),
            algorithm: "hmac".to_owned()
        }
    );
}

#[test]
fn hmac_without_keys_is_refused() {
    assert!(matches!(
        error_of(&with(|raw| raw.hmac_keys.clear())),
        WebhookConfigError::MissingHmacKeys { .. }
    ));
}

#[test]
fn hmac_keys_without_hmac_algorithm_are_refused() {
    assert!(matches!(
        error_of(&with(|raw| raw.algorithms = vec!["jwt".to_owned()])),
        WebhookConfigError::UnusedHmacKeys { .. }
    ));
}

#[test]
fn empty_key_id_is_refused() {
    assert!(matches!(
        error_of(&with(|raw| raw.hmac_keys[0].id.clear())),
        WebhookConfigError::EmptyKeyId { .. }
    ));
}

#[test]
fn key_id_outside_the_header_safe_charset_is_refused() {
    for id in ["new key", "k\r\nx-avb-role: admin", "clé", &"k".repeat(65)] {
        assert_eq!(
            error_of(&with(|raw| raw.hmac_keys[0].id = id.to_owned())),
            WebhookConfigError::InvalidKeyId {
                webhook: "lago".to_owned(),
                key_id: id.to_owned()
            }
        );
    }
}

#[test]
fn key_id_jwt_is_reserved() {
    assert!(matches!(
        error_of(&with(|raw| raw.hmac_keys[0].id = "jwt".to_owned())),
        WebhookConfigError::ReservedKeyId { .. }
    ));
}

#[test]
fn duplicate_key_id_is_refused() {
    assert_eq!(
        error_of(&with(|raw| raw.hmac_keys[1].id = "current".to_owned())),
        WebhookConfigError::DuplicateKeyId {
            webhook: "lago".to_owned(),
            key_id: "current".to_owned()
        }
    );
}

#[test]
fn key_with_both_or_neither_secret_source_is_refused() {
    let both = with(|raw| raw.hmac_keys[0].secret_env = Some("LAGO_HMAC_KEY_PREVIOUS".to_owned()));
    let neither = with(|raw| raw.hmac_keys[0].secret = None);
    for raw in [both, neither] {
        assert_eq!(
            error_of(&raw),
            WebhookConfigError::SecretSource {
                webhook: "lago".to_owned(),
                key_id: "current".to_owned()
            }
        );
    }
}

#[test]
fn secret_env_unset_or_empty_is_refused_naming_the_variable() {
    for variable in ["NOT_SET", "EMPTY"] {
        let error = error_of(&with(|raw| {
            raw.hmac_keys[1].secret_env = Some(variable.to_owned())
        }));
        assert_eq!(
            error,
            WebhookConfigError::SecretEnvUnset {
                webhook: "lago".to_owned(),
                key_id: "previous".to_owned(),
                variable: variable.to_owned()
            }
        );
        assert!(error.to_string().contains(variable));
    }
}

#[test]
fn empty_inline_secret_is_refused() {
    assert!(matches!(
        error_of(&with(|raw| raw.hmac_keys[0].secret = Some(String::new()))),
        WebhookConfigError::EmptySecret { .. }
    ));
}

#[test]
fn secret_with_surrounding_whitespace_is_refused_without_printing_it() {
    let inline = error_of(&with(|raw| {
        raw.hmac_keys[0].secret = Some(format!(" {SECRET}"))
    }));
    let from_env = error_of(&with(|raw| {
        raw.hmac_keys[1].secret_env = Some("PADDED".to_owned())
    }));
    for error in [inline, from_env] {
        assert!(matches!(error, WebhookConfigError::SecretWhitespace { .. }));
        assert!(!error.to_string().contains(SECRET));
        assert!(!format!("{error:?}").contains(SECRET));
    }
}

#[test]
fn jwt_without_jwt_section_is_refused() {
    assert!(matches!(
        error_of(&with(|raw| raw.jwt = None)),
        WebhookConfigError::MissingJwtSection { .. }
    ));
}

#[test]
fn jwt_section_without_jwt_algorithm_is_refused() {
    assert!(matches!(
        error_of(&with(|raw| raw.algorithms = vec!["hmac".to_owned()])),
        WebhookConfigError::UnusedJwtSection { .. }
    ));
}

#[test]
fn empty_or_padded_issuer_is_refused() {
    for issuer in ["", " https://api.getlago.com", "https://api.getlago.com/\n"] {
        assert!(matches!(
            error_of(&with(|raw| {
                if let Some(jwt) = raw.jwt.as_mut() {
                    jwt.issuer = issuer.to_owned();
                }
            })),
            WebhookConfigError::InvalidIssuer { .. }
        ));
    }
}

#[test]
fn public_key_with_both_or_neither_source_is_refused() {
    let both = with(|raw| raw.jwt = Some(jwt_section(Some(fixture("lago_public.pem")), Some("K"))));
    let neither = with(|raw| raw.jwt = Some(jwt_section(None, None)));
    for raw in [both, neither] {
        assert!(matches!(
            error_of(&raw),
            WebhookConfigError::PublicKeySource { .. }
        ));
    }
}

#[test]
fn public_key_env_unset_or_empty_is_refused() {
    for variable in ["NOT_SET", "EMPTY"] {
        assert_eq!(
            error_of(&with(
                |raw| raw.jwt = Some(jwt_section(None, Some(variable)))
            )),
            WebhookConfigError::PublicKeyEnvUnset {
                webhook: "lago".to_owned(),
                variable: variable.to_owned()
            }
        );
    }
}

fn public_key_error(public_key: &str) -> PublicKeyError {
    match error_of(&with(|raw| {
        raw.jwt = Some(jwt_section(Some(public_key.to_owned()), None))
    })) {
        WebhookConfigError::InvalidPublicKey { field, reason, .. } => {
            assert_eq!(field, "jwt.public_key");
            reason
        }
        other => panic!("unexpected error: {other}"),
    }
}

#[test]
fn public_key_that_is_neither_pem_nor_base64_of_pem_is_refused() {
    assert_eq!(
        public_key_error("not a key"),
        PublicKeyError::NotPemOrBase64
    );
    assert_eq!(public_key_error("aGVsbG8="), PublicKeyError::NotPemOrBase64);
}

#[test]
fn pkcs1_rsa_public_key_label_is_refused() {
    assert_eq!(
        public_key_error(&fixture("lago_public_pkcs1.pem")),
        PublicKeyError::WrongPemLabel {
            label: "RSA PUBLIC KEY".to_owned()
        }
    );
}

#[test]
fn private_key_in_place_of_public_key_is_refused() {
    assert_eq!(
        public_key_error(&fixture("lago_private.pem")),
        PublicKeyError::WrongPemLabel {
            label: "PRIVATE KEY".to_owned()
        }
    );
}

#[test]
fn truncated_or_trailing_garbage_pem_is_refused() {
    let pem = fixture("lago_public.pem");
    let truncated = pem.replace("-----END PUBLIC KEY-----", "");
    let trailing = format!("{pem}junk");
    let bad_base64 = pem.replacen("MII", "M!I", 1);
    let empty = "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n";
    for text in [
        truncated.as_str(),
        trailing.as_str(),
        bad_base64.as_str(),
        empty,
    ] {
        assert_eq!(
            public_key_error(text),
            PublicKeyError::MalformedPem,
            "{text}"
        );
    }
}

#[test]
fn non_rsa_public_key_is_refused() {
    assert_eq!(
        public_key_error(&fixture("ec_p256_public.pem")),
        PublicKeyError::NotRsaSpki
    );
}

#[test]
fn rsa_key_below_2048_bits_is_refused() {
    let error = public_key_error(&fixture("weak_1024_public.pem"));
    assert_eq!(error, PublicKeyError::TooSmall { bits: 1024 });
    assert!(error.to_string().contains("1024"));
}

#[test]
fn public_key_error_from_environment_names_the_env_field() {
    let env_with_bad_key = |name: &str| match name {
        "LAGO_PUBLIC_KEY" => Some("garbage".to_owned()),
        other => env(other),
    };
    let raw = with(|raw| raw.jwt = Some(jwt_section(None, Some("LAGO_PUBLIC_KEY"))));
    let error = compile_webhook("lago", &raw, &env_with_bad_key).map(|_| ());
    assert_eq!(
        error,
        Err(WebhookConfigError::InvalidPublicKey {
            webhook: "lago".to_owned(),
            field: "jwt.public_key_env",
            reason: PublicKeyError::NotPemOrBase64
        })
    );
}

#[test]
fn pem_with_crlf_and_rewrapped_lines_is_accepted() {
    let pem = fixture("lago_public.pem");
    let crlf = pem.replace('\n', "\r\n");
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let one_line = format!("-----BEGIN PUBLIC KEY-----{body}-----END PUBLIC KEY-----");
    for text in [crlf, one_line, format!("\n  {pem}  \n")] {
        assert!(
            compile(&with(
                |raw| raw.jwt = Some(jwt_section(Some(text.clone()), None))
            ))
            .is_ok(),
            "{text}"
        );
    }
}

#[test]
fn max_body_bytes_outside_one_to_sixteen_mebibytes_is_refused() {
    for value in [0, MAX_BODY_BYTES_LIMIT + 1, u64::MAX] {
        assert_eq!(
            error_of(&with(|raw| raw.max_body_bytes = value)),
            WebhookConfigError::MaxBodyBytesOutOfRange {
                webhook: "lago".to_owned(),
                value
            }
        );
    }
    assert!(compile(&with(|raw| raw.max_body_bytes = 1)).is_ok());
    assert!(compile(&with(|raw| raw.max_body_bytes = 16 * 1024 * 1024)).is_ok());
}

#[test]
fn replay_window_over_thirty_days_is_refused() {
    assert_eq!(
        error_of(&with(
            |raw| raw.replay_window_seconds = MAX_REPLAY_WINDOW_SECONDS + 1
        )),
        WebhookConfigError::ReplayWindowTooLong {
            webhook: "lago".to_owned(),
            value: MAX_REPLAY_WINDOW_SECONDS + 1
        }
    );
    assert!(compile(&with(|raw| raw.replay_window_seconds = 30 * 24 * 3600)).is_ok());
    assert!(compile(&with(|raw| raw.replay_window_seconds = 0)).is_ok());
}

#[test]
fn every_error_message_is_lowercase_at_the_start_and_names_the_webhook() {
    let errors = [
        error_of(&with(|raw| raw.algorithms.clear())),
        error_of(&with(|raw| raw.hmac_keys[0].secret = None)),
        error_of(&with(|raw| raw.max_body_bytes = 0)),
        error_of(&with(|raw| {
            raw.jwt = Some(jwt_section(Some("x".to_owned()), None))
        })),
    ];
    for error in errors {
        let message = error.to_string();
        assert!(message.starts_with("webhook `lago`"), "{message}");
    }
}
