//! `mcplane audit verify|export|checkpoint|query`: the auditor's side of the hash chain, all
//! offline from a data folder or an export.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use mcplane_audit::chain::ChainEntry;
use mcplane_audit::checkpoint;
use mcplane_audit::store::{self, VerifyError};
use mcplane_shared::body::audit::Checkpoint;

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
            write_lines(&matching, output(None)?.as_mut())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
