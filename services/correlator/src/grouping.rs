//! Grouping: which incident an alert belongs to, and when an incident's summary is due.
//!
//! The book holds one partition's live incidents (open ones, and resolved ones until their
//! last summary is settled). Rules, in order: an alert whose fingerprint is already in an open
//! incident of its tenant goes there (a long-firing alert that Alertmanager re-sends every few
//! hours stays one incident; a PagerDuty resolve that carries only its key finds its trigger
//! in whatever group it is);
//! a new firing alert joins the most recent open incident holding its group (same `group_by`
//! labels) whose last alert is within the window; failing that, one holding a group that
//! differs only in a service the CMDB says depends on, or is a dependency of, the alert's
//! service; failing that, it opens one. A resolved alert that matches no open incident is
//! ignored. Summary timing is Alertmanager's (see `notify`). Pure: `now` is a parameter.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mcplane_shared::alerts::pagerduty;
use mcplane_shared::{AlertStatus, CanonicalAlert, IncidentEventKind};
use uuid::Uuid;

use crate::escalation::Escalation;
use crate::incident::{incident_id, Change, Flapping, Incident};
use crate::notify::{needs_update, NotifyLog};
use crate::rules::{group_key, Rules};

/// An open incident with no alert for this long is dropped from the book (its tool stopped
/// talking about it; Alertmanager re-sends firing alerts every few hours).
pub const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The timing rules for grouping and summaries.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub window: Duration,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    pub send_resolved: bool,
    pub flapping: Flapping,
    /// Which incidents are summarised, by tenant (see `escalation`).
    pub escalation: Escalation,
    pub summary_timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            window: Duration::from_secs(600),
            group_wait: Duration::from_secs(2),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
            send_resolved: true,
            flapping: Flapping::default(),
            escalation: Escalation::default(),
            summary_timeout: Duration::from_secs(120),
        }
    }
}

/// What one alert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Opened(String),
    Updated(String),
    Resolved(String),
    /// A repeat (or a damped flap), counted on the alert it repeats.
    Counted(String),
    /// Belongs to no incident (a resolved alert nobody saw fire).
    Ignored,
}

impl Outcome {
    /// The incident event this outcome calls for, if any.
    pub fn event_kind(&self) -> Option<IncidentEventKind> {
        match self {
            Outcome::Opened(_) => Some(IncidentEventKind::Opened),
            Outcome::Updated(_) => Some(IncidentEventKind::Updated),
            Outcome::Resolved(_) => Some(IncidentEventKind::Resolved),
            Outcome::Counted(_) | Outcome::Ignored => None,
        }
    }

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Summarise this revision now, and log what it tells.
    Summarize { revision: u32, log: NotifyLog },
    /// The pipeline did not answer for this revision in time: summarise it without AI.
    TimedOut { revision: u32 },
    /// A flush that tells nobody: note when it happened, and the log entry when the dedup
    /// stage wants one kept without a notification (everything resolved, `send_resolved` off).
    Flush { log: Option<NotifyLog> },
    /// A flapping alert has been quiet for the flap window: tell its final state.
    Settle,
    /// Nothing more will happen to it: drop it from the book.
    Evict,
}

/// One partition's live incidents, by id, and the rules that group alerts into them; indexed
/// by tenant and fingerprint and by tenant and group key, so routing an alert does not scan
/// every incident (only a topology join, for the first alert of a group, does).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IncidentBook {
    incidents: BTreeMap<String, Incident>,
    rules: Rules,
    by_fingerprint: HashMap<String, BTreeSet<String>>,
    by_group: HashMap<String, BTreeSet<String>>,
}

fn index_key(tenant: &str, key: &str) -> String {
    let mut k = String::with_capacity(tenant.len() + key.len() + 1);
    k.push_str(tenant);
    k.push('\n');
    k.push_str(key);
    k
}

fn elapsed(since: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - since).to_std().unwrap_or(Duration::ZERO)
}

/// A PagerDuty `acknowledge`/`resolve` without a payload: it names its alert by key alone.
pub fn is_key_only(alert: &CanonicalAlert) -> bool {
    alert.source == pagerduty::SOURCE
        && alert.original.get("event_action").is_some()
        && alert.original.get("payload").is_none()
}

