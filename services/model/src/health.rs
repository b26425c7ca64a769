//! What this replica knows of each provider's health: its circuit breaker, a moving window of
//! call latencies (for the p95 that routing reads), and its concurrency permits.
//!
//! Health is per replica: each replica learns from its own calls, which needs no coordination
//! and still opens a dead provider's circuit within a few calls on every replica.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::breaker::Breaker;
use crate::config::{BreakerConfig, ProviderConfig};

/// Calls remembered for the moving p95.
const WINDOW: usize = 100;

pub struct ProviderHealth {
    name: String,
    breaker: Mutex<Breaker>,
    latencies_ms: Mutex<VecDeque<u32>>,
    permits: Arc<Semaphore>,
}

impl ProviderHealth {
    pub fn new(config: &ProviderConfig, breaker: &BreakerConfig) -> Self {
        ProviderHealth {
            name: config.name.clone(),
            breaker: Mutex::new(Breaker::new(
                breaker.failure_threshold,
                Duration::from_millis(breaker.open_ms),
            )),
            latencies_ms: Mutex::new(VecDeque::with_capacity(WINDOW)),
            permits: Arc::new(Semaphore::new(config.max_concurrency)),
        }
    }

    pub fn available(&self, now: Instant) -> bool {
        self.breaker
            .lock()
            .map(|b| b.available(now))
            .unwrap_or(true)
    }

    /// Takes the right to call now (a half-open circuit lets one probe through).
    pub fn try_call(&self, now: Instant) -> bool {
        self.breaker
            .lock()
            .map(|mut b| b.try_acquire(now))
            .unwrap_or(true)
    }

    /// Records a finished call: its latency, and whether the provider failed (connect errors,
    /// timeouts, 429 and 5xx count; a refused request does not say the provider is down).
    pub fn record(&self, latency: Duration, provider_failed: bool, now: Instant) {
        if let Ok(mut b) = self.breaker.lock() {
            if provider_failed {
                b.record_failure(now);
            } else {
                b.record_success();
            }
            metrics::gauge!("mcplane_model_breaker_state", "provider" => self.name.clone())
                .set(b.gauge());
        }
        if !provider_failed {
            if let Ok(mut l) = self.latencies_ms.lock() {
                if l.len() == WINDOW {
                    l.pop_front();
                }
                l.push_back(u32::try_from(latency.as_millis()).unwrap_or(u32::MAX));
            }
        }
    }

    /// The p95 of the last calls, once there are any.
    pub fn p95_ms(&self) -> Option<u32> {
        let l = self.latencies_ms.lock().ok()?;
        if l.is_empty() {
            return None;
        }
        let mut sorted: Vec<u32> = l.iter().copied().collect();
        sorted.sort_unstable();
        let idx = (sorted.len() * 95).div_ceil(100).saturating_sub(1);
        sorted.get(idx).copied()
    }

    /// Waits up to `wait` for a concurrency permit.
    pub async fn permit(&self, wait: Duration) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout(wait, self.permits.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_of_the_moving_window() {
        let h = ProviderHealth::new(&ProviderConfig::local("x"), &BreakerConfig::default());
        assert_eq!(h.p95_ms(), None);
        let now = Instant::now();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms), false, now);
        }
        assert_eq!(h.p95_ms(), Some(95));
        for _ in 0..100 {
            h.record(Duration::from_millis(7), false, now);
        }
        assert_eq!(h.p95_ms(), Some(7), "old calls leave the window");
    }
}
