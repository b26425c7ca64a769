//! A labelled corpus for measuring detection quality, generated deterministically from a seed:
//! support tickets, alert texts and chat messages, with and without PII and secrets, and full
//! of near-misses (order numbers, build hashes, version strings, UUIDs, timestamps, numbers
//! that fail Luhn, mcplane keys with a bad checksum, `password reset` prose).
//!
//! Generated rather than collected so that no real personal data is ever stored in the repo
//! and every label is exact. The benchmark and the quality test both use [`generate`] and
//! [`evaluate`]; the span-level scoring counts a hit only for the same type at the same offsets.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::Engine;

/// One labelled text.
#[derive(Debug, Clone)]
pub struct Sample {
    pub text: String,
    /// Gold spans: (start, end, type name).
    pub spans: Vec<(usize, usize, &'static str)>,
}

/// The directory names the corpus draws people from (give them to the engine as
/// `person_names`, as a deployment gives its CMDB/directory).
pub const PEOPLE: &[&str] = &[
    "Priya Raman",
    "Jonas Berg",
    "Maria Garcia",
    "Wei Zhang",
    "Fatima Haddad",
    "Liam O'Brien",
    "Aiko Tanaka",
    "Carlos Mendes",
    "Olga Petrova",
    "Samuel Okafor",
    "Chloe Dubois",
    "Noah Fischer",
    "Amara Nwosu",
    "Lucas Silva",
    "Ingrid Larsen",
    "Ravi Shah",
];

const FIRST: &[&str] = &[
    "jane", "john", "priya", "wei", "maria", "noah", "olga", "sam", "chloe", "ravi",
];
const LAST: &[&str] = &[
    "doe", "smith", "raman", "zhang", "garcia", "fischer", "petrova", "okafor", "dubois", "shah",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "acme.io",
    "globex.co.uk",
    "corp.example.org",
    "mail.example.net",
];
const STREETS: &[&str] = &[
    "Baker",
    "Main",
    "Elm",
    "Market",
    "Harbour View",
    "King",
    "Oak Tree",
    "Station",
];
const SUFFIXES: &[&str] = &[
    "Street",
    "Avenue",
    "Road",
    "Lane",
    "Drive",
    "Boulevard",
    "Court",
    "Way",
];
const SERVICES: &[&str] = &[
    "checkout",
    "payments-db",
    "auth-gateway",
    "search-api",
    "billing",
    "inventory",
    "kafka-broker-3",
];
const MONTHS: &[&str] = &[
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Templates: `{TYPE}` is a labelled entity, `{~kind}` an unlabelled near-miss, `{svc}` a
/// service name. Context words are part of the template, as in real text.
const TEMPLATES: &[&str] = &[
    // Support tickets.
    "Customer {EMAIL} reports checkout fails with card {CARD}; order {~order} was not created.",
    "Ticket {~ticket}: user {PERSON} cannot log in since build {~hash}. Call back on {PHONE}.",
    "Refund to IBAN {IBAN} requested by {PERSON} for order {~order}.",
    "Please update the shipping address to {ADDRESS}, {~city} for order {~order}.",
    "Caller gave SSN {SSN} to verify identity; ticket {~ticket} escalated.",
    "Employee record: {PERSON}, born on {DOB}, office phone {PHONE}.",
    "KYC check: DOB: {DOB}, email {EMAIL}, reference {~uuid}.",
    "The customer's card ending in {~last4} was declined at {~ts}; version {~version} of the app.",
    "{PERSON} asked why invoice {~order} shows {~amount}; reply to {EMAIL}.",
    "Move {PERSON} to the new team; her mobile is {PHONE} and desk is at {ADDRESS}.",
    "Password reset required for {EMAIL} after {~count} failed attempts.",
    "Wire transfer to {IBAN} failed validation at {~ts}.",
    // Alerts.
    "[FIRING] {svc} p99 latency {~latency} on {IP} since {~ts} (build {~hash}).",
    "[RESOLVED] {svc} disk usage back to {~percent} on node {IP}.",
    "Host {IP} ({MAC}) stopped sending heartbeats at {~ts}.",
    "{svc}: connection refused from {IP} port {~port}, retrying in {~latency}.",
    "ALERT {svc} error rate {~percent} after deploy {~version} ({~hash}).",
    "Pod {~pod} restarted {~count} times; last exit code 137 at {~ts}.",
    "DHCP lease for {MAC} renewed at {IP}; request {~uuid}.",
    "Replica lag on {svc} is {~latency}; trace {~uuid}.",
    // Chat and pasted config.
    "hey, the staging creds are password={PASSWORD} for now, will rotate later",
    "I pasted my key by mistake: {AWS_ACCESS_KEY} with aws_secret_access_key = {AWS_SECRET_KEY}",
    "CI is using token {GITHUB_TOKEN}, can someone revoke it?",
    "gitlab runner registered with {GITLAB_TOKEN} on {~ts}",
    "slack bot token is {SLACK_TOKEN}, don't share",
    "curl -H 'Authorization: Bearer {BEARER_TOKEN}' https://api.internal/v1/status",
    "the session cookie was {JWT} when it broke",
    "DATABASE_URL=postgres://{BASIC_AUTH}@db.internal:5432/app",
    "export OPENAI_API_KEY={API_KEY}",
    "found this in the logs: {MCPLANE_KEY} - is that one of ours?",
    "here is the deploy key, sorry:\n{PRIVATE_KEY}\nplease rotate it",
    "client_secret: \"{PASSWORD}\" is still in the helm values",
    // Clean text and near-misses only.
    "Deploy {~version} of {svc} finished at {~ts}; commit {~hash}.",
    "Order {~order} shipped; tracking {~uuid}.",
    "The token expired at {~ts}, please log in again.",
    "Rolled back {svc} to {~version} because p95 went to {~latency}.",
    "Old key {~badkey} was rejected by the gateway, as expected.",
    "Run {~count} of the batch job processed {~amount} records in {~latency}.",
    "Test card {~badcard} should be declined by the sandbox.",
    "Password: see the vault entry for {svc}; secret: stored in KMS.",
    "Build {~hash} passed on windows {~winver} and ubuntu 22.04.",
    "We spoke at {~ts} about {svc}; no action needed.",
];

/// A small deterministic generator (SplitMix64): the corpus must be identical on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn chars(&mut self, alphabet: &[u8], n: usize) -> String {
        (0..n)
            .map(|_| char::from(alphabet[self.below(alphabet.len())]))
            .collect()
    }

