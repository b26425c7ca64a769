//! `mcplane audit verify`: recomputes a tenant's hash chain from the data folder and names the
//! first entry that does not verify.

use std::process::ExitCode;

use crate::args::AuditCommand;

pub fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify { tenant, data } => match mcplane_audit::store::verify(&data, &tenant)
        {
            Ok(report) => {
                println!(
                    "audit chain for tenant {tenant}: {} entries verified, head {}",
                    report.entries, report.head_hash
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                println!("audit chain for tenant {tenant}: FAILED: {e}");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}
