//! Detection quality on the generated corpus stays above the goals (precision at least 0.9,
//! recall at least 0.85 overall, span-level); speed is measured by `cargo bench -p mcplane-redaction`,
//! never asserted.

use mcplane_redaction::config::Config;
use mcplane_redaction::corpus::{evaluate, generate, PEOPLE};
use mcplane_redaction::{EntityType, Redactor};

fn redactor() -> Redactor {
    Redactor::new(&Config {
        person_names: PEOPLE.iter().map(|s| s.to_string()).collect(),
        ..Config::default()
    })
    .unwrap()
}

#[test]
fn corpus_precision_and_recall_stay_above_the_goals() {
    let corpus = generate(2026, 4000);
    let report = evaluate(redactor().engine("any"), &corpus);
    let json = serde_json::to_string_pretty(&report).unwrap();
    assert!(report.overall.precision >= 0.9, "{json}");
    assert!(report.overall.recall >= 0.85, "{json}");
    // Every entity type of the corpus is actually found, not carried by the others.
    for (kind, score) in &report.by_type {
        assert!(score.f1 >= 0.5, "{kind}: {json}");
    }
}

#[test]
fn a_leaked_mcplane_key_is_found_and_look_alikes_are_not_flagged_as_keys() {
    let r = redactor();
    let mut rng = mcplane_redaction::corpus::Rng::new(99);
    for _ in 0..2000 {
        let random: String = (0..30)
            .map(|_| {
                char::from(
                    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                        [rng.below(62)],
                )
            })
            .collect();
        let key = mcplane_shared::api_key::with_checksum(&random);
        let text = format!("the CI log printed {key} in plain text");
        let spans = r.find(&text);
        assert_eq!(spans.len(), 1, "{text}");
        assert_eq!(spans[0].kind, EntityType::McplaneKey);
        assert_eq!(&text[spans[0].start..spans[0].end], key);

        // One changed character or a wrong checksum: not an mcplane key.
        let mut bytes = key.clone().into_bytes();
        let i = 4 + rng.below(36);
        bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
        let bad = String::from_utf8(bytes).unwrap();
        let text = format!("the CI log printed {bad} in plain text");
        assert!(
            !r.find(&text)
                .iter()
                .any(|s| s.kind == EntityType::McplaneKey),
            "{text}"
        );
    }
}
