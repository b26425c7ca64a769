//! Phone numbers: international `+<country code> …` and the common national shapes (North
//! American `(415) 555-2671`, trunk-prefixed `020 7946 0958`, `06 12 34 56 78`, `030-12345678`).
//!
//! Digits alone are everywhere in operational text (dates, versions, order numbers, ports), so
//! a national number must have a recognised shape and separators, every form needs 9 to 15
//! digits, and a candidate glued to a neighbouring number or identifier is not a phone number.

use super::{
    begins_with, byte_at, byte_before, digit, runs_in, runs_on, EntityType, RuleSpec, Trigger,
};

/// Words that make a borderline number a phone number.
const CONTEXT: &[&str] = &[
    "phone", "call", "tel", "mobile", "cell", "fax", "sms", "whatsapp", "reach", "ring",
];

pub const RULE: RuleSpec = RuleSpec {
    kind: EntityType::Phone,
    pattern: PATTERN,
    trigger: Trigger::Digits(9, may_start_shaped),
    confirm,
    base: 0.7,
    context: CONTEXT,
};

pub const PATTERN: &str = concat!(
    // International: +cc then groups, optionally bracketed, with single separators.
    r"\+[1-9][0-9]{0,3}(?:[ .\-]?(?:\([0-9]{1,4}\)|[0-9]{1,5})){1,6}",
    // North American: optional 1, area code (bracketed or not), exchange, line.
    r"|(?:1[ .\-]?)?(?:\([2-9][0-9]{2}\)[ .\-]?|[2-9][0-9]{2}[ .\-])[2-9][0-9]{2}[ .\-][0-9]{4}",
    // Trunk prefix 0: one long group, or two to four short groups.
    r"|0[1-9][0-9]{0,3}(?:[ \-][0-9]{5,8}|(?:[ .\-][0-9]{2,4}){2,4})",
    // Trunk prefix in brackets: (020) 7946 0958.
    r"|\(0[1-9][0-9]{0,3}\)[ \-]?[0-9]{2,4}(?:[ .\-]?[0-9]{2,4}){1,3}",
);

/// A phone number begins with `+`, `(` or a digit; an international one not glued to a word
/// or another `+`, a national one not inside a longer number or word, nor after a `+`.
pub fn may_start(text: &str, start: usize) -> bool {
    match text.as_bytes()[start] {
        b'+' => !byte_before(text, start).is_some_and(|b| b.is_ascii_alphanumeric() || b == b'+'),
        b'(' | b'0'..=b'9' => !runs_in(text, start) && byte_before(text, start) != Some(b'+'),
        _ => false,
    }
}

/// Where the regex is worth trying: [`may_start`], then what every branch of [`PATTERN`]
/// beginning with that byte needs next:
/// - `+`: a country code's first digit (1-9);
/// - `0`: a trunk prefix's area digit (1-9);
/// - `(`: a trunk prefix's `0` and area digit, or a North American area code and `)`;
/// - `1`: a North American number after it and an optional separator, from its `(` and area
///   digit, or its area code and exchange;
/// - 2-9: a North American number whole (area code, exchange, line).
///
/// Epoch milliseconds, dotted quads and dashed SSNs then never reach the regex.
pub fn may_start_shaped(text: &str, start: usize) -> bool {
    const NONZERO: fn(u8) -> bool = |b| matches!(b, b'1'..=b'9');
    const AREA: fn(u8) -> bool = |b| matches!(b, b'2'..=b'9');
    const SEPARATOR: fn(u8) -> bool = |b| matches!(b, b' ' | b'.' | b'-');
    const ZERO: fn(u8) -> bool = |b| b == b'0';
    const OPEN: fn(u8) -> bool = |b| b == b'(';
    const CLOSE: fn(u8) -> bool = |b| b == b')';
    const AREA_EXCHANGE: [fn(u8) -> bool; 8] =
        [AREA, digit, digit, SEPARATOR, AREA, digit, digit, SEPARATOR];
    const NORTH_AMERICAN: [fn(u8) -> bool; 12] = [
        AREA, digit, digit, SEPARATOR, AREA, digit, digit, SEPARATOR, digit, digit, digit, digit,
    ];
    if !may_start(text, start) {
        return false;
    }
    let next = start + 1;
    match text.as_bytes()[start] {
        b'+' | b'0' => begins_with(text, next, &[NONZERO]),
        b'(' => {
            begins_with(text, next, &[ZERO, NONZERO])
                || begins_with(text, next, &[AREA, digit, digit, CLOSE])
        }
        b'1' => {
            let area = next + usize::from(byte_at(text, next).is_some_and(SEPARATOR));
            begins_with(text, area, &[OPEN, AREA]) || begins_with(text, area, &AREA_EXCHANGE)
        }
        _ => begins_with(text, start, &NORTH_AMERICAN),
    }
}

pub fn confirm(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let candidate = &text.as_bytes()[start..end];
    let digits = candidate.iter().filter(|b| b.is_ascii_digit()).count();
    if !(9..=15).contains(&digits) || !may_start(text, start) {
        return None;
    }
    if runs_on(text, end) {
        return None;
    }
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use crate::detectors::testing::found;
    use crate::detectors::EntityType::Phone;

    #[test]
    fn finds_international_numbers() {
        assert_eq!(
            found(
                Phone,
                "call +44 20 7946 0958 or +1 (415) 555-2671, +14155552671 or +33 6 12 34 56 78"
            ),
            vec![
                "+44 20 7946 0958",
                "+1 (415) 555-2671",
                "+14155552671",
                "+33 6 12 34 56 78"
            ]
        );
        assert_eq!(found(Phone, "tel:+49-30-12345678"), vec!["+49-30-12345678"]);
    }

    #[test]
    fn finds_national_numbers() {
        assert_eq!(
            found(Phone, "(415) 555-2671, 415.555.2671 and 1-800-555-0199"),
            vec!["(415) 555-2671", "415.555.2671", "1-800-555-0199"]
        );
        assert_eq!(
            found(
                Phone,
                "dial 1 (415) 555-2671 or 1(415)555-2671 or 1415 555 2671"
            ),
            vec!["1 (415) 555-2671", "1(415)555-2671", "1415 555 2671"]
        );
        assert_eq!(
            found(Phone, "UK 020 7946 0958, (020) 7946 0958, AU 0412 345 678, FR 06 12 34 56 78, DE 030-12345678"),
            vec!["020 7946 0958", "(020) 7946 0958", "0412 345 678", "06 12 34 56 78", "030-12345678"]
        );
    }

    #[test]
    fn a_date_right_before_a_number_does_not_hide_it() {
        assert_eq!(found(Phone, "2021 415-555-2671"), vec!["415-555-2671"]);
    }

    #[test]
    fn ignores_near_misses() {
        for text in [
            "2024-01-15",
            "2024-01-15 10:30:00",
            "15.01.2024 10:30",
            "order ORD-2024-000123 shipped",
            "ticket ORD-0123-456-789",
            "release v1.2.3 and 10.0.19045.2846",
            "build 4f9c2e1 at 20240115",
            "192.168.100.200",
            "1.3.6.1.4.1.311.21.8",
            "port 8080, pid 123456789",
            "+15%",
            "+1 2 3",
            "1705312200000",
            "latency 0.123456789s",
            "uuid 550e8400-e29b-41d4-a716-446655440000",
        ] {
            assert!(
                found(Phone, text).is_empty(),
                "{text}: {:?}",
                found(Phone, text)
            );
        }
    }
}
