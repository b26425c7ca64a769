//! Reading provider JSON field by field, so that every rejection names the field at fault
//! (`alerts[2].labels.severity: must be a string`) instead of a serde message about a type.
//!
//! Hand-rolled rather than `#[derive(Deserialize)]` because monitoring tools are loose with
//! types (nulls, missing objects) and the error a sender sees is the whole point at the edge.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::error::{ErrorBody, ErrorCode};

/// An `invalid_alert` error for `field`.
pub(crate) fn invalid(field: &str, message: &str) -> ErrorBody {
    let field = if field.is_empty() { "payload" } else { field };
    ErrorBody::new(ErrorCode::InvalidAlert, format!("{field}: {message}"))
}

/// One JSON object and the path it was found at.
pub(crate) struct Fields<'a> {
    pub map: &'a Map<String, Value>,
    pub path: String,
}

impl<'a> Fields<'a> {
    pub fn object(value: &'a Value, path: impl Into<String>) -> Result<Self, ErrorBody> {
        let path = path.into();
        match value {
            Value::Object(map) => Ok(Fields { map, path }),
            _ => Err(invalid(&path, "must be a JSON object")),
        }
    }

    /// The dotted path of a field of this object.
    pub fn path_of(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// The value of `name`, treating `null` as absent.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    /// A string field; empty or white-space-only strings count as absent.
    pub fn opt_str(&self, name: &str) -> Result<Option<&'a str>, ErrorBody> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(invalid(&self.path_of(name), "must be a string")),
        }
    }

    pub fn req_str(&self, name: &str) -> Result<&'a str, ErrorBody> {
        self.opt_str(name)?.ok_or_else(|| {
            invalid(
                &self.path_of(name),
                "is required and must be a non-empty string",
            )
        })
    }

    pub fn opt_array(&self, name: &str) -> Result<Option<&'a Vec<Value>>, ErrorBody> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(_) => Err(invalid(&self.path_of(name), "must be an array")),
        }
    }

    /// An object whose values are all strings (labels, annotations); absent means empty.
    pub fn string_map(&self, name: &str) -> Result<BTreeMap<String, String>, ErrorBody> {
        let path = self.path_of(name);
        let Some(value) = self.get(name) else {
            return Ok(BTreeMap::new());
        };
        let Value::Object(map) = value else {
            return Err(invalid(&path, "must be an object of strings"));
        };
        map.iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(invalid(&format!("{path}.{k}"), "must be a string")),
            })
            .collect()
    }

    /// An RFC 3339 time. Go's zero time (`0001-01-01T00:00:00Z`, what Alertmanager sends for
    /// "no end") counts as absent.
    pub fn opt_time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ErrorBody> {
        let Some(text) = self.opt_str(name)? else {
            return Ok(None);
        };
        let at = parse_time(text).ok_or_else(|| {
            invalid(
                &self.path_of(name),
                "must be an RFC 3339 time such as 2024-05-14T09:12:03Z",
            )
        })?;
        Ok((at.timestamp() > ZERO_TIME_CUTOFF).then_some(at))
    }

    /// A time given as Unix epoch milliseconds (a number or a string of digits, as Datadog's
    /// `$DATE` and `$LAST_UPDATED` are) or as RFC 3339 text.
    pub fn opt_epoch_ms_or_time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ErrorBody> {
        let bad = || {
            invalid(
                &self.path_of(name),
                "must be epoch milliseconds or an RFC 3339 time",
            )
        };
        let ms = match self.get(name) {
            None => return Ok(None),
            Some(Value::Number(n)) => n.as_i64().ok_or_else(bad)?,
            Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
            Some(Value::String(s)) => match s.trim().parse::<i64>() {
                Ok(ms) => ms,
                Err(_) => return parse_time(s).map(Some).ok_or_else(bad),
            },
            Some(_) => return Err(bad()),
        };
        DateTime::from_timestamp_millis(ms)
            .map(Some)
            .ok_or_else(bad)
    }

    /// An object (absent or `null` means `None`).
    pub fn opt_object(&self, name: &str) -> Result<Option<Fields<'a>>, ErrorBody> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => Fields::object(v, self.path_of(name)).map(Some),
        }
    }

    /// Fails on a key not in `known`, naming it (catches `sevrity` before it is silently lost).
    pub fn deny_unknown(&self, known: &[&str]) -> Result<(), ErrorBody> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(invalid(
                &self.path_of(k),
                &format!("unknown field; expected one of {}", known.join(", ")),
            )),
            None => Ok(()),
        }
    }
}

/// RFC 3339, or the ISO 8601 form without a colon in the offset that AWS and PagerDuty send
/// (`2024-05-14T09:10:12.345+0000`).
pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Unix seconds of 0002-01-01: anything earlier is a zero value, not a real time.
const ZERO_TIME_CUTOFF: i64 = -62_104_060_800;

/// The first label (in the order given) that is present and not empty.
pub(crate) fn first_of<'m>(map: &'m BTreeMap<String, String>, keys: &[&str]) -> Option<&'m str> {
    keys.iter()
        .filter_map(|k| map.get(*k))
        .map(|v| v.trim())
        .find(|v| !v.is_empty())
}

/// The links given, in order, each once (formats name the same URL in several fields).
pub(crate) fn unique_links<'a>(
    candidates: impl IntoIterator<Item = Option<&'a str>>,
) -> Vec<String> {
    let mut links: Vec<String> = Vec::new();
    for link in candidates.into_iter().flatten() {
        if !links.iter().any(|l| l == link) {
            links.push(link.to_string());
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_field_path() {
        let v = json!({"labels": {"severity": 3}, "n": 1, "t": "yesterday"});
        let f = Fields::object(&v, "alerts[2]").unwrap();
        let e = f.string_map("labels").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidAlert);
        assert_eq!(e.message, "alerts[2].labels.severity: must be a string");
        assert!(f
            .opt_str("n")
            .unwrap_err()
            .message
            .starts_with("alerts[2].n:"));
        assert!(f
            .opt_time("t")
            .unwrap_err()
            .message
            .starts_with("alerts[2].t:"));
        assert!(f
            .req_str("missing")
            .unwrap_err()
            .message
            .starts_with("alerts[2].missing:"));
    }

    #[test]
    fn go_zero_time_is_absent() {
        let v = json!({"a": "0001-01-01T00:00:00Z", "b": "2024-05-14T09:12:03.5+02:00"});
        let f = Fields::object(&v, "").unwrap();
        assert_eq!(f.opt_time("a").unwrap(), None);
        assert_eq!(
            parse_time("2024-05-14T09:10:12.345+0000")
                .unwrap()
                .to_rfc3339(),
            "2024-05-14T09:10:12.345+00:00"
        );
        let v2 = json!({"n": 1715677812345_i64, "s": "1715677812345", "x": true});
        let f2 = Fields::object(&v2, "").unwrap();
        let expected = parse_time("2024-05-14T09:10:12.345Z");
        assert_eq!(f2.opt_epoch_ms_or_time("n").unwrap(), expected);
        assert_eq!(f2.opt_epoch_ms_or_time("s").unwrap(), expected);
        assert!(f2.opt_epoch_ms_or_time("x").is_err());
        assert_eq!(
            f.opt_time("b").unwrap().unwrap().to_rfc3339(),
            "2024-05-14T07:12:03.500+00:00"
        );
    }
}
