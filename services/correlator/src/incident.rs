//! One incident: the distinct alerts of one group (and of groups of dependent services) that
//! arrived close together, their lifecycle (open, updated, resolved) and where its summaries
//! stand.
//!
//! Pure state and transitions: no I/O and no clock, `now` is always a parameter. Only material
//! changes (a new alert, an alert resolving or firing again) bump the revision; repeats are
//! counted on the alert they repeat, so a burst of identical notifications changes nothing a
//! person would be told about. An alert changing state `threshold` times within the flap
//! window is flapping: its further changes are counted too, and it counts as firing, until it
//! has been quiet for a window and [`Incident::settle`] tells its final state once.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mcplane_shared::{
    AlertStatus, CanonicalAlert, IncidentAlert, IncidentEvent, IncidentEventKind, Severity,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::notify::NotifyLog;

/// Links kept per incident (generator URLs, runbooks); enough for a notification.
const MAX_LINKS: usize = 10;
/// Characters of the headline alert's summary a title keeps. A summary is whatever the
/// monitoring tool sent, a stack trace or a log excerpt at times, and the title is repeated in
/// every event, notification and summary request (whose input auth caps, 64 KiB by default:
/// a whole long summary there made the request refused and the incident's summary degraded).
const TITLE_SUMMARY_CHARS: usize = 200;
/// The most alerts an incident event lists (it counts them all in `alert_count`).
pub const EVENT_ALERTS: usize = 100;
/// About the most bytes of alerts an incident event lists: a quarter of NATS' default
/// `max_payload`, so that the envelope, the other fields and escaped text still fit.
pub const EVENT_ALERT_BYTES: usize = 256 << 10;

/// About how many bytes `alert` takes in an event's JSON: its strings and, for the field names,
/// status, severity, count and two timestamps, a fixed 200.
fn listed_bytes(alert: &IncidentAlert) -> usize {
    200 + alert.fingerprint.len() + alert.source.len() + alert.service.len() + alert.summary.len()
}

/// An incident as the partition owner keeps it (in memory and in sled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub tenant: String,
    pub service: String,
    /// Starts at 1 when opened; bumped by every material change.
    pub revision: u32,
    /// Written by the partition store in chunks beside the incident, so that a step writes
    /// only the chunks it changed (see `store.rs`); records written by earlier versions carry
    /// them inline and still read.
    #[serde(default, skip_serializing)]
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
    /// The keys of the groups in the incident (`{service="checkout"}`); several when the
    /// topology joined groups of dependent services.
    #[serde(default)]
    pub group_keys: BTreeSet<String>,
    /// The group labels of the group that opened it.
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    /// The probable root service, per the CMDB (set by the book, which knows the topology).
    #[serde(default)]
    pub root_service: Option<String>,
    /// Recent state changes per alert fingerprint, for flap detection.
    #[serde(default)]
    pub state_changes: BTreeMap<String, Vec<DateTime<Utc>>>,
}

/// When an alert is flapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flapping {
    /// State changes within `window` that make an alert flapping.
    pub threshold: u32,
    pub window: Duration,
}

impl Default for Flapping {
    fn default() -> Self {
        Flapping {
            threshold: 4,
            window: Duration::from_secs(600),
        }
    }
}

