//! `mcplane keys create|list|revoke`: API keys in the data folder, read live by the auth
//! service (no restart needed). A key is printed once and stored only as a hash.

use std::process::ExitCode;

use chrono::{Duration, Utc};
use mcplane_auth::keys::KeyStore;
use mcplane_shared::PrincipalKind;

use crate::args::KeysCommand;

pub fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Create {
            tenant,
            roles,
            service_account,
            expires_in_days,
            data,
        } => {
            let store = KeyStore::open(&data)?;
            let kind = if service_account {
                PrincipalKind::ServiceAccount
            } else {
                PrincipalKind::User
            };
            let expires = expires_in_days.map(|d| Utc::now() + Duration::days(i64::from(d)));
            let (key, record) = store.create(&tenant, roles, kind, expires)?;
            println!("{key}");
            eprintln!(
                "created {} for tenant {} (roles: {}); the key is shown only this once",
                record.key_id,
                record.tenant,
                record.roles.join(",")
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List { data } => {
            let store = KeyStore::open(&data)?;
            for r in store.list()? {
                println!(
                    "{}\ttenant={}\troles={}\tkind={:?}\tcreated={}\texpires={}\trevoked={}",
                    r.key_id,
                    r.tenant,
                    r.roles.join(","),
                    r.kind,
                    r.created_at.to_rfc3339(),
                    r.expires_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "never".into()),
                    r.revoked
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { key_id, data } => {
            let store = KeyStore::open(&data)?;
            if store.revoke(&key_id)? {
                eprintln!("revoked {key_id}");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("no key {key_id}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
