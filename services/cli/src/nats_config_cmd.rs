//! `mcplane nats-config`: the nats-server authorization that isolates services and tenants on
//! the bus (see `mcplane_shared::permissions`).

use std::process::ExitCode;

use anyhow::{bail, Context};
use mcplane_shared::permissions;
use mcplane_shared::subjects::{validate_token, Subjects};

use crate::args::NatsConfigArgs;

/// The password the shipped example and docker-compose.yml use for `user`.
pub fn example_password(user: &str) -> String {
    format!("change-me-{user}")
}

pub fn run(args: NatsConfigArgs) -> anyhow::Result<ExitCode> {
    if validate_token(&args.prefix).is_err() {
        bail!("--prefix must be one subject token of [a-z0-9_-]");
    }
    if let Some(bad) = args.tenants.iter().find(|t| validate_token(t).is_err()) {
        bail!("tenant {bad:?} is not 1-64 characters of [a-z0-9_-]");
    }
    let subjects = Subjects::new(args.prefix.clone());
    let users = permissions::users(&subjects, &args.tenants, |user| {
        if args.example {
            example_password(user)
        } else {
            // Two v4 UUIDs: 244 random bits, in characters no config syntax trips on.
            format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )
        }
    });
    let text = permissions::render(&users);
    match &args.out {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "wrote {} users to {}; connect each party as nats://<user>:<password>@host:4222",
                users.len(),
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
