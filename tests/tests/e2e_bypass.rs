//! Authorization-bypass corpus (issue 8): every known class of Envoy, Istio
//! and OPA-Envoy path and header bypass, and the classic JWT attacks, sent
//! through the real Envoy 1.40 with the built `dist/avb_edge.wasm` and the
//! shipped policy (`envoy/policies/agentvoicebox.yaml`), once with the
//! shipped path normalisation options and once with them off.
//!
//! Each attack aims at a route its credentials do not open (mostly
//! `GET /api/v1/audit/logs/export`, ADMIN only, with an OPERATOR token, who
//! may read the neighbouring `/api/v1/audit/logs/{id}`), and must get a
//! 400/401/403/404, from Envoy or from the filter, while the echo upstream
//! records nothing for it. Every stack first proves it is live: the same
//! tokens reach the upstream where they are entitled to, so a dead filter or
//! a broken route cannot make the corpus pass.
//!
//! Requires `make plugin` (or `AVB_WASM`) and an Envoy (`AVB_ENVOY` or
//! `scripts/envoy.sh`).

// Test-only file: its helpers fail the test by panicking on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{SystemTime, UNIX_EPOCH};

use avb_edge::policy::identity::{sign_hs, HmacAlgorithm};
use avb_tests::echo::EchoServer;
use avb_tests::http::{H2Request, RawRequest, Response};
use avb_tests::procs::envoy::{dev_env, Envoy, EnvoyConfig};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const ISSUER: &str = "https://id.agentvoicebox.example";
const AUDIENCE: &str = "avb-api";
const DEV_KID: &str = "dev-hs-1";
const EXPORT: &str = "/api/v1/audit/logs/export";
/// Tags each request so its upstream record (if any) can be found.
const TRACE_HEADER: &str = "x-bypass-trace";
/// What a denial may look like: the filter's 400/401/403, or Envoy's own
/// 400 (escaped slashes, malformed requests) or 404 (no route).
const DENIED: [u16; 4] = [400, 401, 403, 404];

/// A private key that is not the policy's: used to sign RS256 and `jwk`
/// header attacks (the Lago fixture key; the edge policy trusts no RSA key).
const FOREIGN_RSA_PRIVATE_PEM: &str =
    include_str!("../../plugin/tests/fixtures/lago/lago_private.pem");
const FOREIGN_RSA_PUBLIC_PEM: &str =
    include_str!("../../plugin/tests/fixtures/lago/lago_public.pem");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn dev_key() -> Vec<u8> {
    let env = dev_env().expect("envoy/dev.env is readable");
    URL_SAFE_NO_PAD
        .decode(
            env.get("AVB_JWT_HS_KEY")
                .expect("AVB_JWT_HS_KEY in envoy/dev.env"),
        )
        .expect("AVB_JWT_HS_KEY is base64url")
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn claims(roles: &[&str], tenant: &str) -> Value {
    let issued = now();
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "attacker", "tenant_id": tenant,
        "iat": issued, "exp": issued + 600, "realm_access": {"roles": roles},
    })
}

/// A valid dev token, minted by the engine's own helper.
fn token(roles: &[&str], tenant: &str) -> String {
    sign_hs(
        HmacAlgorithm::Hs256,
        &dev_key(),
        Some(DEV_KID),
        &claims(roles, tenant).to_string(),
    )
}

/// HS256 over arbitrary header and claims text (headers and payloads that
/// `sign_hs` would never produce).
fn hs256_raw(key: &[u8], header: &str, claims: &str) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(mac.finalize().into_bytes()))
}

fn foreign_rsa_key() -> RsaPrivateKey {
    let body: String = FOREIGN_RSA_PRIVATE_PEM
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("pem body");
    RsaPrivateKey::from_pkcs8_der(&der).expect("pkcs#8 rsa key")
}

fn rs256_raw(header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature = foreign_rsa_key()
        .sign(
            Pkcs1v15Sign::new::<Sha256>(),
            &Sha256::digest(input.as_bytes()),
        )
        .expect("rsa signing");
    format!("{input}.{}", b64(signature))
}

/// One attack: what it is, and the request that carries it.
struct Attack {
    name: String,
    request: Request,
}

