//! A circuit breaker per provider: closed, open, half-open.
//!
//! Closed counts consecutive failures and opens at the threshold; open refuses calls until its
//! time is up; then one probe is let through (half-open): its success closes the circuit, its
//! failure opens it again. Time is a parameter, so the state machine is tested without sleeping.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    state: BreakerState,
    threshold: u32,
    open_for: Duration,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Breaker {
            state: BreakerState::Closed { failures: 0 },
            threshold: threshold.max(1),
            open_for,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a call could go through now (routing's view; takes no probe).
    pub fn available(&self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } => now >= until,
            BreakerState::HalfOpen { probing } => !probing,
        }
    }

    /// Asks to make a call now; a half-open circuit lets exactly one probe through.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen { probing: true };
                true
            }
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { probing: false } => {
                self.state = BreakerState::HalfOpen { probing: true };
                true
            }
            BreakerState::HalfOpen { probing: true } => false,
        }
    }

    pub fn record_success(&mut self) {
        self.state = BreakerState::Closed { failures: 0 };
    }

    pub fn record_failure(&mut self, now: Instant) {
        self.state = match self.state {
            BreakerState::Closed { failures } if failures + 1 < self.threshold => {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            BreakerState::Open { until } => BreakerState::Open { until },
            _ => BreakerState::Open {
                until: now + self.open_for,
            },
        };
    }

    /// 0 closed, 1 open, 2 half-open: the `mcplane_model_breaker_state` gauge.
    pub fn gauge(&self) -> f64 {
        match self.state {
            BreakerState::Closed { .. } => 0.0,
            BreakerState::Open { .. } => 1.0,
            BreakerState::HalfOpen { .. } => 2.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_at_the_threshold_probes_once_then_closes_or_reopens() {
        let t0 = Instant::now();
        let open_for = Duration::from_secs(30);
        let mut b = Breaker::new(3, open_for);
        b.record_failure(t0);
        b.record_failure(t0);
        assert!(b.try_acquire(t0), "still closed after 2 of 3 failures");
        b.record_failure(t0);
        assert!(!b.available(t0) && !b.try_acquire(t0), "open after 3");

        let later = t0 + open_for;
        assert!(b.available(later));
        assert!(b.try_acquire(later), "one probe");
        assert!(!b.try_acquire(later), "only one probe at a time");
        b.record_failure(later);
        assert!(!b.try_acquire(later + Duration::from_secs(1)), "reopened");

        let again = later + open_for;
        assert!(b.try_acquire(again));
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(1));
        b.record_failure(t0);
        b.record_success();
        b.record_failure(t0);
        assert!(b.available(t0));
    }
}
