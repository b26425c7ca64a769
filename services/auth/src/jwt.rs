//! OAuth 2.0 / OIDC bearer tokens: RS256, ES256 and HS256, verified against a pinned list of
//! algorithms, a trusted issuer and this deployment's audience, with `exp` and `nbf` checked
//! under a small clock skew. Claims map to the principal's tenant and roles by configuration.
//!
//! Public keys come from a JWKS file or URL, cached; a token signed with a key id the cache
//! does not know makes the verifier read the set again (at most once per
//! `refresh_min_interval_secs`), so a key rotation needs no restart. jsonwebtoken skips `nbf`
//! and `aud` unless told to, so both are switched on explicitly here; the crate's `rust_crypto`
//! backend is the one feature enabled (version 10 and later panic without exactly one).

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mcplane_shared::config::ConfigError;
use mcplane_shared::subjects::validate_token;
use mcplane_shared::{ErrorBody, ErrorCode, Principal, PrincipalKind};
use serde::Deserialize;
use serde_json::Value;

/// The `[auth.jwt]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must include (this deployment).
    pub audience: String,
    /// Accepted algorithms: any of `RS256`, `ES256`, `HS256`. A token naming another is refused
    /// before any key is looked at.
    pub algorithms: Vec<String>,
    /// A JWKS document on disk (re-read when a token names an unknown key id).
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL (fetched at start and when a token names an unknown key id).
    pub jwks_url: Option<String>,
    /// The environment variable holding the HS256 shared secret.
    pub hs256_secret_env: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// The claim naming the principal's tenant (a dotted path into nested claims).
    pub tenant_claim: String,
    /// The claim holding the roles: an array of strings or one space-separated string.
    pub roles_claim: String,
    /// The least time between two key-set reloads caused by unknown key ids.
    pub refresh_min_interval_secs: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            issuer: String::new(),
            audience: String::new(),
            algorithms: vec!["RS256".into(), "ES256".into()],
            jwks_file: None,
            jwks_url: None,
            hs256_secret_env: None,
            leeway_secs: 60,
            tenant_claim: "tenant".into(),
            roles_claim: "roles".into(),
            refresh_min_interval_secs: 10,
        }
    }
}

fn algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "RS256" => Some(Algorithm::RS256),
        "ES256" => Some(Algorithm::ES256),
        "HS256" => Some(Algorithm::HS256),
        _ => None,
    }
}

impl JwtConfig {
    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{section}.{k}");
        for (k, v) in [
            ("issuer", &self.issuer),
            ("audience", &self.audience),
            ("tenant_claim", &self.tenant_claim),
            ("roles_claim", &self.roles_claim),
        ] {
            if v.trim().is_empty() {
                return Err(ConfigError::new(key(k), "must not be empty"));
            }
        }
        if self.algorithms.is_empty() {
            return Err(ConfigError::new(
                key("algorithms"),
                "must name at least one algorithm",
            ));
        }
        if let Some(bad) = self.algorithms.iter().find(|a| algorithm(a).is_none()) {
            return Err(ConfigError::new(
                key("algorithms"),
                format!("unsupported algorithm {bad:?} (RS256, ES256, HS256)"),
            ));
        }
        let asymmetric = self.algorithms.iter().any(|a| a != "HS256");
        if asymmetric && self.jwks_file.is_none() && self.jwks_url.is_none() {
            return Err(ConfigError::new(
                key("jwks_file"),
                "RS256/ES256 need a jwks_file or a jwks_url",
            ));
        }
        if self.algorithms.iter().any(|a| a == "HS256") && self.hs256_secret_env.is_none() {
            return Err(ConfigError::new(
                key("hs256_secret_env"),
                "HS256 needs the environment variable holding its secret",
            ));
        }
        Ok(())
    }
}

struct Cached {
    set: JwkSet,
    loaded_at: Option<Instant>,
}

pub struct JwtVerifier {
    config: JwtConfig,
    algorithms: Vec<Algorithm>,
    hs256: Option<DecodingKey>,
    keys: RwLock<Cached>,
    http: reqwest::Client,
}

fn deny(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
}