/// Where an incident's summaries stand.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SummaryState {
    /// A summary asked of the pipeline whose answer has not come back.
    pub pending: Option<PendingSummary>,
    /// The newest revision a summary was published for.
    pub last_revision: Option<u32>,
    /// When that summary was decided.
    pub last_at: Option<DateTime<Utc>>,
    /// When the incident's alerts were last looked at for a summary (the group interval runs
    /// from here; the first look is `group_wait` after opening).
    #[serde(default)]
    pub last_flush_at: Option<DateTime<Utc>>,
    /// What the last summary told (Alertmanager's notification log entry).
    #[serde(default)]
    pub log: Option<NotifyLog>,
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
    /// A repeat of an alert already in the incident with the same status, or a state change
    /// of a flapping alert (damped).
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
        let group_labels = BTreeMap::from([("service".to_string(), alert.service.clone())]);
        Incident::open_group(
            id,
            alert,
            crate::rules::group_key(&group_labels),
            group_labels,
            now,
        )
    }

    /// A new incident holding `alert`, opening the group `group_key` with `group_labels`.
    pub fn open_group(
        id: String,
        alert: &CanonicalAlert,
        group_key: String,
        group_labels: BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Incident {
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
            group_keys: BTreeSet::from([group_key]),
            group_labels,
            root_service: None,
            state_changes: BTreeMap::new(),
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

    /// Alerts firing, flapping ones included (a flapping alert is not known to be over).
    pub fn firing(&self) -> usize {
        self.alerts.iter().filter(|a| is_firing(a)).count()
    }

    /// Every service with an alert here, sorted.
    pub fn services(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self.alerts.iter().map(|a| a.service.as_str()).collect();
        set.into_iter().map(str::to_string).collect()
    }

    /// The services with a firing alert (all services once everything resolved), sorted.
    pub fn alerting_services(&self) -> Vec<&str> {
        let firing: BTreeSet<&str> = self
            .alerts
            .iter()
            .filter(|a| is_firing(a))
            .map(|a| a.service.as_str())
            .collect();
        if firing.is_empty() {
            self.alerts
                .iter()
                .map(|a| a.service.as_str())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        } else {
            firing.into_iter().collect()
        }
    }

    /// The fingerprints firing and resolved now, for the notification dedup stage.
    pub fn notify_sets(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let (firing, resolved): (Vec<&IncidentAlert>, Vec<&IncidentAlert>) =
            self.alerts.iter().partition(|a| is_firing(a));
        let names = |v: Vec<&IncidentAlert>| v.into_iter().map(|a| a.fingerprint.clone()).collect();
        (names(firing), names(resolved))
    }

    /// Whether a flapping alert has been quiet for the flap window, so its state can be told.
    pub fn settle_due(&self, flapping: &Flapping, now: DateTime<Utc>) -> bool {
        self.alerts.iter().any(|a| {
            a.flapping
                && self
                    .state_changes
                    .get(&a.fingerprint)
                    .and_then(|c| c.last())
                    .is_none_or(|last| elapsed(*last, now) >= flapping.window)
        })
    }

    /// Ends the flapping of alerts quiet for the flap window, telling their state as one
    /// material change; returns what happened to the incident, if anything.
    pub fn settle(&mut self, flapping: &Flapping, now: DateTime<Utc>) -> Option<Change> {
        let mut settled = false;
        for a in &mut self.alerts {
            let quiet = self
                .state_changes
                .get(&a.fingerprint)
                .and_then(|c| c.last())
                .is_none_or(|last| elapsed(*last, now) >= flapping.window);
            if a.flapping && quiet {
                a.flapping = false;
                settled = true;
                self.state_changes.remove(&a.fingerprint);
            }
        }
        if !settled {
            return None;
        }
        self.revision = self.revision.saturating_add(1);
        self.updated_at = now;
        if self.firing() == 0 {
            self.resolved_at = Some(now);
            Some(Change::Resolved)
        } else {
            Some(Change::Updated)
        }
    }

    /// Notifications received in all, repeats included.
    pub fn notifications(&self) -> u32 {
        self.alerts.iter().map(|a| a.count).sum()
    }

    /// The alert that speaks for the incident: the most severe firing one (earliest first on
    /// ties), or the most severe of all once everything resolved.
    pub fn headline(&self) -> Option<&IncidentAlert> {
        self.headline_index().map(|i| &self.alerts[i])
    }

    fn headline_index(&self) -> Option<usize> {
        let key = |(_, a): &(usize, &IncidentAlert)| (!is_firing(a), a.severity, a.first_seen);
        self.alerts
            .iter()
            .enumerate()
            .min_by_key(key)
            .map(|(i, _)| i)
    }

    /// The most severe firing alert's severity (of all alerts once resolved).
    pub fn severity(&self) -> Severity {
        self.headline().map_or(Severity::Info, |a| a.severity)
    }

    /// One line: the service, what the headline alert says (its first
    /// [`TITLE_SUMMARY_CHARS`] characters) and how many other alerts there are.
    pub fn title(&self) -> String {
        let Some(head) = self.headline() else {
            return format!("{}: incident", self.service);
        };
        let what = clipped(&head.summary, TITLE_SUMMARY_CHARS);
        match (self.alerts.len(), &self.root_service) {
            (1, _) => format!("{}: {what}", self.service),
            (n, Some(root)) => format!(
                "{}: {what} (+{} more; probable root: {root})",
                self.service,
                n - 1
            ),
            (n, None) => format!("{}: {what} (+{} more)", self.service, n - 1),
        }
    }

    /// Records one alert that belongs here (the caller chose this incident). A `key_only`
    /// alert (a PagerDuty acknowledge or resolve) names its alert by fingerprint alone, so it
    /// changes the status but not what the alert is about.
    pub fn record(
        &mut self,
        alert: &CanonicalAlert,
        key_only: bool,
        flapping: &Flapping,
        now: DateTime<Utc>,
    ) -> Change {
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
                if !key_only {
                    existing.summary = alert.summary.clone();
                }
                if existing.status == alert.status {
                    return Change::Counted;
                }
                existing.status = alert.status;
                if !key_only {
                    existing.severity = alert.severity;
                }
                let changes = self
                    .state_changes
                    .entry(alert.fingerprint.clone())
                    .or_default();
                changes.retain(|t| elapsed(*t, now) < flapping.window);
                changes.push(now);
                let was_flapping = existing.flapping;
                if changes.len() >= flapping.threshold as usize {
                    existing.flapping = true;
                }
                if existing.flapping {
                    if !was_flapping {
                        // Told once: from now on its changes are damped until it settles.
                        self.revision = self.revision.saturating_add(1);
                        self.updated_at = now;
                        return Change::Updated;
                    }
                    return Change::Counted;
                }
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
            services: self.services(),
            root_service: self.root_service.clone(),
            severity: self.severity(),
            title: self.title(),
            alerts: self.event_alerts(),
            alert_count: u32::try_from(self.alerts.len()).unwrap_or(u32::MAX),
            opened_at: self.opened_at,
            updated_at: self.updated_at,
            resolved_at: self.resolved_at,
        }
    }

    /// The alerts an event lists: all of them while they fit in [`EVENT_ALERTS`] and
    /// [`EVENT_ALERT_BYTES`]; otherwise the headline (the alert the title names) and then those
    /// seen most recently, as many as fit, in the incident's order. Every event of an alert
    /// storm would otherwise carry the whole storm: past a few thousand alerts larger than NATS
    /// carries, so that the owner's publish failed until the batch was given up, and before
    /// that costing each step as much as the storm.
    fn event_alerts(&self) -> Vec<IncidentAlert> {
        let bytes: usize = self.alerts.iter().map(listed_bytes).sum();
        if self.alerts.len() <= EVENT_ALERTS && bytes <= EVENT_ALERT_BYTES {
            return self.alerts.clone();
        }
        let headline = self.headline_index();
        let mut order: Vec<usize> = (0..self.alerts.len()).collect();
        // The headline first, then the latest seen; the sort is stable, so among alerts seen
        // at one instant the incident's order decides.
        order.sort_by_key(|&i| (Some(i) != headline, Reverse(self.alerts[i].last_seen)));
        let mut chosen = Vec::with_capacity(EVENT_ALERTS);
        let mut room = EVENT_ALERT_BYTES;
        for i in order {
            if chosen.len() == EVENT_ALERTS {
                break;
            }
            let size = listed_bytes(&self.alerts[i]);
            if size <= room {
                room -= size;
                chosen.push(i);
            }
        }
        chosen.sort_unstable();
        chosen.into_iter().map(|i| self.alerts[i].clone()).collect()
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
        flapping: false,
    }
}

