//! Credentials: the self-identifying token formats of common providers (AWS, GitHub, GitLab,
//! Slack, OpenAI/Stripe-style `sk-` keys, JWTs), private-key blocks, passwords in URLs, `Bearer`
//! credentials, and generic `password=`/`secret:` assignments.
//!
//! Prefixed formats are matched exactly because their prefixes make false positives rare. The
//! two shapes without a prefix are held to more: an AWS secret key needs an AWS context word
//! and a random-looking body; an assignment's value must not be a placeholder or a plain word
//! and must look random enough (character classes and Shannon entropy), so `password: expired`
//! and `token=${TOKEN}` stay readable.

use super::{byte_at, byte_before, entropy, is_word, EntityType, RuleSpec, Trigger};

/// Fixed-shape tokens stand apart from the word characters around them.
fn standalone(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    if byte_before(text, start).is_some_and(is_word) || byte_at(text, end).is_some_and(is_word) {
        return None;
    }
    Some((start, end))
}

const fn prefixed(
    kind: EntityType,
    pattern: &'static str,
    keywords: &'static [&'static str],
) -> RuleSpec {
    RuleSpec {
        kind,
        pattern,
        trigger: Trigger::Prefixes(keywords),
        confirm: standalone,
        base: 1.0,
        context: &[],
    }
}

const AWS_CONTEXT: &[&str] = &[
    "aws_secret",
    "secret_access_key",
    "aws secret",
    "secretaccesskey",
];

pub const RULES: [RuleSpec; 11] = [
    prefixed(
        EntityType::AwsAccessKey,
        r"(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}",
        &[
            "akia", "asia", "agpa", "aida", "aroa", "anpa", "anva", "aipa",
        ],
    ),
    RuleSpec {
        kind: EntityType::AwsSecretKey,
        pattern: r"[A-Za-z0-9/+]{40}",
        trigger: Trigger::Keywords(AWS_CONTEXT),
        confirm: confirm_aws_secret,
        base: 0.2,
        context: AWS_CONTEXT,
    },
    prefixed(
        EntityType::GithubToken,
        r"gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,255}",
        &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
    ),
    prefixed(
        EntityType::GitlabToken,
        r"gl(?:pat|dt|rt|ptt|cbt|soat|ffct)-[A-Za-z0-9_\-]{20,64}",
        &[
            "glpat-", "gldt-", "glrt-", "glptt-", "glcbt-", "glsoat-", "glffct-",
        ],
    ),
    prefixed(
        EntityType::SlackToken,
        r"xox[abposre]-[A-Za-z0-9\-]{10,250}|xapp-[0-9]-[A-Za-z0-9\-]{10,250}|https://hooks\.slack\.com/services/[A-Za-z0-9/_]{20,120}",
        &[
            "xoxa-",
            "xoxb-",
            "xoxp-",
            "xoxo-",
            "xoxs-",
            "xoxr-",
            "xoxe-",
            "xapp-",
            "https://hooks.slack.com/services/",
        ],
    ),
    prefixed(
        EntityType::Jwt,
        r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*",
        &["eyj"],
    ),
    RuleSpec {
        kind: EntityType::PrivateKey,
        pattern: concat!(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[A-Za-z0-9+/=\s:,.\-]*?",
            r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
            // A block cut off before its end line is still a key.
            r"|-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[A-Za-z0-9+/=\s]*[A-Za-z0-9+/=]",
        ),
        trigger: Trigger::Prefixes(&["-----begin"]),
        confirm: |_, s, e| Some((s, e)),
        base: 1.0,
        context: &[],
    },
    RuleSpec {
        kind: EntityType::BasicAuth,
        pattern: r"[A-Za-z][A-Za-z0-9+.\-]{1,15}://[\x21-\x2E\x30-\x39\x3B-\x3F\x41-\x7E]{1,64}:[\x21-\x2E\x30-\x3F\x41-\x7E]{1,128}@[A-Za-z0-9\[]",
        trigger: Trigger::SchemeSeparator,
        confirm: confirm_basic_auth,
        base: 1.0,
        context: &[],
    },
    prefixed(
        EntityType::ApiKey,
        r"sk-(?:proj-|live-|test-)?[A-Za-z0-9_\-]{20,200}|[sr]k_(?:live|test)_[A-Za-z0-9]{20,200}",
        &["sk-", "sk_live_", "sk_test_", "rk_live_", "rk_test_"],
    ),
    RuleSpec {
        kind: EntityType::BearerToken,
        pattern: r"(?i:bearer)[ \t]+[A-Za-z0-9\-._~+/]+=*",
        trigger: Trigger::Prefixes(&["bearer"]),
        confirm: confirm_bearer,
        base: 1.0,
        context: &[],
    },
    RuleSpec {
        kind: EntityType::Password,
        pattern: concat!(
            r"(?i:pass(?:word|wd|phrase)?|pwd|secret|api[_\-]?key|access[_\-]?key|private[_\-]?key|token)",
            r#"[A-Za-z_\-]{0,20}["']?[ \t]*[:=][ \t]*["']?[\x21\x23-\x26\x28-\x2B\x2D-\x3A\x3C-\x7E]{1,200}"#,
        ),
        // Every way the pattern can begin, so that it need only be tried where one is, and
        // only where an assignment follows.
        trigger: Trigger::PrefixesWhere(
            &[
                "pass",
                "pwd",
                "secret",
                "api_key",
                "apikey",
                "api-key",
                "access_key",
                "accesskey",
                "access-key",
                "private_key",
                "privatekey",
                "private-key",
                "token",
            ],
            may_assign,
        ),
        confirm: confirm_assignment,
        base: 1.0,
        context: &[],
    },
];

