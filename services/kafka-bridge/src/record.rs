//! One Kafka record becomes one publication: the raw-alert envelope on
//! `mcplane.alerts.in.<tenant>.<source>`, exactly as the gateway's webhook would publish it,
//! or — when it can never be an alert — a coded dead letter on
//! `mcplane.alerts.dead.<tenant>.<source>`.
//!
//! Everything here is derived from the record alone (its topic, partition, offset, timestamp
//! and bytes), so reading a record again after a crash produces the same `Nats-Msg-Id` and the
//! same envelope id: JetStream drops the replay inside its window, and past it the correlator's
//! ledger (keyed by envelope id) still does.

use chrono::{DateTime, TimeZone, Utc};
use mcplane_shared::bus::Publication;
use mcplane_shared::subjects::validate_token;
use mcplane_shared::{
    alerts, DeadLetter, Envelope, ErrorCode, RawAlert, RecordOrigin, ServiceError, Subjects,
    TraceContext,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::Config;

/// Record headers that name the tenant and source on topics whose route leaves them open.
pub const TENANT_HEADER: &str = "mcplane-tenant";
pub const SOURCE_HEADER: &str = "mcplane-source";
/// A W3C trace context from the producer, continued in the envelope.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The `stage` part of the bridge's envelope message ids and audit names.
pub const STAGE: &str = "kafka";
/// The tenant and source tokens of a dead letter whose own could not be determined.
pub const UNROUTED: &str = "_unrouted";
/// How much of a dead record's value is kept in the dead letter.
const DEAD_PAYLOAD_LIMIT: usize = 64 * 1024;

/// What the bridge needs of a Kafka record, copied out of the consumer's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch (create or log-append time), when the record has one.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The headers the bridge reads (tenant, source, traceparent), as text.
    pub headers: Vec<(String, String)>,
}

impl KafkaRecord {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `kafka:<topic>:<partition>:<offset>`: the record's identity on the bus.
    pub fn msg_id(&self) -> String {
        format!("kafka:{}:{}:{}", self.topic, self.partition, self.offset)
    }

    /// The record's time, or `now` for a record without one.
    fn time(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.timestamp_ms
            .filter(|ms| *ms >= 0)
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .unwrap_or(now)
    }

    /// A UUIDv7 whose time is the record's and whose random bits are a hash of its position,
    /// so the same record always gets the same envelope id.
    fn envelope_id(&self, time: DateTime<Utc>) -> Uuid {
        let digest = Sha256::digest(self.msg_id().as_bytes());
        let mut bits = [0u8; 10];
        bits.copy_from_slice(&digest[..10]);
        let millis = u64::try_from(time.timestamp_millis()).unwrap_or(0);
        uuid::Builder::from_unix_timestamp_millis(millis, &bits).into_uuid()
    }

    fn origin(&self) -> RecordOrigin {
        RecordOrigin {
            system: "kafka".to_string(),
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            key: self
                .key
                .as_ref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
        }
    }
}

/// Why a record can never become an alert, and where its dead letter goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
    pub tenant: String,
    pub source: String,
}

