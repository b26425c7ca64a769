//! The prompt a remote model gets: an instruction per request type, the (already redacted)
//! input, and the context the principal was allowed to see.
//!
//! Context goes in as compact JSON under a clear heading rather than prose, so the model can
//! cite it and a reviewer can see exactly what left the boundary.

use mcplane_shared::{Exchange, RequestType};

/// The system message for a request type.
pub fn instruction(request_type: RequestType) -> &'static str {
    match request_type {
        RequestType::Summarize => {
            "You are an SRE assistant. Summarise the incident below for the engineers on call: \
             what is failing, how badly, since when, and what to check first. Be brief and \
             factual; use only the alerts and context given."
        }
        RequestType::Answer => {
            "You are an SRE assistant. Answer the question below using the context given. If \
             the context does not contain the answer, say so."
        }
        RequestType::Classify => {
            "Classify the text below: give a category, a severity (critical, error, warning, \
             info) and the affected service, one per line."
        }
        RequestType::GenerateArticle => {
            "Write a short knowledge-base article (title, symptoms, cause, resolution) from the \
             material below."
        }
    }
}

/// The user message: the input, then the context items.
pub fn user_message(exchange: &Exchange) -> String {
    let mut out = exchange.request.input.clone();
    if !exchange.context.is_empty() {
        out.push_str("\n\nContext:");
        for item in &exchange.context {
            out.push_str(&format!(
                "\n- {} {}: {}",
                item.source, item.subject, item.data
            ));
        }
    }
    out
}
