//! US social security numbers. The dashed form is distinctive enough alone; the spaced and the
//! bare nine-digit forms are everywhere in ids and counters, so they need a context word
//! (`SSN`, `social security`), which is also what switches their regexes on. Every form must pass the SSA's structural rules: area not 000,
//! 666 or 9xx, group not 00, serial not 0000.

use super::{begins_with, digit, runs_in, runs_on, EntityType, RuleSpec, Trigger};

const CONTEXT: &[&str] = &["ssn", "social security", "ss#", "ss no", "taxpayer"];

pub const RULES: [RuleSpec; 2] = [
    RuleSpec {
        kind: EntityType::Ssn,
        pattern: r"[0-9]{3}-[0-9]{2}-[0-9]{4}",
        trigger: Trigger::Digits(9, may_start_dashed),
        confirm,
        base: 0.5,
        context: CONTEXT,
    },
    // The spaced and the bare form as one rule, searched once around each context word: they
    // cannot match at the same start (a space or a digit after the first three).
    RuleSpec {
        kind: EntityType::Ssn,
        pattern: r"[0-9]{3} [0-9]{2} [0-9]{4}|[0-9]{9}",
        trigger: Trigger::Keywords(CONTEXT),
        confirm,
        base: 0.2,
        context: CONTEXT,
    },
];

/// An SSN begins with a digit that is not inside a longer number or word.
pub fn may_start(text: &str, start: usize) -> bool {
    text.as_bytes()[start].is_ascii_digit() && !runs_in(text, start)
}

/// Where the dashed form may begin: [`may_start`], and the whole `ddd-dd-dddd` shape there.
pub fn may_start_dashed(text: &str, start: usize) -> bool {
    const DASH: fn(u8) -> bool = |b| b == b'-';
    const SHAPE: [fn(u8) -> bool; 11] = [
        digit, digit, digit, DASH, digit, digit, DASH, digit, digit, digit, digit,
    ];
    may_start(text, start) && begins_with(text, start, &SHAPE)
}

pub fn confirm(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    if !may_start(text, start) || runs_on(text, end) {
        return None;
    }
    let digits: Vec<u32> = text[start..end]
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| u32::from(b - b'0'))
        .collect();
    let [a, b, c, g1, g2, s1, s2, s3, s4] = digits[..] else {
        return None;
    };
    let area = a * 100 + b * 10 + c;
    let valid = area != 0
        && area != 666
        && area < 900
        && (g1, g2) != (0, 0)
        && (s1, s2, s3, s4) != (0, 0, 0, 0)
        && digits.iter().any(|&d| d != a)
        && digits[..] != [1, 2, 3, 4, 5, 6, 7, 8, 9];
    valid.then_some((start, end))
}

#[cfg(test)]
mod tests {
    use crate::detectors::testing::found;
    use crate::detectors::EntityType::Ssn;

    #[test]
    fn dashed_numbers_stand_alone_other_forms_need_context() {
        assert_eq!(found(Ssn, "emp 536-22-8431 onboarded"), vec!["536-22-8431"]);
        assert_eq!(found(Ssn, "SSN 536 22 8431"), vec!["536 22 8431"]);
        assert_eq!(
            found(Ssn, "her social security number is 536228431"),
            vec!["536228431"]
        );
        assert!(found(Ssn, "order 536228431 shipped").is_empty());
    }

    #[test]
    fn structurally_impossible_numbers_are_not_ssns() {
        for text in [
            "SSN 000-12-3456",
            "SSN 666-12-3456",
            "SSN 912-12-3456",
            "SSN 123-00-4567",
            "SSN 123-45-0000",
            "SSN 111-11-1111",
            "ssn 123-45-6789",
        ] {
            assert!(found(Ssn, text).is_empty(), "{text}");
        }
    }
}
