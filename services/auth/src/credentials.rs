//! Every credential kind behind one call: mcplane API keys (users and service accounts) and,
//! when `[auth.jwt]` is configured, OAuth 2.0 / OIDC bearer JWTs. The shape of the credential
//! says which: an `mcp_` key never looks like a JWT, so nothing is tried twice.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use mcplane_shared::{ErrorBody, ErrorCode, Principal};

use crate::jwt::{looks_like_jwt, JwtVerifier};
use crate::keys::KeyStore;

pub struct Credentials {
    pub keys: Arc<KeyStore>,
    pub jwt: Option<JwtVerifier>,
}

impl Credentials {
    /// The principal a presented credential stands for, or a coded denial.
    pub async fn resolve(
        &self,
        presented: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Principal, ErrorBody> {
        let presented = presented.map(str::trim).unwrap_or_default();
        if presented.is_empty() {
            return Err(ErrorBody::new(
                ErrorCode::Unauthenticated,
                "missing credential",
            ));
        }
        match &self.jwt {
            Some(jwt) if looks_like_jwt(presented) => {
                let result = jwt.verify(presented).await;
                if let Err(e) = &result {
                    metrics::counter!("mcplane_auth_jwt_denials_total", "code" => e.code.as_str())
                        .increment(1);
                }
                result
            }
            _ => self.keys.lookup(presented, now),
        }
    }
}
