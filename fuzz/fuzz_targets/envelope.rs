//! The envelope decoder every worker runs on every message it pulls: arbitrary bytes must decode
//! or be refused with a code, for each body kind, never panic. A decoded envelope must survive a
//! round trip through its own encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcplane_shared::body::alert::RawAlert;
use mcplane_shared::{AuditEvent, BodyKind, Envelope, Exchange, IncidentEvent, IncidentSummary};

fn check<B: BodyKind + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(env) = Envelope::<B>::from_slice(data) {
        let bytes = env.to_bytes().expect("a decoded envelope encodes");
        let again = Envelope::<B>::from_slice(&bytes).expect("an encoded envelope decodes");
        assert_eq!(env.id, again.id);
        assert_eq!(env.tenant, again.tenant);
        // The traceparent a stage forwards must parse back to the same trace.
        let tp = env.trace.traceparent();
        if let Some(parsed) = mcplane_shared::TraceContext::from_traceparent(&tp) {
            assert_eq!(parsed.trace_id, env.trace.trace_id);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check::<Exchange>(data);
    check::<RawAlert>(data);
    check::<AuditEvent>(data);
    check::<IncidentEvent>(data);
    check::<IncidentSummary>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = mcplane_shared::TraceContext::from_traceparent(text);
    }
});
