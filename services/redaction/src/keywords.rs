//! The keyword pass: every (ASCII case-insensitive) occurrence of every keyword, context word and
//! directory name in a text, overlapping, in one pass.
//!
//! It used to be an Aho-Corasick DFA over all ~80 words, walked byte by byte because no
//! prefilter applies to that many case-insensitive patterns (and a one-byte `@` was among
//! them): a quarter of the engine's time. Nearly every byte of prose starts no keyword, so this
//! pass instead tests each position's first three bytes (case-folded) against a bitset of the
//! keywords' first three bytes — a table lookup, a multiply and a bit test — and compares whole
//! keywords only where that hits. Keywords shorter than three bytes (`@`, a custom pattern's
//! `#`) cannot be filtered that way; they keep a small Aho-Corasick automaton, which for a
//! handful of short patterns searches with `memchr`.
//!
//! The result is exactly what an overlapping Aho-Corasick search reports: every start at which
//! a keyword matches; the unit tests compare the two on random texts.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// Bits of the hash of a keyword's first three bytes: 8192 buckets, so that the ~100 built-in
/// keywords and names occupy about 1% of them and a position of ordinary text rarely hits one
/// it does not start.
const HASH_BITS: u32 = 13;
const BUCKETS: usize = 1 << HASH_BITS;

/// ASCII lower-casing as a table (a byte-for-byte fold, as Aho-Corasick's ASCII
/// case-insensitivity does: other bytes are compared as they are).
const FOLD: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i as u8).to_ascii_lowercase();
        i += 1;
    }
    t
};

/// The bucket of the three bytes in the low 24 bits of `key`. They are folded only coarsely
/// (`| 0x20` makes `A` and `a` one, and also `@` and `` ` ``), so that a position of text is
/// hashed straight from one four-byte load; the exact, [`FOLD`]ed comparison follows a hit.
#[inline]
fn bucket(key: u32) -> usize {
    (((key | 0x0020_2020) & 0x00ff_ffff).wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
}

/// A compiled set of keywords; ids are their positions in the list it was built from.
#[derive(Debug, Clone)]
pub struct Keywords {
    /// Keywords of three bytes or more, lower-cased, with their ids, grouped by bucket:
    /// bucket `h` holds `long[first[h]..first[h + 1]]`.
    long: Vec<(Box<[u8]>, u32)>,
    first: Box<[u16; BUCKETS + 1]>,
    /// Which buckets hold any keyword: a 1 KiB bitset that stays in the L1 cache.
    occupied: Box<[u64; BUCKETS / 64]>,
    /// The keywords shorter than three bytes, and the ids their pattern ids stand for.
    short: Option<(AhoCorasick, Vec<u32>)>,
}

/// Why a keyword set cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeywordsError {
    #[error("too many keywords ({0}; at most 65535)")]
    TooMany(usize),
    #[error("{0}")]
    Automaton(String),
}

impl Keywords {
    pub fn new<S: AsRef<str>>(words: &[S]) -> Result<Keywords, KeywordsError> {
        if words.len() >= usize::from(u16::MAX) {
            return Err(KeywordsError::TooMany(words.len()));
        }
        let mut by_bucket: Vec<Vec<(Box<[u8]>, u32)>> = vec![Vec::new(); BUCKETS];
        let mut short = Vec::new();
        let mut short_ids = Vec::new();
        for (id, word) in words.iter().enumerate() {
            let w = word.as_ref().as_bytes();
            let id = id as u32;
            if w.len() >= 3 {
                let lower: Box<[u8]> = w.iter().map(|&b| FOLD[usize::from(b)]).collect();
                by_bucket[bucket(u32::from_le_bytes([w[0], w[1], w[2], 0]))].push((lower, id));
            } else if !w.is_empty() {
                short.push(w);
                short_ids.push(id);
            }
        }
        let mut long = Vec::new();
        let mut first = Box::new([0u16; BUCKETS + 1]);
        let mut occupied = Box::new([0u64; BUCKETS / 64]);
        for (h, words) in by_bucket.into_iter().enumerate() {
            first[h] = long.len() as u16;
            if !words.is_empty() {
                occupied[h / 64] |= 1 << (h % 64);
            }
            long.extend(words);
        }
        first[BUCKETS] = long.len() as u16;
        let short = if short.is_empty() {
            None
        } else {
            let ac = AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .build(&short)
                .map_err(|e| KeywordsError::Automaton(e.to_string()))?;
            Some((ac, short_ids))
        };
        Ok(Keywords {
            long,
            first,
            occupied,
            short,
        })
    }

