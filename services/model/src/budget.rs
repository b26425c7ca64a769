//! Per-tenant model budgets, shared by every replica through a KV bucket.
//!
//! Each tenant has a day and a month window (`<tenant>.day.<yyyy-mm-dd>`,
//! `<tenant>.month.<yyyy-mm>`). Before a call the estimated cost is *reserved* with a
//! compare-and-set on the window's revision, refused when it would pass the hard limit; after
//! the call the reservation is *settled* to the actual cost. Checking and charging in one
//! atomic step is what keeps fifty concurrent requests from all passing a check that only ten
//! of them fit (a proxy that checks, calls, then charges lets them all through).

use std::collections::BTreeMap;

use async_nats::jetstream::kv;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use mcplane_shared::{BudgetAlert, Usage};
use serde::{Deserialize, Serialize};

use crate::config::BudgetConfig;

/// Attempts at one compare-and-set before giving up (contention is brief: one KV round trip).
const CAS_ATTEMPTS: usize = 64;

/// What a window holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spend {
    /// Spent and reserved, in millionths of a dollar.
    pub cost_micros: u64,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Whether the soft-limit alert for this window has gone out.
    #[serde(default)]
    pub soft_alerted: bool,
}

/// One budget window of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub key: String,
    /// `day` or `month`.
    pub name: &'static str,
    pub period: String,
    pub hard_micros: Option<u64>,
    pub soft_micros: Option<u64>,
}

/// The windows `tenant` is charged in at `now`, with their limits.
pub fn windows(tenant: &str, now: DateTime<Utc>, limits: Option<&BudgetConfig>) -> [Window; 2] {
    let to_micros = |usd: f64| (usd * 1_000_000.0).round() as u64;
    let make = |name: &'static str, period: String, limit: Option<f64>| {
        let hard = limit.map(to_micros);
        Window {
            key: format!("{tenant}.{name}.{period}"),
            name,
            period,
            hard_micros: hard,
            soft_micros: limits
                .zip(hard)
                .map(|(l, h)| (h as f64 * l.soft_ratio).round() as u64),
        }
    };
    [
        make(
            "day",
            now.format("%Y-%m-%d").to_string(),
            limits.and_then(|l| l.daily_usd),
        ),
        make(
            "month",
            now.format("%Y-%m").to_string(),
            limits.and_then(|l| l.monthly_usd),
        ),
    ]
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetError {
    #[error("the {window} budget of ${limit:.2} is spent (${spent:.4} used, this request would need ${need:.4} more)")]
    Exceeded {
        window: &'static str,
        limit: f64,
        spent: f64,
        need: f64,
    },
    #[error("budget store: {0}")]
    Store(String),
}

/// An amount held against a tenant's windows until the call's real cost is known.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub tenant: String,
    pub windows: [Window; 2],
    pub reserved_micros: u64,
}

#[derive(Clone)]
pub struct Budgets {
    kv: kv::Store,
    limits: BTreeMap<String, BudgetConfig>,
}

fn usd(micros: u64) -> f64 {
    micros as f64 / 1_000_000.0
}

impl Budgets {
    pub fn new(kv: kv::Store, limits: BTreeMap<String, BudgetConfig>) -> Self {
        Budgets { kv, limits }
    }

    fn limits_for(&self, tenant: &str) -> Option<&BudgetConfig> {
        self.limits.get(tenant).or_else(|| self.limits.get("*"))
    }

    /// Holds `estimate` against both windows, or refuses when a hard limit would be passed.
    pub async fn reserve(
        &self,
        tenant: &str,
        estimate: u64,
        now: DateTime<Utc>,
    ) -> Result<Reservation, BudgetError> {
        let windows = windows(tenant, now, self.limits_for(tenant));
        let mut held = Vec::new();
        for w in &windows {
            // Without a hard limit nothing needs holding; the spend is recorded at settlement.
            let Some(hard) = w.hard_micros else { continue };
            let result = self
                .update(&w.key, |s| {
                    if s.cost_micros.saturating_add(estimate) > hard {
                        return Err(BudgetError::Exceeded {
                            window: w.name,
                            limit: usd(hard),
                            spent: usd(s.cost_micros),
                            need: usd(estimate),
                        });
                    }
                    s.cost_micros += estimate;
                    Ok(())
                })
                .await;
            if let Err(e) = result {
                for key in held {
                    let _ = self
                        .update(key, |s| {
                            s.cost_micros = s.cost_micros.saturating_sub(estimate);
                            Ok(())
                        })
                        .await;
                }
                return Err(e);
            }
            held.push(&w.key);
        }
        Ok(Reservation {
            tenant: tenant.to_string(),
            reserved_micros: if held.is_empty() { 0 } else { estimate },
            windows,
        })
    }

