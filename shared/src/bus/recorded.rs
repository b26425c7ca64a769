//! Publish a message's outputs once: answer a redelivery from the ledger, otherwise record the
//! outputs before publishing them.
//!
//! Recording first is what makes a redelivery safe: if the publish fails or the process dies
//! before the ack, the next delivery republishes the very same bytes with the same
//! `Nats-Msg-Id`s (which JetStream then drops as duplicates) instead of deciding again. The
//! entry is the publications' raw bytes ([`super::outputs`]), not JSON around JSON text.

use std::future::Future;
use std::time::Duration;

use super::outputs::{decode_outputs, encode_outputs};
use super::{Bus, Disposition, Publication};
use crate::ledger::Ledger;

/// Publishes the outputs recorded under `key`, or produces, records and publishes them.
/// `produce` returns the disposition to end with when there is nothing to publish yet.
pub async fn publish_once<F, Fut>(
    bus: &Bus,
    ledger: &dyn Ledger,
    key: &str,
    stage: &'static str,
    produce: F,
) -> Disposition
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Vec<Publication>, Disposition>>,
{
    match ledger.get(key) {
        Ok(Some(stored)) => {
            metrics::counter!("mcplane_ledger_hits_total", "stage" => stage).increment(1);
            tracing::info!("already done; republishing the recorded outputs");
            return match decode_outputs(&stored) {
                Ok(pubs) => publish(bus, pubs).await,
                Err(e) => Disposition::Term(format!("corrupt ledger entry {key}: {e}")),
            };
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "ledger read failed");
            return Disposition::Nak(Duration::from_secs(1));
        }
    }
    let pubs = match produce().await {
        Ok(pubs) => pubs,
        Err(disposition) => return disposition,
    };
    if let Err(e) = ledger.put(key, &encode_outputs(&pubs)) {
        tracing::error!(error = %e, "ledger write failed");
        return Disposition::Nak(Duration::from_secs(1));
    }
    publish(bus, pubs).await
}

async fn publish(bus: &Bus, pubs: Vec<Publication>) -> Disposition {
    match bus.publish_all_owned(pubs).await {
        Ok(()) => Disposition::Ack,
        Err(e) => {
            tracing::warn!(error = %e, "publish failed; will retry");
            Disposition::Nak(Duration::from_secs(1))
        }
    }
}
