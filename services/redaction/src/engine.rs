//! The redaction engine: finds every enabled entity in a text and masks it in one pass.
//!
//! Every pattern is compiled once, at start. A `RegexSet` of all candidate patterns first says
//! whether anything could match at all, so clean prose (the common case) costs one pass, no
//! allocation, and comes back borrowed; otherwise each detector scans for confirmed spans, the
//! overlaps are resolved, and the output string is built once.

use std::borrow::Cow;
use std::collections::BTreeMap;

use regex::{Regex, RegexSet};

use crate::config::Config;
use crate::detectors::{compile, scan, EntityType, Span};

/// Why a redactor cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedactorError {
    #[error("unknown entity type `{0}` (known: EMAIL, PHONE, IP, CARD, TOKEN)")]
    UnknownType(String),
    #[error("detector pattern for {kind} does not compile: {message}")]
    Pattern { kind: EntityType, message: String },
}

/// Counts of masked entities by type name.
pub type Counts = BTreeMap<&'static str, u32>;

/// Masks PII and secrets in text. Cheap to share (`&self` everywhere); build one per process.
#[derive(Debug, Clone)]
pub struct Redactor {
    /// Prefilter: the union of every detector's candidate pattern.
    any: RegexSet,
    detectors: Vec<(EntityType, Regex)>,
}

