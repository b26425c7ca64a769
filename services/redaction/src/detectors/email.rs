//! E-mail addresses: a conventional local part, `@`, and a dotted domain ending in a letters-only
//! top-level label.
//!
//! Deliberately narrower than RFC 5322 (no quoted local parts, no IP-literal domains): those are
//! vanishingly rare in prose, and a wider pattern starts catching `git@host:repo` paths,
//! `pkg@1.2.3` version specs and decorators.

use super::{byte_at, byte_before, is_word, EntityType, RuleSpec, Trigger};

pub const RULE: RuleSpec = RuleSpec {
    kind: EntityType::Email,
    pattern: PATTERN,
    trigger: Trigger::AtSign,
    confirm,
    base: 1.0,
    context: &[],
};

pub const PATTERN: &str = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}\b";

/// Where the regex would first match an address whose `@` is at `at`, searching from `from`:
/// the start of the run of local-part characters before it (ASCII, as the pattern is), or `at`
/// itself when there is none (and so no candidate).
pub fn local_part_start(text: &str, from: usize, at: usize) -> usize {
    let bytes = text.as_bytes();
    let mut start = at;
    while start > from
        && matches!(bytes[start - 1], b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'%' | b'+' | b'-')
    {
        start -= 1;
    }
    start
}

pub fn confirm(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    // The pattern is ASCII-only; a local part such as `jörg` starts before where it matched.
    let mut start = start
        - text[..start]
            .chars()
            .rev()
            .take_while(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-'))
            .map(char::len_utf8)
            .sum::<usize>();
    // A local part may not start with a dot; leading dots are punctuation, not address.
    while byte_at(text, start) == Some(b'.') {
        start += 1;
    }
    let at = text[start..end].find('@')? + start;
    if at == start || at - start > 64 || text[start..at].ends_with('.') {
        return None;
    }
    // The regex stopped the domain at a non-domain character; `-` or a word character right
    // after the top-level label means it is part of something longer.
    if byte_at(text, end).is_some_and(|b| is_word(b) || b == b'-') {
        return None;
    }
    if byte_before(text, start).is_some_and(|b| b == b'@') {
        return None;
    }
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use crate::detectors::testing::found;
    use crate::detectors::EntityType::Email;

    #[test]
    fn finds_addresses() {
        assert_eq!(
            found(
                Email,
                "mail alice.moreau+ops@example.co.uk or BOB_1@sub-domain.example.com."
            ),
            vec![
                "alice.moreau+ops@example.co.uk",
                "BOB_1@sub-domain.example.com"
            ]
        );
        assert_eq!(found(Email, "<carol@example.io>"), vec!["carol@example.io"]);
        assert_eq!(
            found(Email, "(café) erin@example.com"),
            vec!["erin@example.com"]
        );
        assert_eq!(
            found(Email, "an jörg@example.com"),
            vec!["jörg@example.com"]
        );
    }

    #[test]
    fn ignores_near_misses() {
        for text in [
            "npm i lodash@4.17.21",
            "user@localhost",
            "git@github.com-foo",
            "ping @oncall-team about it",
            "@decorator\ndef f(): pass",
            "a@b",
            "foo@bar.c",
            "x@.example.com",
        ] {
            assert!(
                found(Email, text).is_empty(),
                "{text}: {:?}",
                found(Email, text)
            );
        }
    }
}
