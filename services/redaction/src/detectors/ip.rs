//! IP addresses: dotted-quad IPv4 with every octet at most 255, and IPv6 in any of its textual
//! forms (compressed, embedded IPv4), confirmed by the standard library's parser.
//!
//! The IPv6 candidate pattern is loose on purpose (hex groups and colons) because the real
//! grammar is awkward as a regex; `Ipv6Addr` parsing then decides, and a candidate must contain
//! a digit and stand apart from identifiers so `std::net` or `abc::def` are left alone.

use std::net::Ipv6Addr;

use super::{byte_at, byte_before, is_word, EntityType, RuleSpec, Trigger};

pub const RULES: [RuleSpec; 2] = [
    RuleSpec {
        kind: EntityType::Ip,
        pattern: V4,
        trigger: Trigger::DottedDigits,
        confirm,
        base: 0.8,
        context: &[],
    },
    RuleSpec {
        kind: EntityType::Ip,
        pattern: V6,
        trigger: Trigger::Ipv6Colons,
        confirm,
        base: 0.8,
        context: &[],
    },
];

pub const V4: &str = r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}";
pub const V6: &str = r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:(?:\.[0-9]{1,3}){3})?";

pub fn confirm(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let candidate = &text[start..end];
    if candidate.contains(':') {
        confirm_v6(text, start, end)
    } else {
        confirm_v4(text, start, end)
    }
}

fn confirm_v4(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let octets_ok = text[start..end]
        .split('.')
        .all(|o| o.parse::<u16>().is_ok_and(|n| n <= 255));
    if !octets_ok {
        return None;
    }
    // Only another dotted number part makes it something longer (`1.2.3.4.5`, an OID); a port
    // (`:8080`), a prefix length (`/24`) or a range (`-10.0.0.9`) belong with an address.
    let digit_at = |i: Option<usize>| {
        i.and_then(|i| byte_at(text, i))
            .is_some_and(|b| b.is_ascii_digit())
    };
    let glued_before = match byte_before(text, start) {
        Some(b) if is_word(b) => true,
        Some(b'.') => digit_at(start.checked_sub(2)),
        _ => false,
    };
    let glued_after = match byte_at(text, end) {
        Some(b) if is_word(b) => true,
        Some(b'.') => digit_at(Some(end + 1)),
        _ => false,
    };
    (!glued_before && !glued_after).then_some((start, end))
}

fn confirm_v6(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let candidate = &text[start..end];
    // The loose pattern may take one colon of the surrounding text (`addr:2001:db8::1`,
    // `2001:db8::1: timeout`); try without it before giving up.
    let mut tries = [(start, end); 3];
    let mut n = 1;
    if candidate.ends_with(':') && !candidate.ends_with("::") {
        tries[n] = (start, end - 1);
        n += 1;
    }
    if candidate.starts_with(':') && !candidate.starts_with("::") {
        tries[n] = (start + 1, end);
        n += 1;
    }
    let (s, e) = tries[..n]
        .iter()
        .copied()
        .find(|&(s, e)| text[s..e].parse::<Ipv6Addr>().is_ok())?;
    if !text[s..e].bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    if byte_before(text, s).is_some_and(|b| is_word(b) || b == b'.')
        || byte_at(text, e).is_some_and(|b| is_word(b) || b == b'-')
        || group_before(text, s)
        || (byte_at(text, e) == Some(b':')
            && byte_at(text, e + 1).is_some_and(|b| b.is_ascii_hexdigit() || b == b':'))
    {
        return None;
    }
    Some((s, e))
}

/// Whether a colon right before `s` joins the candidate to a hex group or another colon, so
/// that the candidate is the tail of a longer run that failed as a whole (`0::4::` is no
/// address, but its suffix `4::` parses as one) rather than an address of its own. A colon
/// after a label (`addr:2001:db8::1`, `src:fe80::1`) only separates.
fn group_before(text: &str, s: usize) -> bool {
    if byte_before(text, s) != Some(b':') {
        return false;
    }
    let bytes = &text.as_bytes()[..s - 1];
    let hex = bytes
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_hexdigit())
        .count();
    match bytes.len().checked_sub(hex + 1).map(|i| bytes[i]) {
        // `::` right before, or a group that starts the text.
        _ if hex == 0 => bytes.last() == Some(&b':'),
        // A group after a separator (`0:4::`), or the end of a label (`src:`).
        Some(b) => hex <= 4 && !is_word(b),
        None => hex <= 4,
    }
}

