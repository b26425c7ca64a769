//! Grouping: which incident an alert belongs to, and when an incident's summary is due.
//!
//! The book holds one partition's live incidents (open ones, and resolved ones until their
//! summary is settled). Rules, in order: an alert whose fingerprint is already in an open
//! incident of its tenant and service goes there (a long-firing alert that Alertmanager
//! re-sends every few hours stays one incident); a new firing alert joins the most recent open
//! incident of its tenant and service whose last alert is within the window, or opens one; a
//! resolved alert that matches no open incident is ignored. Pure: `now` is a parameter.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mcplane_shared::{AlertStatus, CanonicalAlert, Severity};
use uuid::Uuid;

use crate::incident::{incident_id, Change, Incident};

/// An open incident with no alert for this long is dropped from the book (its tool stopped
/// talking about it; Alertmanager re-sends firing alerts every few hours).
pub const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The timing rules for grouping and summaries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub window: Duration,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub min_severity: Severity,
    pub summary_timeout: Duration,
}

/// What one alert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Opened(String),
    Updated(String),
    Resolved(String),
    /// A repeat, counted on the alert it repeats.
    Counted(String),
    /// Belongs to no incident (a resolved alert nobody saw fire).
    Ignored,
}

impl Outcome {
    pub fn incident(&self) -> Option<&str> {
        match self {
            Outcome::Opened(id)
            | Outcome::Updated(id)
            | Outcome::Resolved(id)
            | Outcome::Counted(id) => Some(id),
            Outcome::Ignored => None,
        }
    }
}

/// What the summary timer should do about one incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Summarise this revision now.
    Summarize { revision: u32 },
    /// The pipeline did not answer for this revision in time: summarise it without AI.
    TimedOut { revision: u32 },
    /// Nothing more will happen to it: drop it from the book.
    Evict,
}

/// One partition's live incidents, by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IncidentBook {
    incidents: BTreeMap<String, Incident>,
}

fn elapsed(since: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - since).to_std().unwrap_or(Duration::ZERO)
}