    fn digits(&mut self, n: usize) -> String {
        self.chars(b"0123456789", n)
    }
}

const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const UPPER_DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const HEX: &[u8] = b"0123456789abcdef";
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A card number with a valid Luhn digit (or, with `valid = false`, a wrong one).
fn card(rng: &mut Rng, valid: bool) -> String {
    let mut d: Vec<u32> = vec![[4, 5][rng.below(2)]];
    d.extend((0..14).map(|_| rng.below(10) as u32));
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 0 {
                let y = x * 2;
                if y > 9 {
                    y - 9
                } else {
                    y
                }
            } else {
                x
            }
        })
        .sum();
    let check = (10 - sum % 10) % 10;
    d.push(if valid {
        check
    } else {
        (check + 1 + rng.below(8) as u32) % 10
    });
    let s: String = d.iter().map(|x| char::from(b'0' + *x as u8)).collect();
    match rng.below(3) {
        0 => s,
        n => {
            let sep = if n == 1 { " " } else { "-" };
            s.as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join(sep)
        }
    }
}

fn iban(rng: &mut Rng) -> String {
    let (country, bban) = if rng.below(2) == 0 {
        ("DE", rng.digits(18))
    } else {
        (
            "GB",
            format!(
                "{}{}",
                rng.chars(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4),
                rng.digits(14)
            ),
        )
    };
    let mut rem = 0u32;
    for c in format!("{bban}{country}00").bytes() {
        let v = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c - b'A') + 10
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    let whole = format!("{country}{:02}{bban}", 98 - rem);
    if rng.below(2) == 0 {
        whole
    } else {
        whole
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn phone(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => format!("+44 20 7946 {}", rng.digits(4)),
        1 => format!("+1 (415) 555-{}", rng.digits(4)),
        2 => format!("({}) 555-{}", rng.range(201, 989), rng.digits(4)),
        3 => format!("020 7946 {}", rng.digits(4)),
        4 => format!("+49 30 {}", rng.digits(8)),
        _ => format!(
            "06 {} {} {} {}",
            rng.digits(2),
            rng.digits(2),
            rng.digits(2),
            rng.digits(2)
        ),
    }
}

/// A random entity of the built-in type `kind` (empty for an unknown name).
pub fn entity(rng: &mut Rng, kind: &str) -> String {
    match kind {
        "EMAIL" => format!(
            "{}.{}@{}",
            rng.pick(FIRST),
            rng.pick(LAST),
            rng.pick(DOMAINS)
        ),
        "PHONE" => phone(rng),
        "CARD" => card(rng, true),
        "IBAN" => iban(rng),
        "SSN" => {
            let mut area = rng.range(100, 899);
            if area == 666 {
                area = 667;
            }
            format!("{area}-{:02}-{:04}", rng.range(1, 99), rng.range(1, 9999))
        }
        "IP" => match rng.below(4) {
            0 => format!(
                "10.{}.{}.{}",
                rng.below(256),
                rng.below(256),
                rng.range(1, 254)
            ),
            1 => format!("192.168.{}.{}", rng.below(256), rng.range(1, 254)),
            2 => format!(
                "2001:db8::{:x}:{:x}",
                rng.range(1, 0xffff),
                rng.range(1, 0xffff)
            ),
            _ => format!(
                "172.{}.{}.{}",
                rng.range(16, 31),
                rng.below(256),
                rng.range(1, 254)
            ),
        },
        "MAC" => {
            let sep = if rng.below(2) == 0 { ":" } else { "-" };
            (0..6)
                .map(|_| rng.chars(b"0123456789abcdef", 2))
                .collect::<Vec<_>>()
                .join(sep)
        }
        "DOB" => {
            let (y, m, d) = (rng.range(1950, 2004), rng.range(1, 12), rng.range(1, 28));
            match rng.below(3) {
                0 => format!("{y}-{m:02}-{d:02}"),
                1 => format!("{d} {} {y}", MONTHS[m as usize - 1]),
                _ => format!("{d:02}/{m:02}/{y}"),
            }
        }
        "ADDRESS" => {
            // Some house numbers carry a letter (`221B`); derived from the number so that the
            // random stream, and with it the rest of the corpus, stays as it was.
            let number = rng.range(1, 2400);
            let letter = if number % 7 == 3 { "B" } else { "" };
            format!(
                "{number}{letter} {} {}",
                rng.pick(STREETS),
                rng.pick(SUFFIXES)
            )
        }
        "PERSON" => rng.pick(PEOPLE).to_string(),
        "AWS_ACCESS_KEY" => format!("AKIA{}", rng.chars(UPPER_DIGITS, 16)),
        "AWS_SECRET_KEY" => {
            let mut s = rng.chars(B64, 38);
            s.push_str("K7");
            s
        }
        "GITHUB_TOKEN" => format!("ghp_{}", rng.chars(ALNUM, 36)),
        "GITLAB_TOKEN" => format!("glpat-{}", rng.chars(ALNUM, 20)),
        "SLACK_TOKEN" => format!(
            "xoxb-{}-{}-{}",
            rng.digits(11),
            rng.digits(12),
            rng.chars(ALNUM, 24)
        ),
        "JWT" => format!(
            "eyJhbGciOiJIUzI1NiJ9.eyJ{}.{}",
            rng.chars(B64URL, 30),
            rng.chars(B64URL, 43)
        ),
        "PRIVATE_KEY" => {
            let body: Vec<String> = (0..4).map(|_| rng.chars(B64, 64)).collect();
            format!(
                "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----",
                body.join("\n")
            )
        }
        "BASIC_AUTH" => format!(
            "{}:{}{}!",
            rng.pick(FIRST),
            rng.chars(ALNUM, 10),
            rng.digits(2)
        ),
        "PASSWORD" => format!(
            "{}#{}{}",
            rng.chars(ALNUM, 6),
            rng.digits(3),
            rng.chars(b"ABCDEFGHJK", 2)
        ),
        "MCPLANE_KEY" => mcplane_shared::api_key::with_checksum(&rng.chars(ALNUM, 30)),
        "BEARER_TOKEN" => format!("{}{}", rng.chars(ALNUM, 28), rng.digits(4)),
        "API_KEY" => format!("sk-proj-{}", rng.chars(ALNUM, 32)),
        _ => String::new(),
    }
}

fn near_miss(rng: &mut Rng, kind: &str) -> String {
    match kind {
        "order" => format!("ORD-{}-{}", rng.range(2019, 2025), rng.digits(6)),
        "ticket" => format!("INC{}", rng.digits(7)),
        "hash" => {
            if rng.below(2) == 0 {
                rng.chars(HEX, 40)
            } else {
                rng.chars(HEX, 7)
            }
        }
        "uuid" => format!(
            "{}-{}-4{}-a{}-{}",
            rng.chars(HEX, 8),
            rng.chars(HEX, 4),
            rng.chars(HEX, 3),
            rng.chars(HEX, 3),
            rng.chars(HEX, 12)
        ),
        "ts" => match rng.below(3) {
            0 => format!(
                "2024-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                rng.range(1, 12),
                rng.range(1, 28),
                rng.below(24),
                rng.below(60),
                rng.below(60)
            ),
            1 => format!("{}", 1_700_000_000_000u64 + rng.range(0, 99_999_999_999)),
            _ => format!(
                "{:02}:{:02}:{:02}",
                rng.below(24),
                rng.below(60),
                rng.below(60)
            ),
        },
        "version" => format!("v{}.{}.{}", rng.range(1, 12), rng.below(30), rng.below(100)),
        "winver" => format!("10.0.{}.{}", rng.range(17000, 22631), rng.range(1000, 9999)),
        "latency" => format!("{}ms", rng.range(20, 9000)),
        "percent" => format!("{}.{}%", rng.below(100), rng.below(10)),
        "port" => format!("{}", rng.range(1024, 65535)),
        "count" => format!("{}", rng.range(2, 500)),
        "amount" => format!("{}.{:02} EUR", rng.range(1, 99999), rng.below(100)),
        "last4" => rng.digits(4),
        "city" => ["London", "Springfield", "Leeds", "Portland"][rng.below(4)].to_string(),
        "pod" => format!(
            "{}-{}-{}",
            rng.pick(SERVICES),
            rng.chars(HEX, 9),
            rng.chars(b"bcdfghjklmnpqrstvwxz2456789", 5)
        ),
        "badkey" => {
            let key = mcplane_shared::api_key::with_checksum(&rng.chars(ALNUM, 30));
            let mut b = key.into_bytes();
            let i = 4 + rng.below(30);
            b[i] = if b[i] == b'Q' { b'R' } else { b'Q' };
            String::from_utf8_lossy(&b).into_owned()
        }
        "badcard" => card(rng, false),
        _ => String::new(),
    }
}

/// Fills one template.
fn fill(rng: &mut Rng, template: &str, out: &mut Sample) {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.text.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let slot = &rest[open + 1..open + close];
        if let Some(kind) = slot.strip_prefix('~') {
            out.text.push_str(&near_miss(rng, kind));
        } else if slot == "svc" {
            out.text.push_str(rng.pick(SERVICES));
        } else {
            let value = entity(rng, slot);
            let start = out.text.len();
            out.text.push_str(&value);
            let kind = crate::detectors::EntityType::from_name(slot).map_or("", |k| k.as_str());
            out.spans.push((start, out.text.len(), kind));
        }
        rest = &rest[open + close + 1..];
    }
    out.text.push_str(rest);
}

