//! `mcplane schemas`: writes the JSON Schemas generated from the wire types, or checks that the
//! files on disk still match them.

use std::process::ExitCode;

use crate::args::SchemasArgs;

pub fn run(args: SchemasArgs) -> anyhow::Result<ExitCode> {
    let mut stale = Vec::new();
    if !args.check {
        std::fs::create_dir_all(&args.out)?;
    }
    for (name, schema) in mcplane_shared::schema::all() {
        let path = args.out.join(name);
        let text = mcplane_shared::schema::render(&schema);
        if args.check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
        } else {
            std::fs::write(&path, text)?;
            println!("wrote {}", path.display());
        }
    }
    if stale.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "schemas differ from the types: {} (run `cargo run -p mcplane-cli -- schemas`)",
            stale.join(", ")
        );
        Ok(ExitCode::FAILURE)
    }
}
