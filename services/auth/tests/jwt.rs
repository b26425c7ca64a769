//! OAuth 2.0 / OIDC bearer tokens: each algorithm accepted with a valid token, and every way a
//! token can be wrong denied with its own code — expired, not yet valid, wrong audience, wrong
//! issuer, wrong signature, unknown key, unaccepted algorithm — plus key rotation picked up on
//! an unknown `kid`, and a denial through the authorise stage landing in the audit trail.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use mcplane_auth::config::Config;
use mcplane_auth::jwt::{JwtConfig, JwtVerifier};
use mcplane_auth::keys::KeyStore;
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{
    AiRequest, AuditEvent, AuditOutcome, Envelope, ErrorCode, Exchange, RequestType,
};
use mcplane_testkit::{
    bus_config, service_config, stored_messages, stored_result, NatsServer, Running,
};
use serde_json::{json, Value};

const ISSUER: &str = "https://idp.example.com";
const AUDIENCE: &str = "mcplane";
const SECRET_ENV: &str = "MCPLANE_TEST_JWT_HS256_SECRET";
const SECRET: &str = "a-test-only-shared-secret-of-enough-length";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn config(jwks: &Path, algorithms: &[&str]) -> JwtConfig {
    JwtConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        algorithms: algorithms.iter().map(|a| a.to_string()).collect(),
        jwks_file: Some(jwks.to_path_buf()),
        hs256_secret_env: Some(SECRET_ENV.into()),
        refresh_min_interval_secs: 0,
        tenant_claim: "org.tenant".into(),
        ..JwtConfig::default()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims() -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "ana@acme.example",
        "exp": now() + 600, "nbf": now() - 10, "iat": now(),
        "org": {"tenant": "acme"}, "roles": ["sre", "oncall"],
    })
}

fn token(alg: Algorithm, kid: Option<&str>, key: &str, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::RS256 => {
            EncodingKey::from_rsa_pem(&std::fs::read(fixture(key)).unwrap()).unwrap()
        }
        Algorithm::ES256 => {
            EncodingKey::from_ec_pem(&std::fs::read(fixture(key)).unwrap()).unwrap()
        }
        other => panic!("no test key for {other:?}"),
    };
    encode(&header, claims, &key).unwrap()
}

fn rs256(claims: &Value) -> String {
    token(Algorithm::RS256, Some("rsa-1"), "rsa-1.pem", claims)
}

fn with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut c = claims();
    edit(&mut c);
    c
}

async fn verifier(algorithms: &[&str]) -> (tempfile::TempDir, PathBuf, JwtVerifier) {
    // SAFETY-free in edition 2021; every test sets the same value.
    std::env::set_var(SECRET_ENV, SECRET);
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::copy(fixture("jwks.json"), &jwks).unwrap();
    let v = JwtVerifier::new(config(&jwks, algorithms)).await.unwrap();
    (dir, jwks, v)
}

#[tokio::test]
async fn each_algorithm_is_accepted_and_claims_map_to_tenant_and_roles() {
    let (_dir, _, v) = verifier(&["RS256", "ES256", "HS256"]).await;
    for t in [
        rs256(&claims()),
        token(Algorithm::ES256, Some("ec-1"), "ec-1.pem", &claims()),
        token(Algorithm::HS256, None, "", &claims()),
    ] {
        let p = v.verify(&t).await.unwrap();
        assert_eq!(p.tenant, "acme");
        assert_eq!(p.roles, ["sre", "oncall"]);
        assert_eq!(p.id, "jwt:ana@acme.example");
    }
    // Roles as one space-separated string (the OAuth `scope` style) work too.
    let p = v
        .verify(&rs256(&with(|c| c["roles"] = json!("sre viewer"))))
        .await
        .unwrap();
    assert_eq!(p.roles, ["sre", "viewer"]);
}

