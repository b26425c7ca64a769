//! What the redaction service looks for: one module per family of entities, each a set of
//! [`RuleSpec`]s — a candidate regex, what must be in a text before the regex is worth running
//! (its [`Trigger`]), a confirmation the regex alone cannot express (Luhn, mod-97, octet ranges,
//! a checksum, the characters around a match), a base score and the context words that raise it.
//!
//! The split keeps the regexes simple enough for the lazy DFA, keeps the judgement calls (is
//! `2024-01-15 10` a phone number?) in plain Rust that unit tests pin down, and lets the engine
//! ([`crate::engine`]) skip every rule whose trigger is absent — most rules, for most texts.

pub mod address;
pub mod card;
pub mod dob;
pub mod email;
pub mod iban;
pub mod ip;
pub mod mac;
pub mod mcplane_key;
pub mod phone;
pub mod secrets;
pub mod ssn;

/// A kind of entity the redaction service finds; the names are the wire contract (the token
/// `<TYPE_n>`, the mask `[REDACTED:TYPE]`, the keys of the redaction counts and of the
/// configuration). `Custom` holds the name of a configured pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntityType {
    Email,
    Phone,
    Card,
    Iban,
    Ssn,
    Ip,
    Mac,
    Dob,
    Address,
    Person,
    AwsAccessKey,
    AwsSecretKey,
    GithubToken,
    GitlabToken,
    SlackToken,
    Jwt,
    PrivateKey,
    BasicAuth,
    Password,
    McplaneKey,
    BearerToken,
    ApiKey,
    /// A per-deployment or per-tenant pattern; the name is interned once at start.
    Custom(&'static str),
}

/// Whether an entity is personal data or a credential: credentials are never handed back and
/// block a model answer that carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntityClass {
    Pii,
    Secret,
}

impl EntityType {
    /// Every built-in type, in the order the counts and docs list them.
    pub const ALL: [EntityType; 22] = [
        EntityType::Email,
        EntityType::Phone,
        EntityType::Card,
        EntityType::Iban,
        EntityType::Ssn,
        EntityType::Ip,
        EntityType::Mac,
        EntityType::Dob,
        EntityType::Address,
        EntityType::Person,
        EntityType::AwsAccessKey,
        EntityType::AwsSecretKey,
        EntityType::GithubToken,
        EntityType::GitlabToken,
        EntityType::SlackToken,
        EntityType::Jwt,
        EntityType::PrivateKey,
        EntityType::BasicAuth,
        EntityType::Password,
        EntityType::McplaneKey,
        EntityType::BearerToken,
        EntityType::ApiKey,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntityType::Email => "EMAIL",
            EntityType::Phone => "PHONE",
            EntityType::Card => "CARD",
            EntityType::Iban => "IBAN",
            EntityType::Ssn => "SSN",
            EntityType::Ip => "IP",
            EntityType::Mac => "MAC",
            EntityType::Dob => "DOB",
            EntityType::Address => "ADDRESS",
            EntityType::Person => "PERSON",
            EntityType::AwsAccessKey => "AWS_ACCESS_KEY",
            EntityType::AwsSecretKey => "AWS_SECRET_KEY",
            EntityType::GithubToken => "GITHUB_TOKEN",
            EntityType::GitlabToken => "GITLAB_TOKEN",
            EntityType::SlackToken => "SLACK_TOKEN",
            EntityType::Jwt => "JWT",
            EntityType::PrivateKey => "PRIVATE_KEY",
            EntityType::BasicAuth => "BASIC_AUTH",
            EntityType::Password => "PASSWORD",
            EntityType::McplaneKey => "MCPLANE_KEY",
            EntityType::BearerToken => "BEARER_TOKEN",
            EntityType::ApiKey => "API_KEY",
            EntityType::Custom(name) => name,
        }
    }

    pub fn class(self) -> EntityClass {
        match self {
            EntityType::Email
            | EntityType::Phone
            | EntityType::Card
            | EntityType::Iban
            | EntityType::Ssn
            | EntityType::Ip
            | EntityType::Mac
            | EntityType::Dob
            | EntityType::Address
            | EntityType::Person
            | EntityType::Custom(_) => EntityClass::Pii,
            _ => EntityClass::Secret,
        }
    }

    /// Parses a built-in type name as written in configuration (case-insensitive).
    pub fn from_name(name: &str) -> Option<EntityType> {
        EntityType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(name.trim()))
    }

    /// The built-in types a configuration name stands for: a type, or a group (`PII`,
    /// `SECRETS`, and `TOKEN`, the old name of the credential detector).
    pub fn expand(name: &str) -> Option<Vec<EntityType>> {
        let name = name.trim();
        let class = if name.eq_ignore_ascii_case("PII") {
            Some(EntityClass::Pii)
        } else if name.eq_ignore_ascii_case("SECRETS") || name.eq_ignore_ascii_case("TOKEN") {
            Some(EntityClass::Secret)
        } else {
            None
        };
        match class {
            Some(c) => Some(
                EntityType::ALL
                    .into_iter()
                    .filter(|t| t.class() == c)
                    .collect(),
            ),
            None => EntityType::from_name(name).map(|t| vec![t]),
        }
    }
}

