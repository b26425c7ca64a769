//! The built-in local provider: deterministic, no network, no key — the embedded default.
//!
//! It cannot reason, so it extracts: the most severe alert lines of an incident, the first
//! sentences of a question, and the facts of the injected context (owner, tier, runbook,
//! dependencies). That is enough for a useful incident summary and for exercising the whole
//! governed pipeline without any external model.

use mcplane_shared::{AiResponse, ContextItem, Exchange, RequestType, Usage};

/// The model name the local provider reports by default.
pub const MODEL: &str = "mcplane-local-1";

/// Lines of alerts quoted in a summary.
const MAX_ALERT_LINES: usize = 5;

#[derive(Debug, Clone)]
pub struct LocalProvider {
    pub name: String,
}

impl LocalProvider {
    pub fn new(name: String) -> Self {
        LocalProvider { name }
    }

    pub fn invoke(&self, exchange: &Exchange, model: &str) -> AiResponse {
        let text = respond(exchange);
        AiResponse {
            usage: Usage {
                input_tokens: estimate_input_tokens(exchange),
                output_tokens: estimate_tokens(&text),
                cost_micros: 0,
            },
            text,
            provider: self.name.clone(),
            model: model.to_string(),
        }
    }
}

/// Estimated tokens of what a model is given: the input and every context item.
pub fn estimate_input_tokens(exchange: &Exchange) -> u32 {
    estimate_tokens(&exchange.request.input)
        + exchange
            .context
            .iter()
            .map(|c| estimate_tokens(&c.data.to_string()))
            .sum::<u32>()
}

/// About four characters a token, as the common tokenisers average on English text.
pub fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(text.len().div_ceil(4)).unwrap_or(u32::MAX)
}

fn respond(exchange: &Exchange) -> String {
    let input = exchange.request.input.trim();
    let mut out = match exchange.request.request_type {
        RequestType::Summarize => summarize(input),
        RequestType::Answer => format!(
            "Question: {}\nWhat the context says:",
            first_sentences(input, 2)
        ),
        RequestType::Classify => classify(input),
        RequestType::GenerateArticle => format!(
            "# {}\n\n## Symptoms\n{}\n\n## Context",
            first_sentences(input, 1),
            input
        ),
    };
    let facts = context_facts(&exchange.context);
    if facts.is_empty() {
        out.push_str("\n- no context was available for the services involved");
    } else {
        for fact in facts {
            out.push_str("\n- ");
            out.push_str(&fact);
        }
    }
    out
}

/// An incident summary: the title line, then the most severe alert lines as given (the
/// correlator lists them most severe first).
fn summarize(input: &str) -> String {
    let mut lines = input.lines().map(str::trim).filter(|l| !l.is_empty());
    let title = lines.next().unwrap_or_default();
    let alerts: Vec<&str> = lines.filter(|l| l.starts_with("- ")).collect();
    let mut out = format!("Summary: {title}");
    if !alerts.is_empty() {
        out.push_str(&format!("\nTop alerts ({} in all):", alerts.len()));
        for line in alerts.iter().take(MAX_ALERT_LINES) {
            out.push_str("\n  ");
            out.push_str(line);
        }
    }
    out.push_str("\nContext:");
    out
}

fn classify(input: &str) -> String {
    let lower = input.to_ascii_lowercase();
    let severity = ["critical", "error", "warning"]
        .into_iter()
        .find(|s| lower.contains(s))
        .unwrap_or("info");
    let category = if lower.contains("latency") || lower.contains("slow") {
        "performance"
    } else if lower.contains("disk") || lower.contains("memory") || lower.contains("cpu") {
        "capacity"
    } else if lower.contains("error") || lower.contains("fail") {
        "availability"
    } else {
        "other"
    };
    format!("category: {category}\nseverity: {severity}\nContext:")
}

fn first_sentences(text: &str, n: usize) -> String {
    let mut end = text.len();
    let mut seen = 0;
    for (i, c) in text.char_indices() {
        if matches!(c, '.' | '?' | '!') {
            seen += 1;
            if seen == n {
                end = i + c.len_utf8();
                break;
            }
        }
    }
    text[..end].trim().to_string()
}

/// One line per context item: `<service>: owner …, tier …, runbook …, depends on …`.
fn context_facts(context: &[ContextItem]) -> Vec<String> {
    context
        .iter()
        .map(|item| {
            let d = &item.data;
            let mut parts = Vec::new();
            for (key, label) in [
                ("owner", "owner"),
                ("team", "team"),
                ("tier", "tier"),
                ("runbook", "runbook"),
            ] {
                if let Some(v) = d.get(key).filter(|v| !v.is_null()) {
                    let v = v.as_str().map(str::to_string).unwrap_or(v.to_string());
                    parts.push(format!("{label} {v}"));
                }
            }
            for (key, label) in [("dependencies", "depends on"), ("dependents", "used by")] {
                if let Some(list) = d.get(key).and_then(|v| v.as_array()) {
                    let names: Vec<&str> = list.iter().filter_map(|v| v.as_str()).collect();
                    if !names.is_empty() {
                        parts.push(format!("{label} {}", names.join(", ")));
                    }
                }
            }
            if parts.is_empty() {
                format!("{} ({}): {}", item.subject, item.source, d)
            } else {
                format!("{} ({}): {}", item.subject, item.source, parts.join("; "))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcplane_shared::AiRequest;
    use serde_json::json;

    fn exchange(kind: RequestType, input: &str) -> Exchange {
        let mut ex = Exchange::new(AiRequest {
            services: vec![],
            ..AiRequest::new(kind, input)
        });
        ex.context.push(ContextItem {
            source: "cmdb".into(),
            subject: "checkout".into(),
            data: json!({"owner": "ana@example.com", "tier": 1,
                         "dependencies": ["payments", "inventory"]}),
        });
        ex
    }

    #[test]
    fn summary_quotes_the_title_top_alerts_and_context() {
        let input = "checkout: errors (critical incident on checkout)\n\
                     - [critical] checkout: HighErrorRate (x3)\n\
                     - [warning] checkout: HighLatency (x1)";
        let p = LocalProvider::new("local".into());
        let r = p.invoke(&exchange(RequestType::Summarize, input), MODEL);
        assert_eq!(
            r.text,
            "Summary: checkout: errors (critical incident on checkout)\n\
             Top alerts (2 in all):\n  \
             - [critical] checkout: HighErrorRate (x3)\n  \
             - [warning] checkout: HighLatency (x1)\n\
             Context:\n\
             - checkout (cmdb): owner ana@example.com; tier 1; depends on payments, inventory"
        );
        assert!(r.usage.input_tokens > 0 && r.usage.output_tokens > 0);
        // Deterministic: the same input gives the same answer.
        assert_eq!(
            p.invoke(&exchange(RequestType::Summarize, input), MODEL)
                .text,
            r.text
        );
    }

    #[test]
    fn answers_and_classifications_are_extractive() {
        let p = LocalProvider::new("local".into());
        let r = p.invoke(
            &exchange(
                RequestType::Answer,
                "Why is checkout slow? It started at noon. Nobody knows.",
            ),
            MODEL,
        );
        assert!(r
            .text
            .starts_with("Question: Why is checkout slow? It started at noon.\n"));
        let r = p.invoke(
            &exchange(RequestType::Classify, "Critical: checkout latency high"),
            MODEL,
        );
        assert!(r
            .text
            .starts_with("category: performance\nseverity: critical"));
    }
}
