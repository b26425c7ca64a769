//! One incident: the distinct alerts of one tenant's service that arrived close together, their
//! lifecycle (open, updated, resolved) and where its summaries stand.
//!
//! Pure state and transitions: no I/O and no clock, `now` is always a parameter. Only material
//! changes (a new alert, an alert resolving or firing again) bump the revision; repeats are
//! counted on the alert they repeat, so a burst of identical notifications changes nothing a
//! person would be told about.

use chrono::{DateTime, Utc};
use mcplane_shared::{
    AlertStatus, CanonicalAlert, IncidentAlert, IncidentEvent, IncidentEventKind, Severity,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Links kept per incident (generator URLs, runbooks); enough for a notification.
const MAX_LINKS: usize = 10;

/// An incident as the partition owner keeps it (in memory and in sled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub tenant: String,
    pub service: String,
    /// Starts at 1 when opened; bumped by every material change.
    pub revision: u32,
    pub alerts: Vec<IncidentAlert>,
    #[serde(default)]
    pub links: Vec<String>,
    pub opened_at: DateTime<Utc>,
    /// When the last material change happened.
    pub updated_at: DateTime<Utc>,
    /// When the last alert (repeat or not) arrived: the grouping window runs from here.
    pub last_alert_at: DateTime<Utc>,
    #[serde(default)]
    pub resolved_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub summaries: SummaryState,
}

/// Where an incident's summaries stand.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SummaryState {
    /// A summary asked of the pipeline whose answer has not come back.
    pub pending: Option<PendingSummary>,
    /// The newest revision a summary was published for.
    pub last_revision: Option<u32>,
    /// When that summary was decided (the group interval runs from here).
    pub last_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingSummary {
    /// The request envelope's id; the pipeline's reply carries it back.
    pub request_id: Uuid,
    pub revision: u32,
    pub requested_at: DateTime<Utc>,
}

/// What recording one alert did to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A repeat of an alert already in the incident with the same status.
    Counted,
    /// A new alert, or an alert that resolved or fired again.
    Updated,
    /// The last firing alert resolved.
    Resolved,
}

/// The incident id opened by the alert whose envelope id is `first_alert`: a UUIDv7 with the
/// alert's timestamp and bits derived from its id, so a redelivery opens the same incident.
pub fn incident_id(first_alert: Uuid) -> String {
    let millis = first_alert
        .get_timestamp()
        .map(|t| {
            let (secs, nanos) = t.to_unix();
            secs * 1000 + u64::from(nanos) / 1_000_000
        })
        .unwrap_or(0);
    let digest = Sha256::digest(format!("incident:{first_alert}").as_bytes());
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .to_string()
}

impl Incident {
    /// A new incident holding `alert`, its first.
    pub fn open(id: String, alert: &CanonicalAlert, now: DateTime<Utc>) -> Incident {
        let mut incident = Incident {
            id,
            tenant: alert.tenant.clone(),
            service: alert.service.clone(),
            revision: 1,
            alerts: vec![new_alert(alert, now)],
            links: Vec::new(),
            opened_at: now,
            updated_at: now,
            last_alert_at: now,
            resolved_at: None,
            summaries: SummaryState::default(),
        };
        incident.add_links(alert);
        incident
    }

    pub fn is_resolved(&self) -> bool {
        self.resolved_at.is_some()
    }

    pub fn contains(&self, fingerprint: &str) -> bool {
        self.alerts.iter().any(|a| a.fingerprint == fingerprint)
    }

