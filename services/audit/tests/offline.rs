//! Offline verification, as an auditor runs it: an intact chain of 100k entries verifies and
//! matches its signed checkpoint; every kind of tampering with an export is caught at the
//! right index; a checkpoint signed with another key is refused.

use chrono::{DateTime, Utc};
use mcplane_audit::chain::{ChainBreak, ChainEntry};
use mcplane_audit::checkpoint::{check_chain, verify_signature, Signer};
use mcplane_audit::store::{self, ChainStore};
use mcplane_shared::{AuditEvent, AuditOutcome};

fn event(n: u64) -> AuditEvent {
    AuditEvent {
        request_id: uuid::Uuid::from_u128(u128::from(n)),
        stage: [
            "authorize",
            "enrich",
            "redact_request",
            "invoke",
            "redact_response",
        ][(n % 5) as usize]
            .into(),
        tenant: "acme".into(),
        principal: Some(format!("key_{:012x}", n % 7)),
        outcome: AuditOutcome::Ok,
        code: None,
        detail: serde_json::json!({"n": n}),
        trace_id: format!("{n:032x}"),
        at: DateTime::<Utc>::from_timestamp(1_760_000_000 + n as i64, 0).unwrap(),
    }
}

fn chain(n: u64) -> Vec<ChainEntry> {
    let mut out: Vec<ChainEntry> = Vec::new();
    for i in 0..n {
        let prev = out.last().map(|e| (e.seq, e.hash.as_str()));
        out.push(ChainEntry::next(
            prev,
            serde_json::to_value(event(i)).unwrap(),
        ));
    }
    out
}

fn first_bad(entries: &[ChainEntry]) -> u64 {
    store::verify_entries(entries).unwrap_err().entry
}

#[test]
fn an_intact_chain_of_100k_entries_verifies_and_matches_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChainStore::open(dir.path()).unwrap();
    for n in 0..100_000 {
        store.append(&event(n)).unwrap();
    }
    let report = store.verify("acme").unwrap();
    assert_eq!(report.entries, 100_000);
    let signer = Signer::load_or_create(&dir.path().join("signing.key")).unwrap();
    let cp = signer.sign("acme", report.entries, &report.head_hash, Utc::now());
    let entries = store.read("acme").unwrap();
    assert_eq!(verify_signature(&cp, &signer.public_hex()), Ok(()));
    assert_eq!(check_chain(&entries, &cp), Ok(()));
}

#[test]
fn every_kind_of_tampering_is_caught_at_its_index() {
    let original = chain(50);
    assert_eq!(store::verify_entries(&original).unwrap().0, 50);

    let mut modified = original.clone();
    modified[9].event["outcome"] = serde_json::json!("denied");
    assert_eq!(first_bad(&modified), 10, "modified");

    let mut deleted = original.clone();
    deleted.remove(19);
    assert_eq!(first_bad(&deleted), 20, "deleted");

    let mut inserted = original.clone();
    let forged = ChainEntry::next(
        Some((29, &original[28].hash)),
        serde_json::json!({"forged": true}),
    );
    inserted.insert(29, forged);
    assert_eq!(
        first_bad(&inserted),
        31,
        "inserted: the entry after the forgery no longer links"
    );

    let mut reordered = original.clone();
    reordered.swap(4, 5);
    assert_eq!(first_bad(&reordered), 5, "reordered");

    // Truncation verifies on its own (a shorter chain is still a chain): the checkpoint says
    // how long it was.
    let signer_dir = tempfile::tempdir().unwrap();
    let signer = Signer::load_or_create(&signer_dir.path().join("k")).unwrap();
    let cp = signer.sign("acme", 50, &original[49].hash, Utc::now());
    let truncated = &original[..40];
    assert!(store::verify_entries(truncated).is_ok());
    let ChainBreak { entry, reason } = check_chain(truncated, &cp).unwrap_err();
    assert_eq!(entry, 41, "{reason}");

    // A chain rewritten from entry 30 on, hashes recomputed, verifies by itself but not against
    // the checkpoint.
    let mut rewritten = original[..29].to_vec();
    for i in 29..50u64 {
        let prev = rewritten.last().map(|e| (e.seq, e.hash.clone())).unwrap();
        rewritten.push(ChainEntry::next(
            Some((prev.0, &prev.1)),
            serde_json::json!({"rewritten": i}),
        ));
    }
    assert!(store::verify_entries(&rewritten).is_ok());
    assert_eq!(check_chain(&rewritten, &cp).unwrap_err().entry, 50);

    // A checkpoint from another key proves nothing.
    let other = Signer::load_or_create(&signer_dir.path().join("other")).unwrap();
    let forged_cp = other.sign("acme", 50, &rewritten[49].hash, Utc::now());
    assert!(verify_signature(&forged_cp, &signer.public_hex()).is_err());
}
