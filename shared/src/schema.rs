//! JSON Schemas of the wire contracts, generated from the Rust types into `schemas/`.
//!
//! `cargo run -p mcplane-cli -- schemas --out schemas` regenerates them; a test fails when the
//! files in the repository drift from the types.

use schemars::{schema_for, Schema};

use crate::body::alert::{AlertBatch, CanonicalAlert, RawAlert};
use crate::body::audit::{AuditEvent, Checkpoint, SealedPayload};
use crate::body::catalog::{CatalogAnswer, CatalogQuery};
use crate::body::dead_letter::DeadLetter;
use crate::body::exchange::{AiRequest, Exchange};
use crate::body::incident::{IncidentEvent, IncidentSummary};
use crate::body::usage::BudgetAlert;
use crate::envelope::Envelope;
use crate::error::ErrorBody;

/// Every published schema, by file name.
pub fn all() -> Vec<(&'static str, Schema)> {
    vec![
        (
            "envelope.schema.json",
            schema_for!(Envelope<serde_json::Value>),
        ),
        ("exchange.schema.json", schema_for!(Exchange)),
        ("ai_request.schema.json", schema_for!(AiRequest)),
        ("raw_alert.schema.json", schema_for!(RawAlert)),
        ("canonical_alert.schema.json", schema_for!(CanonicalAlert)),
        ("alert_batch.schema.json", schema_for!(AlertBatch)),
        ("incident_event.schema.json", schema_for!(IncidentEvent)),
        ("incident_summary.schema.json", schema_for!(IncidentSummary)),
        ("audit_event.schema.json", schema_for!(AuditEvent)),
        ("error.schema.json", schema_for!(ErrorBody)),
        ("budget_alert.schema.json", schema_for!(BudgetAlert)),
        ("checkpoint.schema.json", schema_for!(Checkpoint)),
        ("sealed_payload.schema.json", schema_for!(SealedPayload)),
        ("catalog_query.schema.json", schema_for!(CatalogQuery)),
        ("catalog_answer.schema.json", schema_for!(CatalogAnswer)),
        ("dead_letter.schema.json", schema_for!(DeadLetter)),
    ]
}

/// The text written for a schema: pretty JSON with a trailing newline.
pub fn render(schema: &Schema) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}
