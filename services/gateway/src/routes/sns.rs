//! The SNS subscription handshake for `POST /v1/alerts/cloudwatch`.
//!
//! Subscribing an HTTPS endpoint to an SNS topic makes SNS post a `SubscriptionConfirmation`
//! whose `SubscribeURL` must be fetched before any alarm is delivered. The gateway fetches it
//! itself, but only from hosts in `gateway.sns_confirm_hosts` (by default `amazonaws.com` over
//! https) and without following redirects, so a forged confirmation cannot make the gateway
//! call anything else. Only an authenticated tenant's webhook gets this far.

use std::time::Duration;

use mcplane_shared::alerts::cloudwatch::{Sns, SnsType};
use mcplane_shared::ErrorCode;

use crate::config::Config;
use crate::error::ApiError;

/// How long the `SubscribeURL` may take to answer.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// What the gateway did with an SNS message that is not a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    Confirmed,
    /// An `UnsubscribeConfirmation`: nothing to do, the topic stopped sending.
    Unsubscribed,
}

/// Confirms a subscription (or acknowledges an unsubscription); `None` for notifications.
pub async fn handshake(config: &Config, sns: &Sns) -> Result<Option<Handshake>, ApiError> {
    match sns.kind {
        SnsType::Notification => Ok(None),
        SnsType::UnsubscribeConfirmation => Ok(Some(Handshake::Unsubscribed)),
        SnsType::SubscriptionConfirmation => {
            let url = sns.subscribe_url.as_deref().unwrap_or_default();
            if !config.may_confirm_sns(url) {
                return Err(ApiError::new(
                    ErrorCode::InvalidAlert,
                    "SubscribeURL: not an allowed SNS host (gateway.sns_confirm_hosts); \
                     subscription not confirmed",
                ));
            }
            confirm(url).await?;
            tracing::info!(topic = %sns.topic_arn, message_id = %sns.message_id, "SNS subscription confirmed");
            Ok(Some(Handshake::Confirmed))
        }
    }
}

async fn confirm(url: &str) -> Result<(), ApiError> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(CONFIRM_TIMEOUT)
        .build()
        .map_err(|e| ApiError::internal(format!("cannot build an HTTP client: {e}")))?;
    let response = client.get(url).send().await.map_err(|e| {
        tracing::warn!(error = %e, "SNS SubscribeURL unreachable");
        ApiError::unavailable("the SNS SubscribeURL could not be reached; SNS will retry")
    })?;
    if !response.status().is_success() {
        tracing::warn!(status = %response.status(), "SNS SubscribeURL refused the confirmation");
        return Err(ApiError::unavailable(format!(
            "the SNS SubscribeURL answered {}; SNS will retry",
            response.status()
        )));
    }
    Ok(())
}
