//! The redaction engine with every detector on: any text is masked without a panic or a hang,
//! the spans it reports lie on character boundaries inside the text and do not overlap, and none
//! of the masked values survives in the output.
//!
//! Not asserted (yet): that a masked text holds nothing more to mask. The first run found
//! `0::4::` masked as `0::[REDACTED:IP]`: the candidate `0::4::` fails validation, the scan
//! resumes inside it, and its suffix `4::` parsed as an address. Fixed (an IPv6 candidate
//! joined by a colon to a hex group before or after it is a fragment, not an address; see
//! `a_fragment_of_a_failed_candidate_is_not_an_address` in the IP detector) and kept as a seed
//! in `fuzz/seeds/redaction/`, which `scripts/fuzz.sh` feeds to every run.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcplane_redaction::config::Config;
use mcplane_redaction::Redactor;

fn redactor() -> &'static Redactor {
    static R: OnceLock<Redactor> = OnceLock::new();
    R.get_or_init(|| Redactor::new(&Config::default()).expect("the default redactor builds"))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let r = redactor();
    let spans = r.find(&text);
    let mut last_end = 0;
    for span in &spans {
        assert!(span.start <= span.end && span.end <= text.len());
        assert!(text.is_char_boundary(span.start) && text.is_char_boundary(span.end));
        assert!(span.start >= last_end, "overlapping spans: {spans:?}");
        last_end = span.end;
    }
    let (masked, counts) = r.redact(&text);
    // Every span found is masked, once.
    let total: u32 = counts.values().sum();
    assert_eq!(total as usize, spans.len(), "{counts:?} vs {spans:?}");
    let marks = |t: &str| t.matches("[REDACTED:").count();
    assert_eq!(marks(&masked), marks(&text) + spans.len(), "{masked:?}");
});