/// `n` samples from `seed`: each one to three templates joined as one message.
pub fn generate(seed: u64, n: usize) -> Vec<Sample> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let mut sample = Sample {
                text: String::new(),
                spans: Vec::new(),
            };
            for i in 0..1 + rng.below(3) {
                if i > 0 {
                    sample.text.push(' ');
                }
                let t = TEMPLATES[rng.below(TEMPLATES.len())];
                fill(&mut rng, t, &mut sample);
            }
            sample
        })
        .collect()
}

/// Precision, recall and F1 of one type (or overall).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Score {
    pub true_positives: u32,
    pub false_positives: u32,
    pub false_negatives: u32,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Score {
    fn finish(mut self) -> Score {
        let tp = f64::from(self.true_positives);
        let p = tp + f64::from(self.false_positives);
        let g = tp + f64::from(self.false_negatives);
        self.precision = if p == 0.0 { 1.0 } else { tp / p };
        self.recall = if g == 0.0 { 1.0 } else { tp / g };
        self.f1 = if self.precision + self.recall == 0.0 {
            0.0
        } else {
            2.0 * self.precision * self.recall / (self.precision + self.recall)
        };
        self
    }
}

/// Span-level quality of an engine on a corpus.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub samples: usize,
    pub bytes: usize,
    pub overall: Score,
    pub by_type: BTreeMap<&'static str, Score>,
    /// A few misses and false alarms, for whoever tunes the rules.
    pub examples: Vec<String>,
}

