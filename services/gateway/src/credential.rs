//! Bearer credentials at the edge: parsing the `Authorization` header, the SHA-256 digest that
//! ties a result to the caller who asked for it, and resolving a credential to a principal for
//! alert webhooks.
//!
//! The gateway never judges a credential itself: AI requests carry it to the auth stage, and
//! webhooks ask auth over core request/reply. Successful resolutions are cached by digest for a
//! short TTL so a chatty Alertmanager costs one auth round trip per TTL, at the price of a
//! revoked key being honoured for at most that long; failures are never cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use mcplane_shared::{ErrorBody, ErrorCode, Principal};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Longest credential accepted (API keys are short; JWTs can be a few KiB).
const MAX_CREDENTIAL_LEN: usize = 8 * 1024;
/// How long to wait for the auth service to resolve a credential.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait before asking again when no auth replica answered at all.
const NO_RESPONDERS_RETRY: Duration = Duration::from_millis(250);
/// Most cached resolutions; past this, expired entries are dropped (and, if that is not enough,
/// all of them: a cache miss only costs a round trip).
const MAX_CACHED: usize = 10_000;

/// A bearer credential as presented. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Bearer(String);

impl Bearer {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Hex SHA-256 of the credential: what a result records instead of the credential itself.
    pub fn digest(&self) -> String {
        digest(&self.0)
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(<redacted>)")
    }
}

/// Hex SHA-256 of a credential.
pub fn digest(credential: &str) -> String {
    hex::encode(Sha256::digest(credential.as_bytes()))
}

/// Compares two byte strings in time independent of where they differ, so a caller probing
/// `GET /v1/requests/{id}` learns nothing from response times about the stored digest.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The bearer credential of a request: `Authorization: Bearer <credential>` (scheme
/// case-insensitive), or a 401 `unauthenticated` saying what is wrong with it.
pub fn bearer(headers: &HeaderMap) -> Result<Bearer, ApiError> {
    authorization(headers, false)
}

/// Like [`bearer`], also accepting `Basic` (the key as the password): alert webhooks only,
/// because some senders (SNS) can put a credential nowhere but in the URL's user info.
pub fn webhook(headers: &HeaderMap) -> Result<Bearer, ApiError> {
    authorization(headers, true)
}

fn authorization(headers: &HeaderMap, allow_basic: bool) -> Result<Bearer, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthenticated("missing Authorization: Bearer <key> header"))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthenticated("the Authorization header is not ASCII"))?;
    let (scheme, credential) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthenticated("expected Authorization: Bearer <key>"))?;
    let basic;
    let credential = if scheme.eq_ignore_ascii_case("bearer") {
        credential.trim()
    } else if allow_basic && scheme.eq_ignore_ascii_case("basic") {
        basic = basic_password(credential.trim())?;
        basic.as_str()
    } else {
        return Err(ApiError::unauthenticated(
            "expected Authorization: Bearer <key>",
        ));
    };
    checked(credential)
}

/// A credential found outside the `Authorization` header (a PagerDuty event's `routing_key`).
pub fn from_text(credential: &str) -> Result<Bearer, ApiError> {
    checked(credential.trim())
}

/// The password of `Basic base64(user:password)`: senders that can only put credentials in the
/// URL (an SNS HTTPS subscription, `https://mcplane:<key>@host/...`) present the key this way.
fn basic_password(encoded: &str) -> Result<String, ApiError> {
    use base64::Engine;
    let bad = || ApiError::unauthenticated("malformed Basic credential");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (_, password) = text.split_once(':').ok_or_else(bad)?;
    Ok(password.to_string())
}

fn checked(credential: &str) -> Result<Bearer, ApiError> {
    if credential.is_empty()
        || credential.len() > MAX_CREDENTIAL_LEN
        || !credential.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::unauthenticated("malformed bearer credential"));
    }
    Ok(Bearer(credential.to_string()))
}

/// The auth service's answer on `auth.resolve`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ResolveReply {
    Principal(Principal),
    Error(ErrorBody),
}

