//! Credentials: `Bearer` tokens, mcplane API keys, and the self-identifying key formats of
//! common providers (OpenAI `sk-`, AWS access key ids, GitHub `gh?_`/`github_pat_`, Slack
//! `xox?-`, JWTs).
//!
//! Prefixed formats are matched exactly because their prefixes make false positives rare;
//! no attempt is made at "high-entropy string" guessing, which would mask commit hashes and
//! ids all day. For `Bearer`, only the credential is masked so the text still reads right.

use super::{byte_at, byte_before, is_word};

pub const PATTERN: &str = concat!(
    r"(?i:bearer)[ \t]+[A-Za-z0-9\-._~+/]+=*",
    r"|mcp_[A-Za-z0-9]{36}",
    r"|sk-[A-Za-z0-9_\-]{20}[A-Za-z0-9_\-]*",
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}",
    r"|gh[pousr]_[A-Za-z0-9]{36}[A-Za-z0-9]*",
    r"|github_pat_[A-Za-z0-9_]{22}[A-Za-z0-9_]*",
    r"|xox[abpre]-[A-Za-z0-9\-]{10}[A-Za-z0-9\-]*",
    r"|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*",
);

pub fn confirm(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    if byte_before(text, start).is_some_and(is_word) {
        return None;
    }
    let candidate = &text[start..end];
    if candidate.len() > 6 && candidate[..6].eq_ignore_ascii_case("bearer") {
        return confirm_bearer(text, start, end);
    }
    // A fixed-length format followed by more key characters is something else.
    if byte_at(text, end).is_some_and(is_word) {
        return None;
    }
    Some((start, end))
}

fn confirm_bearer(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
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

#[cfg(test)]
mod tests {
    use crate::detectors::testing::found;
    use crate::detectors::EntityType::Token;

    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";

    #[test]
    fn finds_bearer_credentials_but_keeps_the_scheme_word() {
        assert_eq!(
            found(Token, "Authorization: Bearer abc123DEF456ghi789."),
            vec!["abc123DEF456ghi789"]
        );
        assert_eq!(
            found(Token, &format!("authorization: bearer {JWT}")),
            vec![JWT]
        );
    }

    #[test]
    fn finds_provider_keys() {
        let mcp = "mcp_0123456789abcdefghijABCDEFGHIJklmnop";
        let sk = "sk-proj-AbCdEf0123456789GhIjKlMn";
        let aws = "AKIAIOSFODNN7EXAMPLE";
        let gh = "ghp_0123456789abcdefghijABCDEFGHIJklmnop";
        let pat = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz";
        let slack = "xoxb-1234567890-0987654321-AbCdEfGhIjKl";
        let text = format!("keys: {mcp}, {sk} {aws}\n{gh} {pat} ({slack}) jwt={JWT}");
        assert_eq!(found(Token, &text), vec![mcp, sk, aws, gh, pat, slack, JWT]);
    }

    #[test]
    fn ignores_near_misses() {
        for text in [
            "send a Bearer token in the header",
            "Bearer authentication is required",
            "mcp_short and mcp_0123456789abcdefghijABCDEFGHIJklmnopq",
            "pip install scikit-learn; task-runner; sk-learn",
            "AKIA1234",
            "xAKIAIOSFODNN7EXAMPLE",
            "ghp_tooshort",
            "commit 4f9c2e1d8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e",
            "eyJhbGciOiJIUzI1NiJ9 alone",
        ] {
            assert!(
                found(Token, text).is_empty(),
                "{text}: {:?}",
                found(Token, text)
            );
        }
    }
}