    /// Replaces the reservation with what the call cost (`None`: no call happened, nothing
    /// spent); returns the soft-limit alerts this settlement crossed, each at most once.
    pub async fn settle(
        &self,
        reservation: Reservation,
        usage: Option<Usage>,
        now: DateTime<Utc>,
    ) -> Result<Vec<BudgetAlert>, BudgetError> {
        let actual = usage.map_or(0, |u| u.cost_micros);
        let tenant = reservation.tenant.as_str();
        let updates = reservation.windows.iter().map(|w| {
            let held = if w.hard_micros.is_some() {
                reservation.reserved_micros
            } else {
                0
            };
            async move {
                // Free calls of a tenant without limits are counted in metrics only: no KV
                // round trips for what cannot move a budget.
                if held == 0 && actual == 0 && w.hard_micros.is_none() {
                    return Ok(None);
                }
                let mut crossed = false;
                let spend = self
                    .update(&w.key, |s| {
                        s.cost_micros = (s.cost_micros + actual).saturating_sub(held);
                        if let Some(u) = usage {
                            s.requests += 1;
                            s.input_tokens += u64::from(u.input_tokens);
                            s.output_tokens += u64::from(u.output_tokens);
                        }
                        crossed = w.soft_micros.is_some_and(|soft| s.cost_micros >= soft)
                            && !s.soft_alerted;
                        if crossed {
                            s.soft_alerted = true;
                        }
                        Ok(())
                    })
                    .await?;
                Ok::<_, BudgetError>(crossed.then(|| BudgetAlert {
                    tenant: tenant.to_string(),
                    window: w.name.to_string(),
                    period: w.period.clone(),
                    spent_micros: spend.cost_micros,
                    soft_limit_micros: w.soft_micros.unwrap_or_default(),
                    hard_limit_micros: w.hard_micros.unwrap_or_default(),
                    at: now,
                }))
            }
        });
        // Both windows at once: one round trip of latency, not two.
        let mut alerts = Vec::new();
        for result in futures::future::join_all(updates).await {
            if let Some(alert) = result? {
                alerts.push(alert);
            }
        }
        Ok(alerts)
    }

    /// A tenant's spend in the day and month windows of `now`.
    pub async fn usage(
        &self,
        tenant: &str,
        now: DateTime<Utc>,
    ) -> Result<[(Window, Spend); 2], BudgetError> {
        let [day, month] = windows(tenant, now, self.limits_for(tenant));
        let d = self
            .read(&day.key)
            .await?
            .map(|(s, _)| s)
            .unwrap_or_default();
        let m = self
            .read(&month.key)
            .await?
            .map(|(s, _)| s)
            .unwrap_or_default();
        Ok([(day, d), (month, m)])
    }

    async fn read(&self, key: &str) -> Result<Option<(Spend, u64)>, BudgetError> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| BudgetError::Store(e.to_string()))?;
        Ok(match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let spend = serde_json::from_slice(&e.value).unwrap_or_default();
                Some((spend, e.revision))
            }
            _ => None,
        })
    }

    /// Applies `change` to a window with compare-and-set, retrying on a concurrent change.
    async fn update<F>(&self, key: &str, mut change: F) -> Result<Spend, BudgetError>
    where
        F: FnMut(&mut Spend) -> Result<(), BudgetError>,
    {
        for _ in 0..CAS_ATTEMPTS {
            let current = self.read(key).await?;
            let (mut spend, revision) = match current {
                Some((s, r)) => (s, Some(r)),
                None => (Spend::default(), None),
            };
            change(&mut spend)?;
            let value = Bytes::from(
                serde_json::to_vec(&spend).map_err(|e| BudgetError::Store(e.to_string()))?,
            );
            let written = match revision {
                Some(r) => self.kv.update(key, value, r).await.map(|_| ()).is_ok(),
                None => self.kv.create(key, value).await.map(|_| ()).is_ok(),
            };
            if written {
                return Ok(spend);
            }
        }
        Err(BudgetError::Store(format!(
            "{key}: too much contention ({CAS_ATTEMPTS} attempts)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_keyed_by_tenant_and_period_with_limits_in_micros() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let limits = BudgetConfig {
            daily_usd: Some(2.5),
            monthly_usd: None,
            soft_ratio: 0.8,
        };
        let [day, month] = windows("acme", now, Some(&limits));
        assert_eq!(day.key, "acme.day.2026-11-25");
        assert_eq!(
            (day.hard_micros, day.soft_micros),
            (Some(2_500_000), Some(2_000_000))
        );
        assert_eq!(month.key, "acme.month.2026-11");
        assert_eq!((month.hard_micros, month.soft_micros), (None, None));
    }
}
