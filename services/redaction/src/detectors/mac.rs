//! MAC addresses: six hex octets joined by one consistent separator (`:` or `-`). They identify
//! a device and so, often, its owner. All-zero and broadcast addresses identify no one.

use super::{byte_at, byte_before, is_word, EntityType, RuleSpec, Trigger};

pub const RULE: RuleSpec = RuleSpec {
    kind: EntityType::Mac,
    pattern: r"[0-9A-Fa-f]{2}(?:[:\-][0-9A-Fa-f]{2}){5}",
    trigger: Trigger::MacSeparators,
    confirm,
    base: 0.8,
    context: &["mac", "hwaddr", "ether", "bssid"],
};

pub fn confirm(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let candidate = &text[start..end];
    let sep = candidate.as_bytes()[2];
    if candidate.bytes().skip(2).step_by(3).any(|b| b != sep) {
        return None;
    }
    let glued = |b: Option<u8>| b.is_some_and(|b| is_word(b) || b == b':' || b == b'-');
    if glued(byte_before(text, start)) || glued(byte_at(text, end)) {
        return None;
    }
    let lower = candidate.to_ascii_lowercase();
    if lower == "00:00:00:00:00:00"
        || lower == "ff:ff:ff:ff:ff:ff"
        || lower.replace('-', ":") == "00:00:00:00:00:00"
    {
        return None;
    }
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use crate::detectors::testing::found;
    use crate::detectors::EntityType::Mac;

    #[test]
    fn finds_colon_and_dash_forms_only_with_one_separator() {
        assert_eq!(
            found(
                Mac,
                "nic 00:1a:2b:3c:4d:5e and 3C-52-82-AB-CD-01 but not 00:1a-2b:3c:4d:5e"
            ),
            vec!["00:1a:2b:3c:4d:5e", "3C-52-82-AB-CD-01"]
        );
        assert!(found(Mac, "at 10:30:00:12:13:14:15 ff:ff:ff:ff:ff:ff").is_empty());
    }
}