/// Scores `engine` on `samples`: a prediction is a true positive only with the gold type and
/// the exact gold offsets.
pub fn evaluate(engine: &Engine, samples: &[Sample]) -> Report {
    let mut by_type: BTreeMap<&'static str, Score> = BTreeMap::new();
    let mut overall = Score::default();
    let mut examples = Vec::new();
    let mut bytes = 0;
    for s in samples {
        bytes += s.text.len();
        let found = engine.find(&s.text);
        for span in &found {
            let hit = s
                .spans
                .iter()
                .any(|&(a, b, k)| a == span.start && b == span.end && k == span.kind.as_str());
            let score = by_type.entry(span.kind.as_str()).or_default();
            if hit {
                score.true_positives += 1;
                overall.true_positives += 1;
            } else {
                score.false_positives += 1;
                overall.false_positives += 1;
                if examples.len() < 20 {
                    examples.push(format!(
                        "FP {} {:?}",
                        span.kind,
                        &s.text[span.start..span.end]
                    ));
                }
            }
        }
        for &(a, b, k) in &s.spans {
            let hit = found
                .iter()
                .any(|f| f.start == a && f.end == b && f.kind.as_str() == k);
            if !hit {
                by_type.entry(k).or_default().false_negatives += 1;
                overall.false_negatives += 1;
                if examples.len() < 20 {
                    examples.push(format!("FN {k} {:?} in {:?}", &s.text[a..b], s.text));
                }
            }
        }
    }
    Report {
        samples: samples.len(),
        bytes,
        overall: overall.finish(),
        by_type: by_type.into_iter().map(|(k, v)| (k, v.finish())).collect(),
        examples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_is_deterministic_and_labels_point_at_their_text() {
        let a = generate(7, 300);
        let b = generate(7, 300);
        assert_eq!(
            a.iter().map(|s| &s.text).collect::<Vec<_>>(),
            b.iter().map(|s| &s.text).collect::<Vec<_>>()
        );
        let labelled = a.iter().filter(|s| !s.spans.is_empty()).count();
        assert!(labelled > 100 && labelled < 300, "{labelled}");
        for s in &a {
            for &(x, y, k) in &s.spans {
                assert!(!k.is_empty() && x < y && y <= s.text.len(), "{s:?}");
            }
        }
    }
}
