//! What happens to a found entity — mask, keyed hash or reversible token — and the way back
//! from a token to its original for a client allowed to see it.
//!
//! Tokens are numbered per request and per type in order of appearance, and equal originals
//! share a token (`<EMAIL_1>` everywhere the same address appears), so the model can still
//! reason about who is who. The keyed hash is HMAC-SHA256 under the tenant's key, truncated to
//! 48 bits: stable within a tenant, unlinkable across tenants.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

use crate::config::{Action, Config};
use crate::detectors::Span;
use crate::engine::Counts;

/// The tokens minted for one request: token → original, and the reverse for reuse.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub originals: BTreeMap<String, String>,
    by_value: HashMap<(&'static str, String), String>,
    next: HashMap<&'static str, u32>,
}

impl Tokens {
    /// The token for `value` of type `kind`, minting `<KIND_n>` on first sight.
    pub fn token_for(&mut self, kind: &'static str, value: &str) -> String {
        if let Some(t) = self.by_value.get(&(kind, value.to_string())) {
            return t.clone();
        }
        let n = self.next.entry(kind).or_insert(0);
        *n += 1;
        let token = format!("<{kind}_{n}>");
        self.by_value
            .insert((kind, value.to_string()), token.clone());
        self.originals.insert(token.clone(), value.to_string());
        token
    }
}

/// HMAC-SHA256 (RFC 2104); a dozen lines over `sha2` rather than another dependency.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The hash key of `tenant`: its own configured key, or one derived from the deployment key,
/// so two tenants never produce the same hash for the same value.
pub fn tenant_hash_key(config: &Config, tenant: &str) -> Vec<u8> {
    match config.tenants.get(tenant).and_then(|t| t.hash_key.as_ref()) {
        Some(own) => own.as_bytes().to_vec(),
        None => hmac_sha256(
            config.hash_key.as_bytes(),
            format!("mcplane-redaction:{tenant}").as_bytes(),
        )
        .to_vec(),
    }
}

/// Replaces `spans` of `text` by what `action` says for each; `None` when there are none.
/// With `tokens` absent (a model's own output, where no client sent an original), a token
/// action masks instead.
pub fn apply(
    text: &str,
    spans: &[Span],
    action: impl Fn(&Span) -> Action,
    hash_key: &[u8],
    mut tokens: Option<&mut Tokens>,
    counts: &mut Counts,
) -> Option<String> {
    if spans.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len() + spans.len() * 8);
    let mut at = 0;
    for span in spans {
        let kind = span.kind.as_str();
        let value = &text[span.start..span.end];
        out.push_str(&text[at..span.start]);
        match (action(span), tokens.as_deref_mut()) {
            (Action::Tokenize, Some(tokens)) => out.push_str(&tokens.token_for(kind, value)),
            (Action::Hash, _) => {
                let mac = hmac_sha256(hash_key, format!("{kind}:{value}").as_bytes());
                out.push('[');
                out.push_str(kind);
                out.push(':');
                out.push_str(&hex::encode(&mac[..6]));
                out.push(']');
            }
            _ => {
                out.push_str("[REDACTED:");
                out.push_str(kind);
                out.push(']');
            }
        }
        at = span.end;
        *counts.entry(kind).or_insert(0) += 1;
    }
    out.push_str(&text[at..]);
    Some(out)
}

/// Puts back the originals of the tokens in `text` that `allowed` (by type name) permits;
/// `None` when nothing changed. Tokens not in `originals` (typed by someone, or expired)
/// stay as they are.
pub fn detokenize(
    text: &str,
    originals: &BTreeMap<String, String>,
    allowed: impl Fn(&str) -> bool,
) -> Option<(String, u32)> {
    if originals.is_empty() || !text.contains('<') {
        return None;
    }
    let mut out = String::new();
    let mut at = 0;
    let mut restored = 0;
    let mut search = 0;
    while let Some(open) = text[search..].find('<').map(|i| i + search) {
        let Some(close) = text[open..].find('>').map(|i| i + open) else {
            break;
        };
        search = open + 1;
        let token = &text[open..=close];
        let Some(original) = originals.get(token) else {
            continue;
        };
        let kind = token[1..token.len() - 1]
            .rsplit_once('_')
            .map_or("", |(k, _)| k);
        if !allowed(kind) {
            continue;
        }
        out.push_str(&text[at..open]);
        out.push_str(original);
        at = close + 1;
        search = at;
        restored += 1;
    }
    if restored == 0 {
        return None;
    }
    out.push_str(&text[at..]);
    Some((out, restored))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::EntityType;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn equal_values_share_a_token_and_numbering_is_per_type() {
        let mut t = Tokens::default();
        assert_eq!(t.token_for("EMAIL", "a@x.io"), "<EMAIL_1>");
        assert_eq!(t.token_for("PHONE", "+1 415 555 0100"), "<PHONE_1>");
        assert_eq!(t.token_for("EMAIL", "b@x.io"), "<EMAIL_2>");
        assert_eq!(t.token_for("EMAIL", "a@x.io"), "<EMAIL_1>");
        assert_eq!(t.originals.len(), 3);
    }

    #[test]
    fn actions_apply_and_tokens_come_back_only_when_allowed() {
        let text = "mail a@x.io or b@x.io, card 4111 1111 1111 1111";
        let span = |s: &str, kind| {
            let start = text.find(s).unwrap();
            Span {
                start,
                end: start + s.len(),
                kind,
            }
        };
        let spans = [
            span("a@x.io", EntityType::Email),
            span("b@x.io", EntityType::Email),
            span("4111 1111 1111 1111", EntityType::Card),
        ];
        let mut tokens = Tokens::default();
        let mut counts = Counts::new();
        let action = |s: &Span| {
            if s.kind == EntityType::Card {
                Action::Hash
            } else {
                Action::Tokenize
            }
        };
        let out = apply(text, &spans, action, b"k", Some(&mut tokens), &mut counts).unwrap();
        assert!(
            out.starts_with("mail <EMAIL_1> or <EMAIL_2>, card [CARD:"),
            "{out}"
        );
        assert_eq!(counts, Counts::from([("EMAIL", 2), ("CARD", 1)]));
        // The same value hashes the same under one key and differently under another.
        let again = apply(
            text,
            &spans,
            action,
            b"k",
            Some(&mut Tokens::default()),
            &mut Counts::new(),
        )
        .unwrap();
        let other = apply(
            text,
            &spans,
            action,
            b"j",
            Some(&mut Tokens::default()),
            &mut Counts::new(),
        )
        .unwrap();
        assert_eq!(out, again);
        assert_ne!(out, other);
        let (back, n) = detokenize(&out, &tokens.originals, |k| k == "EMAIL").unwrap();
        assert!(
            back.starts_with("mail a@x.io or b@x.io, card [CARD:"),
            "{back}"
        );
        assert_eq!(n, 2);
        assert!(detokenize(&out, &tokens.originals, |_| false).is_none());
        // Without a token store (model output), tokenising masks.
        let masked = apply(text, &spans[..1], action, b"k", None, &mut Counts::new()).unwrap();
        assert_eq!(
            masked,
            "mail [REDACTED:EMAIL] or b@x.io, card 4111 1111 1111 1111"
        );
    }
}
