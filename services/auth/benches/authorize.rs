//! The authorise path's own cost, without the bus: resolving an API key (checksum, SHA-256,
//! lookup) and a JWT (RS256 / ES256 / HS256 signature and claims), then the decision, then the
//! rate-limit admission.
//!
//! `api_key` resolves a key from the local key file; `api_key_fleet` one from the fleet's key
//! bucket, as a running replica does: a real nats-server (the testkit's) holds 1,001 key
//! records and the in-memory index follows it by a KV watch, so the lookup itself stays in
//! memory.
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
use mcplane_auth::fleet_keys::{FleetKeys, KeyBucket};
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
    // The fleet's key bucket, with as many keys as the file.
    let nats = mcplane_testkit::NatsServer::start();
    let fleet_keys = std::sync::Arc::new(FleetKeys::new());
    let fleet_key = runtime.block_on(async {
        let bus = mcplane_shared::bus::connect(&mcplane_testkit::bus_config(&nats), "bench")
            .await
            .expect("bus");
        let bucket = KeyBucket::open(&bus).await.expect("key bucket");
        for i in 0..1_000 {
            bucket
                .create(
                    &format!("t{i}"),
                    vec!["sre".into()],
                    PrincipalKind::User,
                    None,
                )
                .await
                .expect("key");
        }
        let (key, _) = bucket
            .create("acme", vec!["sre".into()], PrincipalKind::User, None)
            .await
            .expect("key");
        let follower = fleet_keys.clone();
        tokio::spawn(async move { follower.follow(bus, Default::default()).await });
        fleet_keys.wait_ready().await;
        // Ready means the snapshot is in; the last key may still be on its way.
        while fleet_keys
            .lookup(&mcplane_auth::keys::key_hash(&key), Utc::now())
            .expect("loaded")
            .is_none()
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        key
    });
    let fleet_credentials = Credentials {
        keys: keys.clone(),
        fleet_keys: Some(fleet_keys),
        jwt: None,
    };
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
    for (name, credential, credentials) in [
        ("api_key", &key, &credentials),
        ("api_key_fleet", &fleet_key, &fleet_credentials),
        ("jwt_rs256", &rs, &credentials),
        ("jwt_es256", &es, &credentials),
        ("jwt_hs256", &hs, &credentials),
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
    for name in [
        "api_key",
        "api_key_fleet",
        "jwt_rs256",
        "jwt_es256",
        "jwt_hs256",
    ] {
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
