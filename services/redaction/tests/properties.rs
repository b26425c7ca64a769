//! Properties over open-ended input: redaction never panics, and never lengthens a secret's
//! exposure — every detected entity's text occurs in the output fewer times than in the input
//! (by at least the number of times it was detected), whatever surrounds it.

use mcplane_redaction::config::Config;
use mcplane_redaction::corpus::{entity, Rng, PEOPLE};
use mcplane_redaction::detectors::EntityClass;
use mcplane_redaction::stage::RedactStage;
use mcplane_redaction::EntityType;
use mcplane_shared::{AiRequest, Envelope, Exchange, RequestType};
use proptest::prelude::*;

fn stage() -> RedactStage {
    RedactStage::new(
        Config {
            person_names: PEOPLE.iter().map(|s| s.to_string()).collect(),
            ..Config::default()
        },
        None,
    )
    .unwrap()
}

/// A piece of text: free unicode, punctuation glue, or a real entity of a random type.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,24}",
        "[ .,:;=@/_+()\\-\\n'\"<>]{0,3}",
        (any::<u64>(), 0..EntityType::ALL.len())
            .prop_map(|(seed, k)| entity(&mut Rng::new(seed), EntityType::ALL[k].as_str())),
    ]
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.match_indices(needle).count()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn redaction_never_panics_and_never_lengthens_exposure(pieces in prop::collection::vec(piece(), 0..10)) {
        let stage = stage();
        let input = pieces.concat();
        let found = stage.redactor.engine("acme").find(&input);
        let mut env = Envelope::new("acme", Exchange::new(AiRequest::new(RequestType::Answer, input.clone())));
        let (_, entry) = stage.redact_request(&mut env);
        let output = &env.body.request.input;
        for span in &found {
            let text = &input[span.start..span.end];
            let detected = found.iter().filter(|s| &input[s.start..s.end] == text).count();
            prop_assert!(
                count(output, text) + detected <= count(&input, text),
                "{} {:?} still exposed in {:?}", span.kind, text, output
            );
            if span.kind.class() == EntityClass::Secret {
                prop_assert!(
                    !entry.tokens.values().any(|v| v == text),
                    "a credential was kept for detokenisation: {:?}", text
                );
            }
        }
        // Redacting again finds no credential: masking never uncovers one.
        let again = stage.redactor.engine("acme").find(output);
        prop_assert!(!again.iter().any(|s| s.kind.class() == EntityClass::Secret), "{:?}", output);
    }
}
