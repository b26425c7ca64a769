//! The ledger entry of a handled message: its publications as length-prefixed raw bytes.
//!
//! The entry is written for every message a stage handles and read back only on a redelivery,
//! so it is made cheap to write: the payloads (already JSON text) are copied once, verbatim,
//! instead of being embedded as JSON strings inside a JSON array (which escaped every quote of
//! every payload on every message). Entries written as JSON by earlier versions still decode,
//! so a fleet can be upgraded while its ledgers hold them.
//!
//! Layout: the version byte `0x01`, a `u32` count, then per publication a flags byte (core,
//! first, has msg id, has traceparent) followed by the subject, the msg id and the traceparent
//! when present, and the payload, each as a `u32` little-endian length and its bytes.

use super::Publication;

const VERSION: u8 = 1;
const CORE: u8 = 1;
const FIRST: u8 = 2;
const MSG_ID: u8 = 4;
const TRACEPARENT: u8 = 8;

/// Encodes `pubs` as a ledger entry.
pub fn encode_outputs(pubs: &[Publication]) -> Vec<u8> {
    let mut out = Vec::new();
    append_outputs(&mut out, pubs);
    out
}

/// Appends the entry of `pubs` to `out` (a record that carries an entry after a header of its
/// own, without copying the entry once more).
pub fn append_outputs(out: &mut Vec<u8>, pubs: &[Publication]) {
    let size: usize = pubs
        .iter()
        .map(|p| {
            17 + p.subject.len()
                + p.msg_id.as_ref().map_or(0, String::len)
                + p.traceparent.as_ref().map_or(0, String::len)
                + p.payload.len()
        })
        .sum();
    out.reserve(5 + size);
    out.push(VERSION);
    out.extend_from_slice(&(pubs.len() as u32).to_le_bytes());
    for p in pubs {
        let mut flags = 0;
        if p.core {
            flags |= CORE;
        }
        if p.first {
            flags |= FIRST;
        }
        if p.msg_id.is_some() {
            flags |= MSG_ID;
        }
        if p.traceparent.is_some() {
            flags |= TRACEPARENT;
        }
        out.push(flags);
        put(out, p.subject.as_bytes());
        if let Some(id) = &p.msg_id {
            put(out, id.as_bytes());
        }
        if let Some(tp) = &p.traceparent {
            put(out, tp.as_bytes());
        }
        put(out, p.payload.as_bytes());
    }
}

/// Decodes a ledger entry written by [`encode_outputs`] or, before it, as a JSON array.
pub fn decode_outputs(entry: &[u8]) -> Result<Vec<Publication>, String> {
    match entry.first() {
        Some(&VERSION) => decode_v1(&entry[1..]),
        Some(b'[') => serde_json::from_slice(entry).map_err(|e| e.to_string()),
        Some(other) => Err(format!("unknown ledger entry version {other}")),
        None => Err("empty ledger entry".into()),
    }
}

fn decode_v1(mut rest: &[u8]) -> Result<Vec<Publication>, String> {
    let count = take_u32(&mut rest)? as usize;
    // Each publication takes at least 9 bytes: never trust the count for the allocation.
    let mut pubs = Vec::with_capacity(count.min(rest.len() / 9));
    for _ in 0..count {
        let (&flags, tail) = rest.split_first().ok_or("truncated ledger entry")?;
        rest = tail;
        let subject = take_string(&mut rest)?;
        let msg_id = (flags & MSG_ID != 0)
            .then(|| take_string(&mut rest))
            .transpose()?;
        let traceparent = (flags & TRACEPARENT != 0)
            .then(|| take_string(&mut rest))
            .transpose()?;
        let payload = take_string(&mut rest)?;
        pubs.push(Publication {
            subject,
            msg_id,
            traceparent,
            payload,
            core: flags & CORE != 0,
            first: flags & FIRST != 0,
        });
    }
    if !rest.is_empty() {
        return Err(format!("{} stray bytes after the ledger entry", rest.len()));
    }
    Ok(pubs)
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn take_u32(rest: &mut &[u8]) -> Result<u32, String> {
    let (head, tail) = rest
        .split_first_chunk::<4>()
        .ok_or("truncated ledger entry")?;
    *rest = tail;
    Ok(u32::from_le_bytes(*head))
}

fn take_string(rest: &mut &[u8]) -> Result<String, String> {
    let len = take_u32(rest)? as usize;
    if rest.len() < len {
        return Err("truncated ledger entry".into());
    }
    let (head, tail) = rest.split_at(len);
    *rest = tail;
    String::from_utf8(head.to_vec()).map_err(|e| format!("ledger entry text: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Publication> {
        vec![
            Publication {
                subject: "mcplane.stage.enrichment.acme".into(),
                msg_id: Some("0190:authorize".into()),
                traceparent: Some("00-abc-def-01".into()),
                payload: r#"{"id":"0190","body":{"text":"say \"hi\" ü"}}"#.into(),
                core: false,
                first: false,
            },
            Publication {
                subject: "_INBOX.x".into(),
                msg_id: None,
                traceparent: None,
                payload: String::new(),
                core: true,
                first: true,
            },
        ]
    }

    #[test]
    fn outputs_round_trip_byte_for_byte() {
        let pubs = sample();
        assert_eq!(decode_outputs(&encode_outputs(&pubs)).unwrap(), pubs);
        assert_eq!(decode_outputs(&encode_outputs(&[])).unwrap(), vec![]);
    }

    #[test]
    fn entries_written_as_json_by_earlier_versions_still_decode() {
        let pubs = sample();
        let legacy = serde_json::to_vec(&pubs).unwrap();
        assert_eq!(decode_outputs(&legacy).unwrap(), pubs);
    }

    #[test]
    fn damaged_entries_are_errors_not_panics() {
        let entry = encode_outputs(&sample());
        for cut in 0..entry.len() {
            assert!(decode_outputs(&entry[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = entry.clone();
        extra.push(0);
        assert!(decode_outputs(&extra).is_err());
        assert!(decode_outputs(&[9, 0, 0, 0, 0]).is_err());
        // A huge count with no publications behind it.
        assert!(decode_outputs(&[1, 255, 255, 255, 255]).is_err());
    }
}