/// The first `max` characters of `text`, with an ellipsis when it was longer.
fn clipped(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => text.into(),
        Some((end, _)) => format!("{}…", text.get(..end).unwrap_or(text)).into(),
    }
}

fn is_firing(a: &IncidentAlert) -> bool {
    a.status == AlertStatus::Firing || a.flapping
}

fn elapsed(since: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - since).to_std().unwrap_or(Duration::ZERO)
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
    fn a_title_keeps_the_start_of_a_long_summary() {
        let mut long = alert("checkout", "trace", AlertStatus::Firing, Severity::Critical);
        long.summary = format!("NullPointerException ü {}", "at frame\n".repeat(10_000));
        let inc = Incident::open("i".into(), &long, at(0));
        let title = inc.title();
        let kept: String = long.summary.chars().take(TITLE_SUMMARY_CHARS).collect();
        assert_eq!(title, format!("checkout: {kept}…"));
        // A summary of exactly the limit is kept whole, without an ellipsis.
        long.summary = "é".repeat(TITLE_SUMMARY_CHARS);
        let inc = Incident::open("i".into(), &long, at(0));
        assert_eq!(inc.title(), format!("checkout: {}", long.summary));
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
            false,
            &Flapping::default(),
            at(1),
        );
        assert_eq!(inc.severity(), Severity::Critical);
        assert_eq!(inc.title(), "checkout: b on checkout (+1 more)");
        inc.record(
            &alert("checkout", "b", AlertStatus::Resolved, Severity::Critical),
            false,
            &Flapping::default(),
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
            false,
            &Flapping::default(),
            at(1),
        );
        assert_eq!(
            inc.record(
                &alert("api", "a", AlertStatus::Resolved, Severity::High),
                false,
                &Flapping::default(),
                at(2)
            ),
            Change::Updated
        );
        assert_eq!(
            inc.record(
                &alert("api", "a", AlertStatus::Firing, Severity::High),
                false,
                &Flapping::default(),
                at(3)
            ),
            Change::Updated
        );
        assert_eq!(inc.firing(), 2);
        assert_eq!(inc.notifications(), 4);
    }

    #[test]
    fn a_flapping_alert_is_told_once_then_damped_until_it_settles() {
        let flap = Flapping {
            threshold: 3,
            window: Duration::from_secs(60),
        };
        let fire = alert("api", "a", AlertStatus::Firing, Severity::High);
        let ok = alert("api", "a", AlertStatus::Resolved, Severity::High);
        let mut inc = Incident::open("i".into(), &fire, at(0));
        assert_eq!(inc.record(&ok, false, &flap, at(1)), Change::Resolved);
        assert_eq!(inc.record(&fire, false, &flap, at(2)), Change::Updated);
        // The third change within the window: flapping, told once, incident not resolved.
        assert_eq!(inc.record(&ok, false, &flap, at(3)), Change::Updated);
        assert!(inc.alerts[0].flapping);
        assert!(!inc.is_resolved());
        let revision = inc.revision;
        for s in 4..20 {
            let a = if s % 2 == 0 { &fire } else { &ok };
            assert_eq!(
                inc.record(a, false, &flap, at(s)),
                Change::Counted,
                "flap {s}"
            );
        }
        assert_eq!(inc.revision, revision, "no incident update per flap");
        assert_eq!(inc.alerts[0].count, 20);
        // Last change at 19 (resolved): quiet for the window at 79, then told as resolved.
        assert!(!inc.settle_due(&flap, at(78)));
        assert!(inc.settle_due(&flap, at(79)));
        assert_eq!(inc.settle(&flap, at(79)), Some(Change::Resolved));
        assert_eq!(inc.revision, revision + 1);
        assert!(!inc.alerts[0].flapping);
        assert!(inc.is_resolved());
        assert_eq!(inc.settle(&flap, at(80)), None);
    }

    #[test]
    fn changes_spread_wider_than_the_window_are_not_flapping() {
        let flap = Flapping {
            threshold: 3,
            window: Duration::from_secs(60),
        };
        let fire = alert("api", "a", AlertStatus::Firing, Severity::High);
        let ok = alert("api", "a", AlertStatus::Resolved, Severity::High);
        let mut inc = Incident::open("i".into(), &fire, at(0));
        let b = alert("api", "b", AlertStatus::Firing, Severity::High);
        inc.record(&b, false, &flap, at(0));
        for (i, s) in (1..8).map(|i| (i, i * 40)) {
            let a = if i % 2 == 0 { &fire } else { &ok };
            assert_eq!(
                inc.record(a, false, &flap, at(s)),
                Change::Updated,
                "change {i}"
            );
        }
        assert!(!inc.alerts[0].flapping);
    }

    #[test]
    fn a_key_only_resolve_keeps_what_the_alert_is_about() {
        let fire = alert("payments", "k", AlertStatus::Firing, Severity::Critical);
        let mut inc = Incident::open("i".into(), &fire, at(0));
        let mut resolve = alert("unknown", "k", AlertStatus::Resolved, Severity::Info);
        resolve.summary = "resolve k".into();
        assert_eq!(
            inc.record(&resolve, true, &Flapping::default(), at(1)),
            Change::Resolved
        );
        assert_eq!(inc.alerts[0].summary, "k on payments");
        assert_eq!(inc.alerts[0].severity, Severity::Critical);
        assert_eq!(inc.alerts[0].service, "payments");
    }

    /// An incident of `alerts`, the first opening it, each seen a second after the one before.
    fn incident_of(alerts: impl IntoIterator<Item = CanonicalAlert>) -> Incident {
        let mut alerts = alerts.into_iter();
        let first = alerts.next().expect("at least one alert");
        let mut inc = Incident::open("i".into(), &first, at(0));
        for (i, a) in (1..).zip(alerts) {
            inc.record(&a, false, &Flapping::default(), at(i));
        }
        inc
    }

    /// Alert `f<i>` on `api`, firing.
    fn numbered(i: usize, sev: Severity) -> CanonicalAlert {
        alert("api", &format!("f{i}"), AlertStatus::Firing, sev)
    }

    fn fingerprints(event: &IncidentEvent) -> Vec<&str> {
        event
            .alerts
            .iter()
            .map(|a| a.fingerprint.as_str())
            .collect()
    }

    #[test]
    fn an_event_lists_every_alert_while_they_are_few() {
        let inc = incident_of((0..EVENT_ALERTS).map(|i| numbered(i, Severity::High)));
        let event = inc.event(IncidentEventKind::Updated);
        assert_eq!(event.alerts, inc.alerts);
        assert_eq!(event.alert_count as usize, EVENT_ALERTS);
    }

    #[test]
    fn a_storm_lists_its_headline_and_latest_alerts_in_order_and_counts_them_all() {
        // The headline (the only critical one) is among the oldest; 250 alerts in all.
        let mut inc = incident_of((0..250).map(|i| {
            let sev = if i == 1 {
                Severity::Critical
            } else {
                Severity::High
            };
            numbered(i, sev)
        }));
        // A repeat of an old alert is seen again, so it is among the latest.
        let repeat = numbered(5, Severity::High);
        inc.record(&repeat, false, &Flapping::default(), at(1000));
        let event = inc.event(IncidentEventKind::Updated);
        assert_eq!(event.alert_count, 250);
        let mut expected = vec!["f1".to_string(), "f5".to_string()];
        expected.extend((152..250).map(|i| format!("f{i}")));
        assert_eq!(fingerprints(&event), expected);
        assert_eq!(event.severity, Severity::Critical);
        assert!(event.title.contains("(+249 more)"), "{}", event.title);
    }

    #[test]
    fn large_alerts_are_listed_only_as_far_as_the_byte_budget_goes() {
        let inc = incident_of((0..40).map(|i| {
            let mut a = numbered(i, Severity::High);
            a.summary = format!("{i} {}", "y".repeat(20 << 10));
            a
        }));
        let event = inc.event(IncidentEventKind::Updated);
        assert_eq!(event.alert_count, 40);
        // About 20 KiB each, in a 256 KiB budget: twelve.
        assert_eq!(event.alerts.len(), 12);
        let listed = fingerprints(&event);
        assert_eq!(listed[0], "f0", "the headline, the oldest of equals");
        assert_eq!(listed[1], "f29", "then the latest eleven: {listed:?}");
        let size = serde_json::to_vec(&event).unwrap().len();
        assert!(size < 300 << 10, "{size} bytes");
    }
}
