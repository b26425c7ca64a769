//! Timestamps on the wire, written and read without chrono's general-purpose formatter and
//! parser: `#[serde(with = "crate::rfc3339")]` on a `DateTime<Utc>` field (and
//! [`option`] on an `Option<DateTime<Utc>>`).
//!
//! The text is exactly what chrono's own `Serialize` writes (RFC 3339 in UTC with a `Z`, the
//! fraction as 0, 3, 6 or 9 digits, whichever is shortest and exact), and anything chrono's
//! `Deserialize` accepts is still accepted with the same value. Only the common form — the one
//! this function writes — takes the fast path; every other string (an offset, a leap second, a
//! year past 9999, a space for the `T`) is handed to chrono as before. Why bother: a correlated
//! alert carries three timestamps written and read several times between ingest and its
//! incident event, and chrono's `Display`-driven formatting (a `write_char` per character,
//! through serde_json's escaping adapter) and its item-list parser were a tenth of the
//! correlator's samples.

use chrono::{DateTime, NaiveDate, Timelike, Utc};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`, the longest text [`format`] writes.
const MAX_LEN: usize = 30;

/// Writes `t` as chrono does into `buf`, returning the length; `None` for what only chrono
/// writes (years outside 0..=9999, leap seconds).
fn format(t: &DateTime<Utc>, buf: &mut [u8; MAX_LEN]) -> Option<usize> {
    use chrono::Datelike;
    // Once: each of `DateTime`'s own getters converts to the (here zero) local offset again.
    let t = t.naive_utc();
    let year = t.year();
    let nano = t.nanosecond();
    if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
        return None;
    }
    let two = |buf: &mut [u8; MAX_LEN], at: usize, v: u32| {
        buf[at] = b'0' + (v / 10) as u8;
        buf[at + 1] = b'0' + (v % 10) as u8;
    };
    let year = year as u32;
    two(buf, 0, year / 100);
    two(buf, 2, year % 100);
    buf[4] = b'-';
    two(buf, 5, t.month());
    buf[7] = b'-';
    two(buf, 8, t.day());
    buf[10] = b'T';
    two(buf, 11, t.hour());
    buf[13] = b':';
    two(buf, 14, t.minute());
    buf[16] = b':';
    two(buf, 17, t.second());
    let mut len = 19;
    // chrono's `SecondsFormat::AutoSi`: the fewest of 0, 3, 6 or 9 digits that hold it exactly.
    let (digits, mut value) = match nano {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (3, n / 1_000_000),
        n if n % 1_000 == 0 => (6, n / 1_000),
        n => (9, n),
    };
    if digits > 0 {
        buf[len] = b'.';
        for i in (0..digits).rev() {
            buf[len + 1 + i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
        len += 1 + digits;
    }
    buf[len] = b'Z';
    Some(len + 1)
}

/// Reads the form [`format`] writes; `None` for anything else, which chrono then reads.
fn parse_fast(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() < 20 || b[b.len() - 1] != b'Z' {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<u32> {
        b.get(from..from + len)?.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = num(0, 4)?;
    let (month, day) = (num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    // A leap second (60) is chrono's to read.
    if second > 59 {
        return None;
    }
    let nano = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            num(20, digits.len())? * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    Some(date.and_hms_nano_opt(hour, minute, second, nano)?.and_utc())
}

/// Serialises as chrono's `Serialize` for `DateTime<Utc>` does.
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; MAX_LEN];
    match format(t, &mut buf).and_then(|n| std::str::from_utf8(&buf[..n]).ok()) {
        Some(text) => serializer.serialize_str(text),
        None => t.serialize(serializer),
    }
}

/// Deserialises what chrono's `Deserialize` for `DateTime<Utc>` accepts.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    deserializer.deserialize_str(Visitor)
}

struct Visitor;

impl de::Visitor<'_> for Visitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an RFC 3339 formatted date and time string")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<DateTime<Utc>, E> {
        match parse_fast(s) {
            Some(t) => Ok(t),
            None => s
                .parse::<DateTime<chrono::FixedOffset>>()
                .map(|t| t.with_timezone(&Utc))
                .map_err(E::custom),
        }
    }
}

/// The same for an `Option<DateTime<Utc>>` (`null` for `None`), to be used with
/// `#[serde(default, skip_serializing_if = "Option::is_none")]` as before.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(
        t: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::serialize(t, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super")] DateTime<Utc>);
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(t)| t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Fast {
        #[serde(with = "crate::rfc3339")]
        at: DateTime<Utc>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::rfc3339::option"
        )]
        until: Option<DateTime<Utc>>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Chrono {
        at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<DateTime<Utc>>,
    }

    fn both_ways(at: DateTime<Utc>, until: Option<DateTime<Utc>>) {
        let fast = serde_json::to_string(&Fast { at, until }).unwrap();
        let chrono = serde_json::to_string(&Chrono { at, until }).unwrap();
        assert_eq!(fast, chrono, "written differently");
        // Read back as chrono reads it (a leap second comes back as the next second's half,
        // with either).
        let back: Fast = serde_json::from_str(&chrono).unwrap();
        let theirs: Chrono = serde_json::from_str(&chrono).unwrap();
        assert_eq!((back.at, back.until), (theirs.at, theirs.until));
        if at.nanosecond() < 1_000_000_000 {
            assert_eq!(back, Fast { at, until });
        }
    }

    #[test]
    fn writes_what_chrono_writes_and_reads_it_back() {
        let t = Utc.with_ymd_and_hms(2026, 12, 7, 3, 4, 5).unwrap();
        both_ways(t, None);
        for nano in [1, 120, 1_000, 123_456_000, 5_000_000, 999_999_999] {
            let t = t.with_nanosecond(nano).unwrap();
            both_ways(t, Some(t));
        }
        // What only chrono writes: a leap second, a year past 9999, a year before 0.
        let leap = t.with_nanosecond(1_500_000_000).unwrap();
        both_ways(leap, Some(leap));
        both_ways(Utc.with_ymd_and_hms(12026, 1, 1, 0, 0, 0).unwrap(), None);
        both_ways(Utc.with_ymd_and_hms(-3, 1, 1, 0, 0, 0).unwrap(), None);
    }

    #[test]
    fn reads_everything_chrono_reads_with_the_same_value() {
        for text in [
            "2026-12-07T03:04:05Z",
            "2026-12-07T03:04:05.5Z",
            "2026-12-07T03:04:05.123456789Z",
            "2026-12-07T03:04:05.1234567891Z",
            "2026-12-07 03:04:05Z",
            "2026-12-07t03:04:05z",
            "2026-12-07T03:04:05+02:00",
            "2026-12-07T03:04:05.25-07:30",
            "2026-12-07T23:59:60Z",
            "2024-02-29T00:00:00Z",
            "+12026-01-01T00:00:00Z",
        ] {
            let json = format!(r#"{{"at":"{text}"}}"#);
            let fast: Fast = serde_json::from_str(&json).unwrap();
            let chrono: Chrono = serde_json::from_str(&json).unwrap();
            assert_eq!(fast.at, chrono.at, "{text}");
        }
    }

    #[test]
    fn rejects_what_chrono_rejects() {
        for text in [
            "2026-02-30T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-07T24:00:00Z",
            "2026-12-07T03:04:05.Z",
            "2026-12-07T03:04Z",
            "2026-12-07",
            "",
            "x026-12-07T03:04:05Z",
        ] {
            let json = format!(r#"{{"at":"{text}"}}"#);
            assert!(serde_json::from_str::<Chrono>(&json).is_err(), "{text}");
            assert!(serde_json::from_str::<Fast>(&json).is_err(), "{text}");
        }
        assert!(serde_json::from_str::<Fast>(r#"{"at":5}"#).is_err());
        let none: Fast =
            serde_json::from_str(r#"{"at":"2026-12-07T03:04:05Z","until":null}"#).unwrap();
        assert_eq!(none.until, None);
    }

    proptest! {
        #[test]
        fn agrees_with_chrono_on_any_instant(
            secs in -62_135_596_800i64..253_402_300_799,
            nano in prop_oneof![Just(0u32), 0u32..1_000_000_000, (0u32..1000).prop_map(|m| m * 1_000_000), (0u32..1_000_000).prop_map(|u| u * 1000)],
        ) {
            let t = DateTime::from_timestamp(secs, nano).unwrap();
            let fast = serde_json::to_string(&Fast { at: t, until: Some(t) }).unwrap();
            let chrono = serde_json::to_string(&Chrono { at: t, until: Some(t) }).unwrap();
            prop_assert_eq!(&fast, &chrono);
            let back: Fast = serde_json::from_str(&chrono).unwrap();
            prop_assert_eq!(back.at, t);
        }
    }
}
