//! The invoke step: claim the request fleet-wide, call the providers in order with retries,
//! record what happened in the claim, and pass the response on.
//!
//! The claim (`<request id>.invoke` in the claims bucket, an atomic create) is what keeps a
//! model from being invoked twice when a redelivery lands on another replica whose ledger has
//! never seen the request. The claim's recorded outcome is reused, never recomputed. A claim
//! left pending for longer than any invocation can take means its owner died mid-call: the
//! answer is `invocation_in_doubt`, not a second call.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use mcplane_shared::bus::{Claim, Claims};
use mcplane_shared::pipeline::StageOutcome;
use mcplane_shared::{AiResponse, Envelope, ErrorBody, ErrorCode, Exchange, Step};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::providers::{Provider, ProviderError};

/// Longest wait honoured from a provider's `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// What an invocation came to, as recorded in the claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Invocation {
    Answered {
        response: AiResponse,
        attempts: u32,
    },
    /// Every provider failed: the request is answered with a coded `degraded` error.
    Degraded {
        message: String,
        attempts: u32,
    },
}

/// What the invoke step needs for every request.
pub struct InvokeStage {
    pub providers: Vec<Provider>,
    pub claims: Claims,
    pub request_timeout: Duration,
    pub max_attempts: usize,
}

impl InvokeStage {
    /// How long a pending claim may be in progress before it is taken as in doubt.
    pub fn in_doubt_after(&self) -> Duration {
        let per_provider = (self.request_timeout + MAX_RETRY_AFTER) * self.max_attempts as u32;
        per_provider * self.providers.len() as u32 + Duration::from_secs(30)
    }

    pub async fn handle(&self, mut env: Envelope<Exchange>, step: Step) -> StageOutcome {
        if step != Step::Invoke {
            let error = ErrorBody::new(
                ErrorCode::Misrouted,
                format!("the model service does not perform {}", step.as_str()),
            );
            return fail(env, error, json!({}));
        }
        let key = format!("{}.invoke", env.id);
        let (invocation, claim) = match self.claims.claim(&key).await {
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim the invocation; will retry");
                return StageOutcome::Retry(Duration::from_secs(1));
            }
            Ok(Claim::Done(bytes)) => match serde_json::from_slice::<Invocation>(&bytes) {
                Ok(inv) => {
                    metrics::counter!("mcplane_model_claims_reused_total").increment(1);
                    tracing::info!("invocation already done elsewhere; reusing its outcome");
                    (inv, "reused")
                }
                Err(e) => {
                    let error = ErrorBody::new(
                        ErrorCode::Internal,
                        format!("the recorded invocation cannot be read: {e}"),
                    );
                    return fail(env, error, json!({"claim": "unreadable"}));
                }
            },
            Ok(Claim::Pending { age }) if age < self.in_doubt_after() => {
                tracing::info!(?age, "invocation in progress elsewhere; will look again");
                return StageOutcome::Retry(Duration::from_secs(2));
            }
            Ok(Claim::Pending { age }) => {
                let error = ErrorBody::new(
                    ErrorCode::InvocationInDoubt,
                    "an earlier attempt at this request stopped mid-invocation; the model is \
                     not invoked twice",
                );
                tracing::error!(?age, "invocation in doubt");
                return fail(env, error, json!({"claim": "in_doubt"}));
            }
            Ok(Claim::Won) => {
                let inv = self.invoke(&env.body).await;
                let recorded = match serde_json::to_vec(&inv) {
                    Ok(v) => Bytes::from(v),
                    Err(e) => {
                        let error = ErrorBody::new(ErrorCode::Internal, e.to_string());
                        return fail(env, error, json!({}));
                    }
                };
                if let Err(e) = self.claims.complete(&key, recorded).await {
                    // The call happened but is not recorded: a redelivery will find the claim
                    // pending and, once stale, answer in doubt rather than call again.
                    tracing::error!(error = %e, "cannot record the invocation; will retry");
                    return StageOutcome::Retry(Duration::from_secs(1));
                }
                (inv, "won")
            }
        };
        match invocation {
            Invocation::Answered { response, attempts } => {
                let detail = json!({
                    "provider": response.provider,
                    "model": response.model,
                    "usage": response.usage,
                    "attempts": attempts,
                    "claim": claim,
                });
                env.body.response = Some(response);
                StageOutcome::Continue {
                    env: Box::new(env),
                    detail,
                }
            }
            Invocation::Degraded { message, attempts } => {
                let error = ErrorBody::new(ErrorCode::Degraded, message);
                fail(env, error, json!({"attempts": attempts, "claim": claim}))
            }
        }
    }

    /// Tries each provider in order, retrying retryable failures with backoff and jitter.
    async fn invoke(&self, exchange: &Exchange) -> Invocation {
        let mut attempts = 0u32;
        let mut failures = Vec::new();
        for provider in &self.providers {
            let mut delays = ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(self.max_attempts.saturating_sub(1))
                .with_jitter()
                .build();
            loop {
                attempts += 1;
                let started = std::time::Instant::now();
                let result =
                    match tokio::time::timeout(self.request_timeout, provider.invoke(exchange))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(ProviderError::retryable(format!(
                            "provider {} timed out after {:?}",
                            provider.name(),
                            self.request_timeout
                        ))),
                    };
                let outcome = if result.is_ok() { "ok" } else { "error" };
                metrics::histogram!("mcplane_model_call_seconds", "provider" => provider.name().to_string(), "outcome" => outcome)
                    .record(started.elapsed().as_secs_f64());
                match result {
                    Ok(response) => return Invocation::Answered { response, attempts },
                    Err(e) => {
                        tracing::warn!(provider = provider.name(), error = %e, retryable = e.retryable, "provider call failed");
                        let delay = delays.next().filter(|_| e.retryable);
                        failures.push(e.message.clone());
                        match delay {
                            Some(d) => {
                                let d =
                                    e.retry_after.map_or(d, |ra| ra.min(MAX_RETRY_AFTER).max(d));
                                tokio::time::sleep(d).await;
                            }
                            None => break,
                        }
                    }
                }
            }
        }
        metrics::counter!("mcplane_model_degraded_total").increment(1);
        Invocation::Degraded {
            message: format!(
                "every model provider is unavailable: {}",
                failures.last().map(String::as_str).unwrap_or("no provider")
            ),
            attempts,
        }
    }
}

fn fail(env: Envelope<Exchange>, error: ErrorBody, detail: serde_json::Value) -> StageOutcome {
    StageOutcome::Fail {
        env: Box::new(env),
        error,
        detail,
    }
}