/// Resolves credentials to principals through the auth service, with a TTL cache.
pub struct Resolver {
    client: async_nats::Client,
    subject: String,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl Resolver {
    pub fn new(client: async_nats::Client, subject: String, ttl: Duration) -> Self {
        Resolver {
            client,
            subject,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The principal behind `bearer`: from the cache, or asked of the auth service.
    pub async fn resolve(&self, bearer: &Bearer) -> Result<Principal, ApiError> {
        let key = bearer.digest();
        if let Some(principal) = self.cached(&key) {
            metrics::counter!("mcplane_gateway_auth_resolves_total", "outcome" => "cached")
                .increment(1);
            return Ok(principal);
        }
        let result = self.ask(bearer).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) if e.error.code == ErrorCode::Unavailable => "unavailable",
            Err(_) => "denied",
        };
        metrics::counter!("mcplane_gateway_auth_resolves_total", "outcome" => outcome).increment(1);
        let principal = result?;
        self.remember(key, principal.clone());
        Ok(principal)
    }

    fn cached(&self, key: &str) -> Option<Principal> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(key)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(p, _)| p.clone())
    }

    fn remember(&self, key: String, principal: Principal) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let now = Instant::now();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, expires)| *expires > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, (principal, now + self.ttl));
    }

    async fn query(
        &self,
        payload: bytes::Bytes,
    ) -> Result<Result<async_nats::Message, async_nats::RequestError>, tokio::time::error::Elapsed>
    {
        let request = self.client.request(self.subject.clone(), payload);
        tokio::time::timeout(RESOLVE_TIMEOUT, request).await
    }

    async fn ask(&self, bearer: &Bearer) -> Result<Principal, ApiError> {
        let payload = serde_json::to_vec(&serde_json::json!({ "credential": bearer.as_str() }))
            .map_err(|e| ApiError::internal(format!("cannot encode a resolve query: {e}")))?;
        let payload = bytes::Bytes::from(payload);
        let mut answer = self.query(payload.clone()).await;
        if matches!(&answer, Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders) {
            // An auth replica restarting (or a subscription not yet known to this server in a
            // cluster) looks the same for a moment: ask once more before refusing the caller.
            tokio::time::sleep(NO_RESPONDERS_RETRY).await;
            answer = self.query(payload).await;
        }
        let reply = match answer {
            Err(_) => {
                return Err(ApiError::unavailable(
                    "the auth service did not answer in time",
                ))
            }
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                return Err(ApiError::unavailable("no auth service is answering"))
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "credential resolution failed");
                return Err(ApiError::unavailable("cannot reach the auth service"));
            }
            Ok(Ok(reply)) => reply,
        };
        match serde_json::from_slice::<ResolveReply>(&reply.payload) {
            Ok(ResolveReply::Principal(p)) => Ok(p),
            Ok(ResolveReply::Error(error)) => Err(match error.code {
                ErrorCode::Unauthenticated
                | ErrorCode::Forbidden
                | ErrorCode::Unavailable
                | ErrorCode::RateLimited => ApiError::from_body(error),
                other => {
                    tracing::error!(code = %other, message = %error.message, "auth refused a resolve query");
                    ApiError::internal("the auth service could not resolve the credential")
                }
            }),
            Err(e) => {
                tracing::error!(error = %e, "undecodable resolve reply");
                Err(ApiError::internal(
                    "the auth service answered something unexpected",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_is_parsed_case_insensitively_and_trimmed() {
        assert_eq!(
            bearer(&headers("Bearer mcp_abc")).unwrap().as_str(),
            "mcp_abc"
        );
        assert_eq!(
            bearer(&headers("bearer  mcp_abc ")).unwrap().as_str(),
            "mcp_abc"
        );
    }

    #[test]
    fn missing_or_malformed_bearer_is_unauthenticated() {
        let missing = bearer(&HeaderMap::new()).unwrap_err();
        assert_eq!(missing.error.code, ErrorCode::Unauthenticated);
        assert_eq!(missing.status, axum::http::StatusCode::UNAUTHORIZED);
        for bad in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "mcp_abc",
        ] {
            let err = bearer(&headers(bad)).unwrap_err();
            assert_eq!(err.error.code, ErrorCode::Unauthenticated, "{bad}");
        }
    }

    #[test]
    fn basic_auth_presents_its_password_as_the_key() {
        // "mcplane:mcp_abc", as an SNS subscription URL https://mcplane:mcp_abc@host/ sends it.
        let b = webhook(&headers("Basic bWNwbGFuZTptY3BfYWJj")).unwrap();
        assert_eq!(b.as_str(), "mcp_abc");
        assert_eq!(webhook(&headers("Bearer k")).unwrap().as_str(), "k");
        for bad in ["Basic !!!", "Basic dXNlcg==", "Digest x"] {
            assert!(webhook(&headers(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_never_prints_the_credential() {
        let b = bearer(&headers("Bearer mcp_secret")).unwrap();
        assert!(!format!("{b:?}").contains("secret"));
    }

    #[test]
    fn digest_is_hex_sha256() {
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