#[cfg(test)]
mod tests {
    use crate::detectors::testing::found;
    use crate::detectors::EntityType::Ip;

    #[test]
    fn finds_ipv4() {
        assert_eq!(
            found(
                Ip,
                "from 10.0.0.12 to 192.168.1.254, subnet 172.16.0.0/12. Also 8.8.8.8."
            ),
            vec!["10.0.0.12", "192.168.1.254", "172.16.0.0", "8.8.8.8"]
        );
        assert_eq!(found(Ip, "host=10.1.2.3:8080"), vec!["10.1.2.3"]);
        assert_eq!(
            found(Ip, "range 10.0.0.1-10.0.0.9"),
            vec!["10.0.0.1", "10.0.0.9"]
        );
    }

    #[test]
    fn finds_ipv6() {
        assert_eq!(
            found(
                Ip,
                "peer 2001:db8::8a2e:370:7334 and fe80::1ff:fe23:4567:890a via [::1]:443"
            ),
            vec!["2001:db8::8a2e:370:7334", "fe80::1ff:fe23:4567:890a", "::1"]
        );
        assert_eq!(
            found(Ip, "mapped ::ffff:192.0.2.128 here"),
            vec!["::ffff:192.0.2.128"]
        );
        assert_eq!(
            found(Ip, "2001:0db8:0000:0000:0000:ff00:0042:8329"),
            vec!["2001:0db8:0000:0000:0000:ff00:0042:8329"]
        );
        assert_eq!(found(Ip, "addr:2001:db8::1: timeout"), vec!["2001:db8::1"]);
        // Uncompressed with an embedded IPv4 address: six colons, the fewest an address
        // without `::` has (the engine searches no shorter chain of them).
        assert_eq!(
            found(Ip, "nat64 64:ff9b:0:0:0:0:192.0.2.33 up"),
            vec!["64:ff9b:0:0:0:0:192.0.2.33"]
        );
        // A MAC address (five colons) is not one.
        assert!(found(Ip, "lease for fc:68:ee:12:d4:f9 renewed").is_empty());
    }

    #[test]
    fn a_fragment_of_a_failed_candidate_is_not_an_address() {
        // Found by fuzzing: `0::4::` is no address, but its suffix `4::` parses as one, and the
        // scan, resuming inside the rejected candidate, reported it.
        for text in ["0::4::", "x 0::4:: y", "1::2:3:4:5:6:7:8:9", "fe80::1::2"] {
            assert!(found(Ip, text).is_empty(), "{text}: {:?}", found(Ip, text));
        }
        let (masked, _) = crate::engine::mask_all(
            &crate::engine::Engine::builtin(&crate::detectors::EntityType::ALL).unwrap(),
            "0::4::",
        );
        assert_eq!(masked, "0::4::");
        // A label or punctuation around an address still leaves it an address.
        assert_eq!(found(Ip, "addr:fe80::1 ok"), vec!["fe80::1"]);
        assert_eq!(found(Ip, "src:fe80::1 ok"), vec!["fe80::1"]);
        assert_eq!(found(Ip, "[::1]:443"), vec!["::1"]);
    }

    #[test]
    fn ignores_near_misses() {
        for text in [
            "release v1.2.3",
            "version 10.0.19045.2846",
            "oid 1.3.6.1.4.1.311",
            "300.1.1.1 is not an address",
            "1.2.3.4.5",
            "at 10:30:00",
            "mac 00:1a:2b:3c:4d:5e",
            "use std::net::Ipv6Addr; abc::def",
            "a :: b",
            "2024-01-15T10:30:00Z",
            "sha 4f9c2e1d",
        ] {
            assert!(found(Ip, text).is_empty(), "{text}: {:?}", found(Ip, text));
        }
    }
}
