//! `mcplane audit verify|export|checkpoint|query|shred`: the auditor's side of the hash chain,
//! all offline from a data folder or an export, and the erasure of a tenant's kept payloads.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use mcplane_audit::chain::ChainEntry;
use mcplane_audit::checkpoint;
use mcplane_audit::store::{self, VerifyError};
use mcplane_shared::body::audit::{Checkpoint, SealedPayload, PAYLOAD_DETAIL_KEY};
use mcplane_shared::tenant_keys::{KeyError, TenantKey, TenantKeys};

use crate::args::AuditCommand;

fn verify(
    tenant: &str,
    data: &std::path::Path,
    export: Option<&std::path::Path>,
    cp: Option<(&Checkpoint, &str)>,
) -> Result<(u64, String), String> {
    let entries = match export {
        Some(path) => store::read_export(path).map_err(|e| e.to_string())?,
        None => store::entries(data, tenant).map_err(|e| e.to_string())?,
    };
    if let Some(bad) = entries
        .iter()
        .position(|e| e.event["tenant"].as_str() != Some(tenant))
    {
        return Err(format!("entry {}: belongs to another tenant", bad + 1));
    }
    let (size, head) =
        store::verify_entries(&entries).map_err(|e| VerifyError::from(e).to_string())?;
    if export.is_none() {
        // The data folder also records the head: a cut-off tail shows there.
        store::verify(data, tenant).map_err(|e| e.to_string())?;
    }
    if let Some((cp, key)) = cp {
        if cp.tenant != tenant {
            return Err(format!("the checkpoint is for tenant {}", cp.tenant));
        }
        checkpoint::verify_signature(cp, key)?;
        checkpoint::check_chain(&entries, cp).map_err(|e| e.to_string())?;
    }
    Ok((size, head))
}

fn output(out: Option<&std::path::Path>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    })
}

fn write_lines(entries: &[&ChainEntry], out: &mut dyn Write) -> anyhow::Result<()> {
    for e in entries {
        serde_json::to_writer(&mut *out, e)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

fn keys(data: &std::path::Path, keys_dir: Option<std::path::PathBuf>) -> TenantKeys {
    TenantKeys::new(keys_dir.unwrap_or_else(|| TenantKeys::default_dir(data)))
}

/// An entry as `query --decrypt` prints it: the stored entry, plus its payload opened.
fn decrypted(entry: &ChainEntry, tenant: &str, key: Option<&TenantKey>) -> serde_json::Value {
    let mut line = serde_json::to_value(entry).unwrap_or_default();
    let Some(sealed) = entry.event["detail"].get(PAYLOAD_DETAIL_KEY) else {
        return line;
    };
    let opened = open_payload(&entry.event, sealed, tenant, key);
    match opened {
        Ok(plain) => line["payload_plaintext"] = plain,
        Err(e) => line["payload_error"] = e.to_string().into(),
    }
    line
}

fn open_payload(
    event: &serde_json::Value,
    sealed: &serde_json::Value,
    tenant: &str,
    key: Option<&TenantKey>,
) -> Result<serde_json::Value, KeyError> {
    let sealed: SealedPayload =
        serde_json::from_value(sealed.clone()).map_err(|e| KeyError::NotSealed(e.to_string()))?;
    let Some(key) = key else {
        return Err(KeyError::OtherKey {
            sealed_with: sealed.key_id,
            held: "none (destroyed or never held)".into(),
        });
    };
    let request_id = event["request_id"]
        .as_str()
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
        .ok_or_else(|| KeyError::NotSealed("the entry has no request id".into()))?;
    let stage = event["stage"].as_str().unwrap_or_default();
    key.open(&sealed, tenant, request_id, stage)
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify {
            tenant,
            data,
            export,
            checkpoint,
            public_key,
        } => {
            let cp: Option<Checkpoint> = match &checkpoint {
                Some(path) => Some(
                    serde_json::from_slice(
                        &std::fs::read(path)
                            .with_context(|| format!("reading {}", path.display()))?,
                    )
                    .with_context(|| format!("{} is not a checkpoint", path.display()))?,
                ),
                None => None,
            };
            let trusted = cp.as_ref().zip(public_key.as_deref());
            match verify(&tenant, &data, export.as_deref(), trusted) {
                Ok((entries, head)) => {
                    let against = cp
                        .map(|c| {
                            format!(", matches the signed checkpoint of {} entries", c.tree_size)
                        })
                        .unwrap_or_default();
                    println!("audit chain for tenant {tenant}: {entries} entries verified, head {head}{against}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("audit chain for tenant {tenant}: FAILED: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        AuditCommand::Export { tenant, data, out } => {
            let entries = store::entries(&data, &tenant)?;
            let refs: Vec<&ChainEntry> = entries.iter().collect();
            write_lines(&refs, output(out.as_deref())?.as_mut())?;
            if let Some(path) = out {
                eprintln!("wrote {} entries to {}", entries.len(), path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Checkpoint { tenant, data } => {
            match store::latest_checkpoint(&data, &tenant)? {
                Some(cp) => {
                    println!("{}", serde_json::to_string_pretty(&cp)?);
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("mcplane: no checkpoint for tenant {tenant} yet");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        AuditCommand::Query {
            tenant,
            data,
            principal,
            outcome,
            since,
            until,
            decrypt,
            keys_dir,
        } => {
            let entries = store::entries(&data, &tenant)?;
            let matching: Vec<&ChainEntry> = entries
                .iter()
                .filter(|e| {
                    let ev = &e.event;
                    let at = ev["at"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&chrono::Utc));
                    principal.as_deref().is_none_or(|p| ev["principal"] == p)
                        && outcome.as_deref().is_none_or(|o| ev["outcome"] == o)
                        && since.is_none_or(|s| at.is_some_and(|a| a >= s))
                        && until.is_none_or(|u| at.is_some_and(|a| a < u))
                })
                .collect();
            if !decrypt {
                write_lines(&matching, output(None)?.as_mut())?;
                return Ok(ExitCode::SUCCESS);
            }
            let key = keys(&data, keys_dir).load(&tenant)?;
            let mut out = output(None)?;
            for e in matching {
                serde_json::to_writer(&mut *out, &decrypted(e, &tenant, key.as_ref()))?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Shred {
            tenant,
            data,
            keys_dir,
            destroy_payloads_irreversibly,
        } => {
            let keys = keys(&data, keys_dir);
            if !destroy_payloads_irreversibly {
                eprintln!(
                    "mcplane: this destroys tenant {tenant}'s audit key in {}: every payload sealed with it becomes unreadable for good. Add --destroy-payloads-irreversibly to proceed.",
                    keys.dir().display()
                );
                return Ok(ExitCode::FAILURE);
            }
            match keys.destroy(&tenant)? {
                Some(id) => println!(
                    "tenant {tenant}: audit key {id} destroyed; its payloads are unreadable, the chain still verifies; the next payload gets a new key"
                ),
                None => println!("tenant {tenant}: no audit key in {} (nothing to destroy)", keys.dir().display()),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
