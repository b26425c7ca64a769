//! Leaked mcplane API keys, found with no false positives: the prefix and length select a
//! candidate and the key's own CRC-32 checksum ([`mcplane_shared::api_key`]) confirms it, so
//! a look-alike with one changed character is not reported as a key.

use mcplane_shared::api_key::looks_like_key;

use super::{byte_at, byte_before, is_word, EntityType, RuleSpec, Trigger};

pub const RULE: RuleSpec = RuleSpec {
    kind: EntityType::McplaneKey,
    pattern: r"mcp_[A-Za-z0-9]{36}",
    trigger: Trigger::Prefixes(&["mcp_"]),
    confirm,
    base: 1.0,
    context: &[],
};

pub fn confirm(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    if byte_before(text, start).is_some_and(is_word) || byte_at(text, end).is_some_and(is_word) {
        return None;
    }
    looks_like_key(&text[start..end]).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use crate::detectors::testing::found;
    use crate::detectors::EntityType::McplaneKey;
    use mcplane_shared::api_key::with_checksum;

    #[test]
    fn only_keys_with_a_valid_checksum_are_mcplane_keys() {
        let key = with_checksum("0123456789abcdefghijABCDEFGHIJ");
        let mut bad = key.clone().into_bytes();
        bad[10] = if bad[10] == b'x' { b'y' } else { b'x' };
        let bad = String::from_utf8(bad).unwrap();
        let text = format!("leaked {key} and {bad} and mcp_0123456789abcdefghijABCDEFGHIJklmnop");
        assert_eq!(found(McplaneKey, &text), vec![key]);
    }
}
