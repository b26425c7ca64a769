//! `mcplane keys create|list|revoke|import`: API keys, printed once and stored only as a
//! digest. With `--nats URL` or `--config FILE` they go to the fleet's key bucket, which every
//! auth replica follows live wherever it runs; without, to the key file under `--data`, which
//! only auth services sharing that folder read (development, offline use). `import` moves a
//! key file's keys into the bucket.

use std::process::ExitCode;

use anyhow::{bail, Context};
use chrono::{Duration, Utc};
use mcplane_auth::fleet_keys::KeyBucket;
use mcplane_auth::keys::{KeyRecord, KeyStore};
use mcplane_shared::PrincipalKind;

use crate::args::{FleetArgs, KeyStoreArgs, KeysCommand};
use crate::fleet;

/// The fleet's key bucket, when the arguments name a fleet.
async fn bucket(store: &KeyStoreArgs) -> anyhow::Result<KeyBucket> {
    let doc = fleet::document(&FleetArgs {
        config: store.config.clone(),
        nats: store.nats.clone(),
        http: None,
        data: None,
    })?;
    let bus = mcplane_shared::bus::connect(&doc.common()?.bus, "mcplane-cli")
        .await
        .context("connecting to NATS")?;
    Ok(KeyBucket::open(&bus).await?)
}

fn uses_bucket(store: &KeyStoreArgs) -> bool {
    store.nats.is_some() || store.config.is_some()
}

pub fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Create {
            tenant,
            roles,
            service_account,
            expires_in_days,
            store,
        } => {
            let kind = if service_account {
                PrincipalKind::ServiceAccount
            } else {
                PrincipalKind::User
            };
            let expires = expires_in_days.map(|d| Utc::now() + Duration::days(i64::from(d)));
            let (key, record) = if uses_bucket(&store) {
                crate::runtime()?.block_on(async {
                    anyhow::Ok(
                        bucket(&store)
                            .await?
                            .create(&tenant, roles, kind, expires)
                            .await?,
                    )
                })?
            } else {
                KeyStore::open(&store.data)?.create(&tenant, roles, kind, expires)?
            };
            println!("{key}");
            eprintln!(
                "created {} for tenant {} (roles: {}); the key is shown only this once",
                record.key_id,
                record.tenant,
                record.roles.join(",")
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List { store } => {
            let records = if uses_bucket(&store) {
                crate::runtime()?
                    .block_on(async { anyhow::Ok(bucket(&store).await?.list().await?) })?
            } else {
                KeyStore::open(&store.data)?.list()?
            };
            for r in records {
                print_record(&r);
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { key_id, store } => {
            let found = if uses_bucket(&store) {
                crate::runtime()?
                    .block_on(async { anyhow::Ok(bucket(&store).await?.revoke(&key_id).await?) })?
            } else {
                KeyStore::open(&store.data)?.revoke(&key_id)?
            };
            if found {
                eprintln!("revoked {key_id}");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("no key {key_id}");
                Ok(ExitCode::FAILURE)
            }
        }
        KeysCommand::Import { store } => {
            if !uses_bucket(&store) {
                bail!("import copies the key file into the fleet's key bucket: give --nats URL or --config FILE");
            }
            let records = KeyStore::open(&store.data)?.list()?;
            let report = crate::runtime()?
                .block_on(async { anyhow::Ok(bucket(&store).await?.import(records).await?) })?;
            eprintln!(
                "imported: {} created, {} revoked, {} unchanged, {} conflicting ids left alone{}",
                report.created,
                report.revoked,
                report.unchanged,
                report.conflicts.len(),
                if report.conflicts.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", report.conflicts.join(", "))
                }
            );
            Ok(if report.conflicts.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn print_record(r: &KeyRecord) {
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