impl IncidentBook {
    pub fn new(incidents: impl IntoIterator<Item = Incident>, rules: Rules) -> Self {
        let mut book = IncidentBook {
            rules,
            ..IncidentBook::default()
        };
        for incident in incidents {
            book.index(&incident);
            book.incidents.insert(incident.id.clone(), incident);
        }
        book
    }

    /// Adds the incident's fingerprints and group keys to the indexes (they only ever grow
    /// while it lives).
    fn index(&mut self, incident: &Incident) {
        for a in &incident.alerts {
            self.by_fingerprint
                .entry(index_key(&incident.tenant, &a.fingerprint))
                .or_default()
                .insert(incident.id.clone());
        }
        for key in &incident.group_keys {
            self.by_group
                .entry(index_key(&incident.tenant, key))
                .or_default()
                .insert(incident.id.clone());
        }
    }

    fn unindex(&mut self, incident: &Incident) {
        let fingerprints = incident.alerts.iter().map(|a| (&a.fingerprint, true));
        let groups = incident.group_keys.iter().map(|k| (k, false));
        for (key, is_fingerprint) in fingerprints.chain(groups) {
            let index = if is_fingerprint {
                &mut self.by_fingerprint
            } else {
                &mut self.by_group
            };
            let k = index_key(&incident.tenant, key);
            if let Some(ids) = index.get_mut(&k) {
                ids.remove(&incident.id);
                if ids.is_empty() {
                    index.remove(&k);
                }
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&Incident> {
        self.incidents.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Incident> {
        self.incidents.get_mut(id)
    }

    pub fn remove(&mut self, id: &str) -> Option<Incident> {
        let incident = self.incidents.remove(id)?;
        self.unindex(&incident);
        Some(incident)
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

    /// The incidents holding an alert of `tenant` with this fingerprint: the only ones a
    /// repeat of it can count into.
    pub fn holding(&self, tenant: &str, fingerprint: &str) -> impl Iterator<Item = &str> {
        self.by_fingerprint
            .get(&index_key(tenant, fingerprint))
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// Routes one alert (whose envelope id is `alert_id`) to its incident.
    pub fn apply(
        &mut self,
        alert_id: Uuid,
        alert: &CanonicalAlert,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Outcome {
        let key_only = is_key_only(alert);
        let labels = self.rules.group_labels(alert);
        let key = group_key(&labels);
        let open = |i: &&Incident| !i.is_resolved() && i.tenant == alert.tenant;
        let recent = |i: &&Incident| elapsed(i.last_alert_at, now) <= policy.window;
        let latest = |a: &&Incident, b: &&Incident| a.last_alert_at.cmp(&b.last_alert_at);
        // An alert changing state soon after its incident resolved reopens it rather than
        // opening another, so flapping across a resolution is still one incident.
        let reopenable = |i: &&Incident| {
            i.tenant == alert.tenant
                && i.resolved_at
                    .is_none_or(|at| elapsed(at, now) < policy.flapping.window)
        };
        let indexed = |index: &HashMap<String, BTreeSet<String>>, key: &str| {
            index
                .get(&index_key(&alert.tenant, key))
                .into_iter()
                .flatten()
                .filter_map(|id| self.incidents.get(id))
                .collect::<Vec<&Incident>>()
        };
        let by_fingerprint = indexed(&self.by_fingerprint, &alert.fingerprint)
            .into_iter()
            .filter(|i| reopenable(i))
            .filter(|i| key_only || i.group_keys.contains(&key))
            .max_by(|a, b| latest(a, b))
            .map(|i| i.id.clone());
        let joinable = alert.status == AlertStatus::Firing && !key_only;
        let target = by_fingerprint
            .or_else(|| {
                joinable
                    .then(|| {
                        indexed(&self.by_group, &key)
                            .into_iter()
                            .filter(|i| open(i) && recent(i))
                            .max_by(|a, b| latest(a, b))
                            .map(|i| i.id.clone())
                    })
                    .flatten()
            })
            .or_else(|| {
                (joinable
                    && self.rules.joins_topology()
                    && self.rules.topology.contains(&alert.service))
                .then(|| {
                    self.incidents
                        .values()
                        .filter(open)
                        .filter(recent)
                        .filter(|i| self.topology_joins(i, alert, &labels))
                        .max_by(latest)
                        .map(|i| i.id.clone())
                })
                .flatten()
            });
        if let Some(id) = target {
            let topology = &self.rules.topology;
            let Some(incident) = self.incidents.get_mut(&id) else {
                return Outcome::Ignored;
            };
            let change = incident.record(alert, key_only, &policy.flapping, now);
            if !key_only {
                incident.group_keys.insert(key.clone());
            }
            incident.root_service = root_of(topology, incident);
            self.by_fingerprint
                .entry(index_key(&alert.tenant, &alert.fingerprint))
                .or_default()
                .insert(id.clone());
            if !key_only {
                self.by_group
                    .entry(index_key(&alert.tenant, &key))
                    .or_default()
                    .insert(id.clone());
            }
            return match change {
                Change::Counted => Outcome::Counted(id),
                Change::Updated => Outcome::Updated(id),
                Change::Resolved => Outcome::Resolved(id),
            };
        }
        if alert.status == AlertStatus::Resolved || key_only {
            return Outcome::Ignored;
        }
        let id = incident_id(alert_id);
        let mut incident = Incident::open_group(id.clone(), alert, key, labels, now);
        incident.root_service = root_of(&self.rules.topology, &incident);
        self.index(&incident);
        self.incidents.insert(id.clone(), incident);
        Outcome::Opened(id)
    }

    /// Whether `alert` (with group `labels`) joins `incident` through the topology: the
    /// incident's group differs only in a service related to the alert's.
    fn topology_joins(
        &self,
        incident: &Incident,
        alert: &CanonicalAlert,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        let others_equal = labels
            .iter()
            .filter(|(k, _)| *k != "service")
            .all(|(k, v)| incident.group_labels.get(k) == Some(v))
            && incident
                .group_labels
                .keys()
                .filter(|k| *k != "service")
                .all(|k| labels.contains_key(k));
        others_equal
            && incident
                .alerts
                .iter()
                .any(|a| self.rules.topology.related(&a.service, &alert.service))
    }

    /// Ends damped flapping of the incident's quiet alerts (see [`Incident::settle`]).
    pub fn settle(&mut self, id: &str, policy: &Policy, now: DateTime<Utc>) -> Option<Change> {
        let topology = &self.rules.topology;
        let incident = self.incidents.get_mut(id)?;
        let change = incident.settle(&policy.flapping, now);
        incident.root_service = root_of(topology, incident);
        change
    }

    /// What is due for every incident at `now`.
    pub fn due(&self, policy: &Policy, now: DateTime<Utc>) -> Vec<(String, Due)> {
        self.incidents
            .values()
            .filter_map(|i| due_for(i, policy, now).map(|d| (i.id.clone(), d)))
            .collect()
    }
}

/// The probable root service when the incident spans more than one service.
fn root_of(topology: &mcplane_shared::topology::Topology, incident: &Incident) -> Option<String> {
    // Without a CMDB there is no root to name: skip the two walks over the incident's alerts,
    // which every alert joining it would otherwise pay.
    if topology.is_empty() || incident.services().len() < 2 {
        return None;
    }
    topology
        .root(&incident.alerting_services())
        .map(str::to_string)
}

/// Resolved for longer than the flap window: no alert can reopen it any more.
fn settled(i: &Incident, policy: &Policy, now: DateTime<Utc>) -> bool {
    i.resolved_at
        .is_some_and(|at| elapsed(at, now) >= policy.flapping.window)
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
    if i.settle_due(&policy.flapping, now) {
        return Some(Due::Settle);
    }
    let flush_at = match s.last_flush_at {
        Some(at) => at + chrono::Duration::from_std(policy.group_interval).unwrap_or_default(),
        None => i.opened_at + chrono::Duration::from_std(policy.group_wait).unwrap_or_default(),
    };
    if now < flush_at {
        // Resolved with nobody told it was firing: nothing will ever be told; done (once it
        // can no longer be reopened by a flapping alert).
        let untold = s.log.as_ref().is_none_or(|l| l.firing.is_empty());
        let done = settled(i, policy, now) && untold;
        let stale = elapsed(i.last_alert_at, now) > STALE_AFTER;
        return (done || stale).then_some(Due::Evict);
    }
    let (firing, resolved) = i.notify_sets();
    let wanted = policy.escalation.escalates(&i.tenant, i.severity());
    if wanted
        && needs_update(
            s.log.as_ref(),
            &firing,
            &resolved,
            policy.repeat_interval,
            policy.send_resolved,
            now,
        )
    {
        let tells_nothing = firing.is_empty() && !policy.send_resolved;
        let log = NotifyLog {
            firing,
            resolved,
            at: now,
        };
        return Some(if tells_nothing {
            Due::Flush { log: Some(log) }
        } else {
            Due::Summarize {
                revision: i.revision,
                log,
            }
        });
    }
    // A resolved incident that has nothing more to tell is done.
    if settled(i, policy, now) || elapsed(i.last_alert_at, now) > STALE_AFTER {
        return Some(Due::Evict);
    }
    Some(Due::Flush { log: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::tests::{alert, at};
    use crate::incident::PendingSummary;
    use mcplane_shared::Severity;
    use AlertStatus::{Firing, Resolved};

    const WINDOW: Duration = Duration::from_secs(600);

    fn policy() -> Policy {
        Policy {
            window: WINDOW,
            group_wait: Duration::from_secs(2),
            group_interval: Duration::from_secs(300),
            ..Policy::default()
        }
    }

    fn apply(book: &mut IncidentBook, a: &CanonicalAlert, secs: i64) -> Outcome {
        book.apply(Uuid::now_v7(), a, &policy(), at(secs))
    }

    /// What the owner does with a due item, minus the publishing: record the flush.
    fn flushed(book: &mut IncidentBook, id: &str, due: &Due, secs: i64) {
        let inc = book.get_mut(id).unwrap();
        inc.summaries.last_flush_at = Some(at(secs));
        match due {
            Due::Summarize { revision, log } => {
                inc.summaries.log = Some(log.clone());
                inc.summaries.last_revision = Some(*revision);
                inc.summaries.last_at = Some(at(secs));
            }
            Due::Flush { log: Some(log) } => inc.summaries.log = Some(log.clone()),
            _ => {}
        }
    }

    fn fps(names: &[&str]) -> std::collections::BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn cmdb() -> Rules {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cmdb.toml");
        Rules {
            topology: mcplane_shared::topology::Topology::load(&path).unwrap(),
            ..Rules::default()
        }
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
        // A repeated resolve is counted; the alert firing again within the flap window
        // reopens the incident, after it a new incident opens.
        assert_eq!(
            apply(&mut book, &alert("db", "b", Resolved, Severity::Warning), 4),
            Outcome::Counted(id.clone())
        );
        assert_eq!(
            apply(&mut book, &alert("db", "a", Firing, Severity::Critical), 5),
            Outcome::Updated(id.clone())
        );
        assert!(!book.get(&id).unwrap().is_resolved());
        apply(
            &mut book,
            &alert("db", "a", Resolved, Severity::Critical),
            6,
        );
        assert!(matches!(
            apply(&mut book, &alert("db", "a", Firing, Severity::Critical), 6 + 600),
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
    fn first_summary_waits_for_group_wait_then_the_group_is_flushed_every_interval() {
        let mut book = IncidentBook::default();
        let Outcome::Opened(id) = apply(&mut book, &alert("api", "a", Firing, Severity::High), 0)
        else {
            panic!()
        };
        let p = policy();
        assert!(book.due(&p, at(1)).is_empty(), "still within group_wait");
        let due = book.due(&p, at(2));
        let [(due_id, d @ Due::Summarize { revision: 1, log })] = &due[..] else {
            panic!("{due:?}")
        };
        assert_eq!((due_id, &log.firing), (&id, &fps(&["a"])));
        flushed(&mut book, &id, d, 2);

        // Asked: nothing more is due until the answer or the timeout.
        book.get_mut(&id).unwrap().summaries.pending = Some(PendingSummary {
            request_id: Uuid::now_v7(),
            revision: 1,
            requested_at: at(2),
        });
        assert!(book.due(&p, at(100)).is_empty());
        assert_eq!(
            book.due(&p, at(122)),
            vec![(id.clone(), Due::TimedOut { revision: 1 })]
        );
        book.get_mut(&id).unwrap().summaries.pending = None;

        // Unchanged at the next flush: the dedup stage tells nobody.
        assert!(book.due(&p, at(301)).is_empty());
        assert_eq!(
            book.due(&p, at(302)),
            vec![(id.clone(), Due::Flush { log: None })]
        );
        flushed(&mut book, &id, &Due::Flush { log: None }, 302);
        // A new alert at 310 is told at the following flush, not before.
        apply(&mut book, &alert("api", "b", Firing, Severity::High), 310);
        assert!(book.due(&p, at(601)).is_empty());
        assert!(matches!(
            &book.due(&p, at(602))[..],
            [(_, Due::Summarize { revision: 2, log })] if log.firing == fps(&["a", "b"])
        ));
    }

    #[test]
    fn an_unchanged_incident_is_summarised_again_after_the_repeat_interval() {
        let mut book = IncidentBook::default();
        let Outcome::Opened(id) = apply(&mut book, &alert("api", "a", Firing, Severity::High), 0)
        else {
            panic!()
        };
        let p = Policy {
            repeat_interval: Duration::from_secs(1000),
            ..policy()
        };
        let d = book.due(&p, at(2)).remove(0).1;
        flushed(&mut book, &id, &d, 2);
        let mut t = 2;
        while t + 300 < 1002 {
            t += 300;
            assert_eq!(
                book.due(&p, at(t)),
                vec![(id.clone(), Due::Flush { log: None })]
            );
            flushed(&mut book, &id, &Due::Flush { log: None }, t);
        }
        // The first flush more than repeat_interval after the last summary repeats it.
        assert!(matches!(
            &book.due(&p, at(t + 300))[..],
            [(_, Due::Summarize { revision: 1, .. })]
        ));
    }

    #[test]
    fn incidents_below_the_minimum_severity_are_not_summarised() {
        let mut book = IncidentBook::default();
        apply(&mut book, &alert("api", "a", Firing, Severity::Info), 0);
        let p = Policy {
            escalation: crate::escalation::Escalation::at_least(Severity::Warning),
            ..policy()
        };
        assert!(matches!(
            &book.due(&p, at(60))[..],
            [(_, Due::Flush { log: None })]
        ));
        // Until a more severe alert joins.
        apply(
            &mut book,
            &alert("api", "b", Firing, Severity::Critical),
            61,
        );
        assert!(matches!(
            book.due(&p, at(62))[..],
            [(_, Due::Summarize { revision: 2, .. })]
        ));
    }

    #[test]
    fn an_incident_that_fired_and_resolved_unseen_is_dropped_untold() {
        let mut book = IncidentBook::default();
        let Outcome::Opened(id) = apply(&mut book, &alert("api", "a", Firing, Severity::High), 0)
        else {
            panic!()
        };
        apply(&mut book, &alert("api", "a", Resolved, Severity::High), 1);
        // Alertmanager's dedup stage: no log entry and nothing firing tells nobody; it is
        // dropped once it can no longer be reopened.
        assert!(book.due(&policy(), at(1)).is_empty());
        assert_eq!(
            book.due(&policy(), at(600)),
            vec![(id.clone(), Due::Flush { log: None })]
        );
        assert_eq!(book.due(&policy(), at(601)), vec![(id, Due::Evict)]);
    }

    /// Alertmanager's `TestAggrGroup`, on the book and a fixed clock: the first flush after
    /// group_wait, one every group_interval after, resolved alerts told (with send_resolved)
    /// and the group gone once everything resolved was told.
    #[test]
    fn aggregation_group_timing_follows_alertmanager() {
        for send_resolved in [true, false] {
            let p = Policy {
                group_wait: Duration::from_secs(1),
                group_interval: Duration::from_secs(300),
                repeat_interval: Duration::from_secs(3600),
                send_resolved,
                flapping: Flapping {
                    threshold: 4,
                    window: Duration::from_secs(1),
                },
                ..policy()
            };
            let mut book = IncidentBook::default();
            let a = |fp: &str, status| alert("api", fp, status, Severity::High);
            let step = |book: &mut IncidentBook, a: &CanonicalAlert, secs: i64| {
                book.apply(Uuid::now_v7(), a, &p, at(secs))
            };

            // Regular situation: a1 and a2 wait for group_wait, then go out together.
            let Outcome::Opened(id) = step(&mut book, &a("a1", Firing), 0) else {
                panic!()
            };
            step(&mut book, &a("a2", Firing), 0);
            assert!(book.due(&p, at(0)).is_empty(), "received batch too early");
            let due = book.due(&p, at(1));
            let [(_, d @ Due::Summarize { log, .. })] = &due[..] else {
                panic!("expected initial batch after group_wait: {due:?}")
            };
            assert_eq!(log.firing, fps(&["a1", "a2"]));
            flushed(&mut book, &id, d, 1);

            // A new alert comes in after group_interval, with the others.
            step(&mut book, &a("a3", Firing), 10);
            assert!(book.due(&p, at(300)).is_empty(), "received batch too early");
            let due = book.due(&p, at(301));
            let [(_, d @ Due::Summarize { log, .. })] = &due[..] else {
                panic!("expected new batch after group interval: {due:?}")
            };
            assert_eq!(log.firing, fps(&["a1", "a2", "a3"]));
            flushed(&mut book, &id, d, 301);

            // Resolve an alert: told at the next flush only with send_resolved.
            step(&mut book, &a("a1", Resolved), 320);
            let due = book.due(&p, at(601));
            match (&due[..], send_resolved) {
                ([(_, d @ Due::Summarize { log, .. })], true) => {
                    assert_eq!(
                        (&log.firing, &log.resolved),
                        (&fps(&["a2", "a3"]), &fps(&["a1"]))
                    );
                    flushed(&mut book, &id, d, 601);
                }
                ([(_, d @ Due::Flush { log: None })], false) => flushed(&mut book, &id, d, 601),
                other => panic!("send_resolved={send_resolved}: {other:?}"),
            }

            // Resolve the rest: told (or only logged) at the next flush, then the group is gone.
            step(&mut book, &a("a2", Resolved), 700);
            assert!(matches!(
                step(&mut book, &a("a3", Resolved), 700),
                Outcome::Resolved(_)
            ));
            assert!(
                book.due(&p, at(900)).is_empty(),
                "waits for the group interval"
            );
            let due = book.due(&p, at(901));
            match (&due[..], send_resolved) {
                ([(_, d @ Due::Summarize { log, .. })], true)
                | ([(_, d @ Due::Flush { log: Some(log) })], false) => {
                    assert!(log.firing.is_empty());
                    assert_eq!(log.resolved, fps(&["a1", "a2", "a3"]));
                    flushed(&mut book, &id, d, 901);
                }
                other => panic!("send_resolved={send_resolved}: {other:?}"),
            }
            assert_eq!(book.due(&p, at(902)), vec![(id.clone(), Due::Evict)]);
        }
    }

    #[test]
    fn group_by_labels_split_one_service_into_groups() {
        let mut book = IncidentBook::new(
            [],
            Rules {
                group_by: crate::rules::GroupBy::from_config(&["service".into(), "env".into()]),
                ..Rules::default()
            },
        );
        let mut prod = alert("api", "a", Firing, Severity::High);
        prod.labels.insert("env".into(), "prod".into());
        let mut staging = alert("api", "b", Firing, Severity::High);
        staging.labels.insert("env".into(), "staging".into());
        let mut prod2 = alert("api", "c", Firing, Severity::High);
        prod2.labels.insert("env".into(), "prod".into());
        let Outcome::Opened(first) = apply(&mut book, &prod, 0) else {
            panic!()
        };
        assert!(matches!(apply(&mut book, &staging, 1), Outcome::Opened(other) if other != first));
        assert_eq!(apply(&mut book, &prod2, 2), Outcome::Updated(first));
    }

    #[test]
    fn alerts_from_every_source_about_one_service_make_one_incident() {
        let mut book = IncidentBook::default();
        let mut sources = ["datadog", "cloudwatch", "pagerduty", "grafana"].into_iter();
        let mut first = alert("checkout", "dd-1", Firing, Severity::High);
        first.source = sources.next().unwrap().into();
        let Outcome::Opened(id) = apply(&mut book, &first, 0) else {
            panic!()
        };
        for (i, source) in sources.enumerate() {
            let mut a = alert("checkout", &format!("{source}-1"), Firing, Severity::High);
            a.source = source.into();
            assert_eq!(
                apply(&mut book, &a, i as i64 + 1),
                Outcome::Updated(id.clone())
            );
        }
        let inc = book.get(&id).unwrap();
        let sources: Vec<&str> = inc.alerts.iter().map(|a| a.source.as_str()).collect();
        assert_eq!(sources, ["datadog", "cloudwatch", "pagerduty", "grafana"]);
    }

    #[test]
    fn dependent_services_join_one_incident_naming_the_deepest_as_root() {
        let mut book = IncidentBook::new([], cmdb());
        let Outcome::Opened(id) = apply(
            &mut book,
            &alert("checkout", "co", Firing, Severity::Critical),
            0,
        ) else {
            panic!()
        };
        assert_eq!(
            book.get(&id).unwrap().root_service,
            None,
            "one service: no root to name"
        );
        assert_eq!(
            apply(
                &mut book,
                &alert("payments", "pay", Firing, Severity::High),
                5
            ),
            Outcome::Updated(id.clone())
        );
        assert_eq!(
            apply(
                &mut book,
                &alert("payments-db", "db", Firing, Severity::High),
                9
            ),
            Outcome::Updated(id.clone())
        );
        let inc = book.get(&id).unwrap();
        assert_eq!(inc.root_service.as_deref(), Some("payments-db"));
        assert_eq!(inc.services(), ["checkout", "payments", "payments-db"]);
        let event = inc.event(mcplane_shared::IncidentEventKind::Updated);
        assert_eq!(event.root_service.as_deref(), Some("payments-db"));
        assert!(
            event
                .title
                .ends_with("(+2 more; probable root: payments-db)"),
            "{}",
            event.title
        );
        // A second alert of a member service's group joins by its group key.
        assert_eq!(
            apply(
                &mut book,
                &alert("payments", "pay-2", Firing, Severity::High),
                12
            ),
            Outcome::Updated(id.clone())
        );
        // search does not depend on (nor is it a dependency of) any of them.
        assert!(matches!(
            apply(&mut book, &alert("search", "s", Firing, Severity::High), 13),
            Outcome::Opened(other) if other != id
        ));
        // Outside the window (of both incidents), a dependent service opens its own incident.
        assert!(matches!(
            apply(&mut book, &alert("web-frontend", "web", Firing, Severity::High), 13 + 601),
            Outcome::Opened(other) if other != id
        ));
        // Once the root resolves, the root moves to the deepest still alerting.
        apply(
            &mut book,
            &alert("payments-db", "db", Resolved, Severity::High),
            614,
        );
        assert_eq!(
            book.get(&id).unwrap().root_service.as_deref(),
            Some("payments")
        );
    }

    #[test]
    fn without_a_cmdb_dependent_services_stay_apart() {
        let mut book = IncidentBook::default();
        let a = apply(
            &mut book,
            &alert("payments", "p", Firing, Severity::High),
            0,
        );
        let b = apply(
            &mut book,
            &alert("payments-db", "d", Firing, Severity::High),
            1,
        );
        assert_ne!(a, b);
        assert_eq!(book.len(), 2);
    }

    #[test]
    fn a_resolve_carrying_only_its_key_finds_the_trigger_of_another_service() {
        let mut book = IncidentBook::default();
        let mut trigger = alert("payments", "dedup-1", Firing, Severity::Critical);
        trigger.source = "pagerduty".into();
        trigger.original =
            serde_json::json!({"event_action": "trigger", "payload": {"summary": "x"}});
        let Outcome::Opened(id) = apply(&mut book, &trigger, 0) else {
            panic!()
        };
        let mut resolve = alert("unknown", "dedup-1", Resolved, Severity::Info);
        resolve.source = "pagerduty".into();
        resolve.original = serde_json::json!({"event_action": "resolve"});
        assert!(is_key_only(&resolve));
        assert_eq!(apply(&mut book, &resolve, 5), Outcome::Resolved(id.clone()));
        // A key nobody triggered is ignored, never an incident of service "unknown".
        let mut stray = resolve.clone();
        stray.fingerprint = "dedup-2".into();
        stray.status = Firing;
        assert_eq!(apply(&mut book, &stray, 6), Outcome::Ignored);
    }

    #[test]
    fn the_indexes_follow_incidents_in_and_out_of_the_book() {
        let mut book = IncidentBook::default();
        let a = alert("api", "a", Firing, Severity::High);
        let Outcome::Opened(first) = apply(&mut book, &a, 0) else {
            panic!()
        };
        // Rebuilt from the stored incidents (a restart), the indexes route the same way.
        let incidents: Vec<Incident> = book.iter().cloned().collect();
        let mut reloaded = IncidentBook::new(incidents, Rules::default());
        assert_eq!(reloaded, book);
        assert_eq!(apply(&mut reloaded, &a, 1), Outcome::Counted(first.clone()));
        // Removed (evicted), it no longer receives alerts; a new incident opens.
        book.remove(&first);
        assert_eq!(book, IncidentBook::default());
        assert!(matches!(apply(&mut book, &a, 2), Outcome::Opened(second) if second != first));
    }
}
