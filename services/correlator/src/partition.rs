//! Keying alerts onto partitions: the same partition key (tenant and group, see `rules`)
//! always lands on the same partition, so one owner holds all the state needed to group them;
//! and reading what a partition message holds.
//!
//! FNV-1a is stable across builds and platforms (unlike `std`'s hasher), which matters
//! because every replica and every restart must agree.

use mcplane_shared::alerts::fingerprint::fnv1a64;
use mcplane_shared::{AlertBatch, CanonicalAlert, Envelope, ErrorCode};

/// The partition of `tenant`'s alerts about `service`, in `0..partitions`.
pub fn partition_of(tenant: &str, service: &str, partitions: u32) -> u32 {
    partition_of_key(&format!("{tenant}\n{service}"), partitions)
}

/// The partition of a partition key, in `0..partitions`.
pub fn partition_of_key(key: &str, partitions: u32) -> u32 {
    (fnv1a64(key.as_bytes()) % u64::from(partitions.max(1))) as u32
}

/// The ledger key and the alerts of one partition message: an [`AlertBatch`] (what ingest
/// publishes), or a single canonical alert (what it published before batches, still in the
/// stream after an upgrade). The alerts of a message are applied in one step, so one ledger
/// entry answers for them all.
pub fn partition_alerts(
    payload: &[u8],
    msg_id: Option<String>,
) -> Result<(String, Vec<Envelope<CanonicalAlert>>), ErrorCode> {
    match Envelope::<AlertBatch>::from_slice(payload) {
        Ok(batch) => {
            let key = format!("alert:{}", msg_id.unwrap_or_else(|| batch.id.to_string()));
            Ok((key, batch.into_alerts().collect()))
        }
        Err(_) => {
            let env = Envelope::<CanonicalAlert>::from_slice(payload)?;
            let key = format!("alert:{}", msg_id.unwrap_or_else(|| env.id.to_string()));
            Ok((key, vec![env]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_partition_and_keys_spread() {
        assert_eq!(
            partition_of("acme", "checkout", 8),
            partition_of("acme", "checkout", 8)
        );
        let used: std::collections::BTreeSet<u32> = (0..64)
            .map(|i| partition_of("acme", &format!("svc-{i}"), 8))
            .collect();
        assert!(used.len() >= 6, "{used:?}");
        assert!(used.iter().all(|p| *p < 8));
        assert_eq!(partition_of("acme", "checkout", 1), 0);
    }

    #[test]
    fn the_separator_keeps_tenant_and_service_apart() {
        // "ab" + "c" and "a" + "bc" must not collide by construction.
        let a = fnv1a64(b"ab\nc");
        let b = fnv1a64(b"a\nbc");
        assert_ne!(a, b);
    }

    #[test]
    fn a_partition_message_is_a_batch_or_a_single_alert_and_each_alert_keeps_its_id() {
        let now = chrono::Utc::now();
        let payload = serde_json::json!([
            {"title": "a", "service": "search"},
            {"title": "b", "service": "search"}
        ]);
        let alerts = mcplane_shared::alerts::normalize("generic", "acme", &payload, now).unwrap();
        let batch = Envelope::new(
            "acme",
            mcplane_shared::AlertBatch {
                alerts: alerts
                    .iter()
                    .map(|a| mcplane_shared::BatchedAlert {
                        id: uuid::Uuid::now_v7(),
                        alert: a.clone(),
                    })
                    .collect(),
            },
        );
        let bytes = serde_json::to_vec(&batch).unwrap();
        let (key, got) = partition_alerts(&bytes, Some("raw-1:p2:normalize".into())).unwrap();
        assert_eq!(key, "alert:raw-1:p2:normalize");
        assert_eq!(got.len(), 2);
        for (env, item) in got.iter().zip(&batch.body.alerts) {
            assert_eq!(env.id, item.id, "each alert keeps its own id");
            assert_eq!(env.body, item.alert);
            assert_eq!(env.tenant, "acme");
            assert_eq!(env.trace, batch.trace);
        }

        let single = Envelope::new("acme", alerts[0].clone());
        let bytes = serde_json::to_vec(&single).unwrap();
        let (key, got) = partition_alerts(&bytes, Some("raw-0:0:normalize".into())).unwrap();
        assert_eq!(key, "alert:raw-0:0:normalize");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, single.id);

        assert!(partition_alerts(b"{}", None).is_err());
        let raw = Envelope::new(
            "acme",
            mcplane_shared::RawAlert {
                source: "generic".into(),
                payload,
                received_at: now,
            },
        );
        assert!(partition_alerts(&serde_json::to_vec(&raw).unwrap(), None).is_err());
    }
}