#[tokio::test]
async fn every_wrong_token_is_denied_with_its_own_code() {
    let (_dir, _, v) = verifier(&["RS256", "ES256", "HS256"]).await;
    let cases = [
        (
            "expired",
            rs256(&with(|c| c["exp"] = json!(now() - 3600))),
            ErrorCode::TokenExpired,
        ),
        (
            "not yet valid",
            rs256(&with(|c| c["nbf"] = json!(now() + 3600))),
            ErrorCode::TokenNotYetValid,
        ),
        (
            "other audience",
            rs256(&with(|c| c["aud"] = json!("someone-else"))),
            ErrorCode::BadAudience,
        ),
        (
            "other issuer",
            rs256(&with(|c| c["iss"] = json!("https://evil.example"))),
            ErrorCode::BadIssuer,
        ),
        (
            "forged signature",
            token(
                Algorithm::RS256,
                Some("rsa-1"),
                "rsa-attacker.pem",
                &claims(),
            ),
            ErrorCode::BadSignature,
        ),
        (
            "unpublished key",
            token(
                Algorithm::RS256,
                Some("rsa-attacker"),
                "rsa-attacker.pem",
                &claims(),
            ),
            ErrorCode::BadSignature,
        ),
        (
            "no tenant",
            rs256(&with(|c| c["org"] = json!({}))),
            ErrorCode::Unauthenticated,
        ),
        (
            "no exp",
            rs256(&with(|c| {
                c.as_object_mut()
                    .unwrap()
                    .remove("exp")
                    .map(|_| ())
                    .unwrap()
            })),
            ErrorCode::Unauthenticated,
        ),
        ("garbage", "a.b.c".to_string(), ErrorCode::Unauthenticated),
    ];
    for (name, t, code) in cases {
        let error = v.verify(&t).await.unwrap_err();
        assert_eq!(error.code, code, "{name}: {}", error.message);
        assert!(!error.message.contains(SECRET), "{name}");
    }
    // Within the leeway an expired-by-seconds token still passes.
    assert!(v
        .verify(&rs256(&with(|c| c["exp"] = json!(now() - 5))))
        .await
        .is_ok());
}

#[tokio::test]
async fn algorithms_are_pinned() {
    let (_dir, _, v) = verifier(&["RS256"]).await;
    let hs = token(Algorithm::HS256, Some("rsa-1"), "", &claims());
    let error = v.verify(&hs).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::Unauthenticated);
    assert!(error.message.contains("not accepted"), "{}", error.message);
    let es = token(Algorithm::ES256, Some("ec-1"), "ec-1.pem", &claims());
    assert!(v.verify(&es).await.is_err());
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_on_its_first_unknown_kid() {
    let (_dir, jwks, v) = verifier(&["RS256"]).await;
    let new_key = token(Algorithm::RS256, Some("rsa-2"), "rsa-2.pem", &claims());
    assert_eq!(
        v.verify(&new_key).await.unwrap_err().code,
        ErrorCode::BadSignature
    );
    std::fs::copy(fixture("jwks-rotated.json"), &jwks).unwrap();
    assert_eq!(v.verify(&new_key).await.unwrap().tenant, "acme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_an_expired_token_is_denied_and_audited_with_its_code() {
    std::env::set_var(SECRET_ENV, SECRET);
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let jwks = data.path().join("jwks.json");
    std::fs::copy(fixture("jwks.json"), &jwks).unwrap();
    KeyStore::open(data.path()).unwrap();
    let config = service_config(
        &nats,
        data.path(),
        Config {
            jwt: Some(config(&jwks, &["RS256"])),
            ..Config::default()
        },
    );
    let service = Running::spawn(|shutdown| mcplane_auth::run(config, shutdown));
    let bus = mcplane_shared::bus::connect(&bus_config(&nats), "test")
        .await
        .unwrap();

    let mut env = Envelope::new(
        "",
        Exchange::new(AiRequest::new(RequestType::Answer, "hello")),
    );
    let expired = rs256(&with(|c| c["exp"] = json!(now() - 3600)));
    env.credential = Some(expired.clone());
    bus.publish_envelope(bus.subjects.requests_submit(), &env, "test")
        .await
        .unwrap();

    let result = stored_result(&bus, &env.id, Duration::from_secs(15)).await;
    assert_eq!(result.body.error.unwrap().code, ErrorCode::TokenExpired);
    assert_eq!(result.credential, None, "the token is never stored");
    let started = Instant::now();
    let audit = loop {
        let events: Vec<AuditEvent> = stored_messages(
            &bus,
            StreamKind::Audit,
            bus.subjects.audit("_unauthenticated"),
        )
        .await
        .iter()
        .map(|b| Envelope::<AuditEvent>::from_slice(b).unwrap().body)
        .collect();
        if let Some(e) = events.into_iter().find(|e| e.request_id == env.id) {
            break e;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no audit entry"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(
        (audit.outcome, audit.code),
        (AuditOutcome::Denied, Some(ErrorCode::TokenExpired))
    );
    assert!(!serde_json::to_string(&audit).unwrap().contains(&expired));
    service.stop().await;
}
