//! The JSON Schemas in `schemas/` are generated from the Rust types; this fails when they drift.
//! Regenerate with `cargo run -p mcplane-cli -- schemas`, or, without building the services,
//! `UPDATE_SCHEMAS=1 cargo test -p mcplane-shared --test schemas`.

use std::path::Path;

#[test]
fn schemas_in_the_repository_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for (name, schema) in mcplane_shared::schema::all() {
        let expected = mcplane_shared::schema::render(&schema);
        if update {
            std::fs::create_dir_all(&dir).expect("schemas/");
            std::fs::write(dir.join(name), &expected).expect("write schema");
            continue;
        }
        let found = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        if found != expected {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "schemas/ is stale for {stale:?}: run `cargo run -p mcplane-cli -- schemas`"
    );
}

#[test]
fn every_schema_file_is_generated() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let generated: Vec<&str> = mcplane_shared::schema::all()
        .iter()
        .map(|(n, _)| *n)
        .collect();
    for entry in std::fs::read_dir(dir).expect("schemas/ exists") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .to_string();
        assert!(
            generated.contains(&name.as_str()),
            "{name} is not generated from a type"
        );
    }
}