/// The alert publication for `record`, or why there can be none.
pub fn to_alert(
    record: &KafkaRecord,
    config: &Config,
    subjects: &Subjects,
    now: DateTime<Utc>,
) -> Result<Publication, Rejection> {
    let route = config.route(&record.topic);
    let tenant = route
        .and_then(|r| r.tenant.as_deref())
        .or_else(|| record.header(TENANT_HEADER));
    let source = route
        .and_then(|r| r.source.as_deref())
        .or_else(|| record.header(SOURCE_HEADER));
    let reject = |code, message: String, tenant: Option<&str>, source: Option<&str>| Rejection {
        code,
        message,
        tenant: tenant
            .filter(|t| validate_token(t).is_ok())
            .unwrap_or(UNROUTED)
            .to_string(),
        source: source
            .filter(|s| alerts::is_known_source(s))
            .unwrap_or(UNROUTED)
            .to_string(),
    };
    let Some(tenant) = tenant.filter(|t| validate_token(t).is_ok()) else {
        return Err(reject(
            ErrorCode::InvalidRequest,
            format!(
                "topic {:?} names no tenant and the record has no valid {TENANT_HEADER} header",
                record.topic
            ),
            tenant,
            source,
        ));
    };
    let Some(source) = source.filter(|s| alerts::is_known_source(s)) else {
        return Err(reject(
            ErrorCode::UnknownSource,
            format!(
                "unknown alert source {:?} (topic {:?}); known: {}",
                source.unwrap_or(""),
                record.topic,
                alerts::SOURCES.join(", ")
            ),
            Some(tenant),
            source,
        ));
    };
    let value = record.value.as_deref().unwrap_or_default();
    if value.len() > config.max_record_bytes {
        return Err(reject(
            ErrorCode::PayloadTooLarge,
            format!(
                "record of {} bytes exceeds max_record_bytes = {}",
                value.len(),
                config.max_record_bytes
            ),
            Some(tenant),
            Some(source),
        ));
    }
    let payload: serde_json::Value = serde_json::from_slice(value).map_err(|e| {
        reject(
            ErrorCode::InvalidJson,
            format!("record value is not JSON: {e}"),
            Some(tenant),
            Some(source),
        )
    })?;
    let time = record.time(now);
    // The same check the gateway makes: reject now what the correlator could never use.
    alerts::normalize(source, tenant, &payload, time)
        .map_err(|e| reject(e.code, e.message, Some(tenant), Some(source)))?;
    let raw = RawAlert {
        source: source.to_string(),
        payload,
        received_at: time,
    };
    let mut env = Envelope::new_at(record.envelope_id(time), time, tenant, raw);
    if let Some(trace) = record
        .header(TRACEPARENT_HEADER)
        .and_then(TraceContext::from_traceparent)
    {
        env.trace = trace.child();
    }
    let mut publication = Publication::envelope(subjects.alerts_in(tenant, source), &env, STAGE)
        .map_err(|e| {
            reject(
                ErrorCode::Internal,
                format!("cannot encode: {e}"),
                Some(tenant),
                Some(source),
            )
        })?;
    publication.msg_id = Some(record.msg_id());
    Ok(publication)
}