enum Request {
    Http1(RawRequest),
    Http2(H2Request),
}

fn attack(name: impl Into<String>, request: RawRequest) -> Attack {
    Attack {
        name: name.into(),
        request: Request::Http1(request),
    }
}

fn attack_h2(name: impl Into<String>, request: H2Request) -> Attack {
    Attack {
        name: name.into(),
        request: Request::Http2(request),
    }
}

/// Envoy with the shipped policy and filter in front of an echo upstream.
struct Stack {
    echo: EchoServer,
    // Kept alive for the test; stopped on drop.
    _envoy: Envoy,
    port: u16,
}

impl Stack {
    fn start(normalisation: bool) -> Stack {
        let echo = EchoServer::start().expect("echo upstream starts");
        let envoy = EnvoyConfig::shipped(echo.port())
            .expect("dist/avb_edge.wasm is built (make plugin)")
            .with_normalisation(normalisation)
            .start()
            .expect("envoy starts with the shipped policy");
        let port = envoy.listener_port().expect("listener port");
        Stack {
            echo,
            _envoy: envoy,
            port,
        }
    }

    /// Sends `request` tagged with a fresh trace id; returns the response (or
    /// why there was none) and how many requests with that id the upstream
    /// recorded.
    fn send(&self, request: Request) -> (anyhow::Result<Response>, usize) {
        let trace = trace_id();
        let response = match request {
            Request::Http1(request) => request.header(TRACE_HEADER, &trace).send(self.port),
            Request::Http2(request) => request
                .header(TRACE_HEADER, &trace)
                .send_blocking(self.port),
        };
        let seen = self
            .echo
            .requests()
            .iter()
            .filter(|received| received.header(TRACE_HEADER) == Some(trace.as_str()))
            .count();
        (response, seen)
    }

    /// The stack is live: entitled requests reach the upstream. Without this
    /// a dead filter or a broken route would make every attack "denied".
    fn assert_live(&self) {
        for (name, request) in [
            (
                "ADMIN reads export",
                RawRequest::get(EXPORT).bearer(&token(&["ADMIN"], "tenant-a")),
            ),
            (
                "OPERATOR reads a log entry",
                RawRequest::get("/api/v1/audit/logs/evt-42")
                    .bearer(&token(&["OPERATOR"], "tenant-a")),
            ),
            (
                "ADMIN clears its own tenant",
                RawRequest::post("/api/v1/tenants/tenant-a/cache/invalidate", "")
                    .bearer(&token(&["ADMIN"], "tenant-a")),
            ),
        ] {
            let (response, seen) = self.send(Request::Http1(request));
            let response = response.unwrap_or_else(|err| panic!("{name}: {err:#}"));
            assert_eq!(
                (response.status, seen),
                (200, 1),
                "control `{name}` must reach the upstream: {}",
                response.text()
            );
        }
    }

    /// Runs the corpus; returns one line per attack that was not denied or
    /// that reached the upstream.
    fn run(&self, attacks: Vec<Attack>) -> Vec<String> {
        let mut failures = Vec::new();
        for Attack { name, request } in attacks {
            let (response, seen) = self.send(request);
            match response {
                Ok(response) if DENIED.contains(&response.status) && seen == 0 => {}
                Ok(response) => failures.push(format!(
                    "{name}: status {}, upstream saw {seen}: {}",
                    response.status,
                    response.text().chars().take(200).collect::<String>()
                )),
                // No answer is not a denial we can vouch for.
                Err(err) => {
                    failures.push(format!("{name}: no response, upstream saw {seen}: {err:#}"))
                }
            }
        }
        failures
    }
}

