//! Keying alerts onto partitions: the same partition key (tenant and group, see `rules`)
//! always lands on the same partition, so one owner holds all the state needed to group them;
//! and reading the segments a partition message holds.
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

/// One raw message's alerts in a partition message: its ledger key, its alerts.
pub type SegmentAlerts = (String, Vec<Envelope<CanonicalAlert>>);

/// The segments of one partition message, each with its ledger key and its alerts, in order.
///
/// An [`AlertBatch`] listing `segments` gathers the alerts of several raw messages: each
/// segment is keyed by its name and its alerts carry its trace. One that lists none holds the
/// alerts of one raw message, keyed by the message's msg id (as every batch was before ingest
/// gathered them); so is a single canonical alert (what ingest published before batches,
/// still in the stream after an upgrade). The alerts of a segment are applied in one step, so
/// one ledger entry answers for them all.
pub fn partition_segments(
    payload: &[u8],
    msg_id: Option<String>,
) -> Result<Vec<SegmentAlerts>, ErrorCode> {
    let Ok(mut batch) = Envelope::<AlertBatch>::from_slice(payload) else {
        let env = Envelope::<CanonicalAlert>::from_slice(payload)?;
        let key = format!("alert:{}", msg_id.unwrap_or_else(|| env.id.to_string()));
        return Ok(vec![(key, vec![env])]);
    };
    let segments = std::mem::take(&mut batch.body.segments);
    if segments.is_empty() {
        let key = format!("alert:{}", msg_id.unwrap_or_else(|| batch.id.to_string()));
        return Ok(vec![(key, batch.into_alerts().collect())]);
    }
    let listed = segments.iter().try_fold(0usize, |sum, s| {
        (s.alerts > 0 && !s.key.is_empty())
            .then(|| sum.checked_add(s.alerts))
            .flatten()
    });
    if listed != Some(batch.body.alerts.len()) {
        return Err(ErrorCode::InvalidEnvelope);
    }
    let mut alerts = batch.into_alerts();
    Ok(segments
        .into_iter()
        .map(|s| {
            let envs = alerts
                .by_ref()
                .take(s.alerts)
                .map(|mut env| {
                    env.trace = s.trace.clone();
                    env
                })
                .collect();
            (format!("alert:{}", s.key), envs)
        })
        .collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use mcplane_shared::envelope::TraceContext;
    use mcplane_shared::{AlertSegment, BatchedAlert};

    use super::*;

    fn one(found: Result<Vec<SegmentAlerts>, ErrorCode>) -> SegmentAlerts {
        let mut found = found.unwrap();
        assert_eq!(found.len(), 1, "one segment");
        found.remove(0)
    }

    /// `n` canonical alerts about one service, as a batch holds them.
    pub(crate) fn batched(n: usize) -> Vec<BatchedAlert> {
        let payload: Vec<serde_json::Value> = (0..n)
            .map(|i| serde_json::json!({"title": format!("alert {i}"), "service": "search"}))
            .collect();
        mcplane_shared::alerts::normalize(
            "generic",
            "acme",
            &serde_json::Value::Array(payload),
            chrono::Utc::now(),
        )
        .unwrap()
        .into_iter()
        .map(|alert| BatchedAlert {
            id: uuid::Uuid::now_v7(),
            alert,
        })
        .collect()
    }

    #[test]
    fn a_gathered_message_is_read_as_its_segments_each_with_its_key_and_trace() {
        let traces = [TraceContext::new_root(), TraceContext::new_root()];
        let segment = |key: &str, alerts: usize, trace: &TraceContext| AlertSegment {
            key: key.into(),
            alerts,
            trace: trace.clone(),
        };
        let batch = Envelope::new(
            "acme",
            AlertBatch {
                alerts: batched(3),
                segments: vec![
                    segment("raw-a:p1:normalize", 2, &traces[0]),
                    segment("raw-b:p1:normalize", 1, &traces[1]),
                ],
            },
        );
        let bytes = serde_json::to_vec(&batch).unwrap();
        // The message's own msg id names the gathering, not a segment: it is not a ledger key.
        let found = partition_segments(&bytes, Some("0123abcdx2:p1:normalize".into())).unwrap();
        let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["alert:raw-a:p1:normalize", "alert:raw-b:p1:normalize"]
        );
        let ids: Vec<Vec<uuid::Uuid>> = found
            .iter()
            .map(|(_, envs)| envs.iter().map(|e| e.id).collect())
            .collect();
        let sent: Vec<uuid::Uuid> = batch.body.alerts.iter().map(|a| a.id).collect();
        assert_eq!(ids, [sent[..2].to_vec(), sent[2..].to_vec()]);
        for ((_, envs), trace) in found.iter().zip(&traces) {
            assert!(envs.iter().all(|e| &e.trace == trace && e.tenant == "acme"));
        }

        // Segments that do not cover the alerts exactly, or name an empty run, are refused.
        for segments in [
            vec![segment("a", 2, &traces[0])],
            vec![segment("a", 2, &traces[0]), segment("b", 2, &traces[1])],
            vec![segment("a", 3, &traces[0]), segment("b", 0, &traces[1])],
            vec![segment("", 3, &traces[0])],
            vec![
                segment("a", usize::MAX, &traces[0]),
                segment("b", 4, &traces[1]),
            ],
        ] {
            let bad = Envelope::new(
                "acme",
                AlertBatch {
                    alerts: batched(3),
                    segments,
                },
            );
            let bytes = serde_json::to_vec(&bad).unwrap();
            assert_eq!(
                partition_segments(&bytes, None).unwrap_err(),
                ErrorCode::InvalidEnvelope
            );
        }
    }

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
                segments: Vec::new(),
            },
        );
        let bytes = serde_json::to_vec(&batch).unwrap();
        let (key, got) = one(partition_segments(
            &bytes,
            Some("raw-1:p2:normalize".into()),
        ));
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
        let (key, got) = one(partition_segments(&bytes, Some("raw-0:0:normalize".into())));
        assert_eq!(key, "alert:raw-0:0:normalize");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, single.id);

        assert!(partition_segments(b"{}", None).is_err());
        let raw = Envelope::new(
            "acme",
            mcplane_shared::RawAlert {
                source: "generic".into(),
                payload,
                received_at: now,
            },
        );
        assert!(partition_segments(&serde_json::to_vec(&raw).unwrap(), None).is_err());
    }
}
