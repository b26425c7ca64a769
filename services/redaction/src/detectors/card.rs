//! Payment card numbers: 13 to 19 digits, optionally grouped by spaces or dashes, with a
//! plausible issuer prefix (2-6) and a valid Luhn check digit.
//!
//! Luhn alone passes one random number in ten, which in logs full of epoch milliseconds and
//! ids would be a steady stream of false positives; the issuer prefix removes most of those
//! (timestamps start with 1) at no cost to real cards.

use super::{byte_at, byte_before, runs_in, runs_on, EntityType, RuleSpec, Trigger};

pub const RULE: RuleSpec = RuleSpec {
    kind: EntityType::Card,
    pattern: PATTERN,
    trigger: Trigger::Digits(13, may_start_grouped),
    confirm,
    base: 1.0,
    context: &[],
};

pub const PATTERN: &str = r"[0-9](?:[ \-]?[0-9]){12,18}";

/// A card number begins with an issuer digit (2-6), not inside a longer number or word, and
/// not after a `+` (a phone number's country code).
pub fn may_start(text: &str, start: usize) -> bool {
    matches!(text.as_bytes()[start], b'2'..=b'6')
        && !runs_in(text, start)
        && byte_before(text, start) != Some(b'+')
}

/// Where the regex is worth trying: [`may_start`], then a second digit, right after or after
/// one space or dash.
pub fn may_start_grouped(text: &str, start: usize) -> bool {
    let digit_at = |at| byte_at(text, at).is_some_and(|b: u8| b.is_ascii_digit());
    may_start(text, start)
        && (digit_at(start + 1)
            || (matches!(byte_at(text, start + 1), Some(b' ' | b'-')) && digit_at(start + 2)))
}

pub fn confirm(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    if !may_start(text, start) {
        return None;
    }
    // The regex is greedy: `4111 1111 1111 1111 2024` gives 19 digits. Try the whole candidate,
    // then every shorter one ending before a separator.
    let bytes = text.as_bytes();
    let mut e = end;
    loop {
        if !runs_on(text, e) && luhn_valid(&bytes[start..e]) {
            return Some((start, e));
        }
        let cut = bytes[start..e]
            .iter()
            .rposition(|b| matches!(b, b' ' | b'-'))?;
        e = start + cut;
    }
}

/// The Luhn (mod 10) check over the digits of `candidate`, ignoring separators; false unless
/// it holds 13 to 19 digits.
pub fn luhn_valid(candidate: &[u8]) -> bool {
    // Every second digit from the right is doubled; a doubled digit above 9 counts its digit sum.
    const DOUBLED: [u32; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    let mut sum = 0u32;
    let mut count = 0usize;
    for b in candidate.iter().rev().filter(|b| b.is_ascii_digit()) {
        let d = usize::from(b - b'0');
        sum += if count & 1 == 1 { DOUBLED[d] } else { d as u32 };
        count += 1;
    }
    (13..=19).contains(&count) && sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::luhn_valid;
    use crate::detectors::testing::found;
    use crate::detectors::EntityType::Card;

    #[test]
    fn luhn_accepts_test_cards_and_rejects_altered_ones() {
        for good in [
            "4111111111111111",
            "5555555555554444",
            "378282246310005",
            "6011111111111117",
            "4222222222222",
            "2223003122003222",
            "6200000000000005",
        ] {
            assert!(luhn_valid(good.as_bytes()), "{good}");
        }
        for bad in [
            "4111111111111112",
            "5555555555554440",
            "411111111111",
            "41111111111111111111",
        ] {
            assert!(!luhn_valid(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn finds_cards_in_common_formats() {
        assert_eq!(
            found(
                Card,
                "card 4111 1111 1111 1111, amex 3782-822463-10005; mc 5555555555554444."
            ),
            vec![
                "4111 1111 1111 1111",
                "3782-822463-10005",
                "5555555555554444"
            ]
        );
    }

    #[test]
    fn a_trailing_number_does_not_hide_the_card() {
        assert_eq!(
            found(Card, "4111 1111 1111 1111 2024"),
            vec!["4111 1111 1111 1111"]
        );
    }

    #[test]
    fn ignores_near_misses() {
        for text in [
            "4111 1111 1111 1112",
            "ts 1705312200000 and 1705312200000123",
            "0000 0000 0000 0000",
            "order ORD-4111111111111111",
            "id 94111111111111111111111",
            "2024-01-15 12:00",
            "v4.1.1.1",
        ] {
            assert!(
                found(Card, text).is_empty(),
                "{text}: {:?}",
                found(Card, text)
            );
        }
    }
}
