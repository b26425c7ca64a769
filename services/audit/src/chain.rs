//! The hash chain: how one entry's hash is computed from the previous one, and how a sequence
//! of entries is checked. Pure functions, so the service and the offline verifier agree.
//!
//! `hash(n) = SHA-256(prev_hash(n) "\n" seq(n) "\n" canonical_json(event(n)))`, hex-encoded,
//! with the genesis `prev_hash` all zeros. Canonical JSON (sorted keys) keeps the hash
//! independent of field order, so an entry verifies whoever serialised it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of a tenant's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One stored link of a tenant's chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainEntry {
    /// 1 for a tenant's first entry, then contiguous.
    pub seq: u64,
    pub prev_hash: String,
    pub hash: String,
    /// The audit event as published by the stage (kept as JSON so the verifier hashes exactly
    /// what was stored).
    pub event: serde_json::Value,
}

/// The hash of an entry with these parts.
pub fn entry_hash(prev_hash: &str, seq: u64, event: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(mcplane_shared::canonical_json::to_string(event).as_bytes());
    hex::encode(h.finalize())
}

impl ChainEntry {
    /// The entry that follows `prev` (or starts the chain) for `event`.
    pub fn next(prev: Option<(u64, &str)>, event: serde_json::Value) -> ChainEntry {
        let (seq, prev_hash) = match prev {
            Some((seq, hash)) => (seq + 1, hash.to_string()),
            None => (1, GENESIS.to_string()),
        };
        let hash = entry_hash(&prev_hash, seq, &event);
        ChainEntry {
            seq,
            prev_hash,
            hash,
            event,
        }
    }
}

/// Why a chain does not verify; `entry` is the sequence number of the first bad entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {entry}: {reason}")]
pub struct ChainBreak {
    pub entry: u64,
    pub reason: String,
}

/// Checks one entry against its predecessor's hash and its expected position.
pub fn check(expected_seq: u64, expected_prev: &str, entry: &ChainEntry) -> Result<(), ChainBreak> {
    let bad = |reason: String| ChainBreak {
        entry: expected_seq,
        reason,
    };
    if entry.seq != expected_seq {
        return Err(bad(format!("sequence number is {}", entry.seq)));
    }
    if entry.prev_hash != expected_prev {
        return Err(bad(
            "does not link to the entry before it (prev_hash differs)".into(),
        ));
    }
    let computed = entry_hash(&entry.prev_hash, entry.seq, &entry.event);
    if computed != entry.hash {
        return Err(bad(format!(
            "content does not match its hash (stored {}, computed {computed})",
            entry.hash
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: u64) -> Vec<ChainEntry> {
        let mut out: Vec<ChainEntry> = Vec::new();
        for i in 0..n {
            let prev = out.last().map(|e| (e.seq, e.hash.as_str()));
            let entry = ChainEntry::next(prev, json!({"request": i, "stage": "invoke"}));
            out.push(entry);
        }
        out
    }

    fn verify(entries: &[ChainEntry]) -> Result<(), ChainBreak> {
        let mut prev = GENESIS.to_string();
        for (i, e) in entries.iter().enumerate() {
            check(i as u64 + 1, &prev, e)?;
            prev = e.hash.clone();
        }
        Ok(())
    }

    #[test]
    fn an_untouched_chain_verifies() {
        assert_eq!(verify(&chain(10)), Ok(()));
    }

    #[test]
    fn the_hash_ignores_key_order() {
        let a = entry_hash(GENESIS, 1, &json!({"a": 1, "b": 2}));
        let b = entry_hash(
            GENESIS,
            1,
            &serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap(),
        );
        assert_eq!(a, b);
    }

    #[test]
    fn any_change_names_the_first_bad_entry() {
        let mut c = chain(10);
        c[6].event["stage"] = json!("invokf");
        assert_eq!(verify(&c).unwrap_err().entry, 7);

        let mut c = chain(10);
        c.remove(3);
        assert_eq!(verify(&c).unwrap_err().entry, 4);

        let mut c = chain(10);
        c.swap(2, 3);
        assert_eq!(verify(&c).unwrap_err().entry, 3);

        // Rewriting an entry and its own hash still breaks the link to the next one.
        let mut c = chain(10);
        c[4].event["stage"] = json!("forged");
        c[4].hash = entry_hash(&c[4].prev_hash, 5, &c[4].event);
        assert_eq!(verify(&c).unwrap_err().entry, 6);
    }
}
