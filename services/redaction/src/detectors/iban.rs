//! International bank account numbers: country code, two check digits, a country-specific
//! length of letters and digits, written whole or in groups of four.
//!
//! The ISO 13616 mod-97 check passes one random string in 97 and the per-country length table
//! removes most of the rest, so an IBAN needs no context word.

use super::{
    begins_with, byte_at, byte_before, capital, digit, is_word, EntityType, RuleSpec, Trigger,
};

pub const PATTERN: &str = r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?";

pub const RULE: RuleSpec = RuleSpec {
    kind: EntityType::Iban,
    pattern: PATTERN,
    trigger: Trigger::Digits(10, may_start_coded),
    confirm,
    base: 1.0,
    context: &["iban", "account", "bank", "transfer", "sepa"],
};

/// IBAN lengths of the countries that use them most (SWIFT registry); others are not flagged.
const LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AT", 20),
    ("BE", 16),
    ("BG", 22),
    ("CH", 21),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("EE", 20),
    ("ES", 24),
    ("FI", 18),
    ("FR", 27),
    ("GB", 22),
    ("GR", 27),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IS", 26),
    ("IT", 27),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MT", 31),
    ("NL", 18),
    ("NO", 15),
    ("PL", 28),
    ("PT", 25),
    ("RO", 24),
    ("SA", 24),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("TR", 26),
];

/// An IBAN begins with a capital letter (its country code) that no word character precedes.
pub fn may_start(text: &str, start: usize) -> bool {
    text.as_bytes()[start].is_ascii_uppercase() && !byte_before(text, start).is_some_and(is_word)
}

/// Where the regex is worth trying: [`may_start`], then the country code's second letter and
/// the two check digits every match begins with.
pub fn may_start_coded(text: &str, start: usize) -> bool {
    may_start(text, start) && begins_with(text, start, &[capital, capital, digit, digit])
}

pub fn confirm(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    if !may_start(text, start) {
        return None;
    }
    // Greedy groups may take a following word (`… 0130 00 TEST`): try shorter candidates
    // ending at a group boundary too.
    let bytes = text.as_bytes();
    let mut e = end;
    loop {
        if !byte_at(text, e).is_some_and(is_word) && valid(&bytes[start..e]) {
            return Some((start, e));
        }
        let cut = bytes[start..e].iter().rposition(|&b| b == b' ')?;
        e = start + cut;
    }
}

/// Country length and the mod-97 check over the characters of `candidate`, spaces ignored.
pub fn valid(candidate: &[u8]) -> bool {
    let chars: Vec<u8> = candidate.iter().copied().filter(|&b| b != b' ').collect();
    let Some(country) = chars.get(..2) else {
        return false;
    };
    let expected = LENGTHS
        .iter()
        .find(|(c, _)| c.as_bytes() == country)
        .map(|(_, n)| *n);
    if expected != Some(chars.len()) {
        return false;
    }
    mod97(chars[4..].iter().chain(&chars[..4])) == 1
}

/// The remainder of the IBAN number (letters as 10..35) by 97, computed digit by digit.
fn mod97<'a>(chars: impl Iterator<Item = &'a u8>) -> u32 {
    let mut rem = 0u32;
    for &c in chars {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return 0,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem
}

#[cfg(test)]
mod tests {
    use super::valid;
    use crate::detectors::testing::found;
    use crate::detectors::EntityType::Iban;

    #[test]
    fn mod97_accepts_registry_examples_and_rejects_altered_ones() {
        for good in [
            "DE89370400440532013000",
            "GB82WEST12345698765432",
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
            "NO9386011117947",
        ] {
            assert!(valid(good.as_bytes()), "{good}");
        }
        for bad in [
            "DE89370400440532013001",
            "GB82WEST1234569876543",
            "XX89370400440532013000",
        ] {
            assert!(!valid(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn finds_grouped_and_whole_ibans() {
        assert_eq!(
            found(
                Iban,
                "pay to DE89 3704 0044 0532 0130 00 TODAY or GB82WEST12345698765432."
            ),
            vec!["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432"]
        );
        assert!(found(Iban, "build DE89 3704 0044 0532 0130 01").is_empty());
    }
}
