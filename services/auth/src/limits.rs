//! Rate limits: a token bucket per principal and one per tenant, refilled continuously.
//!
//! Each auth replica keeps its own buckets (no round trip on the hot path), so with N replicas
//! sharing the durable consumer a principal's effective limit is up to N times the configured
//! one; size the limits per replica. A refusal is `rate_limited` with the seconds until the
//! bucket holds a token again, which the gateway sends as `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mcplane_shared::config::ConfigError;
use mcplane_shared::{ErrorBody, ErrorCode, Principal, PrincipalKind};
use serde::Deserialize;

/// Buckets kept before idle (full) ones are swept.
const SWEEP_AT: usize = 10_000;

/// The `[auth.rate_limits]` section; a rate of 0 switches that limit off.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Requests per second one principal may sustain (service accounts are exempt: they are
    /// counted against the tenant they act for).
    pub principal_per_sec: f64,
    pub principal_burst: f64,
    /// Requests per second one tenant may sustain, all principals together.
    pub tenant_per_sec: f64,
    pub tenant_burst: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            principal_per_sec: 200.0,
            principal_burst: 400.0,
            tenant_per_sec: 2_000.0,
            tenant_burst: 4_000.0,
        }
    }
}

impl LimitsConfig {
    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        for (key, rate, burst) in [
            ("principal", self.principal_per_sec, self.principal_burst),
            ("tenant", self.tenant_per_sec, self.tenant_burst),
        ] {
            if !(rate.is_finite() && rate >= 0.0) {
                return Err(ConfigError::new(
                    format!("{section}.{key}_per_sec"),
                    "must be >= 0",
                ));
            }
            if rate > 0.0 && !(burst.is_finite() && burst >= 1.0) {
                return Err(ConfigError::new(
                    format!("{section}.{key}_burst"),
                    "must be >= 1",
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets for one kind of key.
struct Buckets {
    rate: f64,
    burst: f64,
    map: Mutex<HashMap<String, Bucket>>,
}

impl Buckets {
    fn new(rate: f64, burst: f64) -> Self {
        Buckets {
            rate,
            burst,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key` at `now`, or says how long until one is there.
    fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SWEEP_AT {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = map.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }

    /// Gives back a token taken for a request another limit then refused.
    fn refund(&self, key: &str) {
        if self.rate <= 0.0 {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = map.get_mut(key) {
            bucket.tokens = (bucket.tokens + 1.0).min(self.burst);
        }
    }
}

pub struct Limits {
    principals: Buckets,
    tenants: Buckets,
}

impl Limits {
    pub fn new(config: &LimitsConfig) -> Self {
        Limits {
            principals: Buckets::new(config.principal_per_sec, config.principal_burst),
            tenants: Buckets::new(config.tenant_per_sec, config.tenant_burst),
        }
    }

    /// Admits one request of `principal` acting for `tenant` at `now`.
    pub fn admit(
        &self,
        principal: &Principal,
        tenant: &str,
        now: Instant,
    ) -> Result<(), ErrorBody> {
        let limited = |what: &str, wait: Duration| {
            metrics::counter!("mcplane_auth_rate_limited_total", "limit" => what.to_string())
                .increment(1);
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut error = ErrorBody::new(
                ErrorCode::RateLimited,
                format!("the {what} rate limit is reached; try again in {secs} s"),
            );
            error.retry_after_secs = Some(secs);
            error
        };
        let per_principal = principal.kind != PrincipalKind::ServiceAccount;
        if per_principal {
            self.principals
                .take(&principal.id, now)
                .map_err(|wait| limited("principal", wait))?;
        }
        self.tenants.take(tenant, now).map_err(|wait| {
            // Refused by the tenant: the principal's token was not spent.
            if per_principal {
                self.principals.refund(&principal.id);
            }
            limited("tenant", wait)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(id: &str, kind: PrincipalKind) -> Principal {
        Principal {
            id: id.into(),
            tenant: "acme".into(),
            roles: vec![],
            kind,
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds_with_a_retry_hint() {
        let limits = Limits::new(&LimitsConfig {
            principal_per_sec: 2.0,
            principal_burst: 3.0,
            tenant_per_sec: 0.0,
            tenant_burst: 0.0,
        });
        let t0 = Instant::now();
        let ana = principal("ana", PrincipalKind::User);
        for _ in 0..3 {
            assert!(limits.admit(&ana, "acme", t0).is_ok());
        }
        let refused = limits.admit(&ana, "acme", t0).unwrap_err();
        assert_eq!(refused.code, ErrorCode::RateLimited);
        assert_eq!(refused.retry_after_secs, Some(1));
        // Another principal has its own bucket; half a second later one token is back.
        assert!(limits
            .admit(&principal("bo", PrincipalKind::User), "acme", t0)
            .is_ok());
        assert!(limits
            .admit(&ana, "acme", t0 + Duration::from_millis(500))
            .is_ok());
        assert!(limits
            .admit(&ana, "acme", t0 + Duration::from_millis(500))
            .is_err());
    }

    #[test]
    fn the_tenant_limit_counts_everyone_and_service_accounts_only_there() {
        let limits = Limits::new(&LimitsConfig {
            principal_per_sec: 1.0,
            principal_burst: 1.0,
            tenant_per_sec: 1.0,
            tenant_burst: 3.0,
        });
        let t0 = Instant::now();
        let sa = principal("correlator", PrincipalKind::ServiceAccount);
        assert!(limits.admit(&sa, "acme", t0).is_ok());
        assert!(
            limits.admit(&sa, "acme", t0).is_ok(),
            "no per-principal limit for a service account"
        );
        assert!(limits
            .admit(&principal("ana", PrincipalKind::User), "acme", t0)
            .is_ok());
        let refused = limits
            .admit(&principal("bo", PrincipalKind::User), "acme", t0)
            .unwrap_err();
        assert!(refused.message.contains("tenant"), "{}", refused.message);
        assert!(limits
            .admit(&principal("bo", PrincipalKind::User), "globex", t0)
            .is_ok());
    }
}
