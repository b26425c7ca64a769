//! The redaction engine with every detector on: any text is masked without a panic, the spans it
//! reports lie on character boundaries inside the text, and masking is idempotent in what it
//! counts (a masked text holds nothing more to mask).
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
    for span in r.find(&text) {
        assert!(span.start <= span.end && span.end <= text.len());
        assert!(text.is_char_boundary(span.start) && text.is_char_boundary(span.end));
    }
    let (masked, _counts) = r.redact(&text);
    let (_, again) = r.redact(&masked);
    assert!(again.is_empty(), "masked text still has {again:?}: {masked:?}");
});
