//! What the redaction service looks for: one module per kind of entity, each a candidate regex
//! plus a confirmation that the regex alone cannot express (octet ranges, Luhn, IPv6 syntax,
//! the characters around a match).
//!
//! The split keeps the regexes simple enough to run as one lazy DFA pass (see
//! [`crate::engine`]) and keeps the judgement calls (is `2024-01-15 10` a phone number?) in
//! plain Rust that unit tests can pin down.

pub mod card;
pub mod email;
pub mod ip;
pub mod phone;
pub mod token;

/// A kind of entity the redaction service masks; the names are the wire contract
/// (`[REDACTED:<TYPE>]`, the keys of the redaction counts, `redaction.enabled_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntityType {
    Email,
    Phone,
    Ip,
    Card,
    Token,
}

impl EntityType {
    pub const ALL: [EntityType; 5] = [
        EntityType::Email,
        EntityType::Phone,
        EntityType::Ip,
        EntityType::Card,
        EntityType::Token,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntityType::Email => "EMAIL",
            EntityType::Phone => "PHONE",
            EntityType::Ip => "IP",
            EntityType::Card => "CARD",
            EntityType::Token => "TOKEN",
        }
    }

    /// The replacement text for a span of this type.
    pub fn mask(self) -> &'static str {
        match self {
            EntityType::Email => "[REDACTED:EMAIL]",
            EntityType::Phone => "[REDACTED:PHONE]",
            EntityType::Ip => "[REDACTED:IP]",
            EntityType::Card => "[REDACTED:CARD]",
            EntityType::Token => "[REDACTED:TOKEN]",
        }
    }

    /// Parses a type name as written in configuration (case-insensitive).
    pub fn from_name(name: &str) -> Option<EntityType> {
        EntityType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(name.trim()))
    }

    /// The candidate pattern of this type's detector.
    pub fn pattern(self) -> &'static str {
        match self {
            EntityType::Email => email::PATTERN,
            EntityType::Phone => phone::PATTERN,
            EntityType::Ip => ip::PATTERN,
            EntityType::Card => card::PATTERN,
            EntityType::Token => token::PATTERN,
        }
    }

    /// Confirms a candidate match at `start..end`, returning the span to mask (which may be
    /// narrower than the candidate), or `None` when it is not an entity of this type.
    pub fn confirm(self, text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
        match self {
            EntityType::Email => email::confirm(text, start, end),
            EntityType::Phone => phone::confirm(text, start, end),
            EntityType::Ip => ip::confirm(text, start, end),
            EntityType::Card => card::confirm(text, start, end),
            EntityType::Token => token::confirm(text, start, end),
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

/// Finds the confirmed entities of `kind` in `text` with its compiled candidate regex. A
/// rejected candidate only moves the search on by one character, so a near-miss such as a
/// date right before a phone number cannot hide the phone number.
pub(crate) fn scan(kind: EntityType, re: &regex::Regex, text: &str, out: &mut Vec<Span>) {
    let mut pos = 0;
    while pos <= text.len() {
        let Some(m) = re.find_at(text, pos) else {
            return;
        };
        pos = match kind.confirm(text, m.start(), m.end()) {
            Some((start, end)) => {
                out.push(Span { start, end, kind });
                end.max(m.start() + 1)
            }
            None => m.start() + 1,
        };
        while pos < text.len() && !text.is_char_boundary(pos) {
            pos += 1;
        }
    }
}

/// Compiles a candidate pattern: ASCII-only classes and word boundaries, so the lazy DFA can
/// run it over any UTF-8 text without falling back to a slower engine.
pub(crate) fn compile(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(32 * 1024 * 1024)
        .build()
}

#[cfg(test)]
pub(crate) mod testing {
    //! Runs one detector the way the engine does, for the per-detector unit tests.

    use super::EntityType;

    /// The confirmed matches of `kind` in `text`, as strings.
    pub fn found(kind: EntityType, text: &str) -> Vec<String> {
        let re = super::compile(kind.pattern()).unwrap();
        let mut spans = Vec::new();
        super::scan(kind, &re, text, &mut spans);
        spans
            .iter()
            .map(|s| text[s.start..s.end].to_string())
            .collect()
    }
}
