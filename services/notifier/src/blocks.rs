//! Slack Block Kit: one message per incident summary, with a plain-text fallback for
//! notifications and clients that do not render blocks.
//!
//! Text from alerts and models goes through [`escape`]: Slack's mrkdwn treats `&`, `<` and `>`
//! as control characters, and an unescaped `<!channel>` in an alert would page a whole channel.

use mcplane_shared::{IncidentSummary, Severity};
use serde_json::{json, Value};

/// Slack limits a section's text to 3000 characters.
const MAX_SECTION_CHARS: usize = 2900;

/// Escapes the three characters Slack's mrkdwn reserves.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn emoji(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => ":red_circle:",
        Severity::High => ":large_orange_circle:",
        Severity::Warning => ":large_yellow_circle:",
        Severity::Info => ":large_blue_circle:",
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut out: String = text.chars().take(max).collect();
        out.push('…');
        out
    }
}

/// The webhook body for one summary.
pub fn message(s: &IncidentSummary) -> Value {
    let severity = s.severity.as_str();
    let fallback = format!(
        "[{severity}] {} ({} alerts on {})",
        s.title, s.alert_count, s.service
    );
    let mut blocks = vec![
        json!({
            "type": "header",
            "text": {"type": "plain_text", "text": truncate(&format!("{} {}", emoji(s.severity), s.title), 150), "emoji": true}
        }),
        json!({
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": format!("*Severity*\n{severity}")},
                {"type": "mrkdwn", "text": format!("*Service*\n{}", escape(&s.service))},
                {"type": "mrkdwn", "text": format!("*Alerts*\n{}", s.alert_count)},
                {"type": "mrkdwn", "text": format!("*Opened*\n{}", s.opened_at.format("%Y-%m-%d %H:%M UTC"))},
            ]
        }),
        json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": truncate(&escape(&s.summary), MAX_SECTION_CHARS)}
        }),
    ];
    let mut context = vec![json!({
        "type": "mrkdwn",
        "text": format!(
            "incident `{}` rev {} · {}",
            s.incident_id,
            s.revision,
            match (&s.provider, s.degraded) {
                (_, true) => "assembled without AI".to_string(),
                (Some(p), false) => format!("summarised by {p}"),
                (None, false) => "summarised".to_string(),
            }
        )
    })];
    for link in s.links.iter().take(5) {
        context.push(json!({"type": "mrkdwn", "text": format!("<{}|{}>", escape(link), escape(&truncate(link, 60)))}));
    }
    blocks.push(json!({"type": "context", "elements": context}));
    json!({"text": fallback, "blocks": blocks})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> IncidentSummary {
        IncidentSummary {
            incident_id: "inc-1".into(),
            tenant: "acme".into(),
            revision: 2,
            severity: Severity::Critical,
            service: "checkout".into(),
            title: "checkout: HighErrorRate".into(),
            summary: "Errors <!channel> & more".into(),
            alert_count: 3,
            degraded: false,
            provider: Some("local".into()),
            model: Some("m".into()),
            opened_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            links: vec!["https://grafana.example/d/abc".into()],
        }
    }

    #[test]
    fn a_summary_becomes_blocks_with_a_fallback_text() {
        let m = message(&summary());
        assert_eq!(
            m["text"],
            "[critical] checkout: HighErrorRate (3 alerts on checkout)"
        );
        let blocks = m["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(
            blocks[2]["text"]["text"],
            "Errors &lt;!channel&gt; &amp; more"
        );
        let context = blocks[3]["elements"].as_array().unwrap();
        assert!(context[0]["text"]
            .as_str()
            .unwrap()
            .contains("summarised by local"));
        assert_eq!(
            context[1]["text"],
            "<https://grafana.example/d/abc|https://grafana.example/d/abc>"
        );
    }

    #[test]
    fn long_summaries_are_cut_to_slack_limits() {
        let mut s = summary();
        s.summary = "x".repeat(10_000);
        let m = message(&s);
        let text = m["blocks"][2]["text"]["text"].as_str().unwrap();
        assert_eq!(text.chars().count(), MAX_SECTION_CHARS + 1);
    }
}
