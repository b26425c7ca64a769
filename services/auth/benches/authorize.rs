//! The authorise path's own cost, without the bus: resolving an API key (checksum, SHA-256,
//! lookup) and a JWT (RS256 / ES256 / HS256 signature and claims), then the decision, then the
//! rate-limit admission.
//!
//! `cargo bench -p mcplane-auth --bench authorize` prints criterion's report, then one JSON
//! line with the mean of each benchmark in nanoseconds.

use std::path::Path;

use chrono::Utc;
use criterion::Criterion;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use mcplane_auth::authorize::decide;
use mcplane_auth::config::Config;
use mcplane_auth::credentials::Credentials;
use mcplane_auth::jwt::{JwtConfig, JwtVerifier};
use mcplane_auth::keys::KeyStore;
use mcplane_auth::limits::{Limits, LimitsConfig};
use mcplane_shared::{AiRequest, Envelope, Exchange, PrincipalKind, RequestType};
use serde_json::json;

const SECRET_ENV: &str = "MCPLANE_BENCH_HS256_SECRET";

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn token(alg: Algorithm, kid: Option<&str>, key: EncodingKey) -> String {
    let now = Utc::now().timestamp();
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    let claims = json!({"iss": "https://idp", "aud": "mcplane", "sub": "ana", "exp": now + 3600,
                        "nbf": now - 10, "tenant": "acme", "roles": ["sre"]});
    encode(&header, &claims, &key).expect("token")
}

fn request() -> Envelope<Exchange> {
    Envelope::new(
        "",
        Exchange::new(AiRequest {
            services: vec!["checkout".into()],
            ..AiRequest::new(RequestType::Answer, "why is checkout slow?")
        }),
    )
}

fn main() {
    let home = std::env::temp_dir().join("mcplane-criterion");
    std::env::set_var("CRITERION_HOME", &home);
    std::env::set_var(SECRET_ENV, "bench-secret-bench-secret-bench-secret");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let keys = std::sync::Arc::new(KeyStore::open(dir.path()).expect("keys"));
    for i in 0..1_000 {
        keys.create(
            &format!("t{i}"),
            vec!["sre".into()],
            PrincipalKind::User,
            None,
        )
        .expect("key");
    }
    let (key, _) = keys
        .create("acme", vec!["sre".into()], PrincipalKind::User, None)
        .expect("key");
    let jwt = runtime
        .block_on(JwtVerifier::new(JwtConfig {
            issuer: "https://idp".into(),
            audience: "mcplane".into(),
            algorithms: vec!["RS256".into(), "ES256".into(), "HS256".into()],
            jwks_file: Some(fixture("jwks.json")),
            hs256_secret_env: Some(SECRET_ENV.into()),
            ..JwtConfig::default()
        }))
        .expect("verifier");
    let credentials = Credentials {
        keys: keys.clone(),
        fleet_keys: None,
        jwt: Some(jwt),
    };
    let pem = |n: &str| std::fs::read(fixture(n)).expect("pem");
    let rs = token(
        Algorithm::RS256,
        Some("rsa-1"),
        EncodingKey::from_rsa_pem(&pem("rsa-1.pem")).expect("rsa"),
    );
    let es = token(
        Algorithm::ES256,
        Some("ec-1"),
        EncodingKey::from_ec_pem(&pem("ec-1.pem")).expect("ec"),
    );
    let hs = token(
        Algorithm::HS256,
        None,
        EncodingKey::from_secret(b"bench-secret-bench-secret-bench-secret"),
    );
    let config = Config::default();
    let limits = Limits::new(&LimitsConfig {
        principal_per_sec: 1e12,
        principal_burst: 1e12,
        tenant_per_sec: 1e12,
        tenant_burst: 1e12,
    });

    let policy = mcplane_shared::policy::PolicyEngine::builtin().expect("built-in policy");
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("authorize");
    for (name, credential) in [
        ("api_key", &key),
        ("jwt_rs256", &rs),
        ("jwt_es256", &es),
        ("jwt_hs256", &hs),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let now = Utc::now();
                let resolved = credentials.resolve(Some(credential), now).await;
                let decision = decide(request(), resolved, &config, &policy);
                if let mcplane_auth::authorize::Decision::Forward(env) = &decision {
                    let p = env.principal.as_ref().expect("principal");
                    limits
                        .admit(p, &env.tenant, std::time::Instant::now())
                        .expect("admitted");
                }
                decision
            })
        });
    }
    group.finish();
    c.final_summary();
    let mut ns = serde_json::Map::new();
    for name in ["api_key", "jwt_rs256", "jwt_es256", "jwt_hs256"] {
        let path = home
            .join("authorize")
            .join(name)
            .join("new")
            .join("estimates.json");
        if let Some(mean) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["mean"]["point_estimate"].as_f64())
        {
            ns.insert(format!("authorize/{name}"), json!(mean.round()));
        }
    }
    println!("{}", json!({"bench": "authorize", "ns": ns}));
}