impl Redactor {
    /// Builds a redactor for the types `config.enabled_types` names.
    pub fn new(config: &Config) -> Result<Redactor, RedactorError> {
        let mut kinds = Vec::with_capacity(EntityType::ALL.len());
        for name in &config.enabled_types {
            let kind = EntityType::from_name(name)
                .ok_or_else(|| RedactorError::UnknownType(name.clone()))?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        kinds.sort();
        Self::with_types(&kinds)
    }

    /// Builds a redactor for exactly these types.
    pub fn with_types(kinds: &[EntityType]) -> Result<Redactor, RedactorError> {
        let detectors = kinds
            .iter()
            .map(|&kind| {
                compile(kind.pattern())
                    .map(|re| (kind, re))
                    .map_err(|e| RedactorError::Pattern {
                        kind,
                        message: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let any = regex::RegexSetBuilder::new(kinds.iter().map(|k| k.pattern()))
            .unicode(false)
            .size_limit(64 * 1024 * 1024)
            .build()
            .map_err(|e| RedactorError::Pattern {
                kind: kinds.first().copied().unwrap_or(EntityType::Email),
                message: e.to_string(),
            })?;
        Ok(Redactor { any, detectors })
    }

    /// The types this redactor masks.
    pub fn types(&self) -> impl Iterator<Item = EntityType> + '_ {
        self.detectors.iter().map(|(k, _)| *k)
    }

    /// The entities to mask, in text order, without overlaps: where candidates overlap, the
    /// earliest wins, and among those starting together the longest.
    pub fn find(&self, text: &str) -> Vec<Span> {
        let mut spans = Vec::new();
        if self.detectors.is_empty() || text.is_empty() {
            return spans;
        }
        // One pass that stops at the first candidate and allocates nothing; clean text ends
        // here. (`RegexSet::matches` would say which detectors hit, but scans the whole text
        // and allocates, and measured no faster than running every detector.)
        if !self.any.is_match(text) {
            return spans;
        }
        for (kind, re) in &self.detectors {
            scan(*kind, re, text, &mut spans);
        }
        resolve_overlaps(&mut spans);
        spans
    }

    /// Masks every entity as `[REDACTED:<TYPE>]`; borrowed when nothing was found.
    pub fn redact<'t>(&self, text: &'t str) -> (Cow<'t, str>, Counts) {
        let spans = self.find(text);
        let mut counts = Counts::new();
        if spans.is_empty() {
            return (Cow::Borrowed(text), counts);
        }
        let mut out = String::with_capacity(text.len() + spans.len() * 8);
        let mut at = 0;
        for span in &spans {
            out.push_str(&text[at..span.start]);
            out.push_str(span.kind.mask());
            at = span.end;
            *counts.entry(span.kind.as_str()).or_insert(0) += 1;
        }
        out.push_str(&text[at..]);
        (Cow::Owned(out), counts)
    }
}

/// Sorts spans by start and drops overlaps in place: a span overlapping the last kept one
/// replaces it only when it is longer (it starts no earlier, so it cannot reach back into the
/// span kept before).
fn resolve_overlaps(spans: &mut Vec<Span>) {
    spans.sort_unstable_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut kept = 0;
    for i in 0..spans.len() {
        let span = spans[i];
        if kept > 0 && span.start < spans[kept - 1].end {
            if span.len() > spans[kept - 1].len() {
                spans[kept - 1] = span;
            }
            continue;
        }
        spans[kept] = span;
        kept += 1;
    }
    spans.truncate(kept);
}

/// Adds `more` into `into`.
pub fn add_counts(into: &mut Counts, more: &Counts) {
    for (k, v) in more {
        *into.entry(k).or_insert(0) += v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Redactor {
        Redactor::new(&Config::default()).unwrap()
    }

    #[test]
    fn clean_text_comes_back_borrowed() {
        let r = all();
        let text = "checkout p99 latency rose to 2.3s after deploy v1.2.3 on 2024-01-15";
        let (out, counts) = r.redact(text);
        assert!(matches!(out, Cow::Borrowed(_)));
        assert!(counts.is_empty());
        assert!(matches!(r.redact("").0, Cow::Borrowed(_)));
    }

    #[test]
    fn masks_every_type_and_counts_them() {
        let r = all();
        let text =
            "From alice@example.com (+44 20 7946 0958) at 10.0.0.12: card 4111 1111 1111 1111, \
                    key mcp_0123456789abcdefghijABCDEFGHIJklmnop and bob@example.org.";
        let (out, counts) = r.redact(text);
        assert_eq!(
            out,
            "From [REDACTED:EMAIL] ([REDACTED:PHONE]) at [REDACTED:IP]: card [REDACTED:CARD], \
             key [REDACTED:TOKEN] and [REDACTED:EMAIL]."
        );
        assert_eq!(
            counts,
            Counts::from([
                ("EMAIL", 2),
                ("PHONE", 1),
                ("IP", 1),
                ("CARD", 1),
                ("TOKEN", 1)
            ])
        );
    }

    #[test]
    fn overlapping_candidates_keep_the_earliest_then_longest() {
        let mut spans = vec![
            Span {
                start: 5,
                end: 9,
                kind: EntityType::Phone,
            },
            Span {
                start: 0,
                end: 4,
                kind: EntityType::Ip,
            },
            Span {
                start: 5,
                end: 12,
                kind: EntityType::Card,
            },
            Span {
                start: 10,
                end: 20,
                kind: EntityType::Token,
            },
            Span {
                start: 20,
                end: 22,
                kind: EntityType::Email,
            },
        ];
        resolve_overlaps(&mut spans);
        let kept: Vec<_> = spans.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(kept, vec![(0, 4), (10, 20), (20, 22)]);
    }

    #[test]
    fn a_card_is_not_also_a_phone_number() {
        let (out, counts) = all().redact("pay with 5555-5555-5555-4444 now");
        assert_eq!(out, "pay with [REDACTED:CARD] now");
        assert_eq!(counts, Counts::from([("CARD", 1)]));
    }

    #[test]
    fn only_enabled_types_are_masked() {
        let r = Redactor::new(&Config {
            enabled_types: vec!["email".into(), "TOKEN".into(), "Email".into()],
        })
        .unwrap();
        assert_eq!(
            r.types().collect::<Vec<_>>(),
            vec![EntityType::Email, EntityType::Token]
        );
        let (out, _) = r.redact("alice@example.com from 10.0.0.1");
        assert_eq!(out, "[REDACTED:EMAIL] from 10.0.0.1");
    }

    #[test]
    fn unknown_types_are_refused() {
        let err = Redactor::new(&Config {
            enabled_types: vec!["SSN".into()],
        })
        .unwrap_err();
        assert_eq!(err, RedactorError::UnknownType("SSN".into()));
    }

    #[test]
    fn non_ascii_text_is_sliced_on_char_boundaries() {
        let (out, counts) = all().redact("Grüße an jörg@example.com — ☎ +49 30 12345678 ✓");
        assert_eq!(out, "Grüße an [REDACTED:EMAIL] — ☎ [REDACTED:PHONE] ✓");
        assert_eq!(counts.get("PHONE"), Some(&1));
    }
}