fn trace_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "b{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Path and request-target bypass classes, each with the credentials that
/// make it an attack.
fn path_attacks() -> Vec<Attack> {
    let operator = token(&["OPERATOR"], "tenant-a");
    let developer = token(&["DEVELOPER"], "tenant-a");
    let admin_a = token(&["ADMIN"], "tenant-a");
    let mut attacks = Vec::new();

    // OPERATOR may read /api/v1/audit/logs/{id} but not the export.
    let as_operator = [
        // dot segments, raw and encoded
        "/api/v1/audit/logs/../logs/export",
        "/api/v1/audit/logs/x/../export",
        "/api/v1/audit/logs/./export",
        "/api/v1/audit/logs/%2e%2e/logs/export",
        "/api/v1/audit/logs/%2E%2E/logs/export",
        "/api/v1/audit/logs/.%2E/logs/export",
        "/api/v1/audit/logs/%2e./logs/export",
        "/api/v1/audit/logs/x/%2e%2e/export",
        // encoded and mixed-case slashes and backslashes
        "/api/v1/audit/logs%2Fexport",
        "/api/v1/audit/logs%2fexport",
        "/api/v1/audit%2Flogs%2Fexport",
        "/api/v1/audit/logs%5Cexport",
        "/api/v1/audit/logs%5cexport",
        "/api/v1/audit/logs/x%2F..%2Fexport",
        "/api/v1/audit/logs/x%5C..%5Cexport",
        // raw backslashes
        "/api/v1/audit/logs\\export",
        "/api/v1/audit/logs/x\\..\\export",
        // `;` path parameters and `..;`
        "/api/v1/audit/logs/export;jsessionid=1",
        "/api/v1/audit/logs;x=1/export",
        "/api/v1/audit/logs/x/..;/export",
        "/api/v1/audit/logs/..;/logs/export",
        // fragments
        "/api/v1/audit/logs/export#fragment",
        "/api/v1/audit/logs/x#/../export",
        // empty segments
        "//api/v1/audit/logs/export",
        "/api/v1/audit//logs/export",
        "/api/v1/audit/logs//export",
        "/api/v1/audit/logs/export/",
        // `*` in a template position
        "/api/v1/audit/*/export",
        "/api/v1/*/logs/export",
        // double encoding
        "/api/v1/audit/logs%252Fexport",
        "/api/v1/audit/logs/%252e%252e/logs/export",
        "/api/v1/audit/logs/%25%32%65%25%32%65/logs/export",
        // overlong UTF-8 for `.` and `/`
        "/api/v1/audit/logs/%C0%AE%C0%AE/logs/export",
        "/api/v1/audit/logs%C0%AFexport",
        "/api/v1/audit/logs/export%C0%AE",
        // lookalike segments: a trimming upstream would read `export`
        "/api/v1/audit/logs/export.",
        "/api/v1/audit/logs/export%20",
        "/api/v1/audit/logs/%20export",
        "/api/v1/audit/logs/export%C2%A0",
        "/api/v1/audit/logs/export%E2%80%8B",
        "/api/v1/audit/logs/export%2E",
        "/api/v1/audit/logs/export%09",
        "/api/v1/audit/logs/export%00",
        "/api/v1/audit/logs/%65xport",
        // case differences (matching is case-sensitive; no rule matches)
        "/API/v1/audit/logs/export",
        "/api/V1/audit/logs/export",
        "/api/v1/AUDIT/logs/export",
        // the query never takes part in matching
        "/api/v1/audit/logs/export?x=/api/v1/audit/logs",
        "/api/v1/audit/logs/export?/../logs/evt-1",
    ];
    for path in as_operator {
        attacks.push(attack(
            format!("GET {path} as OPERATOR"),
            RawRequest::get(path).bearer(&operator),
        ));
    }

    // DEVELOPER holds no audit role at all: wildcards in the request path
    // must not match the `{id}` rule's role requirement away.
    for path in [
        "/api/v1/audit/logs/*",
        "/api/v1/audit/logs/**",
        "/api/v1/audit/logs/%2A",
        "/api/v1/stt/test/../../audit/logs",
        "/api/v1/stt/test/%2e%2e/%2e%2e/audit/logs",
    ] {
        attacks.push(attack(
            format!("GET {path} as DEVELOPER"),
            RawRequest::get(path).bearer(&developer),
        ));
    }

    // Absolute-form and asterisk-form request targets.
    for (method, target) in [
        ("GET", "http://localhost/api/v1/audit/logs/export"),
        ("GET", "http://localhost/api/v1/audit/logs/../logs/export"),
        ("GET", "http://evil.example/api/v1/audit/logs/export"),
        ("OPTIONS", "*"),
        ("GET", "*"),
    ] {
        attacks.push(attack(
            format!("{method} {target} as OPERATOR"),
            RawRequest::new(method, target).bearer(&operator),
        ));
    }

    // Method tricks: HEAD is not implied by GET; overrides are ignored.
    attacks.push(attack(
        "HEAD export as OPERATOR",
        RawRequest::new("HEAD", EXPORT).bearer(&operator),
    ));
    attacks.push(attack(
        "lower-case get export as OPERATOR",
        RawRequest::new("get", EXPORT).bearer(&operator),
    ));
    attacks.push(attack(
        "POST export with x-http-method-override: GET as OPERATOR",
        RawRequest::post(EXPORT, "")
            .bearer(&operator)
            .header("x-http-method-override", "GET")
            .header("x-method-override", "GET"),
    ));

    // Tenant parameter: ADMIN of tenant-a must not clear tenant-b.
    for path in [
        "/api/v1/tenants/tenant-b/cache/invalidate",
        "/api/v1/tenants/tenant-a/../tenant-b/cache/invalidate",
        "/api/v1/tenants/tenant-a%2F..%2Ftenant-b/cache/invalidate",
        "/api/v1/tenants/tenant-a;/../tenant-b/cache/invalidate",
        "/api/v1/tenants/tenant-b/cache/invalidate?tenant_id=tenant-a",
    ] {
        attacks.push(attack(
            format!("POST {path} as ADMIN of tenant-a"),
            RawRequest::post(path, "").bearer(&admin_a),
        ));
    }

    // From the public route to a protected one, without a token.
    for path in [
        "/healthz/../api/v1/audit/logs",
        "/healthz/%2e%2e/api/v1/audit/logs",
        "/healthz;/../api/v1/audit/logs",
        "/healthz%2F..%2Fapi/v1/audit/logs",
        "/healthz/..%5Capi/v1/audit/logs",
    ] {
        attacks.push(attack(
            format!("GET {path} without a token"),
            RawRequest::get(path),
        ));
    }

    // The same classes over HTTP/2 (`:path` pseudo-header).
    for path in [
        "/api/v1/audit/logs/../logs/export",
        "/api/v1/audit/logs/%2e%2e/logs/export",
        "/api/v1/audit/logs%2Fexport",
        "/api/v1/audit/logs/export;x",
        "//api/v1/audit/logs/export",
        "/api/v1/audit/logs/export.",
    ] {
        attacks.push(attack_h2(
            format!("h2 GET {path} as OPERATOR"),
            H2Request::new("GET", path).header("authorization", &format!("Bearer {operator}")),
        ));
    }
    attacks
}