impl std::fmt::Display for EntityType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A confirmed entity: byte offsets into the text and its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub kind: EntityType,
}

impl Span {
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// Whether a candidate of a rule may begin at a byte offset of a text: a necessary condition
/// of its confirmation that depends on the start alone (a card's issuer digit, nothing glued
/// before it). Offsets where it fails are not tried at all.
///
/// A [`Trigger::Digits`] rule's test may only pass where [`may_start_number`] does: the engine
/// skips every other offset without calling it (most offsets near a digit run are inside it).
pub type StartTest = fn(&str, usize) -> bool;

/// Bytes that may begin a number-like entity: a digit, `+`, `(` or a capital letter (an
/// IBAN's country code).
const NUMBER_START: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_digit() || c.is_ascii_uppercase() || c == b'+' || c == b'(';
        b += 1;
    }
    t
};

/// What every [`StartTest`] of a [`Trigger::Digits`] rule requires: a byte that may begin a
/// number-like entity, with no ASCII letter or digit right before it.
#[inline]
pub fn may_start_number(bytes: &[u8], at: usize) -> bool {
    bytes.get(at).is_some_and(|&b| NUMBER_START[usize::from(b)])
        && !(at > 0 && bytes[at - 1].is_ascii_alphanumeric())
}

/// What must be present in a text before a rule's regex runs at all.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    /// Any of these (ASCII case-insensitive) keywords, found by the one keyword pass.
    Keywords(&'static [&'static str]),
    /// Any of these keywords, and every match begins with one of them (a token's fixed
    /// prefix): the regex is only tried anchored where one was found, not over the text.
    Prefixes(&'static [&'static str]),
    /// The same, tried only where the [`StartTest`] passes as well: a cheap necessary condition
    /// that spares the regex the keyword's ordinary uses (`passed`, `tokens`).
    PrefixesWhere(&'static [&'static str], StartTest),
    /// A run of at least this many digits, joined by at most two separators (` -./()+`) at a
    /// time: the shape of every number-like entity. The regex is tried anchored, only at the
    /// offsets near such a run that pass the [`StartTest`]: no search through the window, no
    /// reverse search for where a match began.
    Digits(u32, StartTest),
    /// An `@`: the regex (an e-mail address) is tried anchored at the start of the local part
    /// before each `@` ([`email::local_part_start`]), not searched for over the text.
    AtSign,
    /// Three `digit.digit` joints in a row (a dotted quad): the regex searches only around
    /// such chains.
    DottedDigits,
    /// A digit group, at most one letter, a space and a capital (`221B Baker`): the regex is
    /// tried anchored at each such group.
    NumberThenCapital,
    /// A chain of colons holding a `::` or six `hex:hex` joints (an IPv6 address; a MAC
    /// address has five): the regex searches only around such chains.
    Ipv6Colons,
    /// Five `hex:hex` or `hex-hex` joints in a row (a MAC address): the regex searches only
    /// around such chains.
    MacSeparators,
    /// A `://`: the regex (a URL with credentials) is tried anchored at the start of the scheme
    /// before each one ([`secrets::scheme_start`]), not searched for over the text.
    SchemeSeparator,
}

