//! What a summary says: the request text the model gets, the text assembled without AI when
//! no model can answer, and the [`IncidentSummary`] published for the people on call.
//!
//! The request lists each distinct alert once with its repeat count, most severe first, and is
//! capped so that a storm of alerts cannot exceed the pipeline's input limit.

use std::fmt::Write;

use chrono::SecondsFormat;
use mcplane_shared::{AiResponse, AlertStatus, IncidentAlert, IncidentSummary};

use crate::incident::Incident;

/// Alert lines listed in a request or a summary; the rest are counted.
const MAX_LINES: usize = 40;
/// Characters kept of one alert's summary line.
const MAX_LINE_CHARS: usize = 300;

/// The title line: what, how bad, since when.
fn title_line(incident: &Incident) -> String {
    let state = if incident.is_resolved() {
        "resolved".to_string()
    } else {
        format!(
            "{} of {} alerts firing",
            incident.firing(),
            incident.alerts.len()
        )
    };
    format!(
        "{} ({} incident on {}, opened {}, {state})",
        incident.title(),
        incident.severity().as_str(),
        incident.service,
        incident
            .opened_at
            .to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// Alerts in the order a person should read them: firing first, most severe first.
fn ordered(incident: &Incident) -> Vec<&IncidentAlert> {
    let mut alerts: Vec<&IncidentAlert> = incident.alerts.iter().collect();
    alerts.sort_by_key(|a| (a.status != AlertStatus::Firing, a.severity, a.first_seen));
    alerts
}

fn alert_lines(incident: &Incident, out: &mut String) {
    let alerts = ordered(incident);
    for a in alerts.iter().take(MAX_LINES) {
        let summary: String = a.summary.chars().take(MAX_LINE_CHARS).collect();
        let resolved = if a.status == AlertStatus::Resolved {
            ", resolved"
        } else {
            ""
        };
        let _ = write!(
            out,
            "\n- [{}] {}: {} (x{}{resolved})",
            a.severity.as_str(),
            a.service,
            summary,
            a.count
        );
    }
    if alerts.len() > MAX_LINES {
        let _ = write!(out, "\n- ... and {} more alerts", alerts.len() - MAX_LINES);
    }
}

/// For an incident spanning dependent services: which, and the probable root.
fn topology_line(incident: &Incident, out: &mut String) {
    if let Some(root) = &incident.root_service {
        let _ = write!(
            out,
            "\nProbable root service: {root} (alerting services: {}).",
            incident.services().join(", ")
        );
    }
}

/// The `input` of the summary request: `<title line>\n- [sev] service: summary (xN)\n...`.
pub fn request_input(incident: &Incident) -> String {
    let mut out = title_line(incident);
    topology_line(incident, &mut out);
    alert_lines(incident, &mut out);
    out
}

/// A summary assembled without AI from the incident's alerts; `reason` says why.
pub fn assembled_text(incident: &Incident, reason: &str) -> String {
    let mut out = title_line(incident);
    topology_line(incident, &mut out);
    let _ = write!(
        out,
        "\n{} notifications from {} distinct alerts.",
        incident.notifications(),
        incident.alerts.len()
    );
    alert_lines(incident, &mut out);
    let _ = write!(out, "\n(assembled without AI: {reason})");
    out
}

/// The published summary of `revision`: the model's answer, or the assembled text when
/// `response` is `None`.
pub fn build(
    incident: &Incident,
    revision: u32,
    response: Option<&AiResponse>,
    degraded_reason: &str,
) -> IncidentSummary {
    let (summary, provider, model) = match response {
        Some(r) => (
            r.text.clone(),
            Some(r.provider.clone()),
            Some(r.model.clone()),
        ),
        None => (assembled_text(incident, degraded_reason), None, None),
    };
    IncidentSummary {
        incident_id: incident.id.clone(),
        tenant: incident.tenant.clone(),
        revision,
        severity: incident.severity(),
        service: incident.service.clone(),
        title: incident.title(),
        summary,
        alert_count: u32::try_from(incident.alerts.len()).unwrap_or(u32::MAX),
        degraded: response.is_none(),
        provider,
        model,
        opened_at: incident.opened_at,
        links: incident.links.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::tests::{alert, at};
    use crate::incident::Flapping;
    use mcplane_shared::Severity;

    fn incident() -> Incident {
        let mut inc = Incident::open(
            "inc-1".into(),
            &alert("checkout", "lat", AlertStatus::Firing, Severity::Warning),
            at(0),
        );
        for s in 1..4 {
            inc.record(
                &alert("checkout", "err", AlertStatus::Firing, Severity::Critical),
                false,
                &Flapping::default(),
                at(s),
            );
        }
        inc
    }

    #[test]
    fn request_lists_each_alert_once_most_severe_first() {
        assert_eq!(
            request_input(&incident()),
            "checkout: err on checkout (+1 more) (critical incident on checkout, opened \
             2024-05-14T09:00:00Z, 2 of 2 alerts firing)\n\
             - [critical] checkout: err on checkout (x3)\n\
             - [warning] checkout: lat on checkout (x1)"
        );
    }

    #[test]
    fn a_request_stays_small_when_an_alert_carries_a_whole_log() {
        let mut inc = incident();
        let mut log = alert("checkout", "dump", AlertStatus::Firing, Severity::Critical);
        log.summary = "panic: index out of range\n".repeat(4_000);
        inc.record(&log, false, &Flapping::default(), at(5));
        let input = request_input(&inc);
        assert!(input.contains("panic: index out of range"), "{input}");
        // The title line and the alert line keep a few hundred characters of it each.
        assert!(input.len() < 2_000, "{} bytes", input.len());
    }

    #[test]
    fn without_a_response_the_summary_is_assembled_and_marked_degraded() {
        let s = build(&incident(), 2, None, "no service account key configured");
        assert!(s.degraded);
        assert_eq!(s.provider, None);
        assert_eq!(s.alert_count, 2);
        assert_eq!(s.severity, Severity::Critical);
        assert!(
            s.summary.contains("4 notifications from 2 distinct alerts"),
            "{}",
            s.summary
        );
        assert!(s
            .summary
            .ends_with("(assembled without AI: no service account key configured)"));

        let r = AiResponse {
            text: "Checkout is failing.".into(),
            provider: "local".into(),
            model: "m".into(),
            usage: Default::default(),
        };
        let s = build(&incident(), 2, Some(&r), "");
        assert!(!s.degraded);
        assert_eq!(s.summary, "Checkout is failing.");
        assert_eq!(s.provider.as_deref(), Some("local"));
    }
}