/// Spoofed internal and identity headers.
fn header_attacks() -> Vec<Attack> {
    let operator = token(&["OPERATOR"], "tenant-a");
    let admin_claims_b64 = b64(claims(&["ADMIN"], "tenant-a").to_string());
    let spoofs: Vec<(&str, String)> = vec![
        ("x-envoy-original-path", "/api/v1/audit/logs".to_owned()),
        ("x-envoy-original-path", "/healthz".to_owned()),
        ("x-original-url", "/healthz".to_owned()),
        ("x-rewrite-url", "/healthz".to_owned()),
        ("x-forwarded-uri", "/healthz".to_owned()),
        ("x-avb-roles", "ADMIN".to_owned()),
        ("x-avb-subject", "admin-1".to_owned()),
        ("x-avb-rule", "health".to_owned()),
        ("x-avb-decision-id", "allow".to_owned()),
        ("x-avb-tenant", "tenant-b".to_owned()),
        ("x-jwt-payload", admin_claims_b64.clone()),
        ("x-jwt-claim-roles", "ADMIN".to_owned()),
        ("x-forwarded-user", "admin-1".to_owned()),
        (
            "x-forwarded-authorization",
            format!("Bearer {}", token(&["ADMIN"], "tenant-a")),
        ),
        ("x_avb_roles", "ADMIN".to_owned()),
        ("X-AVB-ROLES", "ADMIN".to_owned()),
    ];
    let mut attacks = Vec::new();
    for (name, value) in &spoofs {
        attacks.push(attack(
            format!("export as OPERATOR with {name}"),
            RawRequest::get(EXPORT)
                .bearer(&operator)
                .header(name, value),
        ));
        attacks.push(attack(
            format!("export without a token with {name}"),
            RawRequest::get(EXPORT).header(name, value),
        ));
    }
    attacks.push(attack(
        "export as OPERATOR with every x-avb-* header at once",
        RawRequest::get(EXPORT)
            .bearer(&operator)
            .header("x-avb-roles", "ADMIN,OPERATOR,DEVELOPER")
            .header("x-avb-subject", "admin-1")
            .header("x-avb-rule", "audit.logs.export")
            .header("x-avb-tenant", "tenant-a")
            .header("x-avb-decision-id", "spoofed"),
    ));
    attacks.push(attack(
        "access token in the query string",
        RawRequest::get(&format!(
            "{EXPORT}?access_token={}",
            token(&["ADMIN"], "tenant-a")
        )),
    ));
    attacks.push(attack(
        "token in a cookie",
        RawRequest::get(EXPORT).header(
            "cookie",
            &format!("access_token={}", token(&["ADMIN"], "tenant-a")),
        ),
    ));
    attacks
}