/// How a candidate is confirmed: returns the span to report (possibly narrower) or `None`.
pub type Confirm = fn(&str, usize, usize) -> Option<(usize, usize)>;

/// One detection rule as written in a detector module.
#[derive(Debug, Clone, Copy)]
pub struct RuleSpec {
    pub kind: EntityType,
    pub pattern: &'static str,
    pub trigger: Trigger,
    pub confirm: Confirm,
    /// Score of a confirmed candidate without context; the engine keeps it when it reaches
    /// the threshold (0.5 by default), or when a context word nearby adds [`CONTEXT_BOOST`].
    pub base: f32,
    pub context: &'static [&'static str],
}

/// What a context word adds to a candidate's score (Presidio's default).
pub const CONTEXT_BOOST: f32 = 0.35;

/// Every built-in rule.
pub fn builtin_rules() -> Vec<RuleSpec> {
    let mut rules = vec![
        email::RULE,
        card::RULE,
        iban::RULE,
        mac::RULE,
        address::RULE,
    ];
    rules.push(phone::RULE);
    rules.extend_from_slice(&ssn::RULES);
    rules.extend_from_slice(&ip::RULES);
    rules.extend_from_slice(&dob::RULES);
    // Before the generic assignment rule, which would claim `api_key=mcp_…` on a tie.
    rules.push(mcplane_key::RULE);
    rules.extend_from_slice(&secrets::RULES);
    rules
}

/// Accepts a regex match as it is, when it stands apart from the words around it (custom
/// patterns).
pub fn confirm_standalone(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let glued = byte_before(text, start).is_some_and(is_word)
        && text.as_bytes().get(start).copied().is_some_and(is_word);
    let glued_after = byte_at(text, end).is_some_and(is_word)
        && end > 0
        && text.as_bytes().get(end - 1).copied().is_some_and(is_word);
    (!glued && !glued_after && end > start).then_some((start, end))
}

/// Whether `text` holds, from `at` on, a byte of each class in `classes` in turn: a cheap
/// necessary condition that a start test checks before a rule's regex is tried there (one
/// failed regex try costs hundreds of instructions, most of them the regex engine's set-up).
pub(crate) fn begins_with(text: &str, at: usize, classes: &[fn(u8) -> bool]) -> bool {
    let Some(rest) = text.as_bytes().get(at..at + classes.len()) else {
        return false;
    };
    rest.iter().zip(classes).all(|(&b, class)| class(b))
}

/// A class for [`begins_with`]: an ASCII digit.
pub(crate) fn digit(b: u8) -> bool {
    b.is_ascii_digit()
}

/// A class for [`begins_with`]: an ASCII capital letter.
pub(crate) fn capital(b: u8) -> bool {
    b.is_ascii_uppercase()
}

/// The byte before `at`, if any.
pub(crate) fn byte_before(text: &str, at: usize) -> Option<u8> {
    at.checked_sub(1)
        .and_then(|i| text.as_bytes().get(i).copied())
}

/// The byte at `at`, if any.
pub(crate) fn byte_at(text: &str, at: usize) -> Option<u8> {
    text.as_bytes().get(at).copied()
}

/// Whether `b` is an ASCII letter, digit or underscore.
pub(crate) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether a number-like candidate ending at `end` runs on into more of a number: a word
/// character, or `.`/`-`/`/`/`:` followed by a digit (`1.2.3.4.5`, `2024-01-15`).
pub(crate) fn runs_on(text: &str, end: usize) -> bool {
    match byte_at(text, end) {
        Some(b) if is_word(b) => true,
        Some(b'.' | b'-' | b'/' | b':') => {
            byte_at(text, end + 1).is_some_and(|b| b.is_ascii_digit())
        }
        _ => false,
    }
}

