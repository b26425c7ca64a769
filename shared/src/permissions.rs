//! A nats-server authorization block in which every party may touch only its own subjects:
//! each service publishes only where it hands work on, a tenant's monitoring tools publish only
//! to that tenant's `alerts.in` subjects, a tenant's chat integration only subscribes to that
//! tenant's summaries and incidents, and a bus-native client may only submit requests. The
//! server enforces it, so a compromised integration cannot read another tenant's data or skip
//! a stage by publishing straight into it.
//!
//! Services keep `$JS.API.>` (they create their streams, consumers and buckets) and reply
//! inboxes; what bounds them is where they may publish data.

use std::fmt::Write;

use crate::subjects::{Service, Subjects};

/// One user of the generated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsUser {
    pub user: String,
    pub password: String,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

impl NatsUser {
    /// `nats://user:password@host:port` for `server` (`nats://host:port`).
    pub fn url(&self, server: &str) -> String {
        let rest = server.strip_prefix("nats://").unwrap_or(server);
        format!("nats://{}:{}@{rest}", self.user, self.password)
    }
}

/// What a service may publish besides the common grants.
fn service_publishes(s: &Subjects, service: Service) -> Vec<String> {
    let p = s.prefix();
    let results = format!("$KV.{}.>", s.results_bucket());
    let claims = format!("$KV.{}.>", s.claims_bucket());
    // Any pipeline stage may finish a request early (a denial, a failure) and deliver its
    // result: to the results bucket, a client inbox, or the correlator's summary subject.
    let delivers = [results.clone(), format!("{p}.alerts.summary.>")];
    let mut out: Vec<String> = match service {
        Service::Gateway => vec![
            s.requests_submit(),
            format!("{p}.alerts.in.>"),
            s.auth_resolve(),
            s.model_catalog(),
        ],
        Service::Auth => vec![format!("{p}.stage.enrichment.>")],
        Service::Enrichment => vec![format!("{p}.stage.redaction.>")],
        // Only redaction writes the token vault.
        Service::Redaction => vec![
            format!("{p}.stage.model.>"),
            format!("$KV.{}.>", s.redaction_vault_bucket()),
        ],
        Service::Model => vec![
            format!("{p}.stage.redaction.>"),
            claims,
            format!("$KV.{}.>", s.budgets_bucket()),
            format!("{p}.usage.>"),
        ],
        Service::Audit => vec![],
        Service::Correlator => vec![
            s.requests_submit(),
            format!("{p}.alerts.part.>"),
            format!("{p}.incidents.>"),
            format!("{p}.summaries.>"),
        ],
        Service::Notifier => vec![claims],
        Service::KafkaBridge => vec![format!("{p}.alerts.in.>"), s.alerts_dead_letter_all()],
    };
    if matches!(
        service,
        Service::Auth | Service::Enrichment | Service::Redaction | Service::Model
    ) {
        out.extend(delivers);
    }
    out
}

/// Every user: one per service, and per tenant an alert publisher and a chat integration, and
/// one bus-native request client. `password` makes each user's password (tests pass a fixed
/// one; the CLI a random one).
pub fn users(
    subjects: &Subjects,
    tenants: &[String],
    mut password: impl FnMut(&str) -> String,
) -> Vec<NatsUser> {
    let p = subjects.prefix();
    let mut out = Vec::new();
    for service in Service::every() {
        let mut publish = vec![
            "$JS.API.>".to_string(),
            "$JS.ACK.>".to_string(),
            "$JS.FC.>".to_string(),
            "_INBOX.>".to_string(),
            "$SRV.>".to_string(),
            format!("{p}.audit.>"),
        ];
        publish.extend(service_publishes(subjects, service));
        let mut subscribe = vec![
            "_INBOX.>".to_string(),
            "$SRV.>".to_string(),
            format!("{p}.svc.{service}.>"),
        ];
        match service {
            Service::Auth => subscribe.push(subjects.auth_resolve()),
            Service::Model => subscribe.push(subjects.model_catalog()),
            _ => {}
        }
        let user = format!("{p}-{service}");
        out.push(NatsUser {
            password: password(&user),
            user,
            publish,
            subscribe,
        });
    }
    for tenant in tenants {
        let user = format!("{p}-alerts-{tenant}");
        out.push(NatsUser {
            password: password(&user),
            user,
            publish: vec![format!("{p}.alerts.in.{tenant}.>")],
            subscribe: vec!["_INBOX.>".to_string()],
        });
        let user = format!("{p}-chat-{tenant}");
        out.push(NatsUser {
            password: password(&user),
            user,
            publish: vec![],
            subscribe: vec![
                subjects.summaries(tenant, ">"),
                format!("{p}.incidents.{tenant}.>"),
            ],
        });
    }
    let user = format!("{p}-client");
    out.push(NatsUser {
        password: password(&user),
        user,
        publish: vec![subjects.requests_submit()],
        subscribe: vec!["_INBOX.>".to_string()],
    });
    out
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The `authorization { users = [...] }` block for nats-server.
pub fn render(users: &[NatsUser]) -> String {
    let mut out = String::from(
        "# Generated by `mcplane nats-config`: who may publish and subscribe where.\n\
         # Passwords are secrets: keep this file as you keep the NATS credentials.\n\
         authorization {\n  users = [\n",
    );
    for u in users {
        let _ = writeln!(
            out,
            "    {{ user: {:?}, password: {:?}, permissions: {{ publish: {{ allow: {} }}, subscribe: {{ allow: {} }} }} }}",
            u.user,
            u.password,
            list(&u.publish),
            list(&u.subscribe)
        );
    }
    out.push_str("  ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_get_their_own_subjects_only() {
        let s = Subjects::default();
        let users = users(&s, &["acme".into()], |u| format!("pw-{u}"));
        let chat = users
            .iter()
            .find(|u| u.user == "mcplane-chat-acme")
            .unwrap();
        assert!(chat.publish.is_empty());
        assert_eq!(chat.subscribe[0], "mcplane.summaries.acme.>");
        let alerts = users
            .iter()
            .find(|u| u.user == "mcplane-alerts-acme")
            .unwrap();
        assert_eq!(alerts.publish, ["mcplane.alerts.in.acme.>"]);
        let client = users.iter().find(|u| u.user == "mcplane-client").unwrap();
        assert_eq!(client.publish, ["mcplane.requests.submit"]);
        let text = render(&users);
        assert!(text.contains("user: \"mcplane-gateway\", password: \"pw-mcplane-gateway\""));
        assert_eq!(
            chat.url("nats://127.0.0.1:4222"),
            "nats://mcplane-chat-acme:pw-mcplane-chat-acme@127.0.0.1:4222"
        );
    }
}