    /// Calls `hit(start, end, id)` for every occurrence of every keyword in `text`, overlapping
    /// ones included; the long keywords' in order of their start, then the short ones'.
    #[inline]
    pub fn for_each(&self, text: &str, mut hit: impl FnMut(usize, usize, usize)) {
        let bytes = text.as_bytes();
        if !self.long.is_empty() && bytes.len() >= 3 {
            let mut probe = |i: usize, key: u32| {
                let h = bucket(key);
                if self.occupied[h / 64] & (1 << (h % 64)) == 0 {
                    return;
                }
                let range = usize::from(self.first[h])..usize::from(self.first[h + 1]);
                for (word, id) in &self.long[range] {
                    if let Some(at) = bytes.get(i..i + word.len()) {
                        if at
                            .iter()
                            .zip(word.iter())
                            .all(|(&b, &k)| FOLD[usize::from(b)] == k)
                        {
                            hit(i, i + word.len(), *id as usize);
                        }
                    }
                }
            };
            // One four-byte load per position (the fourth byte is masked off), and the last
            // position, with only three bytes left, on its own.
            for (i, w) in bytes.windows(4).enumerate() {
                probe(i, u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
            }
            let n = bytes.len();
            probe(
                n - 3,
                u32::from_le_bytes([bytes[n - 3], bytes[n - 2], bytes[n - 1], 0]),
            );
        }
        if let Some((ac, ids)) = &self.short {
            for m in ac.find_overlapping_iter(text) {
                hit(m.start(), m.end(), ids[m.pattern().as_usize()] as usize);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aho_corasick::AhoCorasickKind;
    use proptest::prelude::*;

    fn hits(k: &Keywords, text: &str) -> Vec<(usize, usize, usize)> {
        let mut v = Vec::new();
        k.for_each(text, |s, e, id| v.push((s, e, id)));
        v.sort_unstable();
        v
    }

    fn reference(words: &[&str], text: &str) -> Vec<(usize, usize, usize)> {
        let ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(words)
            .unwrap();
        let mut v: Vec<_> = ac
            .find_overlapping_iter(text)
            .map(|m| (m.start(), m.end(), m.pattern().as_usize()))
            .collect();
        v.sort_unstable();
        v
    }

    const WORDS: &[&str] = &[
        "@",
        "://",
        "-----begin",
        "pass",
        "password",
        "aws_secret",
        "secret",
        "secret_access_key",
        "ss#",
        "d.o.b",
        "Priya Raman",
        "Jörg",
        "#",
        "sk-",
    ];

    #[test]
    fn finds_every_overlapping_occurrence_in_any_case() {
        let k = Keywords::new(WORDS).unwrap();
        let text =
            "AWS_SECRET_access_key: x; PassWord=1 a@b SS# D.O.B jörg Jörg https://x #-----BEGIN sk";
        assert_eq!(hits(&k, text), reference(WORDS, text));
        assert!(
            hits(&k, text).contains(&(4, 10, 6)),
            "secret inside aws_secret"
        );
        assert!(hits(&k, "").is_empty());
        assert!(hits(&k, "pa").is_empty());
        assert_eq!(hits(&k, "sk-"), vec![(0, 3, 13)]);
        assert_eq!(hits(&k, "passwor"), vec![(0, 4, 3)]);
    }

    #[test]
    fn an_empty_set_finds_nothing() {
        let none: [&str; 0] = [];
        let k = Keywords::new(&none).unwrap();
        assert!(hits(&k, "password @ secret").is_empty());
    }

    proptest! {
        #[test]
        fn agrees_with_aho_corasick(text in "[a-zA-Z_#@:/\\-. ö]{0,60}") {
            let k = Keywords::new(WORDS).unwrap();
            prop_assert_eq!(hits(&k, &text), reference(WORDS, &text));
        }

        #[test]
        fn agrees_with_aho_corasick_on_planted_words(
            parts in proptest::collection::vec((0usize..14, "[a-z .@:-]{0,4}", any::<bool>()), 0..8)
        ) {
            let mut text = String::new();
            for (w, filler, upper) in parts {
                text.push_str(&filler);
                let w = WORDS[w];
                text.push_str(&if upper { w.to_uppercase() } else { w.to_string() });
            }
            let k = Keywords::new(WORDS).unwrap();
            prop_assert_eq!(hits(&k, &text), reference(WORDS, &text));
        }
    }
}
