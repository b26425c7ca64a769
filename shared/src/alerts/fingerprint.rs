//! Alert identity: the FNV-1a 64 fingerprint Prometheus and Alertmanager compute over a label
//! set, so an alert keeps the same fingerprint here as in Alertmanager's UI and API.
//!
//! The hash runs over the label names sorted bytewise, each name and each value followed by the
//! separator byte 0xff (`model.LabelSet.Fingerprint` in prometheus/common); the text form is 16
//! lowercase hex digits, as `model.Fingerprint.String()` prints it.

const OFFSET: u64 = 14_695_981_039_346_656_037;
const PRIME: u64 = 1_099_511_628_211;
const SEPARATOR: u8 = 0xff;

/// FNV-1a 64 of `bytes`, continuing from `hash` (start with [`fnv1a64`] or `OFFSET`).
fn fnv1a64_extend(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

/// FNV-1a 64 of `bytes` (also used to key alerts onto partitions).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_extend(OFFSET, bytes)
}

/// The Prometheus fingerprint of a label set, in any order.
pub fn label_set<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut sorted: Vec<(&str, &str)> = labels.into_iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    sorted.iter().fold(OFFSET, |hash, (name, value)| {
        let hash = fnv1a64_extend(hash, name.as_bytes());
        let hash = fnv1a64_extend(hash, &[SEPARATOR]);
        let hash = fnv1a64_extend(hash, value.as_bytes());
        fnv1a64_extend(hash, &[SEPARATOR])
    })
}

/// The text form Alertmanager sends: 16 lowercase hex digits.
pub fn to_hex(fingerprint: u64) -> String {
    format!("{fingerprint:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of `TestMetricToFingerprint` in prometheus/common `model/fingerprinting_test.go`
    /// (also `TestLabelsToSignature` in `model/signature_test.go`).
    #[test]
    fn matches_prometheus_common_test_vectors() {
        assert_eq!(label_set([]), 14_695_981_039_346_656_037);
        let labels = [("name", "garland, briggs"), ("fear", "love is not enough")];
        assert_eq!(label_set(labels), 5_799_056_148_416_392_346);
        assert_eq!(to_hex(label_set(labels)), "507a62d79ee76c9a");
        // The expected values of the `BenchmarkMetricToFingerprint*` cases in the same file.
        let single = [("first-label", "first-label-value")];
        assert_eq!(label_set(single), 5_146_282_821_936_882_169);
        let double = [
            ("second-label", "second-label-value"),
            ("first-label", "first-label-value"),
        ];
        assert_eq!(label_set(double), 3_195_800_080_984_914_717);
        let triple = [
            ("third-label", "third-label-value"),
            ("first-label", "first-label-value"),
            ("second-label", "second-label-value"),
        ];
        assert_eq!(label_set(triple), 13_843_036_195_897_128_121);
    }

    #[test]
    fn order_does_not_matter_but_the_separator_does() {
        let a = label_set([("a", "1"), ("b", "2")]);
        assert_eq!(a, label_set([("b", "2"), ("a", "1")]));
        // Without the separator these two would hash the same bytes.
        assert_ne!(label_set([("ab", "c")]), label_set([("a", "bc")]));
    }

    #[test]
    fn hex_is_sixteen_lowercase_digits() {
        assert_eq!(to_hex(0xab), "00000000000000ab");
    }
}