/// Whether an assignment can start at `at`: what the password pattern asks before its value,
/// a name of at most 31 letters, `_` or `-` (the longest keyword and twenty more), an optional
/// quote, blanks, and `:` or `=`.
pub fn may_assign(text: &str, at: usize) -> bool {
    let bytes = &text.as_bytes()[at..];
    let name = bytes
        .iter()
        .take(32)
        .take_while(|&&b| b.is_ascii_alphabetic() || b == b'_' || b == b'-')
        .count();
    let mut rest = &bytes[name.min(31)..];
    if let [b'"' | b'\'', tail @ ..] = rest {
        rest = tail;
    }
    let blanks = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    matches!(rest.get(blanks), Some(b':' | b'='))
}

fn confirm_aws_secret(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let glued =
        |b: Option<u8>| b.is_some_and(|b| is_word(b) || b == b'/' || b == b'+' || b == b'=');
    if glued(byte_before(text, start)) || glued(byte_at(text, end)) {
        return None;
    }
    random_looking(&text[start..end], 3.5).then_some((start, end))
}

/// Masks the `user:password` of a URL and keeps scheme and host readable; a placeholder
/// password (`${DB_PASS}`, `****`, `<password>`) is not a credential.
/// Where the leftmost URL scheme (`[A-Za-z][A-Za-z0-9+.-]{1,15}`) ending at the `://` at
/// `separator` begins, not before `from`; `None` if no scheme ends there. Whatever follows the
/// `://` is the same for every start, so a match through it, if any, starts here.
pub fn scheme_start(text: &str, from: usize, separator: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut start = separator;
    while start > from
        && separator - start < 16
        && matches!(bytes[start - 1], b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'.' | b'-')
    {
        start -= 1;
    }
    // The scheme begins with a letter and is at least two bytes long.
    (start..separator.saturating_sub(1)).find(|&s| bytes[s].is_ascii_alphabetic())
}

fn confirm_basic_auth(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let candidate = &text[start..end];
    let user_start = start + candidate.find("://")? + 3;
    let at = start + candidate.rfind('@')?;
    let colon = user_start + text[user_start..at].find(':')?;
    let password = &text[colon + 1..at];
    if placeholder(password) {
        return None;
    }
    Some((user_start, at))
}