/// Whether a number-like candidate starting at `start` continues something before it: a word
/// character, an identifier joined by `-` (`ORD-0123-…`), or a digit joined by `.`, `/`, `:`
/// or `-` (the tail of `1.2.3.4.5` or `2024-01-15`).
pub(crate) fn runs_in(text: &str, start: usize) -> bool {
    let before_sep = || {
        start
            .checked_sub(2)
            .and_then(|i| text.as_bytes().get(i).copied())
    };
    match byte_before(text, start) {
        Some(b) if is_word(b) => true,
        Some(b'-') => before_sep().is_some_and(|b| b.is_ascii_alphanumeric()),
        Some(b'.' | b'/' | b':') => before_sep().is_some_and(|b| b.is_ascii_digit()),
        _ => false,
    }
}

/// Shannon entropy of `s` in bits per byte: random keys score 4-6, words 2-3.
pub(crate) fn entropy(s: &str) -> f32 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u16; 256];
    for b in s.bytes() {
        counts[usize::from(b)] = counts[usize::from(b)].saturating_add(1);
    }
    let n = s.len() as f32;
    // Each distinct byte once, at its first occurrence (its count taken, then cleared): the
    // values are short, so this visits far fewer slots than the 256 of the table.
    let mut bits = 0.0;
    for b in s.bytes() {
        let c = std::mem::take(&mut counts[usize::from(b)]);
        if c > 0 {
            let p = f32::from(c) / n;
            bits -= p * p.log2();
        }
    }
    bits
}

#[cfg(test)]
pub(crate) mod testing {
    //! Runs one type's rules the way the engine does, for the per-detector unit tests.

    use super::EntityType;

    /// The confirmed matches of `kind` in `text`, as strings.
    pub fn found(kind: EntityType, text: &str) -> Vec<String> {
        let engine = crate::engine::Engine::builtin(&[kind]).unwrap();
        engine
            .find(text)
            .iter()
            .map(|s| text[s.start..s.end].to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn entropy_is_bits_per_byte() {
        assert_eq!(entropy(""), 0.0);
        assert_eq!(entropy("aaaa"), 0.0);
        assert!((entropy("aabb") - 1.0).abs() < 1e-6);
        assert!((entropy("abcd") - 2.0).abs() < 1e-6);
        assert!((entropy("abcdabcdefghefgh") - 3.0).abs() < 1e-6);
    }

    proptest! {
        /// Counting each distinct byte at its first occurrence gives Shannon's sum over the
        /// whole alphabet.
        #[test]
        fn entropy_agrees_with_the_sum_over_every_byte_value(text in "[ -~é]{0,64}") {
            let mut counts = [0u32; 256];
            for b in text.bytes() {
                counts[usize::from(b)] += 1;
            }
            let n = text.len() as f64;
            let expected: f64 = counts
                .iter()
                .filter(|&&c| c > 0)
                .map(|&c| -(f64::from(c) / n) * (f64::from(c) / n).log2())
                .sum();
            prop_assert!((f64::from(entropy(&text)) - expected).abs() < 1e-4);
        }

        /// The engine skips offsets failing `may_start_number` without asking the rule: no
        /// built-in start test may pass where it fails.
        #[test]
        fn start_tests_pass_only_where_a_number_may_start(
            text in "[0-9a-zA-Z +()./:_-]{1,24}",
            at in 0usize..24,
        ) {
            let at = at % text.len();
            for rule in builtin_rules() {
                if let Trigger::Digits(_, starts) = rule.trigger {
                    prop_assert!(
                        !starts(&text, at) || may_start_number(text.as_bytes(), at),
                        "{:?} starts at {} of {:?}", rule.kind, at, text
                    );
                }
            }
        }
    }
}
