//! The invoke step: claim the request fleet-wide, route it, hold its estimated cost against the
//! tenant's budget, call the candidates in order with retries, settle the cost, and record what
//! happened in the claim.
//!
//! The claim (`<request id>.invoke` in the claims bucket, an atomic create) is what keeps a
//! model from being invoked twice when a redelivery lands on another replica whose ledger has
//! never seen the request: the recorded [`Invocation`] is reused, never recomputed. A claim left
//! pending for longer than any invocation can take means its owner died mid-call: the answer is
//! `invocation_in_doubt`, not a second call.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use chrono::Utc;
use mcplane_shared::bus::{Bus, Claim, Claims, Publication};
use mcplane_shared::pipeline::StageOutcome;
use mcplane_shared::{
    AiResponse, Envelope, ErrorBody, ErrorCode, Exchange, ServiceError, Step, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::budget::{BudgetError, Budgets, Reservation};
use crate::config::{Config, ProviderConfig};
use crate::health::ProviderHealth;
use crate::live::LiveRouting;
use crate::providers::{local::estimate_input_tokens, Call, FailureKind, Provider, ProviderError};
use crate::routing::{Decision, ProviderView, RouteInput};
use mcplane_shared::policy::live::LivePolicy;
use mcplane_shared::policy::{Action, Resource};

/// Longest wait honoured from a provider's `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The model `provider` is asked for: the one the client named if it serves it, else its own.
pub fn model_for<'a>(provider: &'a ProviderConfig, requested: Option<&'a str>) -> &'a str {
    requested
        .filter(|m| provider.all_models().any(|x| x == *m))
        .unwrap_or(&provider.model)
}

/// One try at one provider, as recorded in the claim and the audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub provider: String,
    /// `ok`, `retryable`, `permanent`, `interrupted`, `busy` or `circuit_open`.
    pub outcome: String,
    pub ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What an invocation came to, as recorded in the claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Invocation {
    Answered {
        response: AiResponse,
        routing: Decision,
        attempts: Vec<Attempt>,
    },
    /// No candidate could answer: a coded `degraded` reply (the incident pipeline then
    /// assembles its summary without AI).
    Degraded {
        message: String,
        routing: Decision,
        attempts: Vec<Attempt>,
    },
    /// Refused with a code: `budget_exceeded`, `stream_interrupted`.
    Refused {
        code: ErrorCode,
        message: String,
        routing: Decision,
        attempts: Vec<Attempt>,
    },
}

/// A configured provider with its client and this replica's view of its health.
pub struct Upstream {
    pub config: ProviderConfig,
    pub client: Provider,
    pub health: ProviderHealth,
}

impl Upstream {
    pub fn new(config: &Config, provider: &ProviderConfig, http: &reqwest::Client) -> Self {
        Upstream {
            client: Provider::from_config(provider, http),
            health: ProviderHealth::new(provider, &config.breaker),
            config: provider.clone(),
        }
    }
}

/// What the invoke step needs for every request.
pub struct InvokeStage {
    pub bus: Bus,
    pub upstreams: Vec<Upstream>,
    pub routing: LiveRouting,
    pub policy: LivePolicy,
    pub claims: Claims,
    pub budgets: Budgets,
    pub request_timeout: Duration,
    pub max_attempts: usize,
    pub queue_timeout: Duration,
    pub default_output_tokens: u32,
}

impl InvokeStage {
    fn timeout_of(&self, up: &Upstream) -> Duration {
        up.config
            .timeout_ms
            .map_or(self.request_timeout, Duration::from_millis)
    }

    /// How long a pending claim may be in progress before it is taken as in doubt.
    pub fn in_doubt_after(&self) -> Duration {
        let calls: Duration = self
            .upstreams
            .iter()
            .map(|u| (self.timeout_of(u) + MAX_RETRY_AFTER) * self.max_attempts as u32)
            .sum();
        calls + self.queue_timeout * self.upstreams.len() as u32 + Duration::from_secs(30)
    }

    /// The routing decision for a request as things stand (also what the dry run shows).
    pub fn decide(&self, env: &Envelope<Exchange>) -> (Decision, u32, u32) {
        let request = &env.body.request;
        let input_tokens = estimate_input_tokens(&env.body);
        let output_tokens = request.max_tokens.unwrap_or(self.default_output_tokens);
        let now = Instant::now();
        let views: Vec<ProviderView<'_>> = self
            .upstreams
            .iter()
            .map(|u| ProviderView {
                config: &u.config,
                available: u.health.available(now),
                p95_ms: u.health.p95_ms(),
            })
            .collect();
        let roles = env
            .principal
            .as_ref()
            .map(|p| p.roles.as_slice())
            .unwrap_or_default();
        let input = RouteInput {
            id: env.id,
            request_type: request.request_type,
            tenant: &env.tenant,
            roles,
            classification: env.classification,
            max_latency_ms: request.max_latency_ms,
            model: request.model.as_deref(),
            input_tokens,
            output_tokens,
        };
        let mut decision = self.routing.current().decide(&views, &input);
        self.apply_policy(env, &mut decision);
        (decision, input_tokens, output_tokens)
    }

    /// Drops the candidates whose model the policy does not let this caller have invoked, with
    /// the same question `GET /v1/models` asks ([`crate::catalog`]), so what is listed is what
    /// is allowed.
    fn apply_policy(&self, env: &Envelope<Exchange>, decision: &mut Decision) {
        let policy = self.policy.current();
        decision.policy_version = Some(policy.version().to_string());
        let requested = env.body.request.model.as_deref();
        let mut kept = Vec::with_capacity(decision.order.len());
        for &i in &decision.order {
            let up = &self.upstreams[i].config;
            let model = model_for(up, requested);
            let allowed = env.principal.as_ref().is_some_and(|p| {
                policy.allows(
                    p,
                    Action::Invoke,
                    &Resource::Model {
                        id: model,
                        provider: &up.name,
                        boundary: up.boundary().as_str(),
                    },
                    env.classification,
                )
            });
            if allowed {
                kept.push(i);
            } else {
                decision.excluded.push(crate::routing::Exclusion {
                    provider: up.name.clone(),
                    reason: format!(
                        "policy {} does not permit invoking {model}",
                        policy.version()
                    ),
                });
            }
        }
        decision.candidates = kept
            .iter()
            .map(|i| self.upstreams[*i].config.name.clone())
            .collect();
        decision.order = kept;
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
                    tracing::info!("invocation already done; reusing its recorded outcome");
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
                let inv = match self.invoke(&env).await {
                    Ok(inv) => inv,
                    Err(e) => {
                        // Nothing was called: give the claim back and try again later.
                        tracing::warn!(error = %e, "cannot invoke now; will retry");
                        if let Err(e) = self.claims.release(&key).await {
                            tracing::error!(error = %e, "cannot release the claim");
                        }
                        return StageOutcome::Retry(Duration::from_secs(1));
                    }
                };
                let (inv, recorded) = match self.recordable(inv) {
                    Ok(recorded) => recorded,
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
                // Fault injection for the crash-after-call tests (a no-op unless built with
                // the `failpoints` feature and armed through FAILPOINTS).
                fail::fail_point!("model-after-invoke");
                (inv, "won")
            }
        };
        match invocation {
            Invocation::Answered {
                response,
                routing,
                attempts,
            } => {
                let detail = json!({
                    "provider": response.provider,
                    "model": response.model,
                    "usage": response.usage,
                    "routing": routing,
                    "attempts": attempts,
                    "claim": claim,
                });
                env.body.response = Some(response);
                StageOutcome::Continue {
                    env: Box::new(env),
                    detail,
                }
            }
            Invocation::Degraded {
                message,
                routing,
                attempts,
            } => {
                let error = ErrorBody::new(ErrorCode::Degraded, message);
                let detail = json!({"routing": routing, "attempts": attempts, "claim": claim});
                fail(env, error, detail)
            }
            Invocation::Refused {
                code,
                message,
                routing,
                attempts,
            } => {
                let error = ErrorBody::new(code, message);
                let detail = json!({"routing": routing, "attempts": attempts, "claim": claim});
                fail(env, error, detail)
            }
        }
    }

    /// The invocation as the claim records it. An answer too large for the bus (a provider
    /// asked for a whole document) could never be recorded nor handed on: every delivery would
    /// fail the same way until the claim was taken as in doubt. It is recorded as refused with
    /// `payload_too_large` instead, so the request ends now with a coded error (the call is
    /// still spent, and counted, once).
    fn recordable(&self, inv: Invocation) -> Result<(Invocation, Bytes), serde_json::Error> {
        let recorded = serde_json::to_vec(&inv)?;
        if self.bus.fits(recorded.len()) {
            return Ok((inv, Bytes::from(recorded)));
        }
        let Invocation::Answered {
            response,
            routing,
            attempts,
        } = inv
        else {
            // Only an answer carries a provider's text; the other outcomes are small.
            return Ok((inv, Bytes::from(recorded)));
        };
        let max_payload = self.bus.max_payload();
        tracing::warn!(
            provider = %response.provider,
            bytes = recorded.len(),
            max_payload,
            "the model's answer is too large for the bus; the request ends with payload_too_large"
        );
        metrics::counter!("mcplane_requests_too_large_total", "stage" => "invoke").increment(1);
        let refused = Invocation::Refused {
            code: ErrorCode::PayloadTooLarge,
            message: format!(
                "the answer of {} ({} bytes with its record) is larger than the bus carries \
                 (max_payload {max_payload} bytes); ask for a shorter answer (max_tokens)",
                response.provider,
                recorded.len()
            ),
            routing,
            attempts,
        };
        let recorded = serde_json::to_vec(&refused)?;
        Ok((refused, Bytes::from(recorded)))
    }

    /// Routes, reserves, calls and settles. `Err` only when nothing was called and the request
    /// should be tried again later (the budget store is unreachable).
    async fn invoke(&self, env: &Envelope<Exchange>) -> Result<Invocation, ServiceError> {
        let (routing, input_tokens, output_tokens) = self.decide(env);
        let mut attempts = Vec::new();
        let policy_denied = |e: &crate::routing::Exclusion| e.reason.starts_with("policy ");
        if routing.order.is_empty() && routing.excluded.iter().any(policy_denied) {
            // Not a fault to degrade around: the caller may not use what could serve it.
            metrics::counter!("mcplane_model_policy_denials_total").increment(1);
            let models: Vec<&str> = routing
                .excluded
                .iter()
                .filter(|e| policy_denied(e))
                .map(|e| e.reason.as_str())
                .collect();
            return Ok(Invocation::Refused {
                code: ErrorCode::Forbidden,
                message: format!(
                    "no model this caller may use can serve it ({})",
                    models.join("; ")
                ),
                routing,
                attempts,
            });
        }
        if routing.order.is_empty() {
            metrics::counter!("mcplane_model_degraded_total").increment(1);
            let why: Vec<String> = routing
                .excluded
                .iter()
                .map(|e| format!("{}: {}", e.provider, e.reason))
                .collect();
            return Ok(Invocation::Degraded {
                message: format!(
                    "no model provider can serve this request now ({})",
                    why.join("; ")
                ),
                routing,
                attempts,
            });
        }
        let estimate = routing
            .order
            .iter()
            .map(|i| {
                self.upstreams[*i]
                    .config
                    .cost_micros(input_tokens, output_tokens)
            })
            .max()
            .unwrap_or(0);
        let reservation = match self
            .budgets
            .reserve(&env.tenant, estimate, Utc::now())
            .await
        {
            Ok(r) => r,
            Err(BudgetError::Store(e)) => return Err(ServiceError::bus(e)),
            Err(e @ BudgetError::Exceeded { .. }) => {
                metrics::counter!("mcplane_model_budget_denials_total", "tenant" => env.tenant.clone())
                    .increment(1);
                return Ok(Invocation::Refused {
                    code: ErrorCode::BudgetExceeded,
                    message: e.to_string(),
                    routing,
                    attempts,
                });
            }
        };

        for &i in &routing.order {
            let up = &self.upstreams[i];
            let Some(_permit) = up.health.permit(self.queue_timeout).await else {
                attempts.push(attempt(
                    up,
                    "busy",
                    Duration::ZERO,
                    Some("at its concurrency limit".into()),
                ));
                continue;
            };
            let model = model_for(&up.config, env.body.request.model.as_deref());
            let mut delays = ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(self.max_attempts.saturating_sub(1))
                .with_jitter()
                .build();
            loop {
                if !up.health.try_call(Instant::now()) {
                    attempts.push(attempt(up, "circuit_open", Duration::ZERO, None));
                    break;
                }
                let started = Instant::now();
                let call = Call {
                    exchange: &env.body,
                    model,
                    stream: env.body.request.stream,
                };
                let timeout = self.timeout_of(up);
                let result = match tokio::time::timeout(timeout, up.client.invoke(call)).await {
                    Ok(r) => r,
                    Err(_) => Err(ProviderError::retryable(format!(
                        "provider {} timed out after {timeout:?}",
                        up.config.name
                    ))),
                };
                let elapsed = started.elapsed();
                let failed = matches!(&result, Err(e) if e.kind == FailureKind::Retryable);
                up.health.record(elapsed, failed, Instant::now());
                let label = match &result {
                    Ok(_) => "ok",
                    Err(e) => kind_label(e.kind),
                };
                metrics::histogram!("mcplane_model_call_seconds", "provider" => up.config.name.clone(), "outcome" => label)
                    .record(elapsed.as_secs_f64());
                match result {
                    Ok(mut response) => {
                        attempts.push(attempt(up, "ok", elapsed, None));
                        response.usage.cost_micros = up
                            .config
                            .cost_micros(response.usage.input_tokens, response.usage.output_tokens);
                        self.record_usage(env, &response);
                        self.settle(reservation, Some(response.usage)).await;
                        return Ok(Invocation::Answered {
                            response,
                            routing,
                            attempts,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(provider = %up.config.name, error = %e, kind = label, "provider call failed");
                        attempts.push(attempt(up, label, elapsed, Some(e.message.clone())));
                        if e.kind == FailureKind::Interrupted {
                            // The provider answered in part and charged for it: settle what was
                            // held, and say so rather than call another model for the rest.
                            let charged = Usage {
                                cost_micros: reservation.reserved_micros,
                                ..Usage::default()
                            };
                            self.settle(reservation, Some(charged)).await;
                            return Ok(Invocation::Refused {
                                code: ErrorCode::StreamInterrupted,
                                message: e.message,
                                routing,
                                attempts,
                            });
                        }
                        let delay = delays.next().filter(|_| e.kind == FailureKind::Retryable);
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
        self.settle(reservation, None).await;
        metrics::counter!("mcplane_model_degraded_total").increment(1);
        let last = attempts
            .iter()
            .rev()
            .find_map(|a| a.error.clone())
            .unwrap_or_else(|| "every candidate was busy or had its circuit open".into());
        Ok(Invocation::Degraded {
            message: format!("every model provider is unavailable: {last}"),
            routing,
            attempts,
        })
    }

    fn record_usage(&self, env: &Envelope<Exchange>, response: &AiResponse) {
        let (tenant, provider) = (env.tenant.clone(), response.provider.clone());
        metrics::counter!("mcplane_model_tokens_total", "tenant" => tenant.clone(), "provider" => provider.clone(), "direction" => "input")
            .increment(u64::from(response.usage.input_tokens));
        metrics::counter!("mcplane_model_tokens_total", "tenant" => tenant.clone(), "provider" => provider.clone(), "direction" => "output")
            .increment(u64::from(response.usage.output_tokens));
        metrics::counter!("mcplane_model_cost_micros_total", "tenant" => tenant, "provider" => provider)
            .increment(response.usage.cost_micros);
    }

    /// Settles a reservation and announces any soft limit it crossed. A failure here is logged,
    /// not fatal: the answer exists, and the window keeps the (higher) reserved amount.
    async fn settle(&self, reservation: Reservation, usage: Option<Usage>) {
        let tenant = reservation.tenant.clone();
        match self.budgets.settle(reservation, usage, Utc::now()).await {
            Ok(alerts) => {
                for alert in alerts {
                    tracing::warn!(tenant = %alert.tenant, window = %alert.window, spent_micros = alert.spent_micros, "budget soft limit crossed");
                    let msg_id = format!("{}:{}:{}:soft", alert.tenant, alert.window, alert.period);
                    let env = Envelope::new(tenant.clone(), alert);
                    let publication = Publication::envelope(
                        self.bus.subjects.usage(&tenant, "budget"),
                        &env,
                        "budget",
                    )
                    .map(|mut p| {
                        p.msg_id = Some(msg_id);
                        p
                    });
                    match publication {
                        Ok(p) => {
                            if let Err(e) = self.bus.publish_all(&[p]).await {
                                tracing::error!(error = %e, "cannot publish a budget alert");
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "cannot encode a budget alert"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot settle the budget"),
        }
    }
}

fn kind_label(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Retryable => "retryable",
        FailureKind::Permanent => "permanent",
        FailureKind::Interrupted => "interrupted",
    }
}

fn attempt(up: &Upstream, outcome: &str, elapsed: Duration, error: Option<String>) -> Attempt {
    Attempt {
        provider: up.config.name.clone(),
        outcome: outcome.to_string(),
        ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        error,
    }
}

fn fail(env: Envelope<Exchange>, error: ErrorBody, detail: serde_json::Value) -> StageOutcome {
    StageOutcome::Fail {
        env: Box::new(env),
        error,
        detail,
    }
}