/// The dead-letter publication for a rejected record.
pub fn to_dead_letter(
    record: &KafkaRecord,
    rejection: Rejection,
    subjects: &Subjects,
    now: DateTime<Utc>,
) -> Result<Publication, ServiceError> {
    let value = record.value.as_deref().unwrap_or_default();
    let truncated = value.len() > DEAD_PAYLOAD_LIMIT;
    let kept = &value[..value.len().min(DEAD_PAYLOAD_LIMIT)];
    let letter = DeadLetter {
        service: mcplane_shared::Service::KafkaBridge.as_str().to_string(),
        code: rejection.code,
        message: rejection.message,
        origin: record.origin(),
        payload: String::from_utf8_lossy(kept).into_owned(),
        truncated,
    };
    let time = record.time(now);
    let env = Envelope::new_at(
        record.envelope_id(time),
        time,
        rejection.tenant.clone(),
        letter,
    );
    let mut publication = Publication::envelope(
        subjects.alerts_dead_letter(&rejection.tenant, &rejection.source),
        &env,
        STAGE,
    )?;
    publication.msg_id = Some(format!("{}:dead", record.msg_id()));
    Ok(publication)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TopicRoute;

    fn config() -> Config {
        Config {
            brokers: "k:9092".into(),
            topics: vec![
                TopicRoute {
                    topic: "am".into(),
                    tenant: Some("acme".into()),
                    source: Some("alertmanager".into()),
                },
                TopicRoute {
                    topic: "open".into(),
                    tenant: None,
                    source: None,
                },
            ],
            ..Config::default()
        }
    }

    fn record(topic: &str, value: &str) -> KafkaRecord {
        KafkaRecord {
            topic: topic.into(),
            partition: 2,
            offset: 41,
            timestamp_ms: Some(1_700_000_000_000),
            key: Some(b"k1".to_vec()),
            value: Some(value.as_bytes().to_vec()),
            headers: vec![],
        }
    }

    fn am_payload() -> String {
        serde_json::json!({
            "version": "4", "status": "firing", "receiver": "mcplane", "groupKey": "{}:{}",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://am:9093",
            "alerts": [{
                "status": "firing",
                "labels": {"alertname": "HighLatency", "service": "checkout", "severity": "critical"},
                "annotations": {"summary": "p99 above 2s"},
                "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "", "fingerprint": "x"
            }]
        })
        .to_string()
    }

    #[test]
    fn a_record_becomes_the_raw_alert_envelope_on_its_tenants_subject() {
        let s = Subjects::default();
        let now = Utc::now();
        let r = record("am", &am_payload());
        let p = to_alert(&r, &config(), &s, now).unwrap();
        assert_eq!(p.subject, "mcplane.alerts.in.acme.alertmanager");
        assert_eq!(p.msg_id.as_deref(), Some("kafka:am:2:41"));
        let env = Envelope::<RawAlert>::from_slice(p.payload.as_bytes()).unwrap();
        assert_eq!(env.tenant, "acme");
        assert_eq!(env.body.source, "alertmanager");
        assert_eq!(env.body.received_at.timestamp_millis(), 1_700_000_000_000);
        assert_eq!(env.id.get_version_num(), 7);
        // Read again (a replay after a crash): the same identity.
        let again = to_alert(&r, &config(), &s, now + chrono::Duration::seconds(5)).unwrap();
        let env2 = Envelope::<RawAlert>::from_slice(again.payload.as_bytes()).unwrap();
        assert_eq!((env2.id, again.msg_id), (env.id, p.msg_id));
        // Another offset, another identity.
        let mut other = r.clone();
        other.offset = 42;
        let env3 = Envelope::<RawAlert>::from_slice(
            to_alert(&other, &config(), &s, now)
                .unwrap()
                .payload
                .as_bytes(),
        )
        .unwrap();
        assert_ne!(env3.id, env.id);
    }

    #[test]
    fn headers_route_records_of_open_topics_and_carry_the_trace() {
        let s = Subjects::default();
        let mut r = record("open", r#"{"title":"disk full","service":"db"}"#);
        r.headers = vec![
            ("mcplane-tenant".into(), "globex".into()),
            ("mcplane-source".into(), "generic".into()),
            (
                "traceparent".into(),
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            ),
        ];
        let p = to_alert(&r, &config(), &s, Utc::now()).unwrap();
        assert_eq!(p.subject, "mcplane.alerts.in.globex.generic");
        let env = Envelope::<RawAlert>::from_slice(p.payload.as_bytes()).unwrap();
        assert_eq!(env.trace.trace_id, "0af7651916cd43dd8448eb211c80319c");
    }

    #[test]
    fn poison_records_are_rejected_with_a_code() {
        let s = Subjects::default();
        let c = config();
        let now = Utc::now();
        let code = |r: &KafkaRecord| to_alert(r, &c, &s, now).unwrap_err();

        let not_json = code(&record("am", "{nope"));
        assert_eq!(not_json.code, ErrorCode::InvalidJson);
        assert_eq!(
            (not_json.tenant.as_str(), not_json.source.as_str()),
            ("acme", "alertmanager")
        );
        assert_eq!(
            code(&record("am", r#"{"alerts": 3}"#)).code,
            ErrorCode::InvalidAlert
        );
        let unrouted = code(&record("open", r#"{"title":"x","service":"db"}"#));
        assert_eq!(unrouted.code, ErrorCode::InvalidRequest);
        assert_eq!(unrouted.tenant, UNROUTED);
        let mut r = record("open", r#"{"title":"x","service":"db"}"#);
        r.headers = vec![
            ("mcplane-tenant".into(), "acme".into()),
            ("mcplane-source".into(), "nagios".into()),
        ];
        let unknown = code(&r);
        assert_eq!(
            (
                unknown.code,
                unknown.tenant.as_str(),
                unknown.source.as_str()
            ),
            (ErrorCode::UnknownSource, "acme", UNROUTED)
        );
        let small = Config {
            max_record_bytes: 10,
            ..c.clone()
        };
        assert_eq!(
            to_alert(&record("am", &am_payload()), &small, &s, now)
                .unwrap_err()
                .code,
            ErrorCode::PayloadTooLarge
        );

        let dead = to_dead_letter(&record("am", "{nope"), not_json, &s, now).unwrap();
        assert_eq!(dead.subject, "mcplane.alerts.dead.acme.alertmanager");
        assert_eq!(dead.msg_id.as_deref(), Some("kafka:am:2:41:dead"));
        let env = Envelope::<DeadLetter>::from_slice(dead.payload.as_bytes()).unwrap();
        assert_eq!(env.body.code, ErrorCode::InvalidJson);
        assert_eq!(env.body.origin.offset, 41);
        assert_eq!(env.body.origin.key.as_deref(), Some("k1"));
        assert_eq!(env.body.payload, "{nope");
    }
}
