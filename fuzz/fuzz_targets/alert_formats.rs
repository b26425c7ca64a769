//! Every alert format parser, through the one entry point the gateway and the correlator use.
//! The first byte picks the source from `alerts::SOURCES`, so a format added there is fuzzed
//! without touching this file; the rest is the payload (JSON when it parses, else a string).
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use mcplane_shared::alerts::{normalize, SOURCES};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let source = SOURCES[pick as usize % SOURCES.len()];
    let value = match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(v) => v,
        Err(_) => serde_json::Value::String(String::from_utf8_lossy(payload).into_owned()),
    };
    let received_at = Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap();
    if let Ok(alerts) = normalize(source, "fuzz", &value, received_at) {
        for alert in alerts {
            // What the correlator keys on must be stable across a re-encode.
            let json = serde_json::to_string(&alert).expect("a canonical alert encodes");
            let back: mcplane_shared::CanonicalAlert =
                serde_json::from_str(&json).expect("a canonical alert decodes");
            assert_eq!(back.fingerprint, alert.fingerprint);
        }
    }
});
