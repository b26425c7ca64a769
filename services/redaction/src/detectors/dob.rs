//! Dates of birth: a date is only personal data when it is someone's birthday, so every date
//! shape here scores below the threshold alone and needs a context word (`born`, `DOB`, `date
//! of birth`) just before or after it. Dates in logs and tickets are left alone.

use super::{runs_in, runs_on, EntityType, RuleSpec, Trigger};

const CONTEXT: &[&str] = &[
    "born",
    "dob",
    "d.o.b",
    "date of birth",
    "birth date",
    "birthdate",
    "birthday",
];

/// The four date shapes as one rule, so that the text around a context word is searched once,
/// not once per shape. No two shapes can match at the same start (a four-digit year and `-`; one
/// or two digits and `/` or `.`; one or two digits and a space; a month name), so the one regex
/// finds at each start what the four did.
pub const RULES: [RuleSpec; 1] = [RuleSpec {
    kind: EntityType::Dob,
    pattern: concat!(
        // `1985-03-12`
        r"(?:19|20)[0-9]{2}-[01][0-9]-[0-3][0-9]",
        // `12/03/1985`, `12.3.1985`
        r"|[0-3]?[0-9][/.][01]?[0-9][/.](?:19|20)[0-9]{2}",
        // `12 March 1985`, `3 Feb. 1990`
        r"|[0-3]?[0-9] (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]{0,6}\.? (?:19|20)[0-9]{2}",
        // `March 12, 1985`
        r"|(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]{0,6}\.? [0-3]?[0-9],? (?:19|20)[0-9]{2}",
    ),
    trigger: Trigger::Keywords(CONTEXT),
    confirm,
    base: 0.2,
    context: CONTEXT,
}];

pub fn confirm(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    if runs_in(text, start) || runs_on(text, end) {
        return None;
    }
    let numbers: Vec<u32> = text[start..end]
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    // Year between 1900 and 2026, and every other number a plausible day or month.
    let year_ok = numbers.iter().any(|&n| (1900..=2026).contains(&n));
    let rest_ok = numbers
        .iter()
        .filter(|&&n| n < 1900)
        .all(|&n| (1..=31).contains(&n));
    (year_ok && rest_ok).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use crate::detectors::testing::found;
    use crate::detectors::EntityType::Dob;

    #[test]
    fn dates_near_a_birth_word_are_dates_of_birth() {
        assert_eq!(
            found(Dob, "DOB: 1985-03-12, joined 2019-01-02"),
            vec!["1985-03-12"]
        );
        assert_eq!(
            found(Dob, "she was born on 12 March 1985"),
            vec!["12 March 1985"]
        );
        assert_eq!(found(Dob, "date of birth 03/12/1985"), vec!["03/12/1985"]);
        assert_eq!(
            found(Dob, "Birthday: March 12, 1985."),
            vec!["March 12, 1985"]
        );
    }

    #[test]
    fn other_dates_are_not() {
        assert!(found(Dob, "deployed 2024-01-15 at 10:30").is_empty());
        assert!(found(Dob, "born-again build 2024-13-45").is_empty());
    }
}
