//! Reading what a stream holds, for assertions.
//!
//! Messages are read by sequence with direct gets rather than through a consumer: that works on
//! every stream, work-queue ones included (which allow no second consumer on the same subjects
//! and delete what a consumer acknowledges), and leaves the stream untouched.

use mcplane_shared::bus::Bus;
use mcplane_shared::subjects::StreamKind;

/// Whether `subject` matches the NATS `filter` (`*` one token, `>` the rest).
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Every message stored on `filter` in the stream, in stream order.
pub async fn stored_messages(bus: &Bus, kind: StreamKind, filter: String) -> Vec<bytes::Bytes> {
    let mut stream = bus
        .js
        .get_stream(bus.subjects.stream_name(kind))
        .await
        .expect("stream");
    let state = stream.info().await.expect("stream info").state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for seq in state.first_sequence..=state.last_sequence {
        // A gap is a deleted message (acknowledged on a work queue, or purged).
        if let Ok(m) = stream.get_raw_message(seq).await {
            if subject_matches(&filter, &m.subject) {
                out.push(m.payload);
            }
        }
    }
    out
}

/// The result stored for request `id` in the results bucket, waited for up to `deadline`.
///
/// A finished request's result leaves as two publications at once, the put into the bucket and
/// the reply to the caller's inbox; the server may store the put a moment after it routes the
/// reply (`shared/src/bus/results.rs`), so a test that saw the reply still waits here.
pub async fn stored_result(
    bus: &Bus,
    id: &uuid::Uuid,
    deadline: std::time::Duration,
) -> mcplane_shared::Envelope<mcplane_shared::Exchange> {
    let results = mcplane_shared::bus::ResultStore::open(bus)
        .await
        .expect("the results bucket");
    let started = std::time::Instant::now();
    loop {
        if let Some(stored) = results.get(id).await.expect("reading the results bucket") {
            return stored;
        }
        assert!(
            started.elapsed() < deadline,
            "no result stored for {id} within {deadline:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn wildcards_match_like_nats() {
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.c"));
    }
}
