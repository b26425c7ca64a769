//! Every credential kind behind one call: mcplane API keys (users and service accounts) and,
//! when `[auth.jwt]` is configured, OAuth 2.0 / OIDC bearer JWTs. The shape of the credential
//! says which: an `mcp_` key never looks like a JWT, so nothing is tried twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mcplane_shared::{ErrorBody, ErrorCode, Principal};

use crate::fleet_keys::FleetKeys;
use crate::jwt::{looks_like_jwt, JwtVerifier};
use crate::keys::{invalid_key, key_hash, looks_like_key, KeyStore};

/// How long a key lookup waits for the key bucket's first snapshot before it answers
/// `unavailable`: long enough to cover a replica's start, short enough for a client's timeout.
const KEYS_READY_WAIT: Duration = Duration::from_secs(3);

pub struct Credentials {
    /// Keys in the local key file (development, offline use).
    pub keys: Arc<KeyStore>,
    /// Keys in the fleet's key bucket, valid on every replica; consulted first, so a key
    /// imported from the file and revoked in the bucket stays revoked.
    pub fleet_keys: Option<Arc<FleetKeys>>,
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
            _ => self.lookup_key(presented, now).await,
        }
    }

    async fn lookup_key(
        &self,
        presented: &str,
        now: DateTime<Utc>,
    ) -> Result<Principal, ErrorBody> {
        let Some(fleet) = &self.fleet_keys else {
            return self.keys.lookup(presented, now);
        };
        if !looks_like_key(presented) {
            return Err(invalid_key());
        }
        let hash = key_hash(presented);
        if !fleet.is_ready() {
            // Just started, or the bucket was unreachable: give the first snapshot a moment.
            let _ = tokio::time::timeout(KEYS_READY_WAIT, fleet.wait_ready()).await;
        }
        match fleet.lookup(&hash, now)? {
            Some(principal) => Ok(principal),
            None => self.keys.lookup_digest(&hash, now),
        }
    }
}
