//! Street addresses, where feasible: a house number, one to three capitalised words and a
//! street suffix (`221B Baker Street`, `1600 Pennsylvania Ave`). Free-form addresses have no
//! reliable shape; this catches the common Anglo-American form with few false positives (a
//! capitalised street word after a number is rare in operational text).

use super::{byte_before, is_word, EntityType, RuleSpec, Trigger};

pub const RULE: RuleSpec = RuleSpec {
    kind: EntityType::Address,
    pattern: concat!(
        r"[0-9]{1,5}[A-Za-z]? (?:[A-Z][a-z]+ ){1,3}",
        r"(?:Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Drive|Dr|Boulevard|Blvd|Way|Court|Ct|Place|Pl|",
        r"Terrace|Parkway|Pkwy|Square|Sq|Highway|Hwy|Close|Crescent)\b",
    ),
    trigger: Trigger::NumberThenCapital,
    confirm,
    base: 0.6,
    context: &["address", "lives", "located", "ship to", "deliver", "home"],
};

pub fn confirm(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    if byte_before(text, start).is_some_and(|b| is_word(b) || b == b'.' || b == b'-') {
        return None;
    }
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use crate::detectors::testing::found;
    use crate::detectors::EntityType::Address;

    #[test]
    fn finds_numbered_streets() {
        assert_eq!(
            found(
                Address,
                "ship to 221B Baker Street, London or 1600 Pennsylvania Ave NW"
            ),
            vec!["221B Baker Street", "1600 Pennsylvania Ave"]
        );
        // A house number with a letter, and no other number in the text.
        assert_eq!(
            found(Address, "ship to 221B Baker Street"),
            vec!["221B Baker Street"]
        );
        assert!(found(Address, "step 3 of the way forward; v2 Main street").is_empty());
    }
}
