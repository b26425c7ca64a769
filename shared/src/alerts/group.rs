//! The notification-group shape that Alertmanager's webhook and Grafana's (Grafana embeds an
//! Alertmanager) share: a group `status`, a few group fields, and `alerts`, each with its own
//! `labels`, `annotations` and optional `status`. This reads what the two have in common; each
//! format maps the rest (its label fallbacks, fingerprint and links).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::fields::{first_of, invalid, Fields};
use super::fingerprint;
use crate::body::alert::AlertStatus;
use crate::error::ErrorBody;

/// One alert of a group, with what every group format reads the same way.
pub(crate) struct GroupAlert<'a> {
    pub fields: Fields<'a>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub status: AlertStatus,
    /// The group fields that locate the alert in its sender, and the alert object itself.
    pub original: Value,
}

impl GroupAlert<'_> {
    /// Alertmanager's fingerprint of the label set.
    pub fn label_fingerprint(&self) -> String {
        fingerprint::to_hex(fingerprint::label_set(
            self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ))
    }

    /// The `summary` or `description` annotation, else the alert name, else the fingerprint.
    pub fn summary(&self, fingerprint: &str) -> String {
        first_of(&self.annotations, &["summary", "description"])
            .or_else(|| first_of(&self.labels, &["alertname"]))
            .map(str::to_string)
            .unwrap_or_else(|| format!("alert {fingerprint}"))
    }
}

/// Every alert of `group` (at least one), each carrying `group_fields` in its `original`.
pub(crate) fn alerts<'a>(
    group: &Fields<'a>,
    group_fields: &[&str],
) -> Result<Vec<GroupAlert<'a>>, ErrorBody> {
    let group_status = group.opt_str("status")?;
    let alerts = group
        .opt_array("alerts")?
        .filter(|a| !a.is_empty())
        .ok_or_else(|| invalid("alerts", "is required and must hold at least one alert"))?;
    let mut context = Map::new();
    for name in group_fields {
        if let Some(v) = group.map.get(*name).filter(|v| !v.is_null()) {
            context.insert((*name).to_string(), v.clone());
        }
    }
    alerts
        .iter()
        .enumerate()
        .map(|(i, alert)| {
            let fields = Fields::object(alert, format!("alerts[{i}]"))?;
            let labels = fields.string_map("labels")?;
            if labels.is_empty() {
                return Err(invalid(
                    &fields.path_of("labels"),
                    "is required and must hold at least one label",
                ));
            }
            let annotations = fields.string_map("annotations")?;
            let status = status(&fields, group_status)?;
            let mut original = context.clone();
            original.insert("alert".to_string(), Value::Object(fields.map.clone()));
            Ok(GroupAlert {
                fields,
                labels,
                annotations,
                status,
                original: Value::Object(original),
            })
        })
        .collect()
}

/// The alert's own status, else the group's; an error names whichever field was wrong.
fn status(alert: &Fields<'_>, group_status: Option<&str>) -> Result<AlertStatus, ErrorBody> {
    let own = alert.opt_str("status")?;
    match own.or(group_status) {
        Some("firing") => Ok(AlertStatus::Firing),
        Some("resolved") => Ok(AlertStatus::Resolved),
        Some(_) => {
            let field = if own.is_some() {
                alert.path_of("status")
            } else {
                "status".to_string()
            };
            Err(invalid(&field, "must be \"firing\" or \"resolved\""))
        }
        None => Err(invalid(
            &alert.path_of("status"),
            "is required (\"firing\" or \"resolved\")",
        )),
    }
}
