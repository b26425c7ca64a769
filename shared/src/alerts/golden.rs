//! Golden files: every sample payload in `examples/alerts/` and every fixture in
//! `shared/tests/fixtures/alerts/` normalises to the canonical alerts
//! stored in `shared/tests/golden/<file stem>.json`, compared field by field.
//!
//! The files are only ever rewritten on purpose:
//! `UPDATE_GOLDEN=1 cargo test -p mcplane-shared alerts::golden`, then review the diff.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::Value;

const TENANT: &str = "acme";
const RECEIVED_AT: &str = "2024-05-14T09:15:00Z";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// `(source, payload file)` for every `NN-what.<source>.json` sample.
fn samples() -> Vec<(String, PathBuf)> {
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in [
        root().join("../examples/alerts"),
        root().join("tests/fixtures/alerts"),
    ] {
        files.extend(
            std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.expect("a readable directory entry").path())
                .filter(|p| p.extension().is_some_and(|e| e == "json")),
        );
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let stem = p
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("a UTF-8 file name")
                .to_string();
            let source = stem.rsplit('.').next().unwrap_or_default().to_string();
            assert!(
                super::is_known_source(&source),
                "{}: unknown source",
                p.display()
            );
            (source, p)
        })
        .collect()
}

#[test]
fn every_sample_alert_normalises_to_its_golden_file() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let received_at: DateTime<Utc> = RECEIVED_AT.parse().expect("a valid timestamp");
    let golden_dir = root().join("tests/golden");
    let samples = samples();
    assert!(
        samples.len() >= 5,
        "expected the sample payloads in examples/alerts/"
    );
    for (source, path) in samples {
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let payload: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let alerts = super::normalize(&source, TENANT, &payload, received_at)
            .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.message));
        for a in &alerts {
            // Where the payload carries Alertmanager's own fingerprint, ours must agree.
            if let Some(theirs) = a.original["alert"]["fingerprint"].as_str() {
                assert_eq!(a.fingerprint, theirs, "{}: fingerprint", path.display());
            }
        }
        let actual = serde_json::to_value(&alerts).expect("canonical alerts serialise");
        let name = format!(
            "{}.json",
            path.file_stem().unwrap_or_default().to_string_lossy()
        );
        let golden_path = golden_dir.join(&name);
        if update {
            std::fs::create_dir_all(&golden_dir).expect("the golden folder can be created");
            let mut text = serde_json::to_string_pretty(&actual).expect("a value serialises");
            text.push('\n');
            std::fs::write(&golden_path, text)
                .unwrap_or_else(|e| panic!("{}: {e}", golden_path.display()));
            continue;
        }
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(&golden_path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
                    golden_path.display()
                )
            }))
            .unwrap_or_else(|e| panic!("{}: {e}", golden_path.display()));
        compare(&name, &expected, &actual);
    }
}

/// Asserts equality alert by alert and field by field, so a failure names what changed.
fn compare(name: &str, expected: &Value, actual: &Value) {
    let (Some(expected), Some(actual)) = (expected.as_array(), actual.as_array()) else {
        panic!("{name}: golden files hold an array of canonical alerts");
    };
    assert_eq!(expected.len(), actual.len(), "{name}: number of alerts");
    for (i, (e, a)) in expected.iter().zip(actual).enumerate() {
        let (Some(e), Some(a)) = (e.as_object(), a.as_object()) else {
            panic!("{name}[{i}]: not an object");
        };
        let mut keys: Vec<&String> = e.keys().chain(a.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            assert_eq!(e.get(key), a.get(key), "{name}[{i}].{key}");
        }
    }
}
