//! A nats-server authorization block in which every party may touch only its own subjects:
//! each service publishes only where it hands work on, a tenant's monitoring tools publish only
//! to that tenant's `alerts.in` subjects, a tenant's chat integration only subscribes to that
//! tenant's summaries and incidents, and a bus-native client may only submit requests. The
//! server enforces it, so a compromised integration cannot read another tenant's data or skip
//! a stage by publishing straight into it.
//!
//! Services keep the JetStream API they use (stream info, consumers, message gets, creating
//! mcplane's own streams and buckets by name: [`jetstream_api`]) and reply inboxes; what bounds
//! them is where they may publish data. Creating or changing a stream is allowed by name only,
//! so nobody can define a stream that sources or mirrors a bucket it may not read. Two buckets
//! are exceptions, each
//! kept to its owner: the API key bucket (only the auth service and the admin user, for
//! `mcplane keys` and `mcplane config push`) and the redaction token vault (only the redaction
//! service: it holds the originals of tokenised PII). Everyone else is denied the JetStream API
//! subjects that name the bucket's stream and the bucket's own `$KV.<bucket>.>` subjects, so a
//! compromised enrichment worker can neither list key digests or purge revocations nor read
//! the PII behind a request's tokens. The redaction service also takes its replies on a private
//! inbox (`_INBOX_<prefix>-redaction.>`), since every service may subscribe to `_INBOX.>`
//! and would otherwise overhear the answers to its vault reads.

use std::fmt::Write;

use crate::subjects::{Service, StreamKind, Subjects};

/// One user of the generated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsUser {
    pub user: String,
    pub password: String,
    pub publish: Vec<String>,
    /// Exceptions to `publish` (nats-server applies deny after allow).
    pub deny_publish: Vec<String>,
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
        // Auth maintains the key bucket's stream (it creates it) and reads it.
        Service::Auth => vec![
            format!("{p}.stage.enrichment.>"),
            format!("$KV.{}.>", s.keys_bucket()),
        ],
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

/// The JetStream API a service or the admin uses: account and stream info, consumers (pull
/// work, KV watches, replays), message gets (KV reads), and creating mcplane's streams, the
/// shared buckets and `own` buckets, by name. Not stream updates, deletes, purges or streams
/// of other names: a stream that sources or mirrors another copies its messages, whatever the
/// permissions on the original.
fn jetstream_api(s: &Subjects, own: &[String]) -> Vec<String> {
    let mut out = vec![
        "$JS.API.INFO".to_string(),
        "$JS.API.STREAM.INFO.*".to_string(),
        "$JS.API.STREAM.NAMES".to_string(),
        "$JS.API.STREAM.LIST".to_string(),
        "$JS.API.STREAM.MSG.GET.*".to_string(),
        "$JS.API.DIRECT.GET.>".to_string(),
        "$JS.API.CONSUMER.>".to_string(),
    ];
    let shared = [
        s.results_bucket(),
        s.claims_bucket(),
        s.budgets_bucket(),
        s.config_bucket(),
    ];
    let streams = StreamKind::ALL
        .into_iter()
        .map(|k| s.stream_name(k))
        .chain(shared.iter().chain(own).map(|b| format!("KV_{b}")));
    out.extend(streams.map(|name| format!("$JS.API.STREAM.CREATE.{name}")));
    out
}

/// What touches a KV bucket: the JetStream API subjects that name its stream `KV_<bucket>`
/// (stream info, update, delete, purge and message get/delete, direct get, and every consumer
/// operation: a KV watch or read is a consumer or a direct get) and its own `$KV.<bucket>.>`
/// subjects (a put or delete is a publish there). Denied to all but the bucket's owners.
fn bucket_api(bucket: &str) -> Vec<String> {
    let stream = format!("KV_{bucket}");
    vec![
        format!("$KV.{bucket}.>"),
        format!("$JS.API.STREAM.*.{stream}"),
        format!("$JS.API.STREAM.MSG.*.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.CONSUMER.*.{stream}"),
        format!("$JS.API.CONSUMER.*.{stream}.>"),
        format!("$JS.API.CONSUMER.*.*.{stream}"),
        format!("$JS.API.CONSUMER.*.*.{stream}.>"),
    ]
}