    pub fn firing(&self) -> usize {
        self.alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing)
            .count()
    }

    /// Notifications received in all, repeats included.
    pub fn notifications(&self) -> u32 {
        self.alerts.iter().map(|a| a.count).sum()
    }

    /// The alert that speaks for the incident: the most severe firing one (earliest first on
    /// ties), or the most severe of all once everything resolved.
    pub fn headline(&self) -> Option<&IncidentAlert> {
        let key = |a: &&IncidentAlert| (a.status != AlertStatus::Firing, a.severity, a.first_seen);
        self.alerts.iter().min_by_key(key)
    }

    /// The most severe firing alert's severity (of all alerts once resolved).
    pub fn severity(&self) -> Severity {
        self.headline().map_or(Severity::Info, |a| a.severity)
    }

    pub fn title(&self) -> String {
        let Some(head) = self.headline() else {
            return format!("{}: incident", self.service);
        };
        match self.alerts.len() {
            1 => format!("{}: {}", self.service, head.summary),
            n => format!("{}: {} (+{} more)", self.service, head.summary, n - 1),
        }
    }

    /// Records one alert that belongs here (the caller chose this incident).
    pub fn record(&mut self, alert: &CanonicalAlert, now: DateTime<Utc>) -> Change {
        self.last_alert_at = now;
        self.add_links(alert);
        let change = match self
            .alerts
            .iter_mut()
            .find(|a| a.fingerprint == alert.fingerprint)
        {
            Some(existing) => {
                existing.count = existing.count.saturating_add(1);
                existing.last_seen = now;
                existing.summary = alert.summary.clone();
                if existing.status == alert.status {
                    return Change::Counted;
                }
                existing.status = alert.status;
                existing.severity = alert.severity;
                Change::Updated
            }
            None => {
                self.alerts.push(new_alert(alert, now));
                Change::Updated
            }
        };
        self.revision = self.revision.saturating_add(1);
        self.updated_at = now;
        if self.firing() == 0 {
            self.resolved_at = Some(now);
            Change::Resolved
        } else {
            self.resolved_at = None;
            change
        }
    }

    /// The lifecycle event describing the incident as it is now.
    pub fn event(&self, kind: IncidentEventKind) -> IncidentEvent {
        IncidentEvent {
            incident_id: self.id.clone(),
            tenant: self.tenant.clone(),
            event: kind,
            revision: self.revision,
            service: self.service.clone(),
            severity: self.severity(),
            title: self.title(),
            alerts: self.alerts.clone(),
            opened_at: self.opened_at,
            updated_at: self.updated_at,
            resolved_at: self.resolved_at,
        }
    }

    fn add_links(&mut self, alert: &CanonicalAlert) {
        for link in &alert.links {
            if self.links.len() >= MAX_LINKS {
                return;
            }
            if !self.links.contains(link) {
                self.links.push(link.clone());
            }
        }
    }
}

fn new_alert(alert: &CanonicalAlert, now: DateTime<Utc>) -> IncidentAlert {
    IncidentAlert {
        fingerprint: alert.fingerprint.clone(),
        source: alert.source.clone(),
        service: alert.service.clone(),
        status: alert.status,
        severity: alert.severity,
        summary: alert.summary.clone(),
        count: 1,
        first_seen: now,
        last_seen: now,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_715_677_200 + secs, 0).unwrap()
    }

    pub fn alert(
        service: &str,
        fingerprint: &str,
        status: AlertStatus,
        sev: Severity,
    ) -> CanonicalAlert {
        CanonicalAlert {
            source: "alertmanager".into(),
            tenant: "acme".into(),
            fingerprint: fingerprint.into(),
            status,
            severity: sev,
            service: service.into(),
            resource: None,
            summary: format!("{fingerprint} on {service}"),
            labels: Default::default(),
            annotations: Default::default(),
            starts_at: at(0),
            ends_at: None,
            links: vec![format!("https://runbooks/{fingerprint}")],
            original: serde_json::Value::Null,
        }
    }

    #[test]
    fn incident_ids_are_deterministic_uuid_v7() {
        let first = Uuid::now_v7();
        let id = incident_id(first);
        assert_eq!(id, incident_id(first));
        assert_ne!(id, incident_id(Uuid::now_v7()));
        let parsed: Uuid = id.parse().unwrap();
        assert_eq!(parsed.get_version_num(), 7);
        assert_eq!(
            parsed.get_timestamp().unwrap().to_unix().0,
            first.get_timestamp().unwrap().to_unix().0
        );
    }

    #[test]
    fn severity_and_title_follow_the_most_severe_firing_alert() {
        let mut inc = Incident::open(
            "i".into(),
            &alert("checkout", "a", AlertStatus::Firing, Severity::Warning),
            at(0),
        );
        assert_eq!(inc.title(), "checkout: a on checkout");
        inc.record(
            &alert("checkout", "b", AlertStatus::Firing, Severity::Critical),
            at(1),
        );
        assert_eq!(inc.severity(), Severity::Critical);
        assert_eq!(inc.title(), "checkout: b on checkout (+1 more)");
        inc.record(
            &alert("checkout", "b", AlertStatus::Resolved, Severity::Critical),
            at(2),
        );
        assert_eq!(inc.severity(), Severity::Warning);
        assert_eq!(inc.revision, 3);
        assert_eq!(inc.links.len(), 2);
    }

    #[test]
    fn an_alert_firing_again_reopens_its_place() {
        let mut inc = Incident::open(
            "i".into(),
            &alert("api", "a", AlertStatus::Firing, Severity::High),
            at(0),
        );
        inc.record(
            &alert("api", "b", AlertStatus::Firing, Severity::High),
            at(1),
        );
        assert_eq!(
            inc.record(
                &alert("api", "a", AlertStatus::Resolved, Severity::High),
                at(2)
            ),
            Change::Updated
        );
        assert_eq!(
            inc.record(
                &alert("api", "a", AlertStatus::Firing, Severity::High),
                at(3)
            ),
            Change::Updated
        );
        assert_eq!(inc.firing(), 2);
        assert_eq!(inc.notifications(), 4);
    }
}