impl IncidentBook {
    pub fn new(incidents: impl IntoIterator<Item = Incident>) -> Self {
        IncidentBook {
            incidents: incidents.into_iter().map(|i| (i.id.clone(), i)).collect(),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Incident> {
        self.incidents.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Incident> {
        self.incidents.get_mut(id)
    }

    pub fn remove(&mut self, id: &str) -> Option<Incident> {
        self.incidents.remove(id)
    }

    pub fn len(&self) -> usize {
        self.incidents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.incidents.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.values()
    }

    /// The incident waiting for the summary request `request_id`.
    pub fn awaiting(&self, request_id: Uuid) -> Option<&Incident> {
        self.incidents.values().find(|i| {
            i.summaries
                .pending
                .as_ref()
                .is_some_and(|p| p.request_id == request_id)
        })
    }

    /// Routes one alert (whose envelope id is `alert_id`) to its incident.
    pub fn apply(
        &mut self,
        alert_id: Uuid,
        alert: &CanonicalAlert,
        window: Duration,
        now: DateTime<Utc>,
    ) -> Outcome {
        let open = |i: &&Incident| {
            !i.is_resolved() && i.tenant == alert.tenant && i.service == alert.service
        };
        let latest = |a: &&Incident, b: &&Incident| a.last_alert_at.cmp(&b.last_alert_at);
        let by_fingerprint = self
            .incidents
            .values()
            .filter(open)
            .filter(|i| i.contains(&alert.fingerprint))
            .max_by(latest)
            .map(|i| i.id.clone());
        let target = by_fingerprint.or_else(|| {
            (alert.status == AlertStatus::Firing)
                .then(|| {
                    self.incidents
                        .values()
                        .filter(open)
                        .filter(|i| elapsed(i.last_alert_at, now) <= window)
                        .max_by(latest)
                        .map(|i| i.id.clone())
                })
                .flatten()
        });
        if let Some(id) = target {
            let Some(incident) = self.incidents.get_mut(&id) else {
                return Outcome::Ignored;
            };
            return match incident.record(alert, now) {
                Change::Counted => Outcome::Counted(id),
                Change::Updated => Outcome::Updated(id),
                Change::Resolved => Outcome::Resolved(id),
            };
        }
        if alert.status == AlertStatus::Resolved {
            return Outcome::Ignored;
        }
        let id = incident_id(alert_id);
        self.incidents
            .insert(id.clone(), Incident::open(id.clone(), alert, now));
        Outcome::Opened(id)
    }

    /// What is due for every incident at `now`.
    pub fn due(&self, policy: &Policy, now: DateTime<Utc>) -> Vec<(String, Due)> {
        self.incidents
            .values()
            .filter_map(|i| due_for(i, policy, now).map(|d| (i.id.clone(), d)))
            .collect()
    }
}

fn due_for(i: &Incident, policy: &Policy, now: DateTime<Utc>) -> Option<Due> {
    let s = &i.summaries;
    if let Some(pending) = &s.pending {
        return (elapsed(pending.requested_at, now) >= policy.summary_timeout).then_some(
            Due::TimedOut {
                revision: pending.revision,
            },
        );
    }
    // Severity orders most severe first: "at or above the minimum" is `<=`.
    let wanted = i.severity() <= policy.min_severity;
    match s.last_revision {
        None if wanted => {
            (elapsed(i.opened_at, now) >= policy.group_wait).then_some(Due::Summarize {
                revision: i.revision,
            })
        }
        // A resolved incident is told by its `resolved` event; it needs no new summary.
        _ if i.is_resolved() => Some(Due::Evict),
        Some(last) if wanted && i.revision > last => {
            let since = s.last_at.map_or(Duration::MAX, |at| elapsed(at, now));
            (since >= policy.group_interval).then_some(Due::Summarize {
                revision: i.revision,
            })
        }
        _ if elapsed(i.last_alert_at, now) > STALE_AFTER => Some(Due::Evict),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::tests::{alert, at};
    use crate::incident::PendingSummary;
    use AlertStatus::{Firing, Resolved};

    const WINDOW: Duration = Duration::from_secs(600);

    fn policy() -> Policy {
        Policy {
            window: WINDOW,
            group_wait: Duration::from_secs(2),
            group_interval: Duration::from_secs(300),
            min_severity: Severity::Info,
            summary_timeout: Duration::from_secs(120),
        }
    }

    fn apply(book: &mut IncidentBook, a: &CanonicalAlert, secs: i64) -> Outcome {
        book.apply(Uuid::now_v7(), a, WINDOW, at(secs))
    }

    #[test]
    fn duplicate_alert_is_counted_not_repeated() {
        let mut book = IncidentBook::default();
        let a = alert("checkout", "fp1", Firing, Severity::Critical);
        let Outcome::Opened(id) = apply(&mut book, &a, 0) else {
            panic!("first alert opens an incident")
        };
        for s in 1..5 {
            assert_eq!(apply(&mut book, &a, s), Outcome::Counted(id.clone()));
        }
        let inc = book.get(&id).unwrap();
        assert_eq!(inc.alerts.len(), 1);
        assert_eq!(inc.alerts[0].count, 5);
        assert_eq!(inc.revision, 1, "repeats are not material changes");
        assert_eq!(inc.alerts[0].last_seen, at(4));
    }

    #[test]
    fn distinct_alerts_of_one_service_join_one_incident() {
        let mut book = IncidentBook::default();
        let Outcome::Opened(id) = apply(
            &mut book,
            &alert("checkout", "a", Firing, Severity::High),
            0,
        ) else {
            panic!()
        };
        assert_eq!(
            apply(
                &mut book,
                &alert("checkout", "b", Firing, Severity::Warning),
                30
            ),
            Outcome::Updated(id.clone())
        );
        assert_eq!(book.len(), 1);
        assert_eq!(book.get(&id).unwrap().revision, 2);
    }

    #[test]
    fn different_services_open_different_incidents() {
        let mut book = IncidentBook::default();
        let a = apply(
            &mut book,
            &alert("checkout", "fp", Firing, Severity::High),
            0,
        );
        let b = apply(
            &mut book,
            &alert("payments-db", "fp", Firing, Severity::High),
            0,
        );
        assert!(matches!(a, Outcome::Opened(_)));
        assert!(matches!(b, Outcome::Opened(_)));
        assert_ne!(a, b);
        let mut other_tenant = alert("checkout", "x", Firing, Severity::High);
        other_tenant.tenant = "globex".into();
        assert!(matches!(
            apply(&mut book, &other_tenant, 1),
            Outcome::Opened(_)
        ));
        assert_eq!(book.len(), 3);
    }

    #[test]
    fn window_expiry_opens_a_new_incident() {
        let mut book = IncidentBook::default();
        let Outcome::Opened(first) =
            apply(&mut book, &alert("api", "a", Firing, Severity::High), 0)
        else {
            panic!()
        };
        // Within the window (measured from the last alert): joins.
        assert_eq!(
            apply(&mut book, &alert("api", "b", Firing, Severity::High), 500),
            Outcome::Updated(first.clone())
        );
        assert_eq!(
            apply(&mut book, &alert("api", "c", Firing, Severity::High), 1100),
            Outcome::Updated(first.clone())
        );
        // More than the window after the last alert: a new incident.
        let Outcome::Opened(second) =
            apply(&mut book, &alert("api", "d", Firing, Severity::High), 1701)
        else {
            panic!("expected a new incident after the window")
        };
        assert_ne!(first, second);
        // A repeat of an alert of the first incident still counts there.
        assert_eq!(
            apply(&mut book, &alert("api", "a", Firing, Severity::High), 1702),
            Outcome::Counted(first)
        );
    }

    #[test]
    fn resolving_every_alert_resolves_the_incident() {
        let mut book = IncidentBook::default();
        let Outcome::Opened(id) =
            apply(&mut book, &alert("db", "a", Firing, Severity::Critical), 0)
        else {
            panic!()
        };
        apply(&mut book, &alert("db", "b", Firing, Severity::Warning), 1);
        assert_eq!(
            apply(
                &mut book,
                &alert("db", "a", Resolved, Severity::Critical),
                2
            ),
            Outcome::Updated(id.clone())
        );
        assert!(!book.get(&id).unwrap().is_resolved());
        assert_eq!(
            apply(&mut book, &alert("db", "b", Resolved, Severity::Warning), 3),
            Outcome::Resolved(id.clone())
        );
        let inc = book.get(&id).unwrap();
        assert_eq!(inc.resolved_at, Some(at(3)));
        assert_eq!(inc.revision, 4);
        // A repeated resolve is ignored, and a new firing alert opens a new incident.
        assert_eq!(
            apply(&mut book, &alert("db", "b", Resolved, Severity::Warning), 4),
            Outcome::Ignored
        );
        assert!(matches!(
            apply(&mut book, &alert("db", "a", Firing, Severity::Critical), 5),
            Outcome::Opened(other) if other != id
        ));
    }

    #[test]
    fn a_resolved_alert_nobody_saw_fire_is_ignored() {
        let mut book = IncidentBook::default();
        assert_eq!(
            apply(&mut book, &alert("db", "a", Resolved, Severity::High), 0),
            Outcome::Ignored
        );
        assert!(book.is_empty());
    }

    #[test]
    fn first_summary_waits_for_group_wait_then_once_per_interval() {
        let mut book = IncidentBook::default();
        let Outcome::Opened(id) = apply(&mut book, &alert("api", "a", Firing, Severity::High), 0)
        else {
            panic!()
        };
        let p = policy();
        assert!(book.due(&p, at(1)).is_empty(), "still within group_wait");
        assert_eq!(
            book.due(&p, at(2)),
            vec![(id.clone(), Due::Summarize { revision: 1 })]
        );

        // Asked: nothing more is due until the answer or the timeout.
        let inc = book.get_mut(&id).unwrap();
        inc.summaries.pending = Some(PendingSummary {
            request_id: Uuid::now_v7(),
            revision: 1,
            requested_at: at(2),
        });
        assert!(book.due(&p, at(100)).is_empty());
        assert_eq!(
            book.due(&p, at(122)),
            vec![(id.clone(), Due::TimedOut { revision: 1 })]
        );

        // Answered at 3; a material change at 10 waits for the group interval.
        let inc = book.get_mut(&id).unwrap();
        inc.summaries.pending = None;
        inc.summaries.last_revision = Some(1);
        inc.summaries.last_at = Some(at(3));
        assert!(
            book.due(&p, at(10)).is_empty(),
            "unchanged incidents are not re-summarised"
        );
        apply(&mut book, &alert("api", "b", Firing, Severity::High), 10);
        assert!(book.due(&p, at(302)).is_empty());
        assert_eq!(
            book.due(&p, at(303)),
            vec![(id, Due::Summarize { revision: 2 })]
        );
    }

    #[test]
    fn incidents_below_the_minimum_severity_are_not_summarised() {
        let mut book = IncidentBook::default();
        apply(&mut book, &alert("api", "a", Firing, Severity::Info), 0);
        let p = Policy {
            min_severity: Severity::Warning,
            ..policy()
        };
        assert!(book.due(&p, at(60)).is_empty());
        // Until a more severe alert joins.
        apply(
            &mut book,
            &alert("api", "b", Firing, Severity::Critical),
            61,
        );
        assert!(matches!(
            book.due(&p, at(62))[..],
            [(_, Due::Summarize { revision: 2 })]
        ));
    }

    #[test]
    fn resolved_incidents_are_evicted_once_summarised() {
        let mut book = IncidentBook::default();
        let Outcome::Opened(id) = apply(&mut book, &alert("api", "a", Firing, Severity::High), 0)
        else {
            panic!()
        };
        apply(&mut book, &alert("api", "a", Resolved, Severity::High), 1);
        let p = policy();
        // Resolved before group_wait: it still gets its one summary.
        assert_eq!(
            book.due(&p, at(2)),
            vec![(id.clone(), Due::Summarize { revision: 2 })]
        );
        let inc = book.get_mut(&id).unwrap();
        inc.summaries.last_revision = Some(2);
        inc.summaries.last_at = Some(at(2));
        assert_eq!(book.due(&p, at(3)), vec![(id, Due::Evict)]);
    }
}