fn confirm_bearer(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    if byte_before(text, start).is_some_and(is_word) {
        return None;
    }
    let token_start = start
        + 6
        + text[start + 6..end]
            .bytes()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
    // A full stop ending the sentence is not part of the token.
    let token_end = token_start + text[token_start..end].trim_end_matches('.').len();
    let token = &text[token_start..token_end];
    // Prose says "a Bearer token" or "Bearer authentication"; credentials are long or carry
    // digits.
    let credential_like =
        token.len() >= 24 || (token.len() >= 8 && token.bytes().any(|b| b.is_ascii_digit()));
    credential_like.then_some((token_start, token_end))
}

/// The value of a `password=…`/`secret: …` assignment, when it looks like a real secret.
fn confirm_assignment(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    // `db_password=` and `X-Api-Key:` are assignments too; `passport:` and `bypass=` are not.
    if byte_before(text, start).is_some_and(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let candidate = &text[start..end];
    let sep = candidate.find([':', '='])?;
    let value_start = start
        + sep
        + 1
        + candidate[sep + 1..]
            .bytes()
            .take_while(|b| matches!(b, b' ' | b'\t' | b'"' | b'\''))
            .count();
    let value = text[value_start..end].trim_end_matches(['.', ')', ']', '}']);
    if value.len() < 6 || placeholder(value) || value.contains("://") {
        return None;
    }
    let value_end = value_start + value.len();
    // Another detector's prefixed token (`token=ghp_…`) is reported by that detector, which
    // wins the tie on the same span.
    random_looking(value, 2.5).then_some((value_start, value_end))
}

/// A template, a redaction marker or an obvious stand-in rather than a value.
fn placeholder(value: &str) -> bool {
    /// The stand-in words, found in any case by one automaton built on first use (a
    /// lower-cased copy searched once per word cost more than the rest of a confirmation).
    static STAND_INS: std::sync::LazyLock<Option<aho_corasick::AhoCorasick>> =
        std::sync::LazyLock::new(|| {
            aho_corasick::AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build([
                    "redacted", "null", "none", "true", "false", "required", "masked", "hidden",
                    "changeit", "example",
                ])
                .ok()
        });
    value.starts_with(['$', '<', '{', '%', '*', '['])
        || value
            .bytes()
            .all(|b| b == b'x' || b == b'X' || b == b'*' || b == b'.')
        || STAND_INS
            .as_ref()
            .is_some_and(|words| words.is_match(value))
}

/// At least two character classes (lower, upper, digit, symbol) and `min_entropy` bits per
/// byte, or a long single-class run with high entropy: a word or a counter is neither.
fn random_looking(value: &str, min_entropy: f32) -> bool {
    let classes = [
        value.bytes().any(|b| b.is_ascii_lowercase()),
        value.bytes().any(|b| b.is_ascii_uppercase()),
        value.bytes().any(|b| b.is_ascii_digit()),
        value.bytes().any(|b| !b.is_ascii_alphanumeric()),
    ]
    .iter()
    .filter(|&&c| c)
    .count();
    let e = entropy(value);
    (classes >= 2 && e >= min_entropy) || (value.len() >= 16 && e >= min_entropy + 0.8)
}

#[cfg(test)]
mod tests {
    use crate::detectors::testing::found;
    use crate::detectors::EntityType;

    proptest::proptest! {
        /// `may_assign` is a necessary condition of the password pattern: wherever the pattern
        /// matches, anchored, it passes.
        #[test]
        fn may_assign_holds_wherever_the_password_pattern_matches(
            name in "(pass|pwd|secret|api_key|token|private-key)[a-zA-Z_-]{0,24}",
            tail in "[\"' \t]{0,3}[:=]?[ \"]{0,2}[a-zA-Z0-9#]{0,6}",
        ) {
            let text = format!("{name}{tail}");
            let rule = super::RULES.iter().find(|r| r.kind == EntityType::Password).unwrap();
            let anchored = regex::Regex::new(&format!(r"\A(?:{})", rule.pattern)).unwrap();
            if anchored.is_match(&text) {
                proptest::prop_assert!(super::may_assign(&text, 0), "{:?}", text);
            }
        }
    }

    #[test]
    fn assignments_are_told_from_ordinary_uses_of_the_keyword() {
        assert!(super::may_assign("password=x", 0));
        assert!(super::may_assign("client_secret: \"x\"", 7));
        assert!(super::may_assign("PASSWORD_HASH\" \t= x", 0));
        assert!(!super::may_assign("passed on windows", 0));
        assert!(!super::may_assign("tokens expire: 5", 0));
        assert!(!super::may_assign("password", 0));
    }

    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";

    #[test]
    fn finds_bearer_credentials_but_keeps_the_scheme_word() {
        assert_eq!(
            found(
                EntityType::BearerToken,
                "Authorization: Bearer abc123DEF456ghi789."
            ),
            vec!["abc123DEF456ghi789"]
        );
        assert!(found(EntityType::BearerToken, "send a Bearer token in the header").is_empty());
    }

    #[test]
    fn finds_provider_keys() {
        let cases = [
            (EntityType::ApiKey, "sk-proj-AbCdEf0123456789GhIjKlMn"),
            (EntityType::AwsAccessKey, "AKIAIOSFODNN7EXAMPLE"),
            (
                EntityType::GithubToken,
                "ghp_0123456789abcdefghijABCDEFGHIJklmnop",
            ),
            (
                EntityType::GithubToken,
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
            ),
            (EntityType::GitlabToken, "glpat-AbCdEf0123456789xYzW"),
            (
                EntityType::SlackToken,
                "xoxb-1234567890-0987654321-AbCdEfGhIjKl",
            ),
            (EntityType::Jwt, JWT),
        ];
        for (kind, key) in cases {
            assert_eq!(
                found(kind, &format!("key: ({key}) here")),
                vec![key],
                "{kind}"
            );
        }
    }

    #[test]
    fn finds_aws_secret_keys_only_in_context() {
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        assert_eq!(
            found(
                EntityType::AwsSecretKey,
                &format!("aws_secret_access_key = {secret}")
            ),
            vec![secret]
        );
        assert!(found(EntityType::AwsSecretKey, &format!("blob {secret}")).is_empty());
    }

    #[test]
    fn finds_private_key_blocks_whole() {
        let block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nabc+/==\n-----END RSA PRIVATE KEY-----";
        assert_eq!(
            found(EntityType::PrivateKey, &format!("here:\n{block}\nthanks")),
            vec![block]
        );
        let cut = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA";
        assert_eq!(
            found(EntityType::PrivateKey, &format!("{cut} ...")),
            vec![cut]
        );
    }

    #[test]
    fn finds_url_credentials_but_not_placeholders() {
        assert_eq!(
            found(
                EntityType::BasicAuth,
                "dsn postgres://app:S3cr3t!x@db.internal:5432/app"
            ),
            vec!["app:S3cr3t!x"]
        );
        assert!(found(
            EntityType::BasicAuth,
            "postgres://app:${DB_PASS}@db/app https://example.com/a:b"
        )
        .is_empty());
    }

    #[test]
    fn finds_assigned_secrets_with_entropy_and_skips_words_and_templates() {
        assert_eq!(
            found(EntityType::Password, "db_password=Xk9#mP2qL7"),
            vec!["Xk9#mP2qL7"]
        );
        assert_eq!(
            found(EntityType::Password, "client_secret: \"f3a9c1e7b2d84f6a\""),
            vec!["f3a9c1e7b2d84f6a"]
        );
        for text in [
            "password: expired",
            "token=${TOKEN}",
            "password reset required",
            "secret: <redacted>",
            "passport: 12",
            "token: null",
        ] {
            assert!(found(EntityType::Password, text).is_empty(), "{text}");
        }
    }
}