/// Forged, malformed and abused tokens carrying ADMIN.
fn jwt_attacks() -> Vec<Attack> {
    let key = dev_key();
    let admin = claims(&["ADMIN"], "tenant-a");
    let admin_text = admin.to_string();
    let valid_admin = token(&["ADMIN"], "tenant-a");
    let (valid_input, _) = valid_admin.rsplit_once('.').expect("three parts");
    let attacker_key = b"attacker-chosen-hmac-key-0123456789abcdef";
    let with = |field: &str, value: Value| {
        let mut claims = admin.clone();
        if value.is_null() {
            claims.as_object_mut().expect("object").remove(field);
        } else {
            claims[field] = value;
        }
        hs256_raw(
            &key,
            &json!({"alg": "HS256", "kid": DEV_KID}).to_string(),
            &claims.to_string(),
        )
    };

    let mut tokens: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, token: String| tokens.push((name.to_owned(), token));

    // alg none, in every spelling, with and without a signature part
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(json!({"alg": alg, "typ": "JWT"}).to_string());
        add(
            &format!("alg {alg}, empty signature"),
            format!("{header}.{}.", b64(&admin_text)),
        );
        add(
            &format!("alg {alg}, no signature part"),
            format!("{header}.{}", b64(&admin_text)),
        );
    }
    add("alg none with the dev kid and a real HS256 signature", {
        let (_, signature) = valid_admin.rsplit_once('.').expect("signature");
        let header = b64(json!({"alg": "none", "kid": DEV_KID}).to_string());
        let (_, payload) = valid_input.split_once('.').expect("payload");
        format!("{header}.{payload}.{signature}")
    });
    // HS/RS confusion
    add(
        "RS256 signed by a foreign RSA key, dev kid",
        rs256_raw(&json!({"alg": "RS256", "kid": DEV_KID}), &admin),
    );
    add(
        "RS256 signed by a foreign RSA key, no kid",
        rs256_raw(&json!({"alg": "RS256"}), &admin),
    );
    add(
        "HS256 keyed with an RSA public key PEM, dev kid",
        hs256_raw(
            FOREIGN_RSA_PUBLIC_PEM.as_bytes(),
            &json!({"alg": "HS256", "kid": DEV_KID}).to_string(),
            &admin_text,
        ),
    );
    add(
        "HS256 keyed with an RSA public key PEM, no kid",
        hs256_raw(
            FOREIGN_RSA_PUBLIC_PEM.as_bytes(),
            &json!({"alg": "HS256"}).to_string(),
            &admin_text,
        ),
    );
    add(
        "ES256 header over an HS256 signature",
        hs256_raw(
            &key,
            &json!({"alg": "ES256", "kid": DEV_KID}).to_string(),
            &admin_text,
        ),
    );
    add(
        "HS384 header over an HS256 signature",
        hs256_raw(
            &key,
            &json!({"alg": "HS384", "kid": DEV_KID}).to_string(),
            &admin_text,
        ),
    );
    // stripped or mangled signatures
    add("stripped signature", format!("{valid_input}."));
    add("signature part missing", valid_input.to_owned());
    add("signature of another token", {
        let other = token(&["VIEWER"], "tenant-a");
        let (_, signature) = other.rsplit_once('.').expect("signature");
        format!("{valid_input}.{signature}")
    });
    add("four parts", format!("{valid_admin}.AAAA"));
    add("signature with padding", format!("{valid_admin}="));
    // kid tricks, signed with keys the attacker controls
    for (label, kid) in [
        ("unknown kid", json!("other-key")),
        (
            "kid path traversal to /dev/null",
            json!("../../../../../../dev/null"),
        ),
        ("kid traversal back to the dev kid", json!("x/../dev-hs-1")),
        ("kid with a NUL", json!("dev-hs-1\u{0}")),
        ("kid upper case", json!("DEV-HS-1")),
        ("kid with a trailing space", json!("dev-hs-1 ")),
        (
            "kid SQL injection",
            json!("' UNION SELECT 'attacker-key' --"),
        ),
        ("kid as a list", json!([DEV_KID])),
        ("kid as a number", json!(1)),
        ("empty kid", json!("")),
    ] {
        for (key_label, signing_key) in
            [("attacker key", &attacker_key[..]), ("empty key", &b""[..])]
        {
            add(
                &format!("{label}, signed with the {key_label}"),
                hs256_raw(
                    signing_key,
                    &json!({"alg": "HS256", "kid": kid}).to_string(),
                    &admin_text,
                ),
            );
        }
    }
    add(
        "kid traversal back to the dev kid, signed with the dev key",
        hs256_raw(
            &key,
            &json!({"alg": "HS256", "kid": "x/../dev-hs-1"}).to_string(),
            &admin_text,
        ),
    );
    // keys embedded in the header
    add(
        "embedded jwk with the attacker's key",
        hs256_raw(
            attacker_key,
            &json!({"alg": "HS256", "jwk": {"kty": "oct", "k": b64(attacker_key)}}).to_string(),
            &admin_text,
        ),
    );
    add(
        "jku pointing at the attacker",
        hs256_raw(
            attacker_key,
            &json!({"alg": "HS256", "kid": DEV_KID, "jku": "https://evil.example/jwks.json"})
                .to_string(),
            &admin_text,
        ),
    );
    add(
        "crit header",
        hs256_raw(
            &key,
            &json!({"alg": "HS256", "kid": DEV_KID, "crit": ["exp"], "exp": 1}).to_string(),
            &admin_text,
        ),
    );
    // claims the dev key really signed, but wrong
    add("expired", with("exp", json!(now() - 3600)));
    add("not yet valid", with("nbf", json!(now() + 3600)));
    add("issued in the future", with("iat", json!(now() + 3600)));
    add("no exp", with("exp", Value::Null));
    add(
        "exp as a string",
        with("exp", json!((now() + 600).to_string())),
    );
    add("wrong issuer", with("iss", json!("https://evil.example")));
    add(
        "issuer with a trailing slash",
        with("iss", json!(format!("{ISSUER}/"))),
    );
    add("wrong audience", with("aud", json!("other-api")));
    add(
        "audience list without ours",
        with("aud", json!(["other-api", "avb-api2"])),
    );
    add(
        "duplicate roles claim (VIEWER then ADMIN)",
        hs256_raw(
            &key,
            &json!({"alg": "HS256", "kid": DEV_KID}).to_string(),
            &format!(
                r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"a","exp":{},"realm_access":{{"roles":["VIEWER"]}},"realm_access":{{"roles":["ADMIN"]}}}}"#,
                now() + 600
            ),
        ),
    );
    add(
        "duplicate alg in the header",
        hs256_raw(
            &key,
            &format!(r#"{{"alg":"none","kid":"{DEV_KID}","alg":"HS256"}}"#),
            &admin_text,
        ),
    );
    add("roles in a dotted top-level key, not the claim path", {
        let mut claims = claims(&["VIEWER"], "tenant-a");
        claims["realm_access.roles"] = json!(["ADMIN"]);
        claims["roles"] = json!(["ADMIN"]);
        hs256_raw(
            &key,
            &json!({"alg": "HS256", "kid": DEV_KID}).to_string(),
            &claims.to_string(),
        )
    });
    add(
        "role with a comma to smuggle a second role",
        with("realm_access", json!({"roles": ["VIEWER,ADMIN"]})),
    );
    add("oversized token (20 KiB), validly signed", {
        let mut claims = admin.clone();
        claims["padding"] = json!("p".repeat(20 * 1024));
        hs256_raw(
            &key,
            &json!({"alg": "HS256", "kid": DEV_KID}).to_string(),
            &claims.to_string(),
        )
    });
    add("oversized token (200 KiB), validly signed", {
        let mut claims = admin.clone();
        claims["padding"] = json!("p".repeat(200 * 1024));
        hs256_raw(
            &key,
            &json!({"alg": "HS256", "kid": DEV_KID}).to_string(),
            &claims.to_string(),
        )
    });
    add(
        "token signed with a wrong key",
        hs256_raw(
            attacker_key,
            &json!({"alg": "HS256", "kid": DEV_KID}).to_string(),
            &admin_text,
        ),
    );

    let mut attacks: Vec<Attack> = tokens
        .into_iter()
        .map(|(name, token)| {
            attack(
                format!("JWT: {name}"),
                RawRequest::get(EXPORT).bearer(&token),
            )
        })
        .collect();

    // Authorization header shape
    for (name, value) in [
        ("two spaces after Bearer", format!("Bearer  {valid_admin}")),
        ("tab after Bearer", format!("Bearer\t{valid_admin}")),
        ("Basic scheme", "Basic YWRtaW46YWRtaW4=".to_owned()),
        ("no scheme", valid_admin.clone()),
        (
            "Bearer with a comma-joined second token",
            format!("Bearer {valid_admin}, Bearer x.y.z"),
        ),
        (
            "Bearer token then garbage",
            format!("Bearer {valid_admin} x"),
        ),
    ] {
        attacks.push(attack(
            format!("Authorization: {name}"),
            RawRequest::get(EXPORT).header("authorization", &value),
        ));
    }
    // Duplicated Authorization headers: always refused, whatever their order.
    let viewer = token(&["VIEWER"], "tenant-a");
    for (name, first, second) in [
        ("ADMIN then garbage", valid_admin.as_str(), "garbage"),
        ("garbage then ADMIN", "garbage", valid_admin.as_str()),
        ("VIEWER then ADMIN", viewer.as_str(), valid_admin.as_str()),
        (
            "ADMIN then ADMIN",
            valid_admin.as_str(),
            valid_admin.as_str(),
        ),
    ] {
        attacks.push(attack(
            format!("two Authorization headers: {name}"),
            RawRequest::get(EXPORT).bearer(first).bearer(second),
        ));
    }
    attacks.push(attack_h2(
        "h2 two authorization headers: VIEWER then ADMIN",
        H2Request::new("GET", EXPORT)
            .header("authorization", &format!("Bearer {viewer}"))
            .header("authorization", &format!("Bearer {valid_admin}")),
    ));
    attacks
}

fn assert_corpus_denied(normalisation: bool, attacks: Vec<Attack>) {
    let count = attacks.len();
    let stack = Stack::start(normalisation);
    stack.assert_live();
    let failures = stack.run(attacks);
    stack.assert_live();
    assert!(
        failures.is_empty(),
        "{} of {count} attacks were not denied (normalisation {}):\n{}",
        failures.len(),
        if normalisation { "on" } else { "off" },
        failures.join("\n")
    );
}

#[test]
fn path_bypasses_are_denied_with_envoy_normalisation_on() {
    assert_corpus_denied(true, path_attacks());
}

#[test]
fn path_bypasses_are_denied_with_envoy_normalisation_off() {
    assert_corpus_denied(false, path_attacks());
}

#[test]
fn spoofed_headers_and_jwt_attacks_are_denied_with_envoy_normalisation_on() {
    let mut attacks = header_attacks();
    attacks.extend(jwt_attacks());
    assert_corpus_denied(true, attacks);
}

#[test]
fn spoofed_headers_and_jwt_attacks_are_denied_with_envoy_normalisation_off() {
    let mut attacks = header_attacks();
    attacks.extend(jwt_attacks());
    assert_corpus_denied(false, attacks);
}