/// Every user: one per service, and per tenant an alert publisher and a chat integration, and
/// one bus-native request client, and the `mcplane-admin` user the CLI's fleet commands
/// (`mcplane keys --nats`, `mcplane config push`) connect as. `password` makes each user's password (tests pass a fixed
/// one; the CLI a random one).
pub fn users(
    subjects: &Subjects,
    tenants: &[String],
    mut password: impl FnMut(&str) -> String,
) -> Vec<NatsUser> {
    let p = subjects.prefix();
    let mut out = Vec::new();
    for service in Service::every() {
        let own = match service {
            Service::Auth => vec![subjects.keys_bucket()],
            Service::Redaction => vec![subjects.redaction_vault_bucket()],
            _ => vec![],
        };
        let mut publish = jetstream_api(subjects, &own);
        publish.extend([
            "$JS.ACK.>".to_string(),
            "$JS.FC.>".to_string(),
            "_INBOX.>".to_string(),
            "$SRV.>".to_string(),
            format!("{p}.audit.>"),
        ]);
        publish.extend(service_publishes(subjects, service));
        let mut subscribe = vec![
            "_INBOX.>".to_string(),
            "$SRV.>".to_string(),
            format!("{p}.svc.{service}.>"),
        ];
        match service {
            Service::Auth => subscribe.push(subjects.auth_resolve()),
            Service::Model => subscribe.push(subjects.model_catalog()),
            // Its vault reads are answered on an inbox only it may subscribe to.
            Service::Redaction => {
                subscribe.push(format!("{}.>", subjects.private_inbox(Service::Redaction)))
            }
            _ => {}
        }
        let mut deny_publish = Vec::new();
        if service != Service::Auth {
            deny_publish.extend(bucket_api(&subjects.keys_bucket()));
        }
        if service != Service::Redaction {
            deny_publish.extend(bucket_api(&subjects.redaction_vault_bucket()));
        }
        let user = format!("{p}-{service}");
        out.push(NatsUser {
            password: password(&user),
            user,
            publish,
            deny_publish,
            subscribe,
        });
    }
    for tenant in tenants {
        let user = format!("{p}-alerts-{tenant}");
        out.push(NatsUser {
            password: password(&user),
            user,
            publish: vec![format!("{p}.alerts.in.{tenant}.>")],
            deny_publish: vec![],
            subscribe: vec!["_INBOX.>".to_string()],
        });
        let user = format!("{p}-chat-{tenant}");
        out.push(NatsUser {
            password: password(&user),
            user,
            publish: vec![],
            deny_publish: vec![],
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
        deny_publish: vec![],
        subscribe: vec!["_INBOX.>".to_string()],
    });
    let user = format!("{p}-admin");
    let mut publish = jetstream_api(subjects, &[subjects.keys_bucket()]);
    publish.extend([
        "$JS.ACK.>".to_string(),
        "$JS.FC.>".to_string(),
        "_INBOX.>".to_string(),
        format!("$KV.{}.>", subjects.keys_bucket()),
        format!("$KV.{}.>", subjects.config_bucket()),
    ]);
    out.push(NatsUser {
        password: password(&user),
        user,
        publish,
        // The admin manages keys and configuration, never request payloads.
        deny_publish: bucket_api(&subjects.redaction_vault_bucket()),
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
        let deny = if u.deny_publish.is_empty() {
            String::new()
        } else {
            format!(", deny: {}", list(&u.deny_publish))
        };
        let _ = writeln!(
            out,
            "    {{ user: {:?}, password: {:?}, permissions: {{ publish: {{ allow: {}{deny} }}, subscribe: {{ allow: {} }} }} }}",
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
        // Only auth and the admin may touch the key bucket.
        let keys = "$KV.mcplane-keys.>".to_string();
        for u in &users {
            let may = u.user == "mcplane-auth" || u.user == "mcplane-admin";
            assert_eq!(u.publish.contains(&keys), may, "{}", u.user);
            let js = u.publish.contains(&"$JS.API.CONSUMER.>".to_string());
            let denied = u
                .deny_publish
                .contains(&"$JS.API.DIRECT.GET.KV_mcplane-keys.>".to_string());
            assert_eq!(js && !may, denied, "{}", u.user);
        }
        // Only redaction may touch the token vault, the admin included.
        let vault = "$KV.mcplane-redaction-vault.>".to_string();
        for u in &users {
            let owner = u.user == "mcplane-redaction";
            assert_eq!(u.publish.contains(&vault), owner, "{}", u.user);
            let js = u.publish.contains(&"$JS.API.CONSUMER.>".to_string());
            for api in [
                "$KV.mcplane-redaction-vault.>",
                "$JS.API.STREAM.*.KV_mcplane-redaction-vault",
                "$JS.API.DIRECT.GET.KV_mcplane-redaction-vault.>",
                "$JS.API.CONSUMER.*.*.KV_mcplane-redaction-vault.>",
            ] {
                let denied = u.deny_publish.contains(&api.to_string());
                assert_eq!(js && !owner, denied, "{} {api}", u.user);
            }
        }
        // Only redaction subscribes to its private inbox, where its vault reads are answered.
        let private = "_INBOX_mcplane-redaction.>".to_string();
        for u in &users {
            assert_eq!(
                u.subscribe.contains(&private),
                u.user == "mcplane-redaction",
                "{}",
                u.user
            );
        }
        // Streams are created by name: none that could source or mirror a bucket.
        for u in &users {
            let creates: Vec<&String> = u
                .publish
                .iter()
                .filter(|p| p.starts_with("$JS.API.STREAM.CREATE."))
                .collect();
            assert!(creates.iter().all(|p| !p.contains('*') && !p.contains('>')));
            assert!(!u.publish.iter().any(|p| p == "$JS.API.>"), "{}", u.user);
            let vault = "$JS.API.STREAM.CREATE.KV_mcplane-redaction-vault".to_string();
            assert_eq!(
                u.publish.contains(&vault),
                u.user == "mcplane-redaction",
                "{}",
                u.user
            );
        }
        let text = render(&users);
        assert!(
            text.contains("deny: [\"$KV.mcplane-keys.>\", \"$JS.API.STREAM.*.KV_mcplane-keys\"")
        );
        assert!(text.contains("user: \"mcplane-gateway\", password: \"pw-mcplane-gateway\""));
        assert_eq!(
            chat.url("nats://127.0.0.1:4222"),
            "nats://mcplane-chat-acme:pw-mcplane-chat-acme@127.0.0.1:4222"
        );
    }
}
