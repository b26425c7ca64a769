//! The format of the API keys mcplane issues: `mcp_` + 30 base62 characters of randomness +
//! 6 base62 characters of the CRC-32 of those 30.
//!
//! It lives here because two services need it without depending on each other: auth mints and
//! checks keys, redaction finds leaked ones in text. The checksum lets both reject a look-alike
//! without a lookup, as GitHub's token format does.

/// Every key starts with this, so scanners and people can tell what it is.
pub const KEY_PREFIX: &str = "mcp_";
/// Base62 characters of randomness in a key: 30 × log2(62) ≈ 178.6 bits.
pub const RANDOM_LEN: usize = 30;
/// Base62 characters of the CRC-32 checksum (62^6 > 2^32).
pub const CHECKSUM_LEN: usize = 6;
/// Total length of a key.
pub const KEY_LEN: usize = KEY_PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
/// The key alphabet.
pub const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// CRC-32 (IEEE 802.3, reflected, as zlib and PNG): catches every single-character typo and
/// rejects a random look-alike with probability 1 - 2^-32. A dozen lines beat a dependency.
/// One table lookup per byte: the redaction service checks every key-shaped token it meets.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc = (crc >> 8) ^ CRC_TABLE[usize::from((crc as u8) ^ byte)];
    }
    !crc
}

/// The CRC of each byte value, eight bit-steps at a time, computed at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// The checksum of `random` as exactly `CHECKSUM_LEN` base62 digits, most significant first.
pub fn checksum_chars(random: &str) -> [u8; CHECKSUM_LEN] {
    let mut value = u64::from(crc32(random.as_bytes()));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// Whether `s` has the shape of an mcplane API key: prefix, length, alphabet and checksum.
pub fn looks_like_key(s: &str) -> bool {
    let Some(rest) = s.strip_prefix(KEY_PREFIX) else {
        return false;
    };
    if rest.len() != RANDOM_LEN + CHECKSUM_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (random, checksum) = rest.split_at(RANDOM_LEN);
    checksum.as_bytes() == checksum_chars(random)
}

/// A well-formed key for `random` (30 base62 characters): the key with its checksum appended.
pub fn with_checksum(random: &str) -> String {
    let mut key = String::with_capacity(KEY_LEN);
    key.push_str(KEY_PREFIX);
    key.push_str(random);
    key.extend(checksum_chars(random).iter().map(|&b| char::from(b)));
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn a_checksummed_key_looks_like_a_key_and_a_typo_does_not() {
        let key = with_checksum("0123456789abcdefghijABCDEFGHIJ");
        assert_eq!(key.len(), KEY_LEN);
        assert!(looks_like_key(&key));
        let typo = key.replacen('5', "6", 1);
        assert!(!looks_like_key(&typo));
    }
}
