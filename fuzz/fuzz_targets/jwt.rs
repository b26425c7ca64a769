//! The JWT front end of the auth service: whatever bearer token arrives, `verify` answers a
//! principal or a coded denial, never panics. The first byte picks how the rest is used:
//! - a raw token (header parsing, algorithm pinning, key lookup by `kid` in the JWKS fixture);
//! - claims JSON laid over valid ones and signed with the configured HS256 secret, so the
//!   signature verifies and the claim checks and the claim-to-principal mapping are what runs;
//! - a header JSON and a payload, base64url-encoded with a junk signature.
#![no_main]

use std::sync::OnceLock;

use futures::executor::block_on;
use jsonwebtoken::{EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use mcplane_auth::jwt::{looks_like_jwt, JwtConfig, JwtVerifier};
use serde_json::{json, Value};

const SECRET: &str = "fuzz-shared-secret-0123456789abcdef";

fn verifier() -> &'static JwtVerifier {
    static V: OnceLock<JwtVerifier> = OnceLock::new();
    V.get_or_init(|| {
        std::env::set_var("MCPLANE_FUZZ_HS256", SECRET);
        let config = JwtConfig {
            issuer: "https://idp.example".into(),
            audience: "mcplane".into(),
            algorithms: vec!["RS256".into(), "ES256".into(), "HS256".into()],
            jwks_file: Some(
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../services/auth/tests/fixtures/jwks.json"
                )
                .into(),
            ),
            hs256_secret_env: Some("MCPLANE_FUZZ_HS256".into()),
            ..JwtConfig::default()
        };
        block_on(JwtVerifier::new(config)).expect("the fuzz verifier builds")
    })
}

fn b64(bytes: &[u8]) -> String {
    // base64url without padding, written out to keep the target free of another dependency.
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let v = verifier();
    let token = match mode % 3 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => {
            let mut claims = json!({
                "iss": "https://idp.example", "aud": "mcplane", "sub": "fuzz",
                "exp": chrono::Utc::now().timestamp() + 3600, "tenant": "acme",
            });
            if let Ok(Value::Object(extra)) = serde_json::from_slice::<Value>(rest) {
                for (k, val) in extra {
                    claims[k] = val;
                }
            }
            let key = EncodingKey::from_secret(SECRET.as_bytes());
            match jsonwebtoken::encode(&Header::default(), &claims, &key) {
                Ok(t) => t,
                Err(_) => return,
            }
        }
        _ => {
            let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            let (header, payload) = rest.split_at(split);
            format!("{}.{}.c2ln", b64(header), b64(payload))
        }
    };
    let _ = looks_like_jwt(&token);
    if let Ok(p) = block_on(v.verify(&token)) {
        assert!(!p.tenant.is_empty());
    }
});