/// Whether a credential has the shape of a JWT (three base64url parts).
pub fn looks_like_jwt(credential: &str) -> bool {
    let parts: Vec<&str> = credential.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| !p.is_empty())
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl JwtVerifier {
    /// Builds the verifier and loads the key set; a key set that cannot be fetched yet is
    /// logged and fetched again when the first token needs it.
    pub async fn new(config: JwtConfig) -> Result<Self, String> {
        let algorithms = config
            .algorithms
            .iter()
            .filter_map(|a| algorithm(a))
            .collect();
        let hs256 = match &config.hs256_secret_env {
            Some(var) if config.algorithms.iter().any(|a| a == "HS256") => {
                let secret = std::env::var(var)
                    .map_err(|_| format!("auth.jwt.hs256_secret_env: {var} is not set"))?;
                Some(DecodingKey::from_secret(secret.as_bytes()))
            }
            _ => None,
        };
        let verifier = JwtVerifier {
            config,
            algorithms,
            hs256,
            keys: RwLock::new(Cached {
                set: JwkSet { keys: Vec::new() },
                loaded_at: None,
            }),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| e.to_string())?,
        };
        if verifier.config.jwks_file.is_some() || verifier.config.jwks_url.is_some() {
            if let Err(e) = verifier.reload().await {
                tracing::warn!(error = %e, "cannot load the JWKS yet; will retry on first use");
            }
        }
        Ok(verifier)
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let text = if let Some(path) = &self.config.jwks_file {
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?
        } else if let Some(url) = &self.config.jwks_url {
            self.http
                .get(url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| format!("{url}: {e}"))?
                .text()
                .await
                .map_err(|e| format!("{url}: {e}"))?
        } else {
            return Ok(JwkSet { keys: Vec::new() });
        };
        serde_json::from_str(&text).map_err(|e| format!("unreadable JWKS: {e}"))
    }

    async fn reload(&self) -> Result<(), String> {
        let set = self.fetch().await?;
        let mut cached = self.keys.write().unwrap_or_else(|p| p.into_inner());
        tracing::info!(keys = set.keys.len(), "JWKS loaded");
        cached.set = set;
        cached.loaded_at = Some(Instant::now());
        Ok(())
    }

    fn cached_key(&self, kid: &str) -> Option<Result<DecodingKey, String>> {
        let cached = self.keys.read().unwrap_or_else(|p| p.into_inner());
        cached
            .set
            .find(kid)
            .map(|jwk| DecodingKey::from_jwk(jwk).map_err(|e| e.to_string()))
    }

    fn may_refresh(&self) -> bool {
        let cached = self.keys.read().unwrap_or_else(|p| p.into_inner());
        cached.loaded_at.is_none_or(|at| {
            at.elapsed() >= Duration::from_secs(self.config.refresh_min_interval_secs)
        })
    }

    async fn key_for(&self, alg: Algorithm, kid: Option<&str>) -> Result<DecodingKey, ErrorBody> {
        if alg == Algorithm::HS256 {
            return self
                .hs256
                .clone()
                .ok_or_else(|| deny(ErrorCode::Unauthenticated, "HS256 is not configured"));
        }
        let kid = kid.ok_or_else(|| {
            deny(
                ErrorCode::Unauthenticated,
                "the token names no key id (kid)",
            )
        })?;
        if self.cached_key(kid).is_none() && self.may_refresh() {
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "cannot reload the JWKS");
            }
        }
        match self.cached_key(kid) {
            Some(Ok(key)) => Ok(key),
            Some(Err(e)) => Err(deny(
                ErrorCode::BadSignature,
                format!("key {kid} is unusable: {e}"),
            )),
            None => Err(deny(
                ErrorCode::BadSignature,
                format!("no published key has id {kid:?}"),
            )),
        }
    }

    /// Verifies a token and maps its claims to a principal.
    pub async fn verify(&self, token: &str) -> Result<Principal, ErrorBody> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| deny(ErrorCode::Unauthenticated, "malformed bearer token"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(deny(
                ErrorCode::Unauthenticated,
                format!("algorithm {:?} is not accepted", header.alg),
            ));
        }
        let key = self.key_for(header.alg, header.kid.as_deref()).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.leeway = self.config.leeway_secs;
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => deny(ErrorCode::TokenExpired, "token expired"),
            ErrorKind::ImmatureSignature => {
                deny(ErrorCode::TokenNotYetValid, "token not valid yet (nbf)")
            }
            ErrorKind::InvalidAudience => {
                deny(ErrorCode::BadAudience, "token is for another audience")
            }
            ErrorKind::InvalidIssuer => {
                deny(ErrorCode::BadIssuer, "token is from an untrusted issuer")
            }
            ErrorKind::InvalidSignature => {
                deny(ErrorCode::BadSignature, "token signature does not verify")
            }
            ErrorKind::MissingRequiredClaim(c) => deny(
                ErrorCode::Unauthenticated,
                format!("token lacks the {c} claim"),
            ),
            _ => deny(ErrorCode::Unauthenticated, "invalid bearer token"),
        })?;
        self.principal(&data.claims)
    }

    fn principal(&self, claims: &Value) -> Result<Principal, ErrorBody> {
        let at = |path: &str| {
            path.split('.')
                .try_fold(claims, |v, part| v.get(part))
                .cloned()
        };
        let tenant = at(&self.config.tenant_claim)
            .and_then(|v| v.as_str().map(str::to_string))
            .filter(|t| validate_token(t).is_ok())
            .ok_or_else(|| {
                deny(
                    ErrorCode::Unauthenticated,
                    format!("token carries no valid {} claim", self.config.tenant_claim),
                )
            })?;
        let roles = match at(&self.config.roles_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            _ => Vec::new(),
        };
        let sub = claims["sub"].as_str().unwrap_or_default();
        Ok(Principal {
            id: format!("jwt:{sub}"),
            tenant,
            roles,
            kind: PrincipalKind::User,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape_is_recognised() {
        assert!(looks_like_jwt("eyJhbGciOi.eyJzdWIi.c2ln"));
        assert!(!looks_like_jwt("mcp_0123456789"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c d"));
    }

    #[test]
    fn config_errors_name_the_key() {
        let mut c = JwtConfig {
            issuer: "https://idp".into(),
            audience: "mcplane".into(),
            ..JwtConfig::default()
        };
        assert_eq!(
            c.validate("auth.jwt").unwrap_err().key,
            "auth.jwt.jwks_file"
        );
        c.jwks_file = Some("jwks.json".into());
        assert!(c.validate("auth.jwt").is_ok());
        c.algorithms = vec!["none".into()];
        assert_eq!(
            c.validate("auth.jwt").unwrap_err().key,
            "auth.jwt.algorithms"
        );
        c.algorithms = vec!["HS256".into()];
        assert_eq!(
            c.validate("auth.jwt").unwrap_err().key,
            "auth.jwt.hs256_secret_env"
        );
    }
}
